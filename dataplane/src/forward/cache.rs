//! The retransmission cache of one publisher track: the last packets, by
//! sequence number, for as long as a NACK can still usefully ask for them.
//!
//! It is sized by time, not by packet count: what a track sent in the last
//! `history` must be there, whatever its bitrate. Payloads are copied into
//! one byte ring (the publisher's buffer is released as soon as the packet
//! is forwarded); the ring starts small and grows by half, up to `max_bytes`,
//! when at the rate of the last lap around it it holds less than `history`.
//! A 1.5 Mbit/s camera settles at 108 KiB with the default half second, where keeping 1,024 packets'
//! buffers cost ≈ 1.4 MiB per track.
//!
//! Positions are absolute byte counts (`u64`, never wrapping); a stored
//! packet is intact while the writer has not come a whole ring round since
//! it, and it is not older than the last growth's copied window (`floor`).
//! A packet never straddles the end of the ring: when it would, the writer
//! skips to the next lap (that is also when growth is decided).

use std::time::{Duration, Instant};

/// What a retransmission needs of a cached packet: exactly the fields the
/// first send used, so the resent bytes are identical (an SRTP sender must
/// never protect two different packets under one sequence number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cached<'a> {
    pub marker: bool,
    pub timestamp: u32,
    /// The audio level the first send carried, if any.
    pub level: Option<u8>,
    /// CSRCs, 4 bytes each, big-endian.
    pub csrc: &'a [u8],
    pub payload: &'a [u8],
    /// It came as RFC 2198 redundant audio (`audio/red`).
    pub red: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    start: u64,
    timestamp: u32,
    seq: u16,
    /// Payload length (the CSRCs come first, `4 × csrc` bytes).
    len: u16,
    csrc: u8,
    level: u8,
    /// Bit 0: present; bit 1: marker; bit 2: has a level; bit 3: RED.
    flags: u8,
}

const PRESENT: u8 = 1;
const MARKER: u8 = 2;
const LEVEL: u8 = 4;
const RED: u8 = 8;

/// How a track's cache is sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Index entries (rounded up to a power of two; 0: no cache).
    pub packets: usize,
    /// How far back a NACK must still be answerable.
    pub history: Duration,
    /// Ring size to start with.
    pub min_bytes: usize,
    /// Ring size it never grows past.
    pub max_bytes: usize,
}

impl CacheConfig {
    /// No cache at all.
    pub const NONE: Self = Self { packets: 0, history: Duration::ZERO, min_bytes: 0, max_bytes: 0 };
}

#[derive(Debug)]
pub(crate) struct PacketCache {
    slots: Vec<Slot>,
    mask: usize,
    ring: Vec<u8>,
    /// Absolute position of the next write.
    head: u64,
    /// Positions below this were not carried over by the last growth.
    floor: u64,
    /// When, and at which position, the writer last crossed into a new lap.
    lap_at: Option<(Instant, u64)>,
    history: Duration,
    max_bytes: usize,
}

impl PacketCache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        let packets = if config.packets == 0 { 0 } else { config.packets.next_power_of_two() };
        let bytes = if packets == 0 { 0 } else { config.min_bytes.clamp(2048, config.max_bytes.max(2048)) };
        Self {
            slots: vec![Slot::default(); packets],
            mask: packets.saturating_sub(1),
            ring: vec![0; bytes],
            head: 0,
            floor: 0,
            lap_at: None,
            history: config.history,
            max_bytes: config.max_bytes.max(bytes),
        }
    }

    /// Heap bytes held (ring and index).
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ring.len() + self.slots.len() * std::mem::size_of::<Slot>()
    }

    /// Keeps a packet. Never allocates, but when the ring grows.
    pub(crate) fn put(&mut self, now: Instant, seq: u16, cached: Cached<'_>) {
        if self.slots.is_empty() {
            return;
        }
        let csrc = cached.csrc.len().min(15 * 4) & !3;
        let need = csrc + cached.payload.len();
        let Ok(len) = u16::try_from(cached.payload.len()) else { return };
        if need > self.ring.len() / 2 {
            // Not a packet a NACK cache should hold.
            return;
        }
        if self.lap_at.is_none() {
            self.lap_at = Some((now, self.head));
        }
        let cap = self.ring.len() as u64;
        let at = (self.head % cap) as usize;
        if at + need > self.ring.len() {
            self.head += cap - at as u64;
            self.new_lap(now);
        } else if at == 0 && self.head > 0 {
            self.new_lap(now);
        }
        // A growth moved the ring's end: skip again if the packet would now
        // straddle it (no second lap decision: one was just made).
        let cap = self.ring.len() as u64;
        let mut at = (self.head % cap) as usize;
        if at + need > self.ring.len() {
            self.head += cap - at as u64;
            at = 0;
        }
        let start = self.head;
        self.ring[at..at + csrc].copy_from_slice(&cached.csrc[..csrc]);
        self.ring[at + csrc..at + need].copy_from_slice(cached.payload);
        self.head += need as u64;
        let mut flags = PRESENT;
        if cached.marker {
            flags |= MARKER;
        }
        if cached.level.is_some() {
            flags |= LEVEL;
        }
        if cached.red {
            flags |= RED;
        }
        self.slots[usize::from(seq) & self.mask] = Slot {
            start,
            timestamp: cached.timestamp,
            seq,
            len,
            csrc: (csrc / 4) as u8,
            level: cached.level.unwrap_or(0),
            flags,
        };
    }

    /// The packet with this sequence number, if it is still whole.
    pub(crate) fn get(&self, seq: u16) -> Option<Cached<'_>> {
        let slot = self.slots.get(usize::from(seq) & self.mask)?;
        if slot.flags & PRESENT == 0 || slot.seq != seq {
            return None;
        }
        let cap = self.ring.len() as u64;
        let need = usize::from(slot.csrc) * 4 + usize::from(slot.len);
        // Overwritten since, or left behind by a growth.
        if slot.start < self.floor || self.head > slot.start + cap {
            return None;
        }
        let at = (slot.start % cap) as usize;
        let bytes = self.ring.get(at..at + need)?;
        let (csrc, payload) = bytes.split_at(usize::from(slot.csrc) * 4);
        Some(Cached {
            marker: slot.flags & MARKER != 0,
            timestamp: slot.timestamp,
            level: (slot.flags & LEVEL != 0).then_some(slot.level),
            csrc,
            payload,
            red: slot.flags & RED != 0,
        })
    }

    /// The writer starts a lap: when, at the rate of the last lap, the ring
    /// holds less than `history`, it grows by half (what the last lap wrote
    /// is carried over; by half, not double, to waste less past the need).
    fn new_lap(&mut self, now: Instant) {
        let Some((at, from)) = self.lap_at.replace((now, self.head)) else { return };
        let elapsed = now.saturating_duration_since(at).as_nanos();
        let written = u128::from(self.head - from);
        // cap < rate × history  ⇔  cap × elapsed < written × history
        let short = (self.ring.len() as u128) * elapsed < written * self.history.as_nanos();
        let old_cap = self.ring.len() as u64;
        let new_cap = old_cap + old_cap / 2;
        if !short || new_cap > self.max_bytes as u64 {
            return;
        }
        let mut grown = vec![0u8; new_cap as usize];
        let from = self.head.saturating_sub(old_cap).max(self.floor);
        let mut p = from;
        while p < self.head {
            let (o, n) = ((p % old_cap) as usize, (p % new_cap) as usize);
            let run = ((old_cap as usize - o).min(new_cap as usize - n) as u64).min(self.head - p) as usize;
            grown[n..n + run].copy_from_slice(&self.ring[o..o + run]);
            p += run as u64;
        }
        self.ring = grown;
        self.floor = from;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(history_ms: u64, min: usize, max: usize) -> CacheConfig {
        CacheConfig { packets: 1024, history: Duration::from_millis(history_ms), min_bytes: min, max_bytes: max }
    }

    fn payload(seq: u16, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize + i) as u8).collect()
    }

    fn put(c: &mut PacketCache, now: Instant, seq: u16, len: usize) {
        let p = payload(seq, len);
        c.put(
            now,
            seq,
            Cached {
                marker: seq.is_multiple_of(3),
                timestamp: u32::from(seq) * 90,
                level: None,
                csrc: &[],
                payload: &p,
                red: false,
            },
        );
    }

    fn intact(c: &PacketCache, seq: u16, len: usize) -> bool {
        c.get(seq).is_some_and(|p| p.payload == payload(seq, len).as_slice() && p.marker == (seq.is_multiple_of(3)))
    }

    #[test]
    fn keeps_what_fits_and_forgets_what_was_overwritten() {
        let t0 = Instant::now();
        // Never grows (history zero): a fixed 8 KiB ring holds six 1,200-byte packets.
        let mut c = PacketCache::new(config(0, 8192, 8192));
        for seq in 0..20u16 {
            put(&mut c, t0, seq, 1200);
        }
        let kept: Vec<u16> = (0..20).filter(|s| intact(&c, *s, 1200)).collect();
        assert_eq!(kept, (14..20).collect::<Vec<_>>());
        assert!(c.get(20).is_none(), "never stored");
    }

    #[test]
    fn grows_until_a_lap_lasts_the_history_and_carries_the_packets_over() {
        let t0 = Instant::now();
        let mut c = PacketCache::new(config(500, 32 * 1024, 1 << 20));
        // 150 packets/s of 1,200 bytes: 180 kB/s, 90 kB per half second.
        let mut seq = 0u16;
        for i in 0..1500u64 {
            put(&mut c, t0 + Duration::from_micros(i * 6_667), seq, 1200);
            // Every packet of the last half second is answerable, once the ring has grown.
            if i > 300 {
                for back in 0..70u16 {
                    assert!(intact(&c, seq.wrapping_sub(back), 1200), "packet {back} back at {i}");
                }
            }
            seq = seq.wrapping_add(1);
        }
        // 32, 48, 72, then 108 KiB: the first size that holds half a second.
        assert_eq!(c.ring.len(), 108 * 1024, "settles at the first size that holds half a second");
    }

    #[test]
    fn never_grows_past_its_cap_and_survives_sequence_wraps_and_odd_sizes() {
        let t0 = Instant::now();
        let mut c = PacketCache::new(config(10_000, 4096, 64 * 1024));
        let mut seq = 65_000u16;
        for i in 0..5000usize {
            let len = 1 + (i * 37) % 1400;
            put(&mut c, t0, seq, len);
            assert!(intact(&c, seq, len));
            seq = seq.wrapping_add(1);
        }
        assert!(c.ring.len() <= 64 * 1024 && c.ring.len() > 40 * 1024, "{}", c.ring.len());
        // Whatever it still answers is the right packet.
        for back in 0..1024u16 {
            let s = seq.wrapping_sub(back + 1);
            let i = 4999 - back as usize;
            if let Some(p) = c.get(s) {
                assert_eq!(p.payload, payload(s, 1 + (i * 37) % 1400).as_slice());
            }
        }
    }

    #[test]
    fn csrcs_and_levels_come_back_as_they_went_in() {
        let t0 = Instant::now();
        let mut c = PacketCache::new(config(500, 4096, 4096));
        let csrc = [0, 0, 0, 7, 0, 0, 1, 0];
        c.put(
            t0,
            9,
            Cached { marker: true, timestamp: 77, level: Some(30), csrc: &csrc, payload: &[1, 2, 3], red: true },
        );
        let got = c.get(9).expect("cached");
        assert_eq!(
            got,
            Cached { marker: true, timestamp: 77, level: Some(30), csrc: &csrc, payload: &[1, 2, 3], red: true }
        );
        assert!(c.get(9 + 1024).is_none(), "same slot, other sequence number");
    }

    #[test]
    fn no_cache_keeps_nothing() {
        let mut c = PacketCache::new(CacheConfig::NONE);
        put(&mut c, Instant::now(), 1, 100);
        assert!(c.get(1).is_none());
        assert_eq!(c.heap_bytes(), 0);
    }

    #[test]
    fn a_packet_too_big_for_the_ring_is_not_kept_and_breaks_nothing() {
        let t0 = Instant::now();
        let mut c = PacketCache::new(config(0, 2048, 2048));
        put(&mut c, t0, 1, 500);
        put(&mut c, t0, 2, 1500);
        assert!(c.get(2).is_none());
        assert!(intact(&c, 1, 500));
    }
}
