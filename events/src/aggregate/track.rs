//! The track aggregate: published, muted/unmuted, unpublished.

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::{Aggregate, Context};
use crate::envelope::AggregateKind;
use crate::event::{Event, TrackEvent};
use crate::ids::ParticipantSid;
use crate::ids::{ParticipantIdentity, RoomId};
use crate::track::{
    MutedBy, SubscriptionEnded, SubscriptionStarted, TrackMuted, TrackPublished, TrackUnmuted, TrackUnpublished,
};

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
    /// The publishing session.
    pub sid: Option<ParticipantSid>,
    pub muted: bool,
    /// Sessions receiving the track now.
    pub subscribers: std::collections::BTreeSet<ParticipantSid>,
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
    /// A media node started forwarding the track to a participant; idempotent.
    Subscribe {
        subscriber: ParticipantIdentity,
        sid: ParticipantSid,
    },
    /// It stopped; idempotent, and accepted after the track was unpublished.
    Unsubscribe {
        subscriber: ParticipantIdentity,
        sid: ParticipantSid,
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
            TrackCommand::Subscribe { subscriber, sid } => match self.status {
                TrackStatus::Absent => Err(TrackError::NotFound),
                TrackStatus::Unpublished => Err(TrackError::Unpublished),
                TrackStatus::Published if self.subscribers.contains(sid) => Ok(vec![]),
                TrackStatus::Published => {
                    Ok(vec![SubscriptionStarted { subscriber: subscriber.clone(), subscriber_sid: sid.clone() }.into()])
                }
            },
            TrackCommand::Unsubscribe { subscriber, sid, reason } => match self.status {
                TrackStatus::Absent => Err(TrackError::NotFound),
                _ if !self.subscribers.contains(sid) => Ok(vec![]),
                _ => Ok(vec![
                    SubscriptionEnded {
                        subscriber: subscriber.clone(),
                        subscriber_sid: sid.clone(),
                        reason: reason.clone(),
                    }
                    .into(),
                ]),
            },
        }
    }

    fn evolve(mut self, event: &TrackEvent, _at: DateTime<Utc>) -> Self {
        match event {
            TrackEvent::Published(p) => {
                self.status = TrackStatus::Published;
                self.room_id = Some(p.room_id.clone());
                self.identity = Some(p.identity.clone());
                self.sid = Some(p.sid.clone());
            }
            TrackEvent::Muted(_) => self.muted = true,
            TrackEvent::Unmuted(_) => self.muted = false,
            TrackEvent::Unpublished(_) => self.status = TrackStatus::Unpublished,
            TrackEvent::SubscriptionStarted(e) => {
                self.subscribers.insert(e.subscriber_sid.clone());
            }
            TrackEvent::SubscriptionEnded(e) => {
                self.subscribers.remove(&e.subscriber_sid);
            }
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

    #[test]
    fn subscriptions_are_idempotent_and_end_after_unpublish() {
        let who = ParticipantIdentity::parse("bob").expect("valid");
        let sid = ParticipantSid::parse("pa_2").expect("valid");
        let sub = TrackCommand::Subscribe { subscriber: who.clone(), sid: sid.clone() };
        let started: TrackEvent = SubscriptionStarted { subscriber: who.clone(), subscriber_sid: sid.clone() }.into();
        assert_eq!(given::<Track>(&[]).when(0, sub.clone()), Err(TrackError::NotFound));
        assert_eq!(given::<Track>(&[(0, published())]).when(1, sub.clone()), Ok(vec![started.clone()]));
        let on = [(0, published()), (1, started.clone())];
        assert_eq!(given::<Track>(&on).when(2, sub), Ok(vec![]));
        let unsub =
            TrackCommand::Unsubscribe { subscriber: who.clone(), sid: sid.clone(), reason: "unpublished".into() };
        let gone = [(0, published()), (1, started), (2, TrackUnpublished { reason: "client".into() }.into())];
        assert_eq!(
            given::<Track>(&gone).when(3, unsub.clone()),
            Ok(vec![SubscriptionEnded { subscriber: who, subscriber_sid: sid, reason: "unpublished".into() }.into()])
        );
        assert_eq!(given::<Track>(&[(0, published())]).when(1, unsub), Ok(vec![]));
    }
}
