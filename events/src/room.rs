//! Payloads of room events. The aggregate id is the [`RoomId`](crate::RoomId).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::{AppId, NodeId, ParticipantIdentity, ParticipantSid};
use crate::participant::Permissions;

/// A room was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomCreated {
    /// The application that owns the room.
    pub app_id: AppId,
    /// The room's name as the application knows it.
    pub name: String,
    /// Most participants at once; `None` means the platform limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_participants: Option<u32>,
    /// Seconds the room stays open while nobody is in it.
    pub empty_timeout_s: u32,
    /// Free-form metadata set by the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// A participant entered the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParticipantJoined {
    /// The participant's identity (token `sub`), unique in the room.
    pub identity: ParticipantIdentity,
    /// This session of the participant (changes on every join).
    pub sid: ParticipantSid,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The media node carrying the participant's media, once placed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<NodeId>,
    /// The `jti` of the token the participant joined with (kicking revokes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// What the participant may do, from its token's grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
    /// Free-form metadata from the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// The room's metadata changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomMetadataUpdated {
    /// The new metadata; `None` clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// Why a participant left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client hung up.
    ClientLeft,
    /// A moderator removed the participant.
    Kicked,
    /// The same identity joined again; the older session ends.
    DuplicateIdentity,
    /// The media connection was lost and did not come back.
    ConnectionLost,
    /// The participant's media node was lost.
    NodeLost,
    /// The room closed around the participant.
    RoomClosed,
    /// A reason written by a newer version of Arc.
    #[serde(other)]
    Other,
}

/// A participant left the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParticipantLeft {
    /// The participant's identity.
    pub identity: ParticipantIdentity,
    /// The session that ended.
    pub sid: ParticipantSid,
    /// Why.
    pub reason: LeaveReason,
}

/// Why a room closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// An operator or the application closed it.
    Requested,
    /// Nobody was in it for its empty timeout.
    EmptyTimeout,
    /// A reason written by a newer version of Arc.
    #[serde(other)]
    Other,
}

/// A room closed; everyone still in it has left with reason `room_closed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomClosed {
    /// Why.
    pub reason: CloseReason,
}

impl EventData for RoomCreated {
    const TYPE: &'static str = "room.created";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Room;
}
impl EventData for ParticipantJoined {
    const TYPE: &'static str = "room.participant_joined";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Room;
}
impl EventData for ParticipantLeft {
    const TYPE: &'static str = "room.participant_left";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Room;
}
impl EventData for RoomClosed {
    const TYPE: &'static str = "room.closed";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Room;
}
impl EventData for RoomMetadataUpdated {
    const TYPE: &'static str = "room.metadata_updated";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Room;
}
