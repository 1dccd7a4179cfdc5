//! The first look at every datagram on a media port: STUN, DTLS or RTP;
//! a STUN check's local ufrag; its MESSAGE-INTEGRITY.
#![no_main]

use arc_media::engine::demux;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = demux::classify(data);
    let _ = demux::stun_local_ufrag(data);
    if let Ok(provider) = rtc::crypto::default_provider() {
        let _ = demux::stun_integrity_ok(data, "fuzzfuzzfuzzfuzzfuzzfuzz", provider.crypto());
    }
});
