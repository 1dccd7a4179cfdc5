//! Payloads of application (tenant) events. The aggregate id is the [`crate::AppId`].

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;

/// An application was registered in the portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppCreated {
    /// Human-readable name.
    pub name: String,
}

/// An application was disabled: its tokens stop working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppDisabled {
    /// Why, as the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A disabled application was enabled again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppEnabled {}

/// An application was deleted; its id is never reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppDeleted {}

impl EventData for AppCreated {
    const TYPE: &'static str = "app.created";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
impl EventData for AppDisabled {
    const TYPE: &'static str = "app.disabled";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
impl EventData for AppEnabled {
    const TYPE: &'static str = "app.enabled";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
impl EventData for AppDeleted {
    const TYPE: &'static str = "app.deleted";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}

/// A value sealed (AES-256-GCM) under the control plane's master key. The
/// plaintext never enters the log; the app id is the additional data, so a
/// sealed value copied to another app does not open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedSecret {
    /// Sealing algorithm, `A256GCM`.
    pub alg: String,
    /// Which master key sealed it (`mk_` + a hash prefix of the key, never the key).
    pub key_id: String,
    /// Base64url (no padding) 96-bit nonce.
    pub nonce: String,
    /// Base64url (no padding) ciphertext followed by the 128-bit tag.
    pub ciphertext: String,
}

/// The application got a new secret (at creation, and on every rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppSecretRotated {
    /// The new secret, sealed.
    pub secret: SealedSecret,
    /// Until when the secret it replaces stays valid; `None` at creation or
    /// when the old secret stops working at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<DateTime<Utc>>,
}

/// Limits on what an application may use at once (the reference's licence).
/// `None` means no limit beyond the platform's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Quotas {
    /// Open rooms at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rooms: Option<u32>,
    /// Participants in one room at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants_per_room: Option<u32>,
    /// Participants across all of the application's rooms at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
}

/// The application's quotas were set (replacing the previous ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppQuotasSet {
    pub quotas: Quotas,
}

/// The application's webhook endpoints were set (replacing the previous ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppWebhooksSet {
    /// `http(s)://` URLs that receive signed event notifications.
    pub urls: Vec<String>,
}

/// A token was revoked before its expiry (e.g. its participant was kicked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AppTokenRevoked {
    /// The token's `jti`.
    pub jti: String,
    /// When the token would have expired; the revocation can be forgotten after.
    pub expires_at: DateTime<Utc>,
    /// Why, e.g. `kicked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl EventData for AppSecretRotated {
    const TYPE: &'static str = "app.secret_rotated";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
impl EventData for AppQuotasSet {
    const TYPE: &'static str = "app.quotas_set";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
impl EventData for AppWebhooksSet {
    const TYPE: &'static str = "app.webhooks_set";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
impl EventData for AppTokenRevoked {
    const TYPE: &'static str = "app.token_revoked";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::App;
}
