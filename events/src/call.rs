//! Payloads of SIP call events. The aggregate id is the [`CallId`](crate::CallId).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::RoomId;

/// Which side started the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    /// A phone called into a room.
    Inbound,
    /// A room dialled out to a phone.
    Outbound,
}

/// A call began ringing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CallStarted {
    pub room_id: RoomId,
    pub direction: CallDirection,
    /// SIP URI of the caller.
    pub from: String,
    /// SIP URI of the callee.
    pub to: String,
}

/// The call was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CallAnswered {}

/// The call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CallEnded {
    /// SIP status code or `hangup`, `timeout`, …
    pub reason: String,
}

impl EventData for CallStarted {
    const TYPE: &'static str = "call.started";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Call;
}
impl EventData for CallAnswered {
    const TYPE: &'static str = "call.answered";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Call;
}
impl EventData for CallEnded {
    const TYPE: &'static str = "call.ended";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Call;
}
