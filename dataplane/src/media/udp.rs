//! Batched UDP I/O for the workers.
//!
//! Receive: `recvmmsg` with GRO through `quinn-udp` (GRO-coalesced buffers
//! are split at their stride).
//!
//! Send: the datagrams one engine pass produced wait in `pending` until the
//! pass ends; then they are ordered by destination (each destination keeps
//! its own order) and cut into runs. A run of equal-sized datagrams to one
//! destination (a video frame's packets to one subscriber) is one GSO send
//! (`UDP_SEGMENT`, through `quinn-udp`); the single datagrams, whatever their
//! destinations, leave up to [`SEND_BATCH`] at a time in one `sendmmsg` (a
//! packet forwarded to 25 subscribers is one system call, not 25), their
//! iovecs pointing into the engine's egress buffer: no copy. Where
//! `sendmmsg` is missing (not Linux, or a kernel or seccomp filter answering
//! `ENOSYS`) each datagram goes out alone. GSO and GRO are what `quinn-udp`
//! detects at start, with its fallbacks.
//!
//! Buffers are the worker's, reused for every batch: nothing here allocates
//! in steady state.

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use bytes::BytesMut;
use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};

/// Largest datagram taken from the network.
pub(crate) const DATAGRAM_MAX: usize = 1500;
/// Most messages in one `sendmmsg`.
pub(crate) const SEND_BATCH: usize = 64;
/// Shortest run of datagrams to one destination sent as one GSO send.
const GSO_RUN_MIN: usize = 2;
/// Most payload bytes in one GSO send (a UDP datagram's limit, less headers).
const GSO_BYTES_MAX: usize = 65_000;
/// Most datagrams held for one flush; a pass that makes more sends them in
/// several flushes.
pub(crate) const PENDING_MAX: usize = 8192;

/// A datagram waiting for the end of the engine's pass.
#[derive(Debug)]
struct Pending {
    to: SocketAddr,
    /// Its place in the pass: the tie-break that keeps each destination's order.
    order: u32,
    payload: BytesMut,
}

/// What the sends of one worker came to (for its statistics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendCounts {
    /// Datagrams handed to the kernel.
    pub(crate) datagrams: u64,
    /// System calls that carried them.
    pub(crate) calls: u64,
    /// Datagrams dropped: a full socket buffer (as a full queue would), or refused.
    pub(crate) dropped: u64,
}

/// One worker's receive buffers (one batch) and send staging.
pub(crate) struct Buffers {
    recv: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    pending: Vec<Pending>,
    next_order: u32,
    /// A GSO run, copied into one buffer for `quinn-udp`.
    gso: Vec<u8>,
    /// Whether `sendmmsg` works here (cleared at the first `ENOSYS`).
    mmsg: bool,
    /// Shortest run that goes out as one GSO send; shorter runs join the `sendmmsg` batch.
    gso_run_min: usize,
    pub(crate) counts: SendCounts,
}

impl std::fmt::Debug for Buffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffers")
            .field("batch", &self.recv.len())
            .field("pending", &self.pending.len())
            .field("mmsg", &self.mmsg)
            .field("counts", &self.counts)
            .finish()
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
            pending: Vec::with_capacity(1024),
            next_order: 0,
            gso: Vec::with_capacity(GSO_BYTES_MAX),
            mmsg: cfg!(target_os = "linux"),
            gso_run_min: GSO_RUN_MIN,
            counts: SendCounts::default(),
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
            let mut bufs = self.recv.iter_mut();
            let mut slices: [IoSliceMut<'_>; quinn_udp::BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(bufs.next().map_or(&mut [][..], |b| &mut b[..])));
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

    /// Queues a datagram for `to` until [`Self::flush`]; a full queue is sent first.
    pub(crate) fn push<S: AsFd>(&mut self, to: SocketAddr, payload: BytesMut, socket: &S, state: &UdpSocketState) {
        if self.pending.len() >= PENDING_MAX {
            self.flush(socket, state);
        }
        self.pending.push(Pending { to, order: self.next_order, payload });
        self.next_order = self.next_order.wrapping_add(1);
    }

    /// Sends every queued datagram on `socket`: GSO runs alone, single
    /// datagrams batched; then releases their buffers.
    pub(crate) fn flush<S: AsFd>(&mut self, socket: &S, state: &UdpSocketState) {
        if self.pending.is_empty() {
            return;
        }
        self.pending.sort_unstable_by_key(|p| (p.to, p.order));
        let gso_max = state.max_gso_segments().max(1);
        let mut batch = [0usize; SEND_BATCH];
        let mut queued = 0usize;
        let mut i = 0;
        while i < self.pending.len() {
            let end = run_end(&self.pending, i, gso_max);
            if end - i < self.gso_run_min.max(2) {
                for k in i..end {
                    batch[queued] = k;
                    queued += 1;
                    if queued == SEND_BATCH {
                        self.send_singles(socket, state, &batch[..queued]);
                        queued = 0;
                    }
                }
            } else {
                // Sorted by destination: only the last single queued can be
                // for this run's destination, and it must leave first.
                if queued > 0 && self.pending[batch[queued - 1]].to == self.pending[i].to {
                    self.send_singles(socket, state, &batch[..queued]);
                    queued = 0;
                }
                self.send_run(socket, state, i, end);
            }
            i = end;
        }
        if queued > 0 {
            self.send_singles(socket, state, &batch[..queued]);
        }
        self.pending.clear();
        self.next_order = 0;
    }

    /// One GSO send of `pending[start..end]` (equal segments, the last may be shorter).
    fn send_run<S: AsFd>(&mut self, socket: &S, state: &UdpSocketState, start: usize, end: usize) {
        let run = &self.pending[start..end];
        self.gso.clear();
        for p in run {
            self.gso.extend_from_slice(&p.payload);
        }
        let transmit = Transmit {
            destination: run[0].to,
            ecn: None,
            contents: &self.gso,
            segment_size: Some(run[0].payload.len()),
            src_ip: None,
        };
        let count = (end - start) as u64;
        self.counts.calls += 1;
        match state.send(UdpSockRef::from(socket), &transmit) {
            Ok(()) => self.counts.datagrams += count,
            Err(e) => {
                self.counts.dropped += count;
                tracing::trace!(to = %transmit.destination, error = %e, "media socket write (GSO)");
            }
        }
    }

    /// Sends `pending[i]` for every `i` in `which` (at most [`SEND_BATCH`]).
    fn send_singles<S: AsFd>(&mut self, socket: &S, state: &UdpSocketState, which: &[usize]) {
        #[cfg(target_os = "linux")]
        if self.mmsg {
            match mmsg::send(socket, &self.pending, which, &mut self.counts) {
                Ok(()) => return,
                // Sent up to `done`; the rest goes out one by one.
                Err(done) => {
                    self.mmsg = false;
                    tracing::info!("sendmmsg is not available here: media datagrams go out one per system call");
                    return self.send_each(socket, state, &which[done..]);
                }
            }
        }
        self.send_each(socket, state, which);
    }

    /// The fallback: one system call per datagram.
    fn send_each<S: AsFd>(&mut self, socket: &S, state: &UdpSocketState, which: &[usize]) {
        for &i in which {
            let p = &self.pending[i];
            let transmit =
                Transmit { destination: p.to, ecn: None, contents: &p.payload, segment_size: None, src_ip: None };
            self.counts.calls += 1;
            match state.send(UdpSockRef::from(socket), &transmit) {
                Ok(()) => self.counts.datagrams += 1,
                Err(e) => {
                    self.counts.dropped += 1;
                    tracing::trace!(to = %p.to, error = %e, "media socket write");
                }
            }
        }
    }
}

/// The end of the run that starts at `start`: the following datagrams to the
/// same destination while they fit one GSO send (at most `gso_max`, all of the
/// first one's size except the last, which may be shorter).
fn run_end(p: &[Pending], start: usize, gso_max: usize) -> usize {
    let dest = p[start].to;
    let seg = p[start].payload.len();
    let mut bytes = seg;
    let mut end = start + 1;
    while end < p.len() && end - start < gso_max {
        let len = p[end].payload.len();
        if p[end].to != dest || len > seg || bytes + len > GSO_BYTES_MAX || p[end - 1].payload.len() != seg {
            break;
        }
        bytes += len;
        end += 1;
    }
    end
}

#[cfg(target_os = "linux")]
mod mmsg {
    use super::*;
    use rustix::io::Errno;
    use rustix::net::addr::SocketAddrArg;
    use rustix::net::{MMsgHdr, SendAncillaryBuffer, SendFlags, SocketAddrAny};

    /// `sendmmsg` of `pending[i]` for `i` in `which`. A full socket buffer
    /// drops what is left (as UDP does); a datagram the kernel refuses is
    /// dropped alone. `Err(k)`: `sendmmsg` is missing; the first `k` went out.
    pub(super) fn send<S: AsFd>(
        socket: &S,
        pending: &[Pending],
        which: &[usize],
        counts: &mut SendCounts,
    ) -> Result<(), usize> {
        let n = which.len().min(SEND_BATCH);
        let mut iov = [IoSlice::new(&[]); SEND_BATCH];
        let mut addrs: [Option<SocketAddrAny>; SEND_BATCH] = [const { None }; SEND_BATCH];
        for (k, &i) in which.iter().take(n).enumerate() {
            iov[k] = IoSlice::new(&pending[i].payload);
            addrs[k] = Some(pending[i].to.as_any());
        }
        let mut controls: [SendAncillaryBuffer<'_, '_, '_>; SEND_BATCH] =
            std::array::from_fn(|_| SendAncillaryBuffer::default());
        let mut k = 0;
        let mut headers = controls.each_mut().map(|control| {
            let iov = std::slice::from_ref(&iov[k]);
            let header = match &addrs[k] {
                Some(addr) => MMsgHdr::new_with_addr(addr, iov, control),
                None => MMsgHdr::new(&[], control),
            };
            k += 1;
            header
        });
        let mut start = 0;
        while start < n {
            match rustix::net::sendmmsg(socket, &mut headers[start..n], SendFlags::empty()) {
                Ok(0) => {
                    counts.dropped += (n - start) as u64;
                    break;
                }
                Ok(sent) => {
                    counts.calls += 1;
                    counts.datagrams += sent as u64;
                    start += sent;
                }
                Err(Errno::INTR) => {}
                Err(Errno::NOSYS) => return Err(start),
                Err(e) if e == Errno::AGAIN || e == Errno::NOBUFS => {
                    counts.calls += 1;
                    counts.dropped += (n - start) as u64;
                    break;
                }
                Err(e) => {
                    // The first message of the call was refused (an address
                    // the kernel cannot reach, say): drop it, go on.
                    counts.calls += 1;
                    counts.dropped += 1;
                    tracing::trace!(to = %pending[which[start]].to, error = %e, "media socket write");
                    start += 1;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn datagram(tag: u8, n: u8, len: usize) -> BytesMut {
        let mut b = BytesMut::zeroed(len);
        b[0] = tag;
        b[1] = n;
        b
    }

    #[test]
    fn runs_are_equal_datagrams_to_one_destination() {
        let a: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let c: SocketAddr = "127.0.0.1:2".parse().expect("addr");
        let p: Vec<Pending> = [(a, 100), (a, 100), (a, 100), (a, 60), (a, 100), (c, 100), (c, 50), (c, 50)]
            .into_iter()
            .enumerate()
            .map(|(k, (to, len))| Pending { to, order: k as u32, payload: BytesMut::zeroed(len) })
            .collect();
        let mut runs = Vec::new();
        let mut i = 0;
        while i < p.len() {
            let end = run_end(&p, i, 64);
            runs.push(end - i);
            i = end;
        }
        // Three equal and a shorter last; then one alone (a shorter one ended
        // the run); to another destination: a new run, the shorter one ends it.
        assert_eq!(runs, vec![4, 1, 2, 1]);
        assert_eq!(run_end(&p, 0, 2), 2, "no more than the GSO segment limit");
    }

    /// Datagrams to several destinations, mixed sizes, pushed interleaved:
    /// every receiver gets its own, whole and in order, in fewer system calls
    /// than datagrams.
    #[test]
    fn a_flush_delivers_every_destinations_datagrams_in_order() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = UdpSocketState::new((&socket).into()).expect("state");
        let receivers: Vec<std::net::UdpSocket> =
            (0..20).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
        let mut b = Buffers::new(&state);
        let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); receivers.len()];
        // Three rounds of "one packet to every subscriber", then a burst of
        // equal packets to the first receiver (a GSO run) ending in a short one.
        for round in 0..3u8 {
            for (r, rx) in receivers.iter().enumerate() {
                // Growing sizes: no run forms, these leave through `sendmmsg`.
                let d = datagram(r as u8, round, 1000 + r + usize::from(round));
                expected[r].push(d.to_vec());
                b.push(rx.local_addr().expect("addr"), d, &socket, &state);
            }
        }
        for n in 3..8u8 {
            let d = datagram(0, n, if n == 7 { 200 } else { 1200 });
            expected[0].push(d.to_vec());
            b.push(receivers[0].local_addr().expect("addr"), d, &socket, &state);
        }
        b.flush(&socket, &state);
        let total: usize = expected.iter().map(Vec::len).sum();
        assert_eq!(b.counts.datagrams, total as u64, "{:?}", b.counts);
        assert_eq!(b.counts.dropped, 0);
        // 60 single datagrams in one or two `sendmmsg` (the first receiver's
        // singles leave before its run), the run in one GSO send.
        assert!(b.counts.calls <= 4, "batched: {:?}", b.counts);
        let mut buf = [0u8; 2048];
        for (r, rx) in receivers.iter().enumerate() {
            rx.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            for want in &expected[r] {
                let (n, from) = rx.recv_from(&mut buf).expect("a datagram");
                assert_eq!(from, socket.local_addr().expect("addr"));
                assert_eq!(&buf[..n], &want[..], "receiver {r}, datagram {}", want[1]);
            }
        }
        assert!(b.pending.is_empty());
    }

    /// Not a test: measures sending runs of `k` datagrams to each of 25
    /// destinations as GSO sends or in `sendmmsg` batches (run with
    /// `cargo test -p arc-media --release --lib gso_or_mmsg -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement"]
    fn gso_or_mmsg() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let state = UdpSocketState::new((&socket).into()).expect("state");
        let receivers: Vec<std::net::UdpSocket> =
            (0..25).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
        let addrs: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().expect("addr")).collect();
        for k in [1usize, 2, 3, 4, 8] {
            for (name, min, mmsg) in
                [("gso+mmsg", 2usize, true), ("mmsg", usize::MAX, true), ("one by one", usize::MAX, false)]
            {
                let mut b = Buffers::new(&state);
                b.gso_run_min = min;
                b.mmsg = mmsg;
                let rounds = 40_000 / k;
                let mut sending = std::time::Duration::ZERO;
                for _ in 0..rounds {
                    for _ in 0..k {
                        for a in &addrs {
                            b.push(*a, BytesMut::zeroed(1200), &socket, &state);
                        }
                    }
                    let started = std::time::Instant::now();
                    b.flush(&socket, &state);
                    sending += started.elapsed();
                    for r in &receivers {
                        r.set_nonblocking(true).expect("nb");
                        let mut buf = [0u8; 1500];
                        while r.recv(&mut buf).is_ok() {}
                    }
                }
                let per = sending.as_nanos() as f64 / (rounds * k * addrs.len()) as f64;
                println!("k={k} {name}: {per:.0} ns per datagram sent, {:?}", b.counts);
            }
        }
    }
}
