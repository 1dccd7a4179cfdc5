//! A receiver's check of Arc's webhook signature headers (what
//! `arc_auth::webhook::verify` gives app developers): timestamp and
//! signature header, any body.
#![no_main]

use arc_auth::secret::AppSecret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let secret = AppSecret::from_string("sk_fuzz_0123456789abcdef0123456789abcdef".to_owned());
    let _ = arc_auth::webhook::verify(&secret, ts, sig, body.as_bytes(), 1_700_000_000, 300);
});
