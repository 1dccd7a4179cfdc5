//! Reading an SDP offer (WHIP/WHEP bodies, signalling publish/subscribe).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sdp) = std::str::from_utf8(data) {
        let _ = arc_media::engine::offer::plan(sdp);
    }
});
