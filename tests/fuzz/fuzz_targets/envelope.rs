//! A stored event as read back from the log (JetStream messages, SQLite
//! rows): the envelope, then its payload decoded and upcast to the current
//! event types.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = serde_json::from_slice::<arc_events::RawEvent>(data) {
        let _ = raw.decode();
    }
});
