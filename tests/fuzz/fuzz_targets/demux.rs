//! The first look at every datagram on a media port: STUN, DTLS or RTP;
//! a STUN check's local ufrag; its MESSAGE-INTEGRITY; the DTLS hellos
//! a datagram carries.
#![no_main]

use arc_media::engine::demux;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = demux::classify(data);
    let _ = demux::stun_local_ufrag(data);
    let _ = demux::dtls_only_client_hellos(data);
    let _ = demux::dtls_has_server_hello(data);
    if let Ok(provider) = rtc::crypto::default_provider() {
        let _ = demux::stun_integrity_ok(data, "fuzzfuzzfuzzfuzzfuzzfuzz", provider.crypto());
    }
});
