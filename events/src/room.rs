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

/// Why a participant left. The one list of reasons: the media node ends
/// sessions with these, the API and webhooks show their [`Self::as_str`]
/// names, and a track unpublished because its session ended carries the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LeaveReason {
    /// The client hung up.
    ClientLeft,
    /// A moderator kicked the participant (its token is revoked too).
    Kicked,
    /// A moderator removed the participant (its token stays valid).
    Removed,
    /// The same identity joined again; the older session ends.
    DuplicateIdentity,
    /// The media connection was lost and did not come back.
    ConnectionLost,
    /// The participant's media node was lost.
    NodeLost,
    /// The participant's media node shut down (drain deadline, stop).
    NodeShutdown,
    /// The media node carrying the participant has no session for it (the
    /// node restarted, or the leave was lost); found by reconciliation.
    SessionLost,
    /// The room closed around the participant.
    RoomClosed,
    /// A reason written by a newer version of Arc.
    #[serde(other)]
    Other,
}

impl LeaveReason {
    /// The wire name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientLeft => "client_left",
            Self::Kicked => "kicked",
            Self::Removed => "removed",
            Self::DuplicateIdentity => "duplicate_identity",
            Self::ConnectionLost => "connection_lost",
            Self::NodeLost => "node_lost",
            Self::NodeShutdown => "node_shutdown",
            Self::SessionLost => "session_lost",
            Self::RoomClosed => "room_closed",
            Self::Other => "other",
        }
    }

    /// Parses a wire name; unknown names are [`Self::Other`].
    pub fn parse(s: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).unwrap_or(Self::Other)
    }
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

#[cfg(test)]
mod tests {
    use super::LeaveReason;

    #[test]
    fn leave_reasons_have_one_wire_name() {
        for r in [
            LeaveReason::ClientLeft,
            LeaveReason::Kicked,
            LeaveReason::Removed,
            LeaveReason::DuplicateIdentity,
            LeaveReason::ConnectionLost,
            LeaveReason::NodeLost,
            LeaveReason::NodeShutdown,
            LeaveReason::SessionLost,
            LeaveReason::RoomClosed,
            LeaveReason::Other,
        ] {
            let json = serde_json::to_value(r).expect("serialize");
            assert_eq!(json, serde_json::Value::String(r.as_str().to_owned()));
            assert_eq!(LeaveReason::parse(r.as_str()), r);
        }
        assert_eq!(LeaveReason::parse("written_by_arc_9"), LeaveReason::Other);
    }
}
