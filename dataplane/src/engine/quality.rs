//! Connection quality: what receiver reports and incoming packets say about
//! loss, jitter and round-trip time, kept as fixed-bucket histograms (no
//! per-session labels, nothing allocated) for `/metrics`.

pub use arc_nodeproto::ConnectionQuality;

/// Upper bounds of the histogram buckets, in seconds (the last bucket, +Inf,
/// is implied): from 1 ms to 2.5 s, for jitter and round-trip times.
pub const BOUNDS_S: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Buckets of a histogram: one per bound, then +Inf.
pub const BUCKETS: usize = BOUNDS_S.len() + 1;

/// A histogram of durations with [`BOUNDS_S`]; copied out of the workers
/// and added up at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hist {
    /// Observations per bucket (not cumulative).
    pub counts: [u64; BUCKETS],
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Hist {
    /// Counts one duration, in seconds (negative or NaN counts as zero).
    pub fn observe(&mut self, seconds: f64) {
        let s = if seconds.is_finite() && seconds > 0.0 { seconds } else { 0.0 };
        let i = BOUNDS_S.iter().position(|b| s <= *b).unwrap_or(BUCKETS - 1);
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add((s * 1e6) as u64);
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds another worker's histogram to this one.
    pub fn add(&mut self, o: &Self) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
        self.sum_us = self.sum_us.saturating_add(o.sum_us);
    }
}

/// The longest round trip believed (a report block naming a sender report
/// from long ago, or a client clock gone wrong, says nothing useful).
const RTT_MAX_S: f64 = 10.0;

/// Round-trip time from a receiver report block (RFC 3550 §6.4.1): the
/// report's arrival time in NTP short format (the middle 32 bits of
/// `ntp_now`) minus the last sender report's time (`lsr`) minus the delay
/// since it was received (`dlsr`), both in 1/65536 s. `None` when the
/// client has not received a sender report yet (`lsr` zero) or the figure
/// is not believable.
pub fn round_trip(ntp_now: u64, lsr: u32, dlsr: u32) -> Option<f64> {
    if lsr == 0 {
        return None;
    }
    let now = (ntp_now >> 16) as u32;
    let units = now.wrapping_sub(lsr).wrapping_sub(dlsr);
    // A negative difference wraps to a huge one: refused below.
    let seconds = f64::from(units) / 65_536.0;
    (seconds <= RTT_MAX_S).then_some(seconds)
}

/// Packets newly lost according to a report's cumulative count (24 bits,
/// RFC 3550 §6.4.1), given the count the previous report gave; late packets
/// can make the count smaller, which adds nothing.
/// Loss up to which a connection is excellent (and round trips up to [`EXCELLENT_RTT_MAX_S`]).
pub const EXCELLENT_LOSS_MAX: f64 = 0.02;
pub const EXCELLENT_RTT_MAX_S: f64 = 0.3;
/// Loss up to which it is good (and round trips up to [`GOOD_RTT_MAX_S`]); beyond, poor.
pub const GOOD_LOSS_MAX: f64 = 0.08;
pub const GOOD_RTT_MAX_S: f64 = 0.6;

/// A connection's quality from its packet loss (0..=1, the worse direction)
/// and round trip (seconds, when measured).
pub fn score(loss: f64, rtt_s: Option<f64>) -> ConnectionQuality {
    let rtt = rtt_s.unwrap_or(0.0);
    if loss <= EXCELLENT_LOSS_MAX && rtt <= EXCELLENT_RTT_MAX_S {
        ConnectionQuality::Excellent
    } else if loss <= GOOD_LOSS_MAX && rtt <= GOOD_RTT_MAX_S {
        ConnectionQuality::Good
    } else {
        ConnectionQuality::Poor
    }
}

/// One observation window of a leg's link. Loss is counted before
/// retransmission repairs it (what the network did, which is what the
/// person feels as the link gets worse): upstream, sequence numbers missing
/// on arrival; downstream, sequence numbers the subscriber asked to be
/// resent, or the loss its receiver reports give if higher.
#[derive(Debug, Clone, Default)]
pub struct LinkWindow {
    /// Highest `fraction lost` (of 256) in the subscriber's receiver reports.
    pub down_fraction_lost: Option<u8>,
    /// Sequence numbers the subscriber NACKed.
    pub nacked: u64,
    pub rtt_s: Option<f64>,
    /// (missing on arrival, received) of the incoming tracks at the window's start.
    pub inbound_at_start: (u64, u64),
    /// Packets sent to the subscriber at the window's start.
    pub sent_at_start: u64,
}

pub fn newly_lost(previous: Option<u32>, total_lost: u32) -> u64 {
    match previous {
        Some(p) if total_lost > p => u64::from(total_lost - p),
        Some(_) => 0,
        // The first report of a stream: everything it counts is new.
        None => u64::from(total_lost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_is_scored_by_loss_and_round_trip() {
        assert_eq!(score(0.0, None), ConnectionQuality::Excellent);
        assert_eq!(score(0.02, Some(0.3)), ConnectionQuality::Excellent);
        assert_eq!(score(0.03, Some(0.05)), ConnectionQuality::Good);
        assert_eq!(score(0.0, Some(0.45)), ConnectionQuality::Good);
        assert_eq!(score(0.2, Some(0.01)), ConnectionQuality::Poor);
        assert_eq!(score(0.0, Some(1.2)), ConnectionQuality::Poor);
        assert!(ConnectionQuality::Poor > ConnectionQuality::Good, "worse is greater: the worst leg wins");
    }

    #[test]
    fn observations_land_in_their_buckets() {
        let mut h = Hist::default();
        h.observe(0.0005);
        h.observe(0.001);
        h.observe(0.03);
        h.observe(99.0);
        h.observe(f64::NAN);
        assert_eq!(h.counts[0], 3, "≤ 1 ms, NaN as zero");
        assert_eq!(h.counts[5], 1, "≤ 50 ms");
        assert_eq!(h.counts[BUCKETS - 1], 1, "+Inf");
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum_us, 500 + 1000 + 30_000 + 99_000_000);
        let mut sum = Hist::default();
        sum.add(&h);
        sum.add(&h);
        assert_eq!(sum.count(), 10);
    }

    #[test]
    fn round_trip_from_a_report_block() {
        // The sender report left at NTP short 0x0001_0000 (1 s); the client
        // held it 0.25 s; the report arrives at 1.5 s: 0.25 s round trip.
        let ntp_now = 0x0001_8000_u64 << 16;
        let rtt = round_trip(ntp_now, 0x0001_0000, 0x4000).expect("an rtt");
        assert!((rtt - 0.25).abs() < 1e-9, "{rtt}");
        assert_eq!(round_trip(ntp_now, 0, 0), None, "no sender report yet");
        // A report claiming more delay than time passed.
        assert_eq!(round_trip(ntp_now, 0x0001_0000, 0x0001_0000), None);
    }

    #[test]
    fn cumulative_loss_becomes_increments() {
        assert_eq!(newly_lost(None, 7), 7);
        assert_eq!(newly_lost(Some(7), 10), 3);
        assert_eq!(newly_lost(Some(10), 9), 0, "a late packet arrived after all");
    }
}
