//! Voice activity of one audio track, from the levels its packets carry
//! (RFC 6464: -dBov, 0 loudest, 127 silence). Over each observation
//! interval the track counts packets and those at least as loud as
//! [`ACTIVE_LEVEL_MAX`]; it spoke in that interval when at least
//! [`ACTIVE_SHARE_MIN_PERCENT`] of its packets were that loud (one cough or
//! a click is not speech; Opus DTX sends a few silent packets). A few
//! integer operations per packet, nothing allocated.

/// The quietest level (-dBov) that counts as voice: room noise on a real
/// microphone sits around -60 dBov and below, speech around -20 to -40.
pub const ACTIVE_LEVEL_MAX: u8 = 50;
/// The share of an interval's packets that must be voice for the track to
/// be speaking in it.
pub const ACTIVE_SHARE_MIN_PERCENT: u32 = 30;

/// One interval's counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Speech {
    packets: u32,
    active: u32,
    /// Sum over voice packets of (127 - level): louder is more.
    loudness: u32,
}

impl Speech {
    /// One packet's level.
    pub fn on_level(&mut self, level: u8) {
        let level = level.min(127);
        self.packets = self.packets.saturating_add(1);
        if level <= ACTIVE_LEVEL_MAX {
            self.active = self.active.saturating_add(1);
            self.loudness = self.loudness.saturating_add(u32::from(127 - level));
        }
    }

    /// Ends the interval and starts the next: the track's mean loudness
    /// while speaking, 0 (silence) to 1 (0 dBov), if it spoke.
    pub fn take(&mut self) -> Option<f32> {
        let s = std::mem::take(self);
        if s.active == 0 || u64::from(s.active) * 100 < u64::from(s.packets) * u64::from(ACTIVE_SHARE_MIN_PERCENT) {
            return None;
        }
        Some(s.loudness as f32 / s.active as f32 / 127.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_is_a_share_of_loud_packets_in_an_interval() {
        let mut s = Speech::default();
        assert_eq!(s.take(), None, "nothing heard");
        // Silence and room noise.
        for _ in 0..25 {
            s.on_level(127);
            s.on_level(65);
        }
        assert_eq!(s.take(), None);
        // Talking at -30 dBov, with pauses between words.
        for i in 0..25 {
            s.on_level(if i % 3 == 0 { 90 } else { 30 });
        }
        let loud = s.take().expect("speaking");
        assert!((loud - 97.0 / 127.0).abs() < 1e-6, "{loud}");
        assert_eq!(s.take(), None, "each interval starts afresh");
        // One click in a second of silence is not speech.
        s.on_level(5);
        for _ in 0..24 {
            s.on_level(127);
        }
        assert_eq!(s.take(), None);
        // Louder is more; out-of-range levels are silence's edge, never a panic.
        s.on_level(0);
        let a = s.take().expect("loud");
        s.on_level(40);
        let b = s.take().expect("softer");
        assert!(a > b);
        s.on_level(255);
        assert_eq!(s.take(), None);
    }
}
