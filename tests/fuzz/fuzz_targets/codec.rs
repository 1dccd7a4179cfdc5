//! Keyframe detection of every codec the forwarder knows, and the RFC 6464
//! audio level extension.
#![no_main]

use arc_media::forward::codec::{Codec, audio_level};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mime in ["video/VP8", "video/VP9", "video/H264", "video/AV1", "audio/opus", "video/unknown"] {
        let _ = Codec::from_mime(mime).is_keyframe_start(data);
    }
    let _ = audio_level(data);
});
