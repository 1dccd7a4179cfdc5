//! The log is the truth for the node too: the node follows the events that
//! end or pause media — a participant left (kicked, removed, replaced, the
//! room closed), a room closed, a track muted or unmuted — and applies them
//! to its own sessions, even when the control plane's direct request to the
//! node was lost. The direct request stays the fast path; this is the one
//! that cannot be missed (a lost request is made good within the time the
//! log takes to deliver the event).
//!
//! Events for sessions the node does not hold change nothing (the engine
//! ends by sid), so following every room's events is safe; it costs a scan
//! per leave, which a per-node subject filter would remove.

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, LogError, Position};
use arc_events::{Decoded, Event, RoomEvent, RoomId, TrackEvent, TrackId};
use arc_nodeproto::NodeRequest;
use futures::StreamExt;

use crate::media::MediaHandle;

/// First wait before following again after the log failed (doubling up to
/// [`RETRY_DELAY_MAX`]; a reconnect cuts it short).
const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between two attempts to follow the log.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(1);

/// What one event asks of the node, if anything.
pub fn request_for(event: &Event, aggregate_id: &str) -> Option<NodeRequest> {
    match event {
        Event::Room(RoomEvent::ParticipantLeft(left)) => Some(NodeRequest::End {
            room_id: RoomId::parse(aggregate_id).ok()?,
            sid: Some(left.sid.clone()),
            reason: left.reason,
        }),
        Event::Room(RoomEvent::Closed(_)) => Some(NodeRequest::End {
            room_id: RoomId::parse(aggregate_id).ok()?,
            sid: None,
            reason: arc_events::room::LeaveReason::RoomClosed,
        }),
        Event::Track(TrackEvent::Muted(_)) => {
            Some(NodeRequest::Mute { track_id: TrackId::parse(aggregate_id).ok()?, muted: true })
        }
        Event::Track(TrackEvent::Unmuted(_)) => {
            Some(NodeRequest::Mute { track_id: TrackId::parse(aggregate_id).ok()?, muted: false })
        }
        _ => None,
    }
}

/// Follows the log from its head for as long as the node runs.
pub async fn run(log: Arc<dyn EventLog>, media: MediaHandle) {
    let mut reconnects = log.reconnects();
    let mut after: Option<Position> = None;
    let mut delay = RETRY_DELAY_MIN;
    loop {
        if let Some(r) = reconnects.as_mut() {
            r.mark_unchanged();
        }
        match follow(&log, &media, &mut after).await {
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

async fn follow(log: &Arc<dyn EventLog>, media: &MediaHandle, after: &mut Option<Position>) -> Result<(), LogError> {
    // From the head at the first start: what ended before the node ran is
    // not its business (its sessions did not exist), and reconciliation by
    // the control plane covers the rest.
    let start = match *after {
        Some(p) => p,
        None => {
            let head = log.head().await?;
            *after = Some(head);
            head
        }
    };
    let mut events = log.subscribe(start).await?;
    while let Some(next) = events.next().await {
        let recorded = next?;
        *after = Some(recorded.position);
        let Ok(Decoded::Known(envelope)) = recorded.raw.decode() else { continue };
        if let Some(req) = request_for(&envelope.event, envelope.aggregate.id()) {
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

    #[test]
    fn leaves_closes_and_mutes_become_node_requests() {
        let left = Event::Room(RoomEvent::ParticipantLeft(ParticipantLeft {
            identity: ParticipantIdentity::parse("ann").expect("id"),
            sid: ParticipantSid::parse("pa_1").expect("id"),
            reason: LeaveReason::Kicked,
        }));
        assert_eq!(
            request_for(&left, "rm_1"),
            Some(NodeRequest::End {
                room_id: RoomId::parse("rm_1").expect("id"),
                sid: Some(ParticipantSid::parse("pa_1").expect("id")),
                reason: LeaveReason::Kicked,
            })
        );
        let closed = Event::Room(RoomEvent::Closed(RoomClosed { reason: CloseReason::Requested }));
        assert!(matches!(
            request_for(&closed, "rm_1"),
            Some(NodeRequest::End { sid: None, reason: LeaveReason::RoomClosed, .. })
        ));
        let muted = Event::Track(TrackEvent::Muted(TrackMuted { by: MutedBy::Moderator }));
        assert!(matches!(request_for(&muted, "tr_1"), Some(NodeRequest::Mute { muted: true, .. })));
        let unmuted = Event::Track(TrackEvent::Unmuted(TrackUnmuted { by: MutedBy::Moderator }));
        assert!(matches!(request_for(&unmuted, "tr_1"), Some(NodeRequest::Mute { muted: false, .. })));
        // A malformed aggregate id asks nothing.
        assert_eq!(request_for(&closed, "rm 1"), None);
    }
}
