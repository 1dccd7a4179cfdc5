//! Arc's credentials, as pure functions (no I/O, no clock: time is passed in).
//!
//! - [`seal`]: app secrets are sealed with AES-256-GCM under the control
//!   plane's master key before they go anywhere (the event log, read models);
//!   the app id is the additional authenticated data, so a sealed value
//!   copied to another app does not open.
//! - [`secret`]: app secrets (`sk_` + 43 base64url characters), redacted in
//!   `Debug`, zeroed on drop, compared in constant time.
//! - [`token`]: access tokens — JWT, HS256 only, signed with the app secret.
//! - [`webhook`]: signatures on outgoing webhooks.
//!
//! # Master key
//!
//! 32 bytes, given as 64 hex characters or as base64 (standard or url-safe,
//! padded or not). Its id, `mk_` + the first 16 hex characters of SHA-256 of
//! the key, is stored next to every sealed value so that a value sealed under
//! another key is reported as such ([`SealError::WrongKey`]) rather than as
//! tampering. A sealed value is
//! `{"alg":"A256GCM","key_id":"mk_…","nonce":"<base64url 12 bytes>","ciphertext":"<base64url ciphertext‖tag>"}`.
//!
//! # Access tokens
//!
//! `base64url(header).base64url(claims).base64url(HMAC-SHA256(app secret, header.claims))`,
//! without padding, header `{"alg":"HS256","typ":"JWT"}`. Claims:
//!
//! | claim | meaning |
//! | --- | --- |
//! | `iss` | the app key (app id); read first, unverified, by [`token::peek_issuer`] to find the app's secrets |
//! | `sub` | participant identity, `[A-Za-z0-9_-]{1,64}` |
//! | `exp`, `nbf`, `iat` | unix seconds; 30 s leeway by default; `exp - iat` at most 24 h by default |
//! | `jti` | token id, `tk_` + a UUIDv7 in simple form |
//! | `room` | room name, 1..=256 bytes, no control characters |
//! | `grants` | `{join, publish, subscribe, publish_data, admin, record}`, booleans, absent = `false` |
//! | `name`, `metadata` | optional display name (≤ 256 bytes) and free-form metadata (≤ 16 KiB) |
//!
//! Any other `alg` (`none`, `HS384`, `HS512`, `RS256`, …) is refused with
//! `token_algorithm_not_allowed` before the signature is looked at; the
//! signature is checked before any claim. Every [`TokenError`] has a stable
//! [`code`](TokenError::code) for HTTP error bodies.
//!
//! ```
//! use arc_auth::{AppSecret, MintRequest, TokenPolicy, token};
//!
//! let secret = AppSecret::generate();
//! let policy = TokenPolicy::default();
//! let now = chrono::Utc::now();
//! let req: MintRequest = serde_json::from_str(r#"{"identity":"ann","room":"standup"}"#).expect("request");
//! let (jwt, claims) = token::mint("app_1", &secret, &req, &policy, now).expect("mint");
//! assert_eq!(token::peek_issuer(&jwt, &policy).expect("iss"), "app_1");
//! assert_eq!(token::verify(&jwt, &[&secret], &policy, now).expect("valid"), claims);
//! let other = AppSecret::generate();
//! assert_eq!(token::verify(&jwt, &[&other], &policy, now).map_err(|e| e.code()), Err("token_bad_signature"));
//! ```
//!
//! # Webhooks
//!
//! Each delivery is a `POST` with a JSON body and three headers:
//! `arc-webhook-id` (the event id; the same on retries, so receivers can drop
//! duplicates), `arc-timestamp` (unix seconds, decimal) and `arc-signature`
//! (`v1=` + 64 lowercase hex characters; while an app secret rotates it may
//! hold several comma-separated `v1=` values, one per secret).
//!
//! A receiver verifies a delivery by computing
//! `HMAC-SHA256(app secret, "{arc-timestamp}.{raw body}")` — the timestamp
//! header exactly as received, a dot, and the body bytes exactly as received
//! (before any JSON parsing) — in lowercase hex, comparing it in constant
//! time with each `v1=` value of `arc-signature`, accepting if any matches,
//! and rejecting the delivery if `arc-timestamp` is more than 5 minutes away
//! from its own clock. [`webhook::verify`] does exactly that:
//!
//! ```
//! use arc_auth::{AppSecret, webhook};
//!
//! let secret = AppSecret::from_string("sk_the_apps_secret".into());
//! let body = br#"{"id":"evt_1","type":"room.started"}"#;
//! // What Arc sends:
//! let ts = 1_800_000_000;
//! let signature = webhook::sign(&secret, ts, body);
//! // What the receiver does with the headers and raw body:
//! let now = 1_800_000_042;
//! webhook::verify(&secret, &ts.to_string(), &signature, body, now, webhook::DEFAULT_TOLERANCE_S).expect("authentic");
//! // The same, by hand, with any HMAC library:
//! use hmac::{Hmac, Mac};
//! let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
//! mac.update(format!("{ts}.").as_bytes());
//! mac.update(body);
//! assert_eq!(signature, format!("v1={}", hex::encode(mac.finalize().into_bytes())));
//! ```

pub mod seal;
pub mod secret;
pub mod token;
pub mod turn;
pub mod webhook;

mod mac;

pub use seal::{MasterKey, SealError, SealedSecret};
pub use secret::AppSecret;
pub use token::{Claims, Grants, MintRequest, TokenError, TokenPolicy};
pub use webhook::WebhookSignatureError;
