//! What the forwarder needs to know of a codec: its clock and how to spot a
//! keyframe in one RTP payload (so a subscriber joining or switching sources
//! starts on a picture it can decode).
//!
//! Parsers only look; they never index past the end of a payload.

/// The codecs Arc negotiates (VP9 and AV1 pass through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Anything else: forwarded as is, never waited on for a keyframe.
    Other,
}

impl Codec {
    /// From an SDP MIME type such as `video/VP8` (case-insensitive).
    pub fn from_mime(mime: &str) -> Self {
        let sub = mime.rsplit('/').next().unwrap_or(mime);
        match sub.to_ascii_lowercase().as_str() {
            "opus" => Self::Opus,
            "vp8" => Self::Vp8,
            "vp9" => Self::Vp9,
            "h264" => Self::H264,
            "av1" => Self::Av1,
            _ => Self::Other,
        }
    }

    /// Whether it is a video codec whose keyframes the forwarder tracks.
    pub fn is_video(self) -> bool {
        matches!(self, Self::Vp8 | Self::Vp9 | Self::H264 | Self::Av1)
    }

    /// RTP clock rate.
    pub fn clock_rate(self) -> u32 {
        match self {
            Self::Opus => 48_000,
            Self::Vp8 | Self::Vp9 | Self::H264 | Self::Av1 => 90_000,
            Self::Other => 8_000,
        }
    }

    /// Whether `payload` starts a keyframe. For codecs without a parser this is
    /// always `true`, so nothing waits on them.
    pub fn is_keyframe_start(self, payload: &[u8]) -> bool {
        match self {
            Self::Vp8 => vp8_keyframe(payload),
            Self::Vp9 => vp9_keyframe(payload),
            Self::H264 => h264_keyframe(payload),
            Self::Av1 => av1_keyframe(payload),
            Self::Opus | Self::Other => true,
        }
    }
}

/// RFC 7741: payload descriptor, then (at a partition start) the VP8 frame
/// header whose first bit is 0 for a key frame.
fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: one or two bytes.
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/KEYIDX
        }
    }
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

/// RFC 9628 (draft-ietf-payload-vp9): flexible or not, a packet with P=0
/// (not inter-predicted) and B=1 (start of frame) starts a keyframe.
fn vp9_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter_predicted = b0 & 0x40 != 0;
    let begin = b0 & 0x08 != 0;
    !inter_predicted && begin
}

/// RFC 6184: an IDR slice (5) or an SPS (7), alone, in a STAP-A (24) or at
/// the start of an FU-A (28).
fn h264_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        5 | 7 => true,
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                let Some(&nal) = p.get(i + 2) else { return false };
                if matches!(nal & 0x1f, 5 | 7) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => p.get(1).is_some_and(|fu| fu & 0x80 != 0 && matches!(fu & 0x1f, 5 | 7)),
        _ => false,
    }
}

/// AV1 RTP payload: the aggregation header's N bit marks the first packet of
/// a new coded video sequence (a keyframe).
fn av1_keyframe(p: &[u8]) -> bool {
    p.first().is_some_and(|b| b & 0x08 != 0)
}

/// The level from an `ssrc-audio-level` header extension (RFC 6464), as
/// -dBov (0 loudest, 127 silence); `None` for a malformed element.
pub fn audio_level(ext: &[u8]) -> Option<u8> {
    ext.first().map(|b| b & 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types() {
        assert_eq!(Codec::from_mime("video/VP8"), Codec::Vp8);
        assert_eq!(Codec::from_mime("audio/opus"), Codec::Opus);
        assert_eq!(Codec::from_mime("video/h264"), Codec::H264);
        assert_eq!(Codec::from_mime("nonsense"), Codec::Other);
        assert!(Codec::Vp8.is_video() && !Codec::Opus.is_video());
    }

    #[test]
    fn vp8_keyframes() {
        // S=1, PID=0, no extensions, then a key frame header (bit 0 = 0).
        assert!(vp8_keyframe(&[0x10, 0x00, 0x9d]));
        // Same with an interframe.
        assert!(!vp8_keyframe(&[0x10, 0x01]));
        // Not a partition start.
        assert!(!vp8_keyframe(&[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id, then the key frame header.
        assert!(vp8_keyframe(&[0x90, 0x80, 0x81, 0x23, 0x00]));
        // Truncated in every place.
        for p in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x81, 0x23]] {
            assert!(!vp8_keyframe(p));
        }
    }

    #[test]
    fn h264_keyframes() {
        assert!(h264_keyframe(&[0x65]));
        assert!(h264_keyframe(&[0x67, 0x42]));
        assert!(!h264_keyframe(&[0x41]));
        // STAP-A holding an SPS.
        assert!(h264_keyframe(&[0x18, 0x00, 0x02, 0x67, 0x42]));
        // STAP-A with a lying size.
        assert!(!h264_keyframe(&[0x18, 0xff, 0xff, 0x41]));
        // FU-A start of an IDR, and its continuation.
        assert!(h264_keyframe(&[0x7c, 0x85]));
        assert!(!h264_keyframe(&[0x7c, 0x05]));
        assert!(!h264_keyframe(&[0x7c]));
        assert!(!h264_keyframe(&[]));
    }

    #[test]
    fn vp9_and_av1() {
        assert!(vp9_keyframe(&[0x08]));
        assert!(!vp9_keyframe(&[0x48]));
        assert!(av1_keyframe(&[0x08]));
        assert!(!av1_keyframe(&[0x00]));
        assert_eq!(audio_level(&[0x80 | 30]), Some(30));
        assert_eq!(audio_level(&[]), None);
    }
}
