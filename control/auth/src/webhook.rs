//! Webhook signatures: `arc-signature: v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::secret::AppSecret;

/// Header carrying `v1=<hex>` (several, comma-separated, during a secret rotation).
pub const SIGNATURE_HEADER: &str = "arc-signature";
/// Header carrying the signing time in unix seconds.
pub const TIMESTAMP_HEADER: &str = "arc-timestamp";
/// Header carrying the idempotency key (the event id).
pub const ID_HEADER: &str = "arc-webhook-id";

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

fn mac(secret: &AppSecret, timestamp: i64, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `arc-signature` value for a body sent at `timestamp`.
pub fn sign(secret: &AppSecret, timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body)))
}

/// Checks a received webhook (what a receiver does; Arc's tests use it too).
pub fn verify(
    secret: &AppSecret,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_s: i64,
) -> Result<(), WebhookSignatureError> {
    let ts: i64 = timestamp_header.trim().parse().map_err(|_| WebhookSignatureError::BadTimestamp)?;
    if (now_unix - ts).abs() > tolerance_s {
        return Err(WebhookSignatureError::Stale);
    }
    let expected = mac(secret, ts, body);
    let mut any = false;
    for part in signature_header.split(',') {
        let Some(hex_sig) = part.trim().strip_prefix("v1=") else { continue };
        let Ok(sig) = hex::decode(hex_sig) else { continue };
        any = true;
        if bool::from(sig.as_slice().ct_eq(&expected)) {
            return Ok(());
        }
    }
    Err(if any { WebhookSignatureError::Mismatch } else { WebhookSignatureError::BadFormat })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let s = AppSecret::generate();
        let sig = sign(&s, 1000, b"{}");
        assert_eq!(verify(&s, "1000", &sig, b"{}", 1010, 300), Ok(()));
        assert_eq!(verify(&s, "1000", &sig, b"{ }", 1010, 300), Err(WebhookSignatureError::Mismatch));
        assert_eq!(verify(&s, "1000", &sig, b"{}", 2000, 300), Err(WebhookSignatureError::Stale));
        assert_eq!(verify(&s, "x", &sig, b"{}", 1000, 300), Err(WebhookSignatureError::BadTimestamp));
        assert_eq!(verify(&s, "1000", "sha=1", b"{}", 1000, 300), Err(WebhookSignatureError::BadFormat));
        let other = sign(&AppSecret::generate(), 1000, b"{}");
        assert_eq!(verify(&s, "1000", &format!("{other}, {sig}"), b"{}", 1000, 300), Ok(()));
    }
}
