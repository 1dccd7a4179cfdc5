//! Keyframe detection of every codec the forwarder knows, the picture size
//! a keyframe announces (VP8 frame header, H.264 SPS), VP8 descriptor ids,
//! the RFC 6464 audio level extension, and the primary block of an RFC 2198
//! redundant (`audio/red`) payload.
#![no_main]

use arc_media::forward::codec::{Codec, audio_level, red_primary, vp8_ids};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mime in ["video/VP8", "video/VP9", "video/H264", "video/AV1", "audio/opus", "audio/red", "video/unknown"] {
        let codec = Codec::from_mime(mime);
        let _ = codec.is_keyframe_start(data);
        let _ = codec.frame_size(data);
    }
    if let Some(ids) = vp8_ids(data) {
        // What it found is inside the payload.
        if let Some((_, at, long)) = ids.picture_id {
            assert!(at + usize::from(long) < data.len());
        }
        if let Some((_, at)) = ids.tl0 {
            assert!(at < data.len());
        }
    }
    let _ = audio_level(data);
    if let Some(r) = red_primary(data) {
        // The primary block lies inside the payload.
        assert!(r.start <= r.end && r.end == data.len());
    }
});
