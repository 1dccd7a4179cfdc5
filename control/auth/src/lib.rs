//! Arc's credentials, as pure functions (no I/O, no clock: time is passed in).
//!
//! - [`seal`]: app secrets are sealed with AES-256-GCM under the control
//!   plane's master key before they go anywhere (the event log, read models);
//!   the app id is the additional authenticated data.
//! - [`secret`]: app secrets (`sk_` + 43 base64url characters), redacted in `Debug`.
//! - [`token`]: access tokens — JWT, HS256 only, signed with the app secret.
//!   Claims: `iss` (app key), `sub` (participant identity), `exp`, `nbf`,
//!   `iat`, `jti`, `room`, `grants` {`join`, `publish`, `subscribe`,
//!   `publish_data`, `admin`, `record`}, optional `name` and `metadata`.
//! - [`webhook`]: webhook signatures. A receiver verifies a delivery by
//!   computing `HMAC-SHA256(app secret, "<arc-timestamp>.<raw body>")` in hex
//!   and comparing it (in constant time) with the `v1=` value of the
//!   `arc-signature` header, and rejects timestamps older than 5 minutes.

pub mod seal;
pub mod secret;
pub mod token;
pub mod webhook;

pub use seal::{MasterKey, SealError, SealedSecret};
pub use secret::AppSecret;
pub use token::{Claims, Grants, MintRequest, TokenError, TokenPolicy};
pub use webhook::WebhookSignatureError;
