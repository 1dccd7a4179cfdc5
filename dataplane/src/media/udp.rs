//! Batched UDP I/O for the workers, through `quinn-udp`: `recvmmsg` with GRO
//! on receive, GSO on send (a run of equal-sized datagrams to one
//! destination, e.g. a video frame's packets to one subscriber, is one
//! system call), with the fallbacks `quinn-udp` detects at start when the
//! kernel lacks them. Buffers are the worker's, reused for every batch.

use std::io::IoSliceMut;
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Largest datagram taken from the network.
pub(crate) const DATAGRAM_MAX: usize = 1500;

/// One worker's receive buffers (one batch) and send staging buffer.
pub(crate) struct Buffers {
    recv: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// A GSO run being built: its destination, segment size, datagrams and bytes.
    run: Option<(SocketAddr, usize, usize)>,
    send: Vec<u8>,
    /// Most datagrams one GSO send may carry.
    gso_max: usize,
}

impl std::fmt::Debug for Buffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffers").field("batch", &self.recv.len()).field("gso_max", &self.gso_max).finish()
    }
}

impl Buffers {
    /// Buffers for the batch size and segment counts `state` reports.
    pub(crate) fn new(state: &UdpSocketState) -> Self {
        let batch = quinn_udp::BATCH_SIZE.max(1);
        let each = DATAGRAM_MAX * state.gro_segments().max(1);
        Self {
            recv: (0..batch).map(|_| vec![0u8; each]).collect(),
            meta: vec![RecvMeta::default(); batch],
            run: None,
            send: Vec::with_capacity(DATAGRAM_MAX * state.max_gso_segments().max(1)),
            gso_max: state.max_gso_segments().max(1),
        }
    }

    /// Reads one batch (non-blocking); calls `each(from, datagram)` for every
    /// datagram in it (GRO-coalesced buffers are split at their stride).
    /// Answers how many datagrams were read; `WouldBlock` when none were waiting.
    pub(crate) fn recv(
        &mut self,
        state: &UdpSocketState,
        socket: UdpSockRef<'_>,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> std::io::Result<usize> {
        let n = {
            let mut slices: Vec<IoSliceMut<'_>> = self.recv.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            state.recv(socket, &mut slices, &mut self.meta)?
        };
        let mut count = 0;
        for (buf, meta) in self.recv.iter().zip(&self.meta).take(n) {
            let stride = if meta.stride == 0 { meta.len } else { meta.stride };
            for chunk in buf[..meta.len.min(buf.len())].chunks(stride.max(1)) {
                each(meta.addr, chunk);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Queues a datagram for `to`; it joins the current run when it can be
    /// sent in the same GSO batch, else the run goes out first (through
    /// `send`). A datagram shorter than the run's segment ends the run.
    pub(crate) fn push(
        &mut self,
        to: SocketAddr,
        payload: &[u8],
        send: &mut impl FnMut(&Transmit<'_>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if let Some((dest, seg, count)) = self.run {
            let joins =
                dest == to && payload.len() <= seg && count < self.gso_max && self.send.len().is_multiple_of(seg);
            if joins {
                self.send.extend_from_slice(payload);
                self.run = Some((dest, seg, count + 1));
                return Ok(());
            }
            self.flush(send)?;
        }
        self.send.clear();
        self.send.extend_from_slice(payload);
        self.run = Some((to, payload.len(), 1));
        Ok(())
    }

    /// Sends the current run, if any.
    pub(crate) fn flush(&mut self, send: &mut impl FnMut(&Transmit<'_>) -> std::io::Result<()>) -> std::io::Result<()> {
        let Some((dest, seg, count)) = self.run.take() else { return Ok(()) };
        let transmit = Transmit {
            destination: dest,
            ecn: None,
            contents: &self.send,
            segment_size: (count > 1).then_some(seg),
            src_ip: None,
        };
        let r = send(&transmit);
        self.send.clear();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_equal_datagrams_to_one_destination_batch() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = UdpSocketState::new((&socket).into()).expect("state");
        let mut b = Buffers::new(&state);
        b.gso_max = 4;
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let c: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let mut sent: Vec<(SocketAddr, usize, Option<usize>)> = Vec::new();
        let mut send = |t: &Transmit<'_>| {
            sent.push((t.destination, t.contents.len(), t.segment_size));
            Ok(())
        };
        for len in [100, 100, 100, 60, 100, 100] {
            b.push(a, &vec![0u8; len], &mut send).expect("push");
        }
        b.push(c, &[0u8; 100], &mut send).expect("push");
        for _ in 0..5 {
            b.push(c, &[0u8; 50], &mut send).expect("push");
        }
        b.flush(&mut send).expect("flush");
        assert_eq!(
            sent,
            vec![
                // Three equal datagrams and a shorter last one: one GSO send.
                (a, 360, Some(100)),
                (a, 200, Some(100)),
                // A shorter one after a full segment ends the run.
                (c, 150, Some(100)),
                (c, 200, Some(50)),
            ]
        );
    }
}
