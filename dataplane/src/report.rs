//! The media task's events, appended to the log by the node: tracks
//! published and unpublished, subscriptions started and ended, participants
//! who left (hung up, lost, kicked, or whose node shut down). Room signals
//! (active speakers) are not for the log: they go to a [`SignalSink`] — core
//! NATS on the node's own subject, or in process in `dev` — and are dropped
//! when nobody can take them.
//!
//! The media task never waits on the log: it sends into an unbounded channel
//! and this task appends in order, retrying while the log is unreachable.
//! Commands go through the aggregates, so a repeated or late report (a leave
//! for a session that was already replaced) changes nothing.

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, ExecuteError, Repository};
use arc_events::aggregate::room::{Room, RoomCommand};
use arc_events::aggregate::track::{Track, TrackCommand};
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
    let rooms = Repository::<Room>::new(log.clone());
    let tracks = Repository::<Track>::new(log);
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
            _ => {}
        }
        let mut delay = Duration::from_millis(100);
        loop {
            match append(&rooms, &tracks, &node_id, &ev).await {
                Ok(()) => break,
                Err(Failure::Refused(why)) => {
                    tracing::debug!(event = ?ev, %why, "media event refused by its aggregate; nothing to record");
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

async fn append(
    rooms: &Repository<Room>,
    tracks: &Repository<Track>,
    node_id: &NodeId,
    ev: &MediaEvent,
) -> Result<(), Failure> {
    let meta = CommandMeta::new(Actor::Node { node_id: node_id.clone() }, chrono::Utc::now());
    match ev {
        MediaEvent::TrackPublished { room_id, identity, sid, track, kind, codec, screen } => {
            let published = TrackPublished {
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
                simulcast: false,
            };
            tracks
                .execute(&AggregateRef::from(track), &TrackCommand::Publish(published), &meta)
                .await
                .map_err(classify)?;
        }
        MediaEvent::TrackUnpublished { track, reason } => {
            let cmd = TrackCommand::Unpublish { reason: reason.as_str().to_owned() };
            tracks.execute(&AggregateRef::from(track), &cmd, &meta).await.map_err(classify)?;
        }
        MediaEvent::SubscriptionStarted { track, identity, sid } => {
            let cmd = TrackCommand::Subscribe { subscriber: identity.clone(), sid: sid.clone() };
            tracks.execute(&AggregateRef::from(track), &cmd, &meta).await.map_err(classify)?;
        }
        MediaEvent::SubscriptionEnded { track, identity, sid, reason } => {
            let cmd = TrackCommand::Unsubscribe {
                subscriber: identity.clone(),
                sid: sid.clone(),
                reason: reason.as_str().to_owned(),
            };
            tracks.execute(&AggregateRef::from(track), &cmd, &meta).await.map_err(classify)?;
        }
        // A signalling participant's media session: the participant stays
        // (its tracks and subscriptions ended with their own events).
        MediaEvent::SessionEnded { attached: true, .. } => {}
        // Not for the log (see `run`).
        MediaEvent::Speakers { .. } | MediaEvent::Quality { .. } => {}
        MediaEvent::SessionEnded { room_id, identity, sid, reason, .. } => {
            // The node's reasons are the log's (when the control plane ended
            // the session, it wrote the leave already; this is a no-op).
            let cmd = RoomCommand::Leave { identity: identity.clone(), sid: sid.clone(), reason: *reason };
            rooms.execute(&AggregateRef::from(room_id), &cmd, &meta).await.map_err(classify)?;
        }
    }
    Ok(())
}
