//! The participant-session aggregate: permission and attribute changes of one
//! session (`sid`). Joining and leaving are room events; whether the session
//! is still in its room is checked by the caller against the room.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::{Aggregate, Context};
use crate::envelope::AggregateKind;
use crate::event::{Event, ParticipantEvent};
use crate::ids::{ParticipantIdentity, RoomId};
use crate::participant::{MetadataUpdated, Permissions, PermissionsUpdated};

use crate::limits::{DISPLAY_NAME_BYTES_MAX, METADATA_BYTES_MAX};

/// The state `decide` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Participant {
    /// Permissions last set by a moderator (`None`: still those of the token).
    pub permissions: Option<Permissions>,
}

/// What can be asked of a participant session.
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantCommand {
    SetPermissions { room_id: RoomId, identity: ParticipantIdentity, permissions: Permissions },
    UpdateMetadata { room_id: RoomId, identity: ParticipantIdentity, name: Option<String>, metadata: Option<String> },
}

/// Why a participant command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParticipantError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Aggregate for Participant {
    const KIND: AggregateKind = AggregateKind::Participant;
    type Event = ParticipantEvent;
    type Command = ParticipantCommand;
    type Error = ParticipantError;

    fn decide(&self, command: &ParticipantCommand, _ctx: &Context) -> Result<Vec<ParticipantEvent>, ParticipantError> {
        match command {
            ParticipantCommand::SetPermissions { room_id, identity, permissions } => {
                if self.permissions == Some(*permissions) {
                    return Ok(vec![]);
                }
                Ok(vec![
                    PermissionsUpdated {
                        room_id: room_id.clone(),
                        identity: identity.clone(),
                        permissions: *permissions,
                    }
                    .into(),
                ])
            }
            ParticipantCommand::UpdateMetadata { room_id, identity, name, metadata } => {
                if name.as_ref().is_some_and(|n| n.len() > DISPLAY_NAME_BYTES_MAX) {
                    return Err(ParticipantError::Invalid {
                        field: "name",
                        reason: format!("must be at most {DISPLAY_NAME_BYTES_MAX} bytes"),
                    });
                }
                if metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
                    return Err(ParticipantError::Invalid {
                        field: "metadata",
                        reason: format!("must be at most {METADATA_BYTES_MAX} bytes"),
                    });
                }
                if name.is_none() && metadata.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![
                    MetadataUpdated {
                        room_id: room_id.clone(),
                        identity: identity.clone(),
                        name: name.clone(),
                        metadata: metadata.clone(),
                    }
                    .into(),
                ])
            }
        }
    }

    fn evolve(mut self, event: &ParticipantEvent, _at: DateTime<Utc>) -> Self {
        if let ParticipantEvent::PermissionsUpdated(p) = event {
            self.permissions = Some(p.permissions);
        }
        self
    }

    fn narrow(event: Event) -> Option<ParticipantEvent> {
        match event {
            Event::Participant(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::given;

    fn set(publish: bool) -> ParticipantCommand {
        ParticipantCommand::SetPermissions {
            room_id: RoomId::parse("rm_1").expect("valid"),
            identity: ParticipantIdentity::parse("ann").expect("valid"),
            permissions: Permissions { publish, subscribe: true, publish_data: true },
        }
    }

    #[test]
    fn permission_changes_are_recorded_once() {
        let events = given::<Participant>(&[]).when(0, set(false)).expect("decided");
        assert_eq!(events.len(), 1);
        let g = given::<Participant>(&[(0, events[0].clone())]);
        assert_eq!(g.when(1, set(false)), Ok(vec![]));
        let g = given::<Participant>(&[(0, events[0].clone())]);
        assert_eq!(g.when(1, set(true)).map(|e| e.len()), Ok(1));
    }

    #[test]
    fn metadata_is_bounded() {
        let cmd = ParticipantCommand::UpdateMetadata {
            room_id: RoomId::parse("rm_1").expect("valid"),
            identity: ParticipantIdentity::parse("ann").expect("valid"),
            name: None,
            metadata: Some("x".repeat(METADATA_BYTES_MAX + 1)),
        };
        assert!(matches!(
            given::<Participant>(&[]).when(0, cmd),
            Err(ParticipantError::Invalid { field: "metadata", .. })
        ));
    }
}
