//! Payloads of participant-session events. The aggregate id is the
//! [`ParticipantSid`](crate::ParticipantSid) of one session; joining and
//! leaving are room events (see [`crate::room`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::{ParticipantIdentity, RoomId};

/// What a participant may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
pub struct Permissions {
    pub publish: bool,
    pub subscribe: bool,
    pub publish_data: bool,
}

/// A moderator changed what a participant may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PermissionsUpdated {
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    pub permissions: Permissions,
}

/// A participant's name or metadata changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MetadataUpdated {
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

impl EventData for PermissionsUpdated {
    const TYPE: &'static str = "participant.permissions_updated";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Participant;
}
impl EventData for MetadataUpdated {
    const TYPE: &'static str = "participant.metadata_updated";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Participant;
}
