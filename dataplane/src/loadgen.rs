//! The pure parts of the load generator (`arc-load`): what a synthetic media
//! packet carries so a receiver can tell loss, duplicates and added latency,
//! the receivers' bookkeeping, and a latency histogram. No I/O here.
//!
//! Every synthetic payload starts with a [`Stamp`]: a magic number, the
//! sending publisher, its own sequence number and the send time (µs on the
//! load tool's clock; sender and receivers share the process, so no clock
//! sync is needed). The node forwards payloads untouched (it rewrites only
//! headers), so the stamp survives forwarding.

use std::collections::HashMap;

/// Bytes a [`Stamp`] takes at the start of a payload.
pub const STAMP_LEN: usize = 20;
const MAGIC: [u8; 4] = *b"ARCL";

/// What a synthetic packet says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u32,
    /// Send time, µs since the tool started.
    pub sent_us: u64,
}

impl Stamp {
    /// Writes the stamp at the start of `payload` (which must hold [`STAMP_LEN`] bytes).
    pub fn write(&self, payload: &mut [u8]) -> bool {
        let Some(out) = payload.get_mut(..STAMP_LEN) else { return false };
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        out[8..12].copy_from_slice(&self.seq.to_be_bytes());
        out[12..20].copy_from_slice(&self.sent_us.to_be_bytes());
        true
    }

    /// Reads a stamp at `offset` in a payload; `None` for anything else.
    pub fn read(payload: &[u8], offset: usize) -> Option<Self> {
        let b = payload.get(offset..offset + STAMP_LEN)?;
        if b[..4] != MAGIC {
            return None;
        }
        Some(Self {
            publisher: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            seq: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            sent_us: u64::from_be_bytes([b[12], b[13], b[14], b[15], b[16], b[17], b[18], b[19]]),
        })
    }
}

/// A latency histogram: 1 µs resolution up to 1 ms, then ~1 % buckets up to
/// 100 s. Fixed size, no allocation after creation.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

const LINEAR_US: u64 = 1000;
const LOG_STEPS: usize = 1200;

impl Default for Histogram {
    fn default() -> Self {
        Self { buckets: vec![0; LINEAR_US as usize + LOG_STEPS], count: 0, max_us: 0 }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < LINEAR_US {
            return us as usize;
        }
        // ~1 % steps above 1 ms: bucket = 1000 + 100·ln(us/1000)/ln(1.01)·…
        let steps = ((us as f64 / LINEAR_US as f64).ln() / 1.01f64.ln()) as usize;
        LINEAR_US as usize + steps.min(LOG_STEPS - 1)
    }

    fn value(bucket: usize) -> u64 {
        if bucket < LINEAR_US as usize {
            return bucket as u64;
        }
        (LINEAR_US as f64 * 1.01f64.powi((bucket - LINEAR_US as usize) as i32)) as u64
    }

    pub fn record(&mut self, us: u64) {
        self.buckets[Self::bucket(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// The value at quantile `q` (0..=1), in µs.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let target = ((self.count as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::value(i).min(self.max_us);
            }
        }
        self.max_us
    }

    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }
}

/// Sequence numbers remembered per publisher to tell duplicates.
const DUP_WINDOW: u32 = 1024;

/// One receiver's view of one publisher.
#[derive(Debug, Clone)]
struct FromPublisher {
    first: u32,
    highest: u32,
    distinct: u64,
    duplicates: u64,
    /// Bit `seq % DUP_WINDOW` set: seen (for seqs within the window of `highest`).
    seen: [u64; (DUP_WINDOW / 64) as usize],
}

impl FromPublisher {
    fn new(seq: u32) -> Self {
        Self { first: seq, highest: seq, distinct: 0, duplicates: 0, seen: [0; (DUP_WINDOW / 64) as usize] }
    }

    fn bit(seq: u32) -> (usize, u64) {
        let i = seq % DUP_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    fn record(&mut self, seq: u32) {
        if seq > self.highest {
            if seq - self.highest >= DUP_WINDOW {
                self.seen = [0; (DUP_WINDOW / 64) as usize];
            } else {
                // Including `seq`'s own slot: it still marks `seq - DUP_WINDOW`.
                for s in self.highest + 1..=seq {
                    let (w, m) = Self::bit(s);
                    self.seen[w] &= !m;
                }
            }
            self.highest = seq;
        } else if self.highest - seq >= DUP_WINDOW {
            // Too old to tell: count it as new.
            self.distinct += 1;
            self.first = self.first.min(seq);
            return;
        }
        self.first = self.first.min(seq);
        let (w, m) = Self::bit(seq);
        if self.seen[w] & m != 0 {
            self.duplicates += 1;
        } else {
            self.seen[w] |= m;
            self.distinct += 1;
        }
    }
}

/// What one receiver saw of the publishers it heard.
#[derive(Debug, Default, Clone)]
pub struct Reception {
    from: HashMap<u32, FromPublisher>,
    pub latency: Histogram,
    pub packets: u64,
    pub bytes: u64,
}

/// Loss and duplicates over one or more receivers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Packets the span of sequence numbers seen says were sent (loss before
    /// a receiver's first packet, e.g. waiting for a keyframe, not counted).
    pub expected: u64,
    pub received: u64,
    pub duplicates: u64,
}

impl Totals {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }

    /// Loss in percent of what was expected.
    pub fn loss_percent(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { self.lost() as f64 * 100.0 / self.expected as f64 }
    }

    pub fn add(&mut self, o: Self) {
        self.expected += o.expected;
        self.received += o.received;
        self.duplicates += o.duplicates;
    }
}

impl Reception {
    /// Notes a packet received at `now_us` (µs on the tool's clock).
    pub fn record(&mut self, stamp: Stamp, len: usize, now_us: u64) {
        self.packets += 1;
        self.bytes += len as u64;
        self.latency.record(now_us.saturating_sub(stamp.sent_us));
        self.from.entry(stamp.publisher).or_insert_with(|| FromPublisher::new(stamp.seq)).record(stamp.seq);
    }

    pub fn totals(&self) -> Totals {
        self.from.values().fold(Totals::default(), |mut t, p| {
            t.add(Totals {
                expected: u64::from(p.highest - p.first) + 1,
                received: p.distinct,
                duplicates: p.duplicates,
            });
            t
        })
    }
}

/// CPU time (user + system) of a process in µs, from `/proc/<pid>/stat`.
pub fn process_cpu_us(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after ") ".
    let rest = text.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux (USER_HZ).
    Some((utime + stime) * 10_000)
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_refuse_other_payloads() {
        let s = Stamp { publisher: 7, seq: 123_456, sent_us: 9_876_543_210 };
        let mut buf = vec![0u8; 100];
        assert!(s.write(&mut buf));
        assert_eq!(Stamp::read(&buf, 0), Some(s));
        assert_eq!(Stamp::read(&buf, 1), None);
        assert_eq!(Stamp::read(&buf[..10], 0), None);
        assert!(!s.write(&mut [0u8; 5]));
        assert_eq!(Stamp::read(&[0xff; 40], 0), None);
    }

    #[test]
    fn quantiles_come_out_of_the_histogram() {
        let mut h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(us);
        }
        assert_eq!(h.quantile_us(0.5), 500);
        assert_eq!(h.quantile_us(0.99), 990);
        h.record(50_000);
        let p = h.quantile_us(1.0);
        assert!((49_000..=50_000).contains(&p), "{p}");
        assert_eq!(h.max_us(), 50_000);
        assert_eq!(Histogram::default().quantile_us(0.5), 0);
        h.record(u64::MAX / 2);
    }

    #[test]
    fn loss_and_duplicates_are_counted_from_the_span_seen() {
        let mut r = Reception::default();
        for seq in [10, 11, 13, 14, 11, 9, 3000] {
            r.record(Stamp { publisher: 1, seq, sent_us: 0 }, 100, 5);
        }
        r.record(Stamp { publisher: 2, seq: 1, sent_us: 0 }, 100, 5);
        let t = r.totals();
        assert_eq!(t, Totals { expected: 2992 + 1, received: 7, duplicates: 1 });
        assert_eq!(r.packets, 8);
        assert_eq!(r.latency.quantile_us(0.5), 5);
        let mut sum = Totals::default();
        sum.add(t);
        sum.add(t);
        assert_eq!(sum.expected, 2 * 2993);
        assert!(Totals { expected: 100, received: 99, duplicates: 0 }.loss_percent() > 0.99);
    }

    #[test]
    fn a_long_run_in_order_has_no_loss_and_no_duplicates() {
        // Past the duplicate window many times over (a bug counted every
        // packet after the first window as a duplicate: 25 % "loss").
        let mut r = Reception::default();
        for seq in 0..10 * DUP_WINDOW {
            r.record(Stamp { publisher: 1, seq, sent_us: 0 }, 100, 5);
        }
        r.record(Stamp { publisher: 1, seq: 10 * DUP_WINDOW - 1, sent_us: 0 }, 100, 5);
        let expected = u64::from(10 * DUP_WINDOW);
        assert_eq!(r.totals(), Totals { expected, received: expected, duplicates: 1 });
    }

    #[test]
    fn this_process_has_a_cpu_time_and_rss() {
        let pid = std::process::id();
        assert!(process_cpu_us(pid).is_some());
        assert!(process_rss_kib(pid).is_some_and(|k| k > 0));
        assert_eq!(process_cpu_us(u32::MAX), None);
    }
}
