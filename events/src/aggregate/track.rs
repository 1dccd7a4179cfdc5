//! The track aggregate: published, muted/unmuted, unpublished.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::{Aggregate, Context};
use crate::envelope::AggregateKind;
use crate::event::{Event, TrackEvent};
use crate::ids::{ParticipantIdentity, RoomId};
use crate::track::{MutedBy, TrackMuted, TrackPublished, TrackUnmuted, TrackUnpublished};

/// Lifecycle of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrackStatus {
    #[default]
    Absent,
    Published,
    Unpublished,
}

/// The state `decide` needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    pub status: TrackStatus,
    pub room_id: Option<RoomId>,
    pub identity: Option<ParticipantIdentity>,
    pub muted: bool,
}

/// What can be asked of a track.
#[derive(Debug, Clone, PartialEq)]
pub enum TrackCommand {
    /// A media node starts forwarding a published track.
    Publish(TrackPublished),
    /// Mute (`true`) or unmute; idempotent.
    SetMuted {
        muted: bool,
        by: MutedBy,
    },
    Unpublish {
        reason: String,
    },
}

/// Why a track command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TrackError {
    #[error("track already published")]
    AlreadyPublished,
    #[error("track not found")]
    NotFound,
    #[error("track is no longer published")]
    Unpublished,
}

impl Aggregate for Track {
    const KIND: AggregateKind = AggregateKind::Track;
    type Event = TrackEvent;
    type Command = TrackCommand;
    type Error = TrackError;

    fn decide(&self, command: &TrackCommand, _ctx: &Context) -> Result<Vec<TrackEvent>, TrackError> {
        match command {
            TrackCommand::Publish(p) => match self.status {
                TrackStatus::Absent => Ok(vec![p.clone().into()]),
                _ => Err(TrackError::AlreadyPublished),
            },
            TrackCommand::SetMuted { muted, by } => match self.status {
                TrackStatus::Absent => Err(TrackError::NotFound),
                TrackStatus::Unpublished => Err(TrackError::Unpublished),
                TrackStatus::Published if self.muted == *muted => Ok(vec![]),
                TrackStatus::Published if *muted => Ok(vec![TrackMuted { by: *by }.into()]),
                TrackStatus::Published => Ok(vec![TrackUnmuted { by: *by }.into()]),
            },
            TrackCommand::Unpublish { reason } => match self.status {
                TrackStatus::Absent => Err(TrackError::NotFound),
                TrackStatus::Unpublished => Ok(vec![]),
                TrackStatus::Published => Ok(vec![TrackUnpublished { reason: reason.clone() }.into()]),
            },
        }
    }

    fn evolve(mut self, event: &TrackEvent, _at: DateTime<Utc>) -> Self {
        match event {
            TrackEvent::Published(p) => {
                self.status = TrackStatus::Published;
                self.room_id = Some(p.room_id.clone());
                self.identity = Some(p.identity.clone());
            }
            TrackEvent::Muted(_) => self.muted = true,
            TrackEvent::Unmuted(_) => self.muted = false,
            TrackEvent::Unpublished(_) => self.status = TrackStatus::Unpublished,
        }
        self
    }

    fn narrow(event: Event) -> Option<TrackEvent> {
        match event {
            Event::Track(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::given;
    use crate::ids::ParticipantSid;
    use crate::track::{MediaKind, TrackSource};

    fn published() -> TrackEvent {
        TrackPublished {
            room_id: RoomId::parse("rm_1").expect("valid"),
            identity: ParticipantIdentity::parse("ann").expect("valid"),
            sid: ParticipantSid::parse("pa_1").expect("valid"),
            kind: MediaKind::Audio,
            source: TrackSource::Microphone,
            codec: "audio/opus".into(),
            simulcast: false,
        }
        .into()
    }

    #[test]
    fn mute_is_idempotent_and_needs_a_published_track() {
        let mute = TrackCommand::SetMuted { muted: true, by: MutedBy::Moderator };
        assert_eq!(given::<Track>(&[]).when(0, mute.clone()), Err(TrackError::NotFound));
        assert_eq!(
            given::<Track>(&[(0, published())]).when(1, mute.clone()),
            Ok(vec![TrackMuted { by: MutedBy::Moderator }.into()])
        );
        let muted = [(0, published()), (1, TrackMuted { by: MutedBy::Moderator }.into())];
        assert_eq!(given::<Track>(&muted).when(2, mute.clone()), Ok(vec![]));
        assert_eq!(
            given::<Track>(&muted).when(2, TrackCommand::SetMuted { muted: false, by: MutedBy::Moderator }),
            Ok(vec![TrackUnmuted { by: MutedBy::Moderator }.into()])
        );
        let gone = [(0, published()), (1, TrackUnpublished { reason: "client".into() }.into())];
        assert_eq!(given::<Track>(&gone).when(2, mute), Err(TrackError::Unpublished));
    }
}
