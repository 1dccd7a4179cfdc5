//! The room aggregate: open, join, leave, close, and closing when empty.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

use super::{Aggregate, Context};
use crate::envelope::AggregateKind;
use crate::event::{Event, RoomEvent};
use crate::ids::{AppId, NodeId, ParticipantIdentity, ParticipantSid};
use crate::room::{
    CloseReason, LeaveReason, ParticipantJoined, ParticipantLeft, RoomClosed, RoomCreated, RoomMetadataUpdated,
};

/// Empty timeout used when the creator names none.
pub const EMPTY_TIMEOUT_S_DEFAULT: u32 = 300;
use crate::limits::{DISPLAY_NAME_BYTES_MAX, METADATA_BYTES_MAX, ROOM_NAME_BYTES_MAX};
pub use crate::limits::{EMPTY_TIMEOUT_S_MAX, PARTICIPANTS_PER_ROOM_MAX};

/// Lifecycle of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum RoomStatus {
    /// No `room.created` yet.
    #[default]
    Absent,
    Open,
    Closed,
}

/// The state `decide` needs.
///
/// Snapshotted (serde, `SNAPSHOT_VERSION`): long-lived, its history grows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Room {
    pub status: RoomStatus,
    pub app_id: Option<AppId>,
    pub max_participants: u32,
    pub empty_timeout_s: u32,
    /// Who is in the room now, with their current session.
    pub participants: BTreeMap<ParticipantIdentity, ParticipantSid>,
    /// The media node each present session was placed on, if any.
    #[serde(default)]
    pub nodes: BTreeMap<ParticipantSid, NodeId>,
    /// Since when nobody has been in the room (while open).
    pub empty_since: Option<DateTime<Utc>>,
}

/// Where a session's media is, as far as the room knows: what a node's
/// report about that session is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The session is in the room, placed on the node asking.
    Here,
    /// The session is in the room, on another node or on none.
    Elsewhere,
    /// The session is not in the room (it left, or never joined).
    Gone,
}

impl Room {
    /// Where session `sid` is, seen from media node `node`.
    pub fn placement(&self, sid: &ParticipantSid, node: &NodeId) -> Placement {
        if !self.participants.values().any(|s| s == sid) {
            return Placement::Gone;
        }
        match self.nodes.get(sid) {
            Some(n) if n == node => Placement::Here,
            _ => Placement::Elsewhere,
        }
    }
}

/// What can be asked of a room.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomCommand {
    Create {
        app_id: AppId,
        name: String,
        max_participants: Option<u32>,
        empty_timeout_s: Option<u32>,
        metadata: Option<String>,
    },
    /// Enter the room as described by the event to record. `cap` lowers the
    /// room's own participant limit (the app's per-room quota).
    Join {
        joined: ParticipantJoined,
        cap: Option<u32>,
    },
    Leave {
        identity: ParticipantIdentity,
        sid: ParticipantSid,
        reason: LeaveReason,
    },
    Close,
    /// Close the room if it has been empty for its empty timeout.
    CloseIfIdle,
    /// Replace the room's metadata.
    UpdateMetadata {
        metadata: Option<String>,
    },
}

/// Why a room command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RoomError {
    /// The room already exists.
    #[error("room already exists")]
    AlreadyExists,
    /// The room was never created.
    #[error("room not found")]
    NotFound,
    /// The room is closed.
    #[error("room is closed")]
    Closed,
    /// The room holds its maximum number of participants.
    #[error("room is full ({max} participants)")]
    Full { max: u32 },
    /// The app's per-room quota is reached.
    #[error("the app's quota of {max} participants per room is reached")]
    QuotaReached { max: u32 },
    /// A field of the command is out of bounds.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Room {
    fn require_open(&self) -> Result<(), RoomError> {
        match self.status {
            RoomStatus::Absent => Err(RoomError::NotFound),
            RoomStatus::Closed => Err(RoomError::Closed),
            RoomStatus::Open => Ok(()),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> RoomError {
    RoomError::Invalid { field, reason: reason.into() }
}

impl Aggregate for Room {
    const KIND: AggregateKind = AggregateKind::Room;
    type Event = RoomEvent;
    type Command = RoomCommand;
    type Error = RoomError;

    fn decide(&self, command: &RoomCommand, ctx: &Context) -> Result<Vec<RoomEvent>, RoomError> {
        match command {
            RoomCommand::Create { app_id, name, max_participants, empty_timeout_s, metadata } => {
                // A closed room's name can be used again: the room opens anew.
                if self.status == RoomStatus::Open {
                    return Err(RoomError::AlreadyExists);
                }
                if name.is_empty() || name.len() > ROOM_NAME_BYTES_MAX {
                    return Err(invalid("name", format!("must be 1..={ROOM_NAME_BYTES_MAX} bytes")));
                }
                if let Some(max) = max_participants
                    && (*max == 0 || *max > PARTICIPANTS_PER_ROOM_MAX)
                {
                    return Err(invalid("max_participants", format!("must be 1..={PARTICIPANTS_PER_ROOM_MAX}")));
                }
                let empty_timeout_s = empty_timeout_s.unwrap_or(EMPTY_TIMEOUT_S_DEFAULT);
                if empty_timeout_s > EMPTY_TIMEOUT_S_MAX {
                    return Err(invalid("empty_timeout_s", format!("must be at most {EMPTY_TIMEOUT_S_MAX}")));
                }
                if metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
                    return Err(invalid("metadata", format!("must be at most {METADATA_BYTES_MAX} bytes")));
                }
                Ok(vec![
                    RoomCreated {
                        app_id: app_id.clone(),
                        name: name.clone(),
                        max_participants: *max_participants,
                        empty_timeout_s,
                        metadata: metadata.clone(),
                    }
                    .into(),
                ])
            }
            RoomCommand::Join { joined, cap } => {
                self.require_open()?;
                if joined.name.as_ref().is_some_and(|n| n.len() > DISPLAY_NAME_BYTES_MAX) {
                    return Err(invalid("name", format!("must be at most {DISPLAY_NAME_BYTES_MAX} bytes")));
                }
                if joined.metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
                    return Err(invalid("metadata", format!("must be at most {METADATA_BYTES_MAX} bytes")));
                }
                let mut events = Vec::with_capacity(2);
                match self.participants.get(&joined.identity) {
                    // Joining again with the same session: already so.
                    Some(current) if *current == joined.sid => return Ok(vec![]),
                    // The same identity joined from elsewhere: the old session ends.
                    Some(current) => events.push(
                        ParticipantLeft {
                            identity: joined.identity.clone(),
                            sid: current.clone(),
                            reason: LeaveReason::DuplicateIdentity,
                        }
                        .into(),
                    ),
                    None => {
                        let count = u32::try_from(self.participants.len()).unwrap_or(u32::MAX);
                        if count >= self.max_participants {
                            return Err(RoomError::Full { max: self.max_participants });
                        }
                        if let Some(cap) = cap
                            && count >= *cap
                        {
                            return Err(RoomError::QuotaReached { max: *cap });
                        }
                    }
                }
                events.push(joined.clone().into());
                Ok(events)
            }
            RoomCommand::Leave { identity, sid, reason } => {
                if self.status == RoomStatus::Absent {
                    return Err(RoomError::NotFound);
                }
                // A leave for a session that already ended (or was replaced) changes nothing.
                if self.participants.get(identity) != Some(sid) {
                    return Ok(vec![]);
                }
                Ok(vec![ParticipantLeft { identity: identity.clone(), sid: sid.clone(), reason: *reason }.into()])
            }
            RoomCommand::Close => match self.status {
                RoomStatus::Absent => Err(RoomError::NotFound),
                RoomStatus::Closed => Ok(vec![]),
                RoomStatus::Open => Ok(self.close(CloseReason::Requested)),
            },
            RoomCommand::UpdateMetadata { metadata } => {
                self.require_open()?;
                if metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
                    return Err(invalid("metadata", format!("must be at most {METADATA_BYTES_MAX} bytes")));
                }
                Ok(vec![RoomMetadataUpdated { metadata: metadata.clone() }.into()])
            }
            RoomCommand::CloseIfIdle => {
                let idle = match (self.status, self.empty_since) {
                    (RoomStatus::Open, Some(since)) if self.participants.is_empty() => {
                        ctx.now >= since + Duration::seconds(i64::from(self.empty_timeout_s))
                    }
                    _ => false,
                };
                Ok(if idle { self.close(CloseReason::EmptyTimeout) } else { vec![] })
            }
        }
    }

    fn evolve(mut self, event: &RoomEvent, at: DateTime<Utc>) -> Self {
        match event {
            RoomEvent::Created(e) => {
                self.participants.clear();
                self.nodes.clear();
                self.status = RoomStatus::Open;
                self.app_id = Some(e.app_id.clone());
                self.max_participants = e.max_participants.unwrap_or(PARTICIPANTS_PER_ROOM_MAX);
                self.empty_timeout_s = e.empty_timeout_s;
                self.empty_since = Some(at);
            }
            RoomEvent::ParticipantJoined(e) => {
                if let Some(old) = self.participants.insert(e.identity.clone(), e.sid.clone()) {
                    self.nodes.remove(&old);
                }
                if let Some(node) = &e.node_id {
                    self.nodes.insert(e.sid.clone(), node.clone());
                }
                self.empty_since = None;
            }
            RoomEvent::ParticipantLeft(e) => {
                if self.participants.get(&e.identity) == Some(&e.sid) {
                    self.participants.remove(&e.identity);
                    self.nodes.remove(&e.sid);
                }
                if self.participants.is_empty() {
                    self.empty_since = Some(at);
                }
            }
            RoomEvent::Closed(_) => {
                self.status = RoomStatus::Closed;
                self.participants.clear();
                self.nodes.clear();
                self.empty_since = None;
            }
            RoomEvent::MetadataUpdated(_) => {}
        }
        self
    }

    // 2: `nodes` (snapshots of version 1 lack the placements).
    super::snapshot_with_serde!(2);

    fn narrow(event: Event) -> Option<RoomEvent> {
        match event {
            Event::Room(e) => Some(e),
            _ => None,
        }
    }
}

impl Room {
    fn close(&self, reason: CloseReason) -> Vec<RoomEvent> {
        let mut events: Vec<RoomEvent> = self
            .participants
            .iter()
            .map(|(identity, sid)| {
                ParticipantLeft { identity: identity.clone(), sid: sid.clone(), reason: LeaveReason::RoomClosed }.into()
            })
            .collect();
        events.push(RoomClosed { reason }.into());
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::{given, t};

    fn app() -> AppId {
        AppId::parse("app1").expect("valid")
    }
    fn who(s: &str) -> ParticipantIdentity {
        ParticipantIdentity::parse(s).expect("valid")
    }
    fn sid(s: &str) -> ParticipantSid {
        ParticipantSid::parse(s).expect("valid")
    }
    fn created(max: Option<u32>) -> RoomEvent {
        RoomCreated {
            app_id: app(),
            name: "standup".into(),
            max_participants: max,
            empty_timeout_s: 60,
            metadata: None,
        }
        .into()
    }
    fn joined_event(w: &str, s: &str) -> ParticipantJoined {
        ParticipantJoined {
            identity: who(w),
            sid: sid(s),
            name: None,
            node_id: None,
            jti: None,
            permissions: None,
            metadata: None,
        }
    }
    fn joined(w: &str, s: &str) -> RoomEvent {
        joined_event(w, s).into()
    }
    fn left(w: &str, s: &str, reason: LeaveReason) -> RoomEvent {
        ParticipantLeft { identity: who(w), sid: sid(s), reason }.into()
    }
    fn join(w: &str, s: &str) -> RoomCommand {
        RoomCommand::Join { joined: joined_event(w, s), cap: None }
    }

    #[test]
    fn create_then_create_again_conflicts() {
        let create = RoomCommand::Create {
            app_id: app(),
            name: "standup".into(),
            max_participants: None,
            empty_timeout_s: Some(60),
            metadata: None,
        };
        assert_eq!(given::<Room>(&[]).when(0, create.clone()), Ok(vec![created(None)]));
        assert_eq!(given::<Room>(&[(0, created(None))]).when(1, create), Err(RoomError::AlreadyExists));
    }

    #[test]
    fn create_validates_its_fields() {
        let bad = RoomCommand::Create {
            app_id: app(),
            name: String::new(),
            max_participants: None,
            empty_timeout_s: None,
            metadata: None,
        };
        assert!(matches!(given::<Room>(&[]).when(0, bad), Err(RoomError::Invalid { field: "name", .. })));
        let bad = RoomCommand::Create {
            app_id: app(),
            name: "x".into(),
            max_participants: Some(0),
            empty_timeout_s: None,
            metadata: None,
        };
        assert!(matches!(given::<Room>(&[]).when(0, bad), Err(RoomError::Invalid { field: "max_participants", .. })));
    }

    #[test]
    fn join_respects_capacity_and_replaces_duplicate_identities() {
        let full = given::<Room>(&[(0, created(Some(1))), (1, joined("ann", "s1"))]);
        assert_eq!(full.when(2, join("bob", "s2")), Err(RoomError::Full { max: 1 }));
        let g = given::<Room>(&[(0, created(Some(1))), (1, joined("ann", "s1"))]);
        assert_eq!(
            g.when(2, join("ann", "s3")),
            Ok(vec![left("ann", "s1", LeaveReason::DuplicateIdentity), joined("ann", "s3")])
        );
        let g = given::<Room>(&[(0, created(None)), (1, joined("ann", "s1"))]);
        assert_eq!(g.when(2, join("ann", "s1")), Ok(vec![]));
    }

    #[test]
    fn joining_a_missing_or_closed_room_is_refused() {
        assert_eq!(given::<Room>(&[]).when(0, join("ann", "s1")), Err(RoomError::NotFound));
        let closed = given::<Room>(&[(0, created(None)), (1, RoomClosed { reason: CloseReason::Requested }.into())]);
        assert_eq!(closed.when(2, join("ann", "s1")), Err(RoomError::Closed));
    }

    #[test]
    fn stale_leaves_change_nothing() {
        let g = given::<Room>(&[(0, created(None)), (1, joined("ann", "s2"))]);
        let cmd = RoomCommand::Leave { identity: who("ann"), sid: sid("s1"), reason: LeaveReason::ClientLeft };
        assert_eq!(g.when(2, cmd), Ok(vec![]));
    }

    #[test]
    fn close_makes_everyone_leave_and_is_idempotent() {
        let g = given::<Room>(&[(0, created(None)), (1, joined("ann", "s1"))]);
        assert_eq!(
            g.when(2, RoomCommand::Close),
            Ok(vec![left("ann", "s1", LeaveReason::RoomClosed), RoomClosed { reason: CloseReason::Requested }.into()])
        );
        let closed = given::<Room>(&[(0, created(None)), (1, RoomClosed { reason: CloseReason::Requested }.into())]);
        assert_eq!(closed.when(2, RoomCommand::Close), Ok(vec![]));
        assert_eq!(given::<Room>(&[]).when(0, RoomCommand::Close), Err(RoomError::NotFound));
    }

    #[test]
    fn auto_close_only_after_the_room_was_empty_for_its_timeout() {
        let history = [(0, created(None)), (10, joined("ann", "s1")), (20, left("ann", "s1", LeaveReason::ClientLeft))];
        // Empty since t=20 with a 60 s timeout.
        assert_eq!(given::<Room>(&history).when(79, RoomCommand::CloseIfIdle), Ok(vec![]));
        assert_eq!(
            given::<Room>(&history).when(80, RoomCommand::CloseIfIdle),
            Ok(vec![RoomClosed { reason: CloseReason::EmptyTimeout }.into()])
        );
        // Occupied rooms never idle out.
        let busy = [(0, created(None)), (10, joined("ann", "s1"))];
        assert_eq!(given::<Room>(&busy).when(10_000, RoomCommand::CloseIfIdle), Ok(vec![]));
        // A room nobody ever joined idles out from its creation.
        assert_eq!(
            given::<Room>(&[(0, created(None))]).when(60, RoomCommand::CloseIfIdle),
            Ok(vec![RoomClosed { reason: CloseReason::EmptyTimeout }.into()])
        );
    }

    #[test]
    fn a_closed_room_opens_again_empty() {
        let create = RoomCommand::Create {
            app_id: app(),
            name: "standup".into(),
            max_participants: None,
            empty_timeout_s: Some(60),
            metadata: None,
        };
        let closed =
            [(0, created(None)), (1, joined("ann", "s1")), (2, RoomClosed { reason: CloseReason::Requested }.into())];
        assert_eq!(given::<Room>(&closed).when(3, create), Ok(vec![created(None)]));
        let reopened = [
            (0, created(None)),
            (1, joined("ann", "s1")),
            (2, RoomClosed { reason: CloseReason::Requested }.into()),
            (3, created(None)),
        ];
        // Nobody from the earlier opening is still inside.
        assert_eq!(given::<Room>(&reopened).when(4, join("ann", "s1")), Ok(vec![joined("ann", "s1")]));
    }

    #[test]
    fn the_app_quota_caps_a_room_below_its_own_limit() {
        let g = given::<Room>(&[(0, created(Some(10))), (1, joined("ann", "s1"))]);
        let cmd = RoomCommand::Join { joined: joined_event("bob", "s2"), cap: Some(1) };
        assert_eq!(g.when(2, cmd), Err(RoomError::QuotaReached { max: 1 }));
        // Rejoining with a new session replaces, it does not count twice.
        let g = given::<Room>(&[(0, created(Some(10))), (1, joined("ann", "s1"))]);
        let cmd = RoomCommand::Join { joined: joined_event("ann", "s3"), cap: Some(1) };
        assert!(g.when(2, cmd).is_ok());
    }

    #[test]
    fn metadata_updates_need_an_open_room_and_a_bounded_size() {
        let g = given::<Room>(&[(0, created(None))]);
        assert_eq!(
            g.when(1, RoomCommand::UpdateMetadata { metadata: Some("m".into()) }),
            Ok(vec![RoomMetadataUpdated { metadata: Some("m".into()) }.into()])
        );
        let g = given::<Room>(&[(0, created(None))]);
        let big = RoomCommand::UpdateMetadata { metadata: Some("x".repeat(METADATA_BYTES_MAX + 1)) };
        assert!(matches!(g.when(1, big), Err(RoomError::Invalid { field: "metadata", .. })));
        assert_eq!(
            given::<Room>(&[]).when(0, RoomCommand::UpdateMetadata { metadata: None }),
            Err(RoomError::NotFound)
        );
    }

    #[test]
    fn a_session_is_placed_on_the_node_it_joined_with_until_it_leaves_or_is_replaced() {
        let node = |n: &str| NodeId::parse(n).expect("node id");
        let on = |w: &str, s: &str, n: &str| -> RoomEvent {
            ParticipantJoined { node_id: Some(node(n)), ..joined_event(w, s) }.into()
        };
        let room = given::<Room>(&[(0, created(None)), (1, on("ann", "s1", "n1")), (2, joined("bob", "s2"))]).state;
        assert_eq!(room.placement(&sid("s1"), &node("n1")), Placement::Here);
        assert_eq!(room.placement(&sid("s1"), &node("n2")), Placement::Elsewhere);
        // Joined without a media node: no node may speak for it.
        assert_eq!(room.placement(&sid("s2"), &node("n1")), Placement::Elsewhere);
        assert_eq!(room.placement(&sid("s9"), &node("n1")), Placement::Gone);
        // Rejoined on another node: the old session is gone, the new one is there.
        let room = room.evolve(&on("ann", "s3", "n2"), t(3));
        assert_eq!(room.placement(&sid("s1"), &node("n1")), Placement::Gone);
        assert_eq!(room.placement(&sid("s3"), &node("n2")), Placement::Here);
        assert_eq!(room.nodes.len(), 1);
        let room = room.evolve(&left("ann", "s3", LeaveReason::ClientLeft), t(4));
        assert_eq!(room.placement(&sid("s3"), &node("n2")), Placement::Gone);
        assert!(room.nodes.is_empty());
    }
}
