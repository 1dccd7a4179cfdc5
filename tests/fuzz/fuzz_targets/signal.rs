//! A signalling socket's client message (`/v1/rtc`, JSON text).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = arc_control::signal::protocol::parse_client(text);
    }
});
