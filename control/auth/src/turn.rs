//! Time-limited TURN credentials (the "TURN REST API" convention coturn
//! implements with `use-auth-secret`): the server and arc-control share a
//! secret; a participant gets `username = "<expiry, unix seconds>:<user>"`
//! and `credential = base64(HMAC-SHA1(secret, username))`. The TURN server
//! recomputes the credential and refuses it after the expiry — nothing is
//! stored, and a leaked credential dies with its time.

use base64::Engine;
use hmac::{Hmac, Mac};

/// A participant's TURN username and credential, good until `expires_unix`.
pub fn credentials(secret: &str, user: &str, expires_unix: i64) -> (String, String) {
    let username = format!("{expires_unix}:{user}");
    // INVARIANT: HMAC takes a key of any length.
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(username.as_bytes());
    let credential = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_turn_rest_api_ones() {
        // Computed independently: base64(HMAC-SHA1("north", "1700000000:pa_1")).
        assert_eq!(
            credentials("north", "pa_1", 1_700_000_000),
            ("1700000000:pa_1".to_owned(), "6yBUmAuNoR8rPQnbhtQtlL9cztI=".to_owned())
        );
        assert_ne!(credentials("south", "pa_1", 1_700_000_000).1, credentials("north", "pa_1", 1_700_000_000).1);
    }
}
