//! Access tokens as presented (Bearer, `?access_token=`): the issuer peeked
//! before the app is known, then the full verification.
#![no_main]

use arc_auth::secret::AppSecret;
use arc_auth::token::{TokenPolicy, peek_issuer, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let policy = TokenPolicy::default();
    let _ = peek_issuer(token, &policy);
    let secret = AppSecret::from_string("sk_fuzz_0123456789abcdef0123456789abcdef".to_owned());
    let _ = verify(token, &[&secret], &policy, chrono::Utc::now());
});
