//! The media task's events, recorded in the log by the node as reports on
//! its own node aggregate (the only subject its credentials may append to):
//! tracks published and unpublished, subscriptions started and ended,
//! sessions ended (participants who hung up, went silent, were ended by the
//! control plane, or whose node shut down). The control plane's report
//! reactor checks each against the room (the session must be placed on this
//! node) and records the room's and track's own events. Room signals (active
//! speakers, quality) are not for the log: they go to a [`SignalSink`] —
//! core NATS on the node's own subject, or in process in `dev` — and are
//! dropped when nobody can take them.
//!
//! The media task never waits on the log: it sends into an unbounded channel
//! and this task appends in order, retrying while the log is unreachable.

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, ExecuteError, Repository};
use arc_events::aggregate::node::{Node, NodeCommand, NodeReport};
use arc_events::node::{
    NodeSessionEnded, NodeSubscriptionEnded, NodeSubscriptionStarted, NodeTrackPublished, NodeTrackUnpublished,
};
use arc_events::track::{MediaKind, TrackPublished, TrackSource};
use arc_events::{Actor, AggregateRef, CommandMeta, NodeId};
use arc_nodeproto::RoomSignal;
use tokio::sync::{broadcast, mpsc};

use crate::media::{MediaEvent, RtpKind};

/// Where a node's room signals go.
#[derive(Debug, Clone)]
pub enum SignalSink {
    /// Core NATS, on the node's own subject ([`arc_nodeproto::signals_subject`]).
    Nats { client: async_nats::Client, subject: String },
    /// In process: the node embedded in `arc-control dev`.
    Local(broadcast::Sender<Arc<RoomSignal>>),
    /// Nowhere (no signalling listens).
    Nowhere,
}

impl SignalSink {
    /// Hands `signal` on; never waits for a listener, never fails the caller.
    pub async fn send(&self, signal: RoomSignal) {
        match self {
            Self::Nats { client, subject } => {
                let body = arc_nodeproto::encode_signal(&signal);
                if let Err(e) = client.publish(subject.clone(), body.into()).await {
                    tracing::debug!(error = %e, "a room signal was not published");
                }
            }
            Self::Local(tx) => {
                let _ = tx.send(Arc::new(signal));
            }
            Self::Nowhere => {}
        }
    }
}

/// Appends every event from `rx` until the channel closes; room signals go
/// to `signals`.
pub async fn run(
    log: Arc<dyn EventLog>,
    node_id: NodeId,
    mut rx: mpsc::UnboundedReceiver<MediaEvent>,
    signals: SignalSink,
) {
    let nodes = Repository::<Node>::new(log);
    while let Some(ev) = rx.recv().await {
        match ev {
            MediaEvent::Speakers { room_id, speakers } => {
                signals.send(RoomSignal::Speakers { room_id, speakers }).await;
                continue;
            }
            MediaEvent::Quality { room_id, sid, quality } => {
                signals.send(RoomSignal::Quality { room_id, sid, quality }).await;
                continue;
            }
            MediaEvent::Layers { room_id, sid, session_id, track, layers } => {
                signals.send(RoomSignal::Layers { room_id, sid, session_id, track, layers }).await;
                continue;
            }
            _ => {}
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match append(&nodes, &node_id, &ev).await {
                Ok(()) => break,
                Err(Failure::Refused(why)) => {
                    tracing::warn!(event = ?ev, %why, "media report refused by the node aggregate; not recorded");
                    break;
                }
                Err(Failure::Unreachable(why)) => {
                    tracing::warn!(%why, "cannot record a media event yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

enum Failure {
    Refused(String),
    Unreachable(String),
}

fn classify<E: std::error::Error + 'static>(e: ExecuteError<E>) -> Failure {
    match e {
        ExecuteError::Rejected(r) => Failure::Refused(r.to_string()),
        other => Failure::Unreachable(other.to_string()),
    }
}

/// The report a media event makes, if it is one for the log.
fn report(ev: &MediaEvent) -> Option<NodeReport> {
    Some(match ev {
        MediaEvent::TrackPublished { room_id, identity, sid, track, kind, codec, screen, simulcast } => {
            NodeReport::TrackPublished(NodeTrackPublished {
                track_id: track.clone(),
                track: TrackPublished {
                    room_id: room_id.clone(),
                    identity: identity.clone(),
                    sid: sid.clone(),
                    kind: match kind {
                        RtpKind::Audio => MediaKind::Audio,
                        RtpKind::Video => MediaKind::Video,
                    },
                    source: match (kind, screen) {
                        (RtpKind::Audio, false) => TrackSource::Microphone,
                        (RtpKind::Video, false) => TrackSource::Camera,
                        (RtpKind::Audio, true) => TrackSource::ScreenShareAudio,
                        (RtpKind::Video, true) => TrackSource::ScreenShare,
                    },
                    codec: codec.clone(),
                    simulcast: *simulcast,
                },
            })
        }
        MediaEvent::TrackUnpublished { track, reason } => NodeReport::TrackUnpublished(NodeTrackUnpublished {
            track_id: track.clone(),
            reason: reason.as_str().to_owned(),
        }),
        MediaEvent::SubscriptionStarted { track, identity, sid } => {
            NodeReport::SubscriptionStarted(NodeSubscriptionStarted {
                track_id: track.clone(),
                subscriber: identity.clone(),
                subscriber_sid: sid.clone(),
            })
        }
        MediaEvent::SubscriptionEnded { track, identity, sid, reason } => {
            NodeReport::SubscriptionEnded(NodeSubscriptionEnded {
                track_id: track.clone(),
                subscriber: identity.clone(),
                subscriber_sid: sid.clone(),
                reason: reason.as_str().to_owned(),
            })
        }
        // A signalling participant's media session: the participant stays
        // (its tracks and subscriptions ended with their own reports).
        MediaEvent::SessionEnded { attached: true, .. } => return None,
        // Not for the log (see `run`).
        MediaEvent::Speakers { .. } | MediaEvent::Quality { .. } | MediaEvent::Layers { .. } => return None,
        // The node's reasons are the log's (when the control plane ended the
        // session, it wrote the leave already; the leave this turns into is a no-op).
        MediaEvent::SessionEnded { room_id, identity, sid, reason, .. } => NodeReport::SessionEnded(NodeSessionEnded {
            room_id: room_id.clone(),
            identity: identity.clone(),
            sid: sid.clone(),
            reason: *reason,
        }),
    })
}

async fn append(nodes: &Repository<Node>, node_id: &NodeId, ev: &MediaEvent) -> Result<(), Failure> {
    let Some(report) = report(ev) else { return Ok(()) };
    let meta = CommandMeta::new(Actor::Node { node_id: node_id.clone() }, chrono::Utc::now());
    nodes.execute(&AggregateRef::from(node_id), &NodeCommand::Report(report), &meta).await.map_err(classify)?;
    Ok(())
}
