//! Reception statistics of one incoming stream (RFC 3550 appendix A.1, A.3
//! and A.8): packets expected from the sequence numbers, packets received,
//! hence packets lost, and the interarrival jitter. A few integer operations
//! per packet; no allocation.

use std::time::Instant;

/// A jump forward of at least this many sequence numbers is a restarted
/// sender, not loss (RFC 3550's `MAX_DROPOUT`).
const MAX_DROPOUT: u16 = 3000;
/// A step back of at most this many is a late (reordered or duplicated)
/// packet; further back is a restarted sender (`MAX_MISORDER`).
const MAX_MISORDER: u16 = 100;

/// What one incoming stream's packets say about the path it came over.
#[derive(Debug, Clone, Default)]
pub struct Reception {
    /// When the first packet arrived: the origin of arrival times.
    epoch: Option<Instant>,
    /// Highest sequence number seen, extended with its wraps.
    max_ext: u64,
    /// First extended sequence number of the current run.
    base_ext: u64,
    /// Packets received in the current run (duplicates included, as RFC 3550 counts them).
    received: u64,
    /// Losses of earlier runs (before the sender restarted its numbering).
    lost_before: u64,
    /// Relative transit time of the previous packet (arrival minus RTP
    /// timestamp, in clock units, modulo 2³²).
    transit: Option<u32>,
    /// Interarrival jitter in clock units, times 16 (RFC 3550 A.8).
    jitter_x16: u64,
    /// Every packet that arrived, all runs.
    received_total: u64,
    /// Sequence numbers skipped when a packet arrived after a gap: loss as
    /// the network caused it, before any retransmission filled it.
    gaps: u64,
}

impl Reception {
    /// One packet: its sequence number, RTP timestamp, arrival time and the
    /// codec's clock rate.
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, now: Instant, clock_rate: u32) {
        let epoch = *self.epoch.get_or_insert(now);
        self.received_total += 1;
        let Some(max) = (self.received > 0).then_some(self.max_ext) else {
            self.max_ext = u64::from(seq);
            self.base_ext = self.max_ext;
            self.received = 1;
            self.transit = Some(Self::arrival(epoch, now, clock_rate).wrapping_sub(timestamp));
            return;
        };
        let delta = seq.wrapping_sub(max as u16);
        if delta == 0 || delta >= u16::MAX - MAX_MISORDER {
            // A duplicate or a late packet: counted, the highest stays.
            self.received += 1;
        } else if delta < MAX_DROPOUT {
            // In order, perhaps after a gap (the gap is the loss).
            self.gaps += u64::from(delta - 1);
            self.max_ext = max + u64::from(delta);
            self.received += 1;
        } else {
            // A restarted sender: what was lost so far stays counted.
            self.lost_before += self.lost_in_run();
            self.max_ext = (max & !0xffff) + 0x1_0000 + u64::from(seq);
            self.base_ext = self.max_ext;
            self.received = 1;
            self.transit = None;
        }
        let transit = Self::arrival(epoch, now, clock_rate).wrapping_sub(timestamp);
        if let Some(prev) = self.transit.replace(transit) {
            let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
            // J += (|D| - J) / 16, in sixteenths.
            self.jitter_x16 = self.jitter_x16 + d - ((self.jitter_x16 + 8) >> 4);
        }
    }

    /// Arrival time in clock units since `epoch`, modulo 2³².
    fn arrival(epoch: Instant, now: Instant, clock_rate: u32) -> u32 {
        let micros = now.saturating_duration_since(epoch).as_micros();
        (micros * u128::from(clock_rate) / 1_000_000) as u32
    }

    fn lost_in_run(&self) -> u64 {
        let expected = self.max_ext - self.base_ext + 1;
        expected.saturating_sub(self.received)
    }

    /// Packets lost so far (expected minus received; late packets that
    /// arrive after all make it smaller again, never below zero).
    pub fn lost(&self) -> u64 {
        if self.received == 0 { self.lost_before } else { self.lost_before + self.lost_in_run() }
    }

    /// Sequence numbers found missing on arrival (repaired later or not).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// Every packet that arrived (duplicates and late ones too).
    pub fn received_total(&self) -> u64 {
        self.received_total
    }

    /// Interarrival jitter, in clock units.
    pub fn jitter(&self) -> u32 {
        u32::try_from(self.jitter_x16 >> 4).unwrap_or(u32::MAX)
    }

    /// Whether any packet arrived.
    pub fn started(&self) -> bool {
        self.epoch.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CLOCK: u32 = 90_000;

    /// Packets `seqs`, one every 20 ms, timestamps advancing 1,800 (20 ms at 90 kHz).
    fn run(seqs: &[u16]) -> Reception {
        let t0 = Instant::now();
        let mut r = Reception::default();
        for (i, &s) in seqs.iter().enumerate() {
            let at = t0 + Duration::from_millis(20 * i as u64);
            r.on_packet(s, u32::from(s).wrapping_mul(1800), at, CLOCK);
        }
        r
    }

    #[test]
    fn a_gap_is_loss_and_a_late_packet_fills_it() {
        assert_eq!(run(&[1, 2, 3, 4]).lost(), 0);
        assert_eq!(run(&[1, 2, 5, 6]).lost(), 2);
        // 3 arrives late: only 4 is missing.
        assert_eq!(run(&[1, 2, 5, 3, 6]).lost(), 1);
        // Found missing on arrival: both, repaired or not; every arrival counts.
        let r = run(&[1, 2, 5, 3, 6]);
        assert_eq!((r.gaps(), r.received_total()), (2, 5));
    }

    #[test]
    fn sequence_numbers_wrap_without_loss() {
        let r = run(&[65_533, 65_534, 65_535, 0, 1, 2]);
        assert_eq!(r.lost(), 0);
        let r = run(&[65_534, 65_535, 1, 2]);
        assert_eq!(r.lost(), 1);
    }

    #[test]
    fn a_restarted_sender_keeps_earlier_losses_and_adds_none() {
        // Lost 3 before the restart; the new numbering starts far away.
        let r = run(&[10, 11, 15, 40_000, 40_001, 40_002]);
        assert_eq!(r.lost(), 3);
    }

    #[test]
    fn steady_pacing_has_no_jitter_and_uneven_arrivals_do() {
        assert_eq!(run(&[1, 2, 3, 4, 5, 6, 7, 8]).jitter(), 0);
        let t0 = Instant::now();
        let mut r = Reception::default();
        for i in 0..200u32 {
            // Every other packet 10 ms late.
            let late = if i % 2 == 1 { 10 } else { 0 };
            let at = t0 + Duration::from_millis(u64::from(20 * i + late));
            r.on_packet(i as u16, i * 1800, at, CLOCK);
        }
        // |D| is 10 ms = 900 units every packet: J converges to 900.
        let j = r.jitter();
        assert!((850..=900).contains(&j), "jitter {j}");
    }

    #[test]
    fn duplicates_do_not_count_as_loss() {
        assert_eq!(run(&[1, 2, 2, 3, 4]).lost(), 0);
    }
}
