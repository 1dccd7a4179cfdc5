//! Payloads of operator events: what an admin key did that changes no other
//! aggregate, so the log says who did it (`Actor::Admin { name }`) like it
//! does for every other change. The aggregate id is the admin key's name.
//!
//! Everything an admin key changes elsewhere (apps, rooms, nodes, webhooks)
//! is already an event of that aggregate with the key's name as its actor;
//! reads are not recorded (the log grows with changes, not with looking).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::AppId;

/// An operator asked for a read model to be rebuilt from the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectionRebuildRequested {
    /// The read model (`rooms`, `participants`, …).
    pub projection: String,
}

/// An operator minted an access token for an app (the token itself is
/// never recorded; its `jti` is, so it can be revoked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TokenMinted {
    pub app_id: AppId,
    pub room: String,
    pub identity: String,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

impl EventData for ProjectionRebuildRequested {
    const TYPE: &'static str = "operator.projection_rebuild_requested";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Operator;
}
impl EventData for TokenMinted {
    const TYPE: &'static str = "operator.token_minted";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Operator;
}
