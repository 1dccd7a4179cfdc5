//! Payloads of application (tenant) events. The aggregate id is the [`crate::AppId`].

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
