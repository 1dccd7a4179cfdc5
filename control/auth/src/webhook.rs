//! Webhook signatures: `arc-signature: v1=<hex HMAC-SHA256(secret, "<arc-timestamp>.<body>")>`.
//!
//! Every delivery carries three headers:
//!
//! | header | value |
//! | --- | --- |
//! | [`ID_HEADER`] `arc-webhook-id` | the event id, the same on every retry: use it to drop duplicates |
//! | [`TIMESTAMP_HEADER`] `arc-timestamp` | when this attempt was signed, unix seconds in decimal |
//! | [`SIGNATURE_HEADER`] `arc-signature` | `v1=` + 64 lowercase hex characters; several comma-separated values while a secret rotates |
//!
//! The signed message is the timestamp header exactly as sent, a `.`, and the
//! raw request body (bytes as received, before any JSON parsing). [`verify`] is
//! what a receiver does.

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::mac::hmac_sha256;
use crate::secret::AppSecret;

/// Header carrying `v1=<hex>` (several, comma-separated, during a secret rotation).
pub const SIGNATURE_HEADER: &str = "arc-signature";
/// Header carrying the signing time in unix seconds.
pub const TIMESTAMP_HEADER: &str = "arc-timestamp";
/// Header carrying the idempotency key (the event id).
pub const ID_HEADER: &str = "arc-webhook-id";
/// The signature scheme's prefix in [`SIGNATURE_HEADER`].
pub const SCHEME: &str = "v1=";
/// How old a delivery a receiver should accept, in seconds (5 minutes).
pub const DEFAULT_TOLERANCE_S: i64 = 300;

/// Why a received webhook does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum WebhookSignatureError {
    #[error("the timestamp header is not unix seconds")]
    BadTimestamp,
    #[error("the timestamp is outside the accepted window")]
    Stale,
    #[error("the signature header has no v1=<hex> value")]
    BadFormat,
    #[error("the signature does not match")]
    Mismatch,
}

fn mac(secret: &AppSecret, timestamp: &str, body: &[u8]) -> [u8; 32] {
    hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body])
}

/// The `arc-signature` value for a body sent at `timestamp`: `v1=<64 lowercase hex>`.
pub fn sign(secret: &AppSecret, timestamp: i64, body: &[u8]) -> String {
    format!("{SCHEME}{}", hex::encode(mac(secret, &timestamp.to_string(), body)))
}

/// Checks a received webhook (what a receiver does; Arc's tests use it too).
///
/// The timestamp must be decimal unix seconds within `tolerance_s` of
/// `now_unix` (either side); the signature header must hold at least one
/// `v1=<hex>` value, and one of them must equal the HMAC, compared in
/// constant time. Values of other schemes are skipped.
pub fn verify(
    secret: &AppSecret,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_s: i64,
) -> Result<(), WebhookSignatureError> {
    let timestamp = timestamp_header.trim();
    let valid_digits = |s: &str| !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit());
    if !valid_digits(timestamp.strip_prefix('-').unwrap_or(timestamp)) {
        return Err(WebhookSignatureError::BadTimestamp);
    }
    let ts: i64 = timestamp.parse().map_err(|_| WebhookSignatureError::BadTimestamp)?;
    if tolerance_s < 0 || now_unix.abs_diff(ts) > tolerance_s.unsigned_abs() {
        return Err(WebhookSignatureError::Stale);
    }
    let expected = mac(secret, timestamp, body);
    let mut any = false;
    let mut matched = false;
    for part in signature_header.split(',') {
        let Some(hex_sig) = part.trim().strip_prefix(SCHEME) else { continue };
        let mut sig = [0u8; 32];
        if hex::decode_to_slice(hex_sig, &mut sig).is_err() {
            continue;
        }
        any = true;
        matched |= bool::from(sig.ct_eq(&expected));
    }
    match (matched, any) {
        (true, _) => Ok(()),
        (false, true) => Err(WebhookSignatureError::Mismatch),
        (false, false) => Err(WebhookSignatureError::BadFormat),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> AppSecret {
        AppSecret::generate()
    }

    #[test]
    fn signatures_have_a_fixed_format() {
        let s = AppSecret::from_string("sk_test".into());
        let sig = sign(&s, 1_700_000_000, br#"{"type":"room.started"}"#);
        assert_eq!(sig.len(), 3 + 64);
        assert!(sig.starts_with("v1="));
        assert!(sig[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        // The documented recipe, done by hand: HMAC-SHA256(secret, "<ts>.<body>") in hex.
        let by_hand = hex::encode(hmac_sha256(b"sk_test", &[br#"1700000000.{"type":"room.started"}"#]));
        assert_eq!(sig, format!("v1={by_hand}"));
        assert_eq!(sign(&s, 1_700_000_000, b"{}"), sign(&s, 1_700_000_000, b"{}"));
        assert_ne!(sign(&s, 1_700_000_000, b"{}"), sign(&s, 1_700_000_001, b"{}"));
    }

    #[test]
    fn round_trip() {
        let s = secret();
        let sig = sign(&s, 1000, b"{}");
        assert_eq!(verify(&s, "1000", &sig, b"{}", 1000, 300), Ok(()));
        assert_eq!(verify(&s, "1000", &sig, b"{}", 1300, 300), Ok(()));
        assert_eq!(verify(&s, "1000", &sig, b"{}", 700, 300), Ok(()), "a receiver clock behind by 5 min");
        assert_eq!(verify(&s, " 1000 ", &format!(" {sig} "), b"{}", 1010, 300), Ok(()));
        assert_eq!(verify(&s, "1000", &sig.to_uppercase().replace("V1=", "v1="), b"{}", 1010, 300), Ok(()));
        let big = vec![b'x'; 1 << 20];
        assert_eq!(verify(&s, "1000", &sign(&s, 1000, &big), &big, 1000, 300), Ok(()));
    }

    #[test]
    fn tampering_is_a_mismatch() {
        let s = secret();
        let sig = sign(&s, 1000, b"{}");
        assert_eq!(verify(&s, "1000", &sig, b"{ }", 1010, 300), Err(WebhookSignatureError::Mismatch));
        assert_eq!(verify(&s, "1001", &sig, b"{}", 1010, 300), Err(WebhookSignatureError::Mismatch));
        assert_eq!(verify(&secret(), "1000", &sig, b"{}", 1010, 300), Err(WebhookSignatureError::Mismatch));
        // The timestamp is signed as sent: another spelling of the same number does not match.
        assert_eq!(verify(&s, "01000", &sig, b"{}", 1010, 300), Err(WebhookSignatureError::Mismatch));
        let truncated = &sig[..sig.len() - 2];
        assert_eq!(verify(&s, "1000", truncated, b"{}", 1010, 300), Err(WebhookSignatureError::BadFormat));
    }

    #[test]
    fn stale_timestamps_are_refused() {
        let s = secret();
        let sig = sign(&s, 1000, b"{}");
        assert_eq!(verify(&s, "1000", &sig, b"{}", 1301, 300), Err(WebhookSignatureError::Stale));
        assert_eq!(verify(&s, "1000", &sig, b"{}", 699, 300), Err(WebhookSignatureError::Stale));
        assert_eq!(verify(&s, "1000", &sig, b"{}", 1000, -1), Err(WebhookSignatureError::Stale));
        // Extremes neither overflow nor pass.
        let min = i64::MIN.to_string();
        let sig_min = sign(&s, i64::MIN, b"{}");
        assert_eq!(verify(&s, &min, &sig_min, b"{}", i64::MAX, 300), Err(WebhookSignatureError::Stale));
        assert_eq!(verify(&s, &min, &sig_min, b"{}", 0, i64::MAX), Err(WebhookSignatureError::Stale));
        let max = i64::MAX.to_string();
        assert_eq!(
            verify(&s, &max, &sign(&s, i64::MAX, b"{}"), b"{}", i64::MIN, i64::MAX),
            Err(WebhookSignatureError::Stale)
        );
    }

    #[test]
    fn bad_headers_are_named() {
        let s = secret();
        let sig = sign(&s, 1000, b"{}");
        for ts in ["", "x", "1000.5", "1e3", "+1000", "0x3e8", "99999999999999999999", "- 5", "-"] {
            assert_eq!(verify(&s, ts, &sig, b"{}", 1000, 300), Err(WebhookSignatureError::BadTimestamp), "{ts:?}");
        }
        for header in ["", "sha=1", "v1=", "v1=zz", "v2=abcd", &sig[3..], ","] {
            assert_eq!(
                verify(&s, "1000", header, b"{}", 1000, 300),
                Err(WebhookSignatureError::BadFormat),
                "{header:?}"
            );
        }
    }

    #[test]
    fn any_of_several_signatures_is_enough() {
        let s = secret();
        let sig = sign(&s, 1000, b"{}");
        let other = sign(&secret(), 1000, b"{}");
        assert_eq!(verify(&s, "1000", &format!("{other}, {sig}"), b"{}", 1000, 300), Ok(()));
        assert_eq!(verify(&s, "1000", &format!("{sig},{other}"), b"{}", 1000, 300), Ok(()));
        assert_eq!(verify(&s, "1000", &format!("v2=abc, {sig}"), b"{}", 1000, 300), Ok(()));
        assert_eq!(
            verify(&s, "1000", &format!("{other},v1=zz"), b"{}", 1000, 300),
            Err(WebhookSignatureError::Mismatch)
        );
    }
}
