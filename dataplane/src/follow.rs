//! The log is the truth for the node too: the node follows the events that
//! end or pause media — a participant left (kicked, removed, replaced, the
//! room closed), a room closed, a track muted or unmuted, a participant's
//! `publish` or `subscribe` permission taken away — and applies them
//! to its own sessions, even when the control plane's direct request to the
//! node was lost. The direct request stays the fast path; this is the one
//! that cannot be missed (a lost request is made good within the time the
//! log takes to deliver the event).
//!
//! Events for sessions the node does not hold change nothing (the engine
//! ends by sid), so following every room's events is safe; it costs a scan
//! per leave, which a per-node subject filter would remove.
//!
//! A closed room ends exactly the participants the log had in it when it
//! closed, by sid, never "every session of the room": room ids derive from
//! the room's name, so a room closed and opened again at once has the same
//! id, and a follower running behind must not end the new room's sessions.
//! The follower starts at a position taken before the node accepts sessions,
//! so it has seen the join of every session the node can hold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, LogError, Position};
use arc_events::room::LeaveReason;
use arc_events::{Decoded, Event, ParticipantEvent, ParticipantSid, RoomEvent, RoomId, TrackEvent, TrackId};
use arc_nodeproto::NodeRequest;
use futures::StreamExt;

use crate::media::MediaHandle;

/// First wait before following again after the log failed (doubling up to
/// [`RETRY_DELAY_MAX`]; a reconnect cuts it short).
const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between two attempts to follow the log.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(1);

/// Who is in which room, by the log (pure): what each event asks of the node.
#[derive(Debug, Default)]
pub struct Follower {
    rooms: HashMap<RoomId, HashSet<ParticipantSid>>,
}

impl Follower {
    /// What one event asks of the node, if anything.
    pub fn apply(&mut self, event: &Event, aggregate_id: &str) -> Vec<NodeRequest> {
        match event {
            Event::Room(RoomEvent::ParticipantJoined(joined)) => {
                if let Ok(room_id) = RoomId::parse(aggregate_id) {
                    self.rooms.entry(room_id).or_default().insert(joined.sid.clone());
                }
                Vec::new()
            }
            Event::Room(RoomEvent::ParticipantLeft(left)) => {
                let Ok(room_id) = RoomId::parse(aggregate_id) else { return Vec::new() };
                if let Some(sids) = self.rooms.get_mut(&room_id) {
                    sids.remove(&left.sid);
                    if sids.is_empty() {
                        self.rooms.remove(&room_id);
                    }
                }
                vec![NodeRequest::End { room_id, sid: Some(left.sid.clone()), reason: left.reason }]
            }
            Event::Room(RoomEvent::Closed(_)) => {
                let Ok(room_id) = RoomId::parse(aggregate_id) else { return Vec::new() };
                let mut sids: Vec<ParticipantSid> = self.rooms.remove(&room_id).into_iter().flatten().collect();
                sids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
                sids.into_iter()
                    .map(|sid| NodeRequest::End {
                        room_id: room_id.clone(),
                        sid: Some(sid),
                        reason: LeaveReason::RoomClosed,
                    })
                    .collect()
            }
            Event::Participant(ParticipantEvent::PermissionsUpdated(p)) => {
                let Ok(sid) = ParticipantSid::parse(aggregate_id) else { return Vec::new() };
                if p.permissions.publish && p.permissions.subscribe {
                    return Vec::new();
                }
                vec![NodeRequest::Restrict {
                    room_id: p.room_id.clone(),
                    sid,
                    publish: p.permissions.publish,
                    subscribe: p.permissions.subscribe,
                }]
            }
            Event::Track(TrackEvent::Muted(_)) => TrackId::parse(aggregate_id)
                .map(|track_id| vec![NodeRequest::Mute { track_id, muted: true }])
                .unwrap_or_default(),
            Event::Track(TrackEvent::Unmuted(_)) => TrackId::parse(aggregate_id)
                .map(|track_id| vec![NodeRequest::Mute { track_id, muted: false }])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Participants the follower holds in rooms.
    pub fn participants(&self) -> usize {
        self.rooms.values().map(HashSet::len).sum()
    }
}

/// Follows the log after `start` (the head, taken before the node accepted
/// sessions) for as long as the node runs.
pub async fn run(log: Arc<dyn EventLog>, media: MediaHandle, start: Position) {
    let mut reconnects = log.reconnects();
    let mut after = start;
    let mut follower = Follower::default();
    let mut delay = RETRY_DELAY_MIN;
    loop {
        if let Some(r) = reconnects.as_mut() {
            r.mark_unchanged();
        }
        match follow(&log, &media, &mut follower, &mut after).await {
            Ok(()) => tracing::debug!("log subscription ended; following again"),
            Err(e) if delay == RETRY_DELAY_MIN => tracing::warn!(error = %e, "cannot follow the log; retrying"),
            Err(e) => tracing::debug!(error = %e, "still cannot follow the log"),
        }
        match reconnects.as_mut() {
            Some(r) => {
                let _ = tokio::time::timeout(delay, r.changed()).await;
            }
            None => tokio::time::sleep(delay).await,
        }
        delay = (delay * 2).min(RETRY_DELAY_MAX);
    }
}

async fn follow(
    log: &Arc<dyn EventLog>,
    media: &MediaHandle,
    follower: &mut Follower,
    after: &mut Position,
) -> Result<(), LogError> {
    let mut events = log.subscribe(*after).await?;
    while let Some(next) = events.next().await {
        let recorded = next?;
        *after = recorded.position;
        let Ok(Decoded::Known(envelope)) = recorded.raw.decode() else { continue };
        for req in follower.apply(&envelope.event, envelope.aggregate.id()) {
            let reply = media.request(req.clone()).await;
            tracing::debug!(?req, ?reply, "applied from the log");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_events::ParticipantIdentity;
    use arc_events::ParticipantSid;
    use arc_events::room::{CloseReason, LeaveReason, ParticipantLeft, RoomClosed};
    use arc_events::track::{MutedBy, TrackMuted, TrackUnmuted};

    fn sid(s: &str) -> ParticipantSid {
        ParticipantSid::parse(s).expect("id")
    }

    fn joined(s: &str) -> Event {
        let joined = serde_json::from_value(serde_json::json!({"identity": format!("user-{s}"), "sid": s}));
        Event::Room(RoomEvent::ParticipantJoined(joined.expect("a ParticipantJoined")))
    }

    fn left(s: &str, reason: LeaveReason) -> Event {
        Event::Room(RoomEvent::ParticipantLeft(ParticipantLeft {
            identity: ParticipantIdentity::parse(&format!("user-{s}")).expect("id"),
            sid: sid(s),
            reason,
        }))
    }

    fn closed() -> Event {
        Event::Room(RoomEvent::Closed(RoomClosed { reason: CloseReason::Requested }))
    }

    fn end(room: &str, s: &str, reason: LeaveReason) -> NodeRequest {
        NodeRequest::End { room_id: RoomId::parse(room).expect("id"), sid: Some(sid(s)), reason }
    }

    #[test]
    fn leaves_closes_and_mutes_become_node_requests() {
        let mut f = Follower::default();
        assert!(f.apply(&joined("pa_1"), "rm_1").is_empty());
        assert!(f.apply(&joined("pa_2"), "rm_1").is_empty());
        assert!(f.apply(&joined("pa_3"), "rm_2").is_empty());
        assert_eq!(f.apply(&left("pa_1", LeaveReason::Kicked), "rm_1"), vec![end("rm_1", "pa_1", LeaveReason::Kicked)]);
        // A closed room ends who was in it, by sid.
        assert_eq!(f.apply(&closed(), "rm_1"), vec![end("rm_1", "pa_2", LeaveReason::RoomClosed)]);
        assert_eq!(f.participants(), 1);
        let muted = Event::Track(TrackEvent::Muted(TrackMuted { by: MutedBy::Moderator }));
        assert_eq!(
            f.apply(&muted, "tr_1"),
            vec![NodeRequest::Mute { track_id: TrackId::parse("tr_1").expect("id"), muted: true }]
        );
        let unmuted = Event::Track(TrackEvent::Unmuted(TrackUnmuted { by: MutedBy::Moderator }));
        assert!(matches!(f.apply(&unmuted, "tr_1").as_slice(), [NodeRequest::Mute { muted: false, .. }]));
        // Permissions taken away stop that media; permissions that allow both ask nothing.
        let perms = |publish, subscribe| {
            let p = serde_json::json!({"room_id": "rm_1", "identity": "user-pa_2",
                "permissions": {"publish": publish, "subscribe": subscribe, "publish_data": true}});
            Event::Participant(ParticipantEvent::PermissionsUpdated(serde_json::from_value(p).expect("update")))
        };
        assert_eq!(
            f.apply(&perms(false, true), "pa_2"),
            vec![NodeRequest::Restrict {
                room_id: RoomId::parse("rm_1").expect("id"),
                sid: sid("pa_2"),
                publish: false,
                subscribe: true
            }]
        );
        assert!(f.apply(&perms(true, true), "pa_2").is_empty());
        assert!(f.apply(&perms(false, false), "not a sid").is_empty());
        // A malformed aggregate id asks nothing.
        assert!(f.apply(&closed(), "rm 1").is_empty());
        assert!(f.apply(&left("pa_3", LeaveReason::ClientLeft), "rm 2").is_empty());
    }

    #[test]
    fn a_room_closed_and_opened_again_keeps_its_new_participants() {
        // The node follows behind: by the time it applies the close, the
        // room (same id: ids derive from names) is open again with someone new.
        let mut f = Follower::default();
        f.apply(&joined("pa_old"), "rm_1");
        let at_close = f.apply(&closed(), "rm_1");
        f.apply(&joined("pa_new"), "rm_1");
        assert_eq!(at_close, vec![end("rm_1", "pa_old", LeaveReason::RoomClosed)]);
        // The new room's own close ends only its participant.
        assert_eq!(f.apply(&closed(), "rm_1"), vec![end("rm_1", "pa_new", LeaveReason::RoomClosed)]);
        assert_eq!(f.participants(), 0);
        // A room the follower never saw anyone join asks nothing.
        assert!(f.apply(&closed(), "rm_9").is_empty());
    }
}
