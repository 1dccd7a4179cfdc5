//! What the forwarder needs to know of a codec: its clock and how to spot a
//! keyframe in one RTP payload (so a subscriber joining or switching sources
//! starts on a picture it can decode).
//!
//! Parsers only look; they never index past the end of a payload.

/// The codecs Arc negotiates (VP9 and AV1 pass through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    /// Opus with redundancy (RFC 2198 `audio/red`, as browsers send it:
    /// earlier frames repeated before the current one).
    Red,
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
            "red" => Self::Red,
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
            Self::Opus | Self::Red => 48_000,
            Self::Vp8 | Self::Vp9 | Self::H264 | Self::Av1 => 90_000,
            Self::Other => 8_000,
        }
    }

    /// The picture size a keyframe announces, from the packet that starts it
    /// (VP8's frame header, H.264's SPS); `None` for other packets and codecs.
    pub fn frame_size(self, payload: &[u8]) -> Option<(u16, u16)> {
        match self {
            Self::Vp8 => vp8_frame_size(payload),
            Self::H264 => h264_frame_size(payload),
            _ => None,
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
            Self::Opus | Self::Red | Self::Other => true,
        }
    }
}

/// RFC 7741: where the VP8 payload header starts, in a packet that starts
/// partition 0 of a frame (`None` otherwise, or when truncated).
fn vp8_header_at(p: &[u8]) -> Option<usize> {
    let &b0 = p.first()?;
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let &x = p.get(i)?;
        i += 1;
        if x & 0x80 != 0 {
            // PictureID: one or two bytes.
            let &pic = p.get(i)?;
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/KEYIDX
        }
    }
    Some(i)
}

/// The picture ID and TL0PICIDX of a VP8 payload descriptor (RFC 7741 §4.2)
/// and where they sit, for rewriting them per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Ids {
    /// The picture ID and its byte offset; `long`: 15 bits (M=1), else 7.
    pub picture_id: Option<(u16, usize, bool)>,
    /// TL0PICIDX and its byte offset.
    pub tl0: Option<(u8, usize)>,
}

/// Reads a VP8 payload descriptor's picture ID and TL0PICIDX (`None` for a
/// truncated one; both fields `None` when it carries neither).
pub fn vp8_ids(p: &[u8]) -> Option<Vp8Ids> {
    let &b0 = p.first()?;
    let mut ids = Vp8Ids { picture_id: None, tl0: None };
    if b0 & 0x80 == 0 {
        return Some(ids);
    }
    let &x = p.get(1)?;
    let mut i = 2;
    if x & 0x80 != 0 {
        let &hi = p.get(i)?;
        if hi & 0x80 != 0 {
            let &lo = p.get(i + 1)?;
            ids.picture_id = Some((u16::from(hi & 0x7f) << 8 | u16::from(lo), i, true));
            i += 2;
        } else {
            ids.picture_id = Some((u16::from(hi), i, false));
            i += 1;
        }
    }
    if x & 0x40 != 0 {
        ids.tl0 = Some((*p.get(i)?, i));
    }
    Some(ids)
}

/// RFC 7741: payload descriptor, then (at a partition start) the VP8 frame
/// header whose first bit is 0 for a key frame.
fn vp8_keyframe(p: &[u8]) -> bool {
    vp8_header_at(p).and_then(|i| p.get(i)).is_some_and(|h| h & 0x01 == 0)
}

/// RFC 6386 §9.1: a key frame's 3-byte tag, the start code `9d 01 2a`, then
/// 14-bit width and height (little-endian, the top two bits are scaling).
fn vp8_frame_size(p: &[u8]) -> Option<(u16, u16)> {
    let i = vp8_header_at(p)?;
    let h = p.get(i..i + 10)?;
    if h[0] & 0x01 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([h[6], h[7]]) & 0x3fff;
    let ht = u16::from_le_bytes([h[8], h[9]]) & 0x3fff;
    (w > 0 && ht > 0).then_some((w, ht))
}

/// The first SPS NAL unit of an H.264 payload (alone or in a STAP-A).
fn h264_sps(p: &[u8]) -> Option<&[u8]> {
    let &b0 = p.first()?;
    match b0 & 0x1f {
        7 => Some(p),
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
                let nal = p.get(i + 2..i + 2 + size)?;
                if nal.first().is_some_and(|n| n & 0x1f == 7) {
                    return Some(nal);
                }
                i += 2 + size;
            }
            None
        }
        _ => None,
    }
}

/// Reads an RBSP bit by bit (emulation-prevention bytes already removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u32> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(u32::from(b))
    }

    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut v = 0;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Exp-Golomb, unsigned (at most 31 leading zeros).
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some(((1u64 << zeros) - 1 + u64::from(self.bits(zeros)?)).min(u64::from(u32::MAX)) as u32)
    }

    fn se(&mut self) -> Option<()> {
        self.ue().map(|_| ())
    }
}

/// ITU-T H.264 §7.3.2.1.1: the picture size an SPS announces (after
/// cropping). `None` for an SPS it cannot read (scaling matrices, truncated).
fn h264_frame_size(p: &[u8]) -> Option<(u16, u16)> {
    let sps = h264_sps(p)?;
    // Without emulation-prevention bytes (00 00 03), at most 64 bytes: the
    // fields up to the cropping window sit well inside them.
    let mut rbsp = [0u8; 64];
    let mut n = 0;
    let mut zeros = 0;
    for &b in sps.get(1..)? {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        if n == rbsp.len() {
            break;
        }
        rbsp[n] = b;
        n += 1;
    }
    let mut r = Bits { data: &rbsp[..n], pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format = 1;
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format = r.ue()?;
        if chroma_format == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma
        r.ue()?; // bit_depth_chroma
        r.bit()?; // qpprime_y_zero_transform_bypass
        if r.bit()? == 1 {
            return None; // seq_scaling_matrix_present: not read here
        }
    }
    r.ue()?; // log2_max_frame_num
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb
        }
        1 => {
            r.bit()?;
            r.se()?;
            r.se()?;
            let cycle = r.ue()?;
            if cycle > 255 {
                return None;
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.bit()?;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field
    }
    r.bit()?; // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let (crop_x, crop_y) = match chroma_format {
        0 => (1, 2 - u64::from(frame_mbs_only)),
        1 => (2, 2 * (2 - u64::from(frame_mbs_only))),
        2 => (2, 2 - u64::from(frame_mbs_only)),
        _ => (1, 2 - u64::from(frame_mbs_only)),
    };
    let w = (width_mbs * 16).checked_sub(crop_x * (cl + cr))?;
    let h = (height_units * 16 * (2 - u64::from(frame_mbs_only))).checked_sub(crop_y * (ct + cb))?;
    let (w, h) = (u16::try_from(w).ok()?, u16::try_from(h).ok()?);
    (w > 0 && h > 0).then_some((w, h))
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

/// The primary (newest) block of an RFC 2198 redundant payload, as a
/// range of `payload`: after the block headers — 4 bytes for each
/// redundant block (F bit set, payload type, timestamp offset, 10-bit
/// length), 1 for the last (F bit clear, payload type) — and the redundant
/// blocks' data. `None` when the headers or lengths run past the end.
pub fn red_primary(payload: &[u8]) -> Option<std::ops::Range<usize>> {
    let mut at = 0usize;
    let mut redundant = 0usize;
    loop {
        let b = *payload.get(at)?;
        if b & 0x80 == 0 {
            at += 1;
            break;
        }
        let h = payload.get(at..at + 4)?;
        redundant += (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        at += 4;
    }
    let start = at.checked_add(redundant)?;
    (start <= payload.len()).then_some(start..payload.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_block_of_a_red_payload_follows_its_headers_and_redundant_blocks() {
        // One redundant block of 3 bytes (PT 111, offset 960), then the primary (PT 111).
        let p = [0x80 | 111, 0x0f, 0x00, 3, 111, 0xaa, 0xbb, 0xcc, 1, 2, 3, 4];
        assert_eq!(red_primary(&p), Some(8..12));
        assert_eq!(&p[red_primary(&p).expect("range")], &[1, 2, 3, 4]);
        // No redundancy: the primary follows its one-byte header.
        assert_eq!(red_primary(&[111, 9, 9]), Some(1..3));
        // A primary of nothing (DTX) is still a payload.
        assert_eq!(red_primary(&[111]), Some(1..1));
        // Two redundant blocks with 10-bit lengths (258 and 1 bytes).
        let mut two = vec![0x80 | 111, 0, 0x01, 0x02, 0x80 | 111, 0, 0, 1, 111];
        two.extend(std::iter::repeat_n(7u8, 259));
        two.extend([5, 6]);
        assert_eq!(red_primary(&two), Some(9 + 259..9 + 261));
        // Malformed: empty, headers cut short, lengths past the end.
        assert_eq!(red_primary(&[]), None);
        assert_eq!(red_primary(&[0x80 | 111, 0, 0]), None);
        assert_eq!(red_primary(&[0x80 | 111, 0, 0, 1]), None, "no final header");
        assert_eq!(red_primary(&[0x80 | 111, 0, 0, 9, 111, 1]), None, "a block longer than the payload");
        assert_eq!(Codec::from_mime("audio/red"), Codec::Red);
        assert_eq!(Codec::Red.clock_rate(), 48_000);
        assert!(!Codec::Red.is_video() && Codec::Red.is_keyframe_start(&[]));
    }

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
    fn frame_sizes_from_keyframes() {
        // VP8: descriptor with a 15-bit picture id, key frame tag, start code, 640x360.
        let key = [0x90, 0x80, 0x81, 0x23, 0x50, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01];
        assert_eq!(Codec::Vp8.frame_size(&key), Some((640, 360)));
        for n in 0..key.len() {
            assert_eq!(Codec::Vp8.frame_size(&key[..n]), None, "truncated at {n}");
        }
        let mut delta = key;
        delta[4] |= 1;
        assert_eq!(Codec::Vp8.frame_size(&delta), None, "an interframe has no size");
        // H.264: constrained-baseline SPSs from OpenH264 (GStreamer's openh264enc):
        // 640x360 (23 macroblocks high, cropped by 8) and 1280x720, alone and in a STAP-A.
        let sps720 = [0x67, 0x42, 0xc0, 0x1f, 0x8c, 0x8d, 0x40, 0x28, 0x02, 0xdd, 0x00, 0xf0, 0x88, 0x46, 0xa0];
        let sps360 = [0x67, 0x42, 0xc0, 0x1e, 0x8c, 0x8d, 0x40, 0x50, 0x17, 0xfc, 0xb0, 0x0f, 0x08, 0x84, 0x6a];
        assert_eq!(Codec::H264.frame_size(&sps360), Some((640, 360)));
        assert_eq!(Codec::H264.frame_size(&sps720), Some((1280, 720)));
        let mut stap = vec![0x18, 0x00, sps720.len() as u8];
        stap.extend_from_slice(&sps720);
        stap.extend_from_slice(&[0x00, 0x02, 0x68, 0xce]);
        assert_eq!(Codec::H264.frame_size(&stap), Some((1280, 720)));
        for n in 0..stap.len() {
            let _ = Codec::H264.frame_size(&stap[..n]); // never panics
        }
        assert_eq!(Codec::H264.frame_size(&[0x65, 0x88]), None);
        assert_eq!(Codec::Opus.frame_size(&key), None);
    }

    #[test]
    fn vp8_picture_ids_and_tl0() {
        let ids = vp8_ids(&[0x90, 0xc0, 0x81, 0x23, 0x07, 0x00]).expect("ids");
        assert_eq!(ids.picture_id, Some((0x0123, 2, true)));
        assert_eq!(ids.tl0, Some((7, 4)));
        let short = vp8_ids(&[0x90, 0x80, 0x05, 0x00]).expect("ids");
        assert_eq!(short.picture_id, Some((5, 2, false)));
        assert_eq!(vp8_ids(&[0x10, 0x00]), Some(Vp8Ids { picture_id: None, tl0: None }));
        for p in [&[][..], &[0x90], &[0x90, 0x80], &[0x90, 0x80, 0x81], &[0x90, 0xc0, 0x81, 0x23]] {
            assert_eq!(vp8_ids(p), None, "truncated: {p:?}");
        }
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
