//! The node-report reactor: what media nodes report of the media they carry
//! becomes the rooms' and tracks' own events, after a check.
//!
//! A media node's NATS credentials let it append only to its own node
//! aggregate (`arc_media::permissions`). There it reports facts — a track
//! published or unpublished, a subscription started or ended, a session
//! ended (`node.track_published`, …). This reactor, in the one instance
//! holding its lease, follows the log from its checkpoint and turns each
//! report into the room's or track's command, after [`judge`] checked it
//! against the room: the session a report names must be in the room and
//! placed on the reporting node (known from the subject the report was
//! appended to, never from the report's own fields), and the identity it
//! gives that session must be the session's own; a report that ends
//! something may also name a session that already left (ending what it left
//! behind harms nobody). Everything else is refused and logged, so a node
//! cannot publish into, or end media of, a room it does not carry.
//!
//! The resulting events keep the node as their actor and the report as their
//! cause (`causation_id`), so webhooks and projections see them as before.
//!
//! Exactly once: the checkpoint (a row of `projection_checkpoints`, fenced
//! like a projection's) is stored after every report applied, so at most one
//! report — the one being applied when an instance died — is met again by
//! the next holder; before following, the reactor reads the log from its
//! checkpoint to the head and skips every report already named as a cause.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, ExecuteError, Position, Repository};
use arc_events::aggregate::room::{Placement, Room, RoomCommand};
use arc_events::aggregate::track::{Track, TrackCommand, TrackStatus};
use arc_events::{AggregateRef, CommandMeta, Decoded, Envelope, Event, EventId, NodeEvent, NodeId, RoomId};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::error::ControlError;
use crate::readdb::ReadDb;

/// The reactor's lease, and the name of its checkpoint row.
pub const LEASE: &str = "node_reports";

/// How often the reactor checks its lease and stores how far it read.
const TICK: Duration = Duration::from_secs(1);
/// First and longest wait between retries while the log or the database is
/// unreachable (as the projections': the log fails fast while disconnected,
/// and a reconnect ends the wait at once).
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_millis(250);

/// Waits between retries: doubling up to [`RETRY_MAX`], cut short when the
/// log reconnects.
struct Backoff {
    delay: Duration,
    reconnects: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Backoff {
    fn new(log: &dyn EventLog) -> Self {
        Self { delay: RETRY_MIN, reconnects: log.reconnects() }
    }

    /// Whether this is the first failure in a row (worth a warning).
    fn first(&self) -> bool {
        self.delay == RETRY_MIN
    }

    async fn wait(&mut self) {
        match self.reconnects.as_mut() {
            Some(r) => {
                r.mark_unchanged();
                let _ = tokio::time::timeout(self.delay, r.changed()).await;
            }
            None => tokio::time::sleep(self.delay).await,
        }
        self.delay = (self.delay * 2).min(RETRY_MAX);
    }

    fn reset(&mut self) {
        self.delay = RETRY_MIN;
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The reactor's figures for `/metrics` (cheap to clone: shared counters).
#[derive(Clone, Debug, Default)]
pub struct ReportMetrics {
    reports: Family<OutcomeLabels, Counter>,
}

impl ReportMetrics {
    /// Adds the family to `registry` (prefixed as the registry is).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "node_reports",
            "Media nodes' reports handled by this instance, by outcome (applied: recorded or already so; refused: \
             judged against where the session is placed, or by the aggregate; a node reporting on sessions it \
             does not carry shows here)",
            self.reports.clone(),
        );
    }

    fn count(&self, outcome: &'static str) {
        self.reports.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// A report turned into a command on the aggregate it concerns.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Room(RoomId, RoomCommand),
    Track(AggregateRef, TrackCommand),
}

/// Decides what `report`, appended by node `node`, does: the command, or why
/// it is refused. `room` is the room the report concerns, `track` the
/// track's state for reports about an existing track. Pure.
pub fn judge(node: &NodeId, report: &NodeEvent, room: &Room, track: Option<&Track>) -> Result<Step, String> {
    let here = |sid: &arc_events::ParticipantSid, ending: bool| match room.placement(sid, node) {
        Placement::Here => Ok(()),
        Placement::Gone if ending => Ok(()),
        Placement::Gone => Err(format!("session {sid} is not in the room")),
        Placement::Elsewhere => Err(format!("session {sid} is not placed on node {node}")),
    };
    // The identity a report gives a session must be the session's own.
    let named = |identity: &arc_events::ParticipantIdentity, sid: &arc_events::ParticipantSid| match room
        .participants
        .get(identity)
    {
        Some(s) if s == sid => Ok(()),
        _ => Err(format!("session {sid} is not {identity}'s")),
    };
    let published = |track: Option<&Track>| -> Result<(), String> {
        match track.map(|t| t.status) {
            Some(TrackStatus::Published | TrackStatus::Unpublished) => Ok(()),
            _ => Err("unknown track".to_owned()),
        }
    };
    match report {
        NodeEvent::TrackPublished(e) => {
            here(&e.track.sid, false)?;
            named(&e.track.identity, &e.track.sid)?;
            Ok(Step::Track(AggregateRef::from(&e.track_id), TrackCommand::Publish(e.track.clone())))
        }
        NodeEvent::TrackUnpublished(e) => {
            published(track)?;
            let publisher = track.and_then(|t| t.sid.as_ref()).ok_or("the track names no publisher")?;
            here(publisher, true)?;
            Ok(Step::Track(AggregateRef::from(&e.track_id), TrackCommand::Unpublish { reason: e.reason.clone() }))
        }
        NodeEvent::SubscriptionStarted(e) => {
            published(track)?;
            here(&e.subscriber_sid, false)?;
            named(&e.subscriber, &e.subscriber_sid)?;
            let cmd = TrackCommand::Subscribe { subscriber: e.subscriber.clone(), sid: e.subscriber_sid.clone() };
            Ok(Step::Track(AggregateRef::from(&e.track_id), cmd))
        }
        NodeEvent::SubscriptionEnded(e) => {
            published(track)?;
            here(&e.subscriber_sid, true)?;
            let cmd = TrackCommand::Unsubscribe {
                subscriber: e.subscriber.clone(),
                sid: e.subscriber_sid.clone(),
                reason: e.reason.clone(),
            };
            Ok(Step::Track(AggregateRef::from(&e.track_id), cmd))
        }
        NodeEvent::SessionEnded(e) => {
            here(&e.sid, true)?;
            let cmd = RoomCommand::Leave { identity: e.identity.clone(), sid: e.sid.clone(), reason: e.reason };
            Ok(Step::Room(e.room_id.clone(), cmd))
        }
        other => Err(format!("{} is not a report", other.type_name())),
    }
}

/// The track a report is about, for the reports about an existing track.
fn track_of(event: &NodeEvent) -> Option<&arc_events::TrackId> {
    match event {
        NodeEvent::TrackUnpublished(e) => Some(&e.track_id),
        NodeEvent::SubscriptionStarted(e) => Some(&e.track_id),
        NodeEvent::SubscriptionEnded(e) => Some(&e.track_id),
        _ => None,
    }
}

/// What went wrong applying one report.
enum Failure {
    /// Judged or decided against: nothing to record, go on.
    Refused(String),
    /// The log could not be reached: try again.
    Unreachable(String),
}

fn unreachable(e: impl std::fmt::Display) -> Failure {
    Failure::Unreachable(e.to_string())
}

fn executed<E: std::error::Error + 'static>(r: Result<impl Sized, ExecuteError<E>>) -> Result<(), Failure> {
    match r {
        Ok(_) => Ok(()),
        Err(ExecuteError::Rejected(e)) => Err(Failure::Refused(e.to_string())),
        Err(e) => Err(unreachable(e)),
    }
}

/// The repositories the reactor decides with.
struct Aggregates {
    rooms: Repository<Room>,
    tracks: Repository<Track>,
}

impl Aggregates {
    /// Judges `report` (from `node`, recorded as `envelope`) and applies it.
    async fn apply(&self, node: &NodeId, report: &NodeEvent, envelope: &Envelope) -> Result<(), Failure> {
        let track = match track_of(report) {
            Some(id) => Some(self.tracks.load(&AggregateRef::from(id)).await.map_err(unreachable)?.0),
            None => None,
        };
        let room_id = match report {
            NodeEvent::TrackPublished(e) => Some(e.track.room_id.clone()),
            NodeEvent::SessionEnded(e) => Some(e.room_id.clone()),
            _ => track.as_ref().and_then(|t| t.room_id.clone()),
        };
        let Some(room_id) = room_id else { return Err(Failure::Refused("unknown track".into())) };
        let (room, _) = self.rooms.load(&AggregateRef::from(&room_id)).await.map_err(unreachable)?;
        let step = judge(node, report, &room, track.as_ref()).map_err(Failure::Refused)?;
        let meta = CommandMeta {
            occurred_at: envelope.occurred_at,
            correlation_id: envelope.correlation_id.unwrap_or_default(),
            causation_id: Some(envelope.id),
            actor: arc_events::Actor::Node { node_id: node.clone() },
            traceparent: envelope.traceparent.clone(),
        };
        match step {
            Step::Room(room_id, cmd) => executed(self.rooms.execute(&AggregateRef::from(&room_id), &cmd, &meta).await),
            Step::Track(track, cmd) => executed(self.tracks.execute(&track, &cmd, &meta).await),
        }
    }
}

/// Runs the reactor forever, while this instance holds `lease`.
pub async fn run(db: ReadDb, log: Arc<dyn EventLog>, mut lease: arc_lease::Lease, metrics: ReportMetrics) {
    let aggregates = Aggregates { rooms: Repository::new(log.clone()), tracks: Repository::new(log.clone()) };
    let mut backoff = Backoff::new(log.as_ref());
    loop {
        if !lease.acquire().await {
            tokio::time::sleep(arc_lease::RETRY).await;
            continue;
        }
        match follow(&db, log.as_ref(), &aggregates, &mut lease, &metrics).await {
            // The lease was lost: another instance reacts now.
            Ok(()) => backoff.reset(),
            Err(e) => {
                if backoff.first() {
                    tracing::warn!(error = %e, "node reports: following the log failed; starting again");
                } else {
                    tracing::debug!(error = %e, "node reports: following the log failed again");
                }
                backoff.wait().await;
            }
        }
    }
}

/// The reports already applied among the events after `from` (up to the
/// log's head when called): the causes the room and track events name.
async fn applied_after(log: &dyn EventLog, from: Position) -> Result<HashSet<EventId>, ControlError> {
    let head = log.head().await?;
    let mut applied = HashSet::new();
    let mut at = from;
    while at < head {
        let batch = log.read_all(at, 1_000).await?;
        let Some(last) = batch.last() else { break };
        at = last.position;
        for rec in &batch {
            let kind = rec.raw.aggregate_type.as_str();
            if let (Some(cause), "room" | "track") = (rec.raw.causation_id, kind) {
                applied.insert(EventId(cause));
            }
        }
    }
    Ok(applied)
}

/// Stores the checkpoint `to` if the stored one is still `from` (a fence: an
/// instance that lost the lease without noticing stores nothing).
async fn store(db: &ReadDb, from: Position, to: Position, events: u64) -> Result<(), ControlError> {
    let _turn = db.write_turn().await;
    let mut tx = db.begin_write().await?;
    let to = crate::projection::Checkpoint { position: to, events };
    crate::projection::move_checkpoint(&mut tx, LEASE, from, to).await?;
    tx.commit().await?;
    Ok(())
}

/// Follows the log from the stored checkpoint, applying reports, until the
/// lease is lost (`Ok`) or the log or database fails (`Err`).
async fn follow(
    db: &ReadDb,
    log: &dyn EventLog,
    aggregates: &Aggregates,
    lease: &mut arc_lease::Lease,
    metrics: &ReportMetrics,
) -> Result<(), ControlError> {
    let start = crate::projection::checkpoint(db, LEASE).await?;
    let mut stored = start.position;
    let mut applied_count = start.events;
    let applied = applied_after(log, stored).await?;
    let mut events = log.subscribe(stored).await?;
    let mut seen = stored;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            item = events.next() => {
                let Some(item) = item else {
                    return Err(ControlError::Unavailable("the log subscription ended".into()));
                };
                let rec = item?;
                seen = rec.position;
                let envelope = match rec.raw.decode() {
                    Ok(Decoded::Known(envelope)) => envelope,
                    Ok(Decoded::Unknown { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(position = %rec.position, error = %e, "node reports: an event does not decode; skipped");
                        continue;
                    }
                };
                let Event::Node(report) = &envelope.event else { continue };
                if !report.is_report() || applied.contains(&envelope.id) {
                    continue;
                }
                // The node is the subject's, which its credentials bound.
                let Ok(node) = NodeId::parse(envelope.aggregate.id()) else { continue };
                let mut backoff = Backoff::new(log);
                loop {
                    match aggregates.apply(&node, report, &envelope).await {
                        Ok(()) => {
                            metrics.count("applied");
                            break;
                        }
                        Err(Failure::Refused(why)) => {
                            metrics.count("refused");
                            tracing::warn!(%node, report = report.type_name(), event_id = %envelope.id, %why,
                                "node report refused; nothing recorded");
                            break;
                        }
                        Err(Failure::Unreachable(why)) => {
                            if backoff.first() {
                                tracing::warn!(%node, %why, "cannot apply a node report yet; retrying");
                            }
                            backoff.wait().await;
                            if !lease.check().await {
                                return Ok(());
                            }
                        }
                    }
                }
                applied_count += 1;
                store(db, stored, seen, applied_count).await?;
                stored = seen;
            }
            _ = tick.tick() => {
                if !lease.check().await {
                    return Ok(());
                }
                if seen > stored {
                    store(db, stored, seen, applied_count).await?;
                    stored = seen;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_events::node::{
        NodeSessionEnded, NodeSubscriptionEnded, NodeSubscriptionStarted, NodeTrackPublished, NodeTrackUnpublished,
    };
    use arc_events::room::{LeaveReason, ParticipantJoined, RoomCreated};
    use arc_events::track::{MediaKind, TrackPublished, TrackSource};
    use arc_events::{Aggregate, AppId, ParticipantIdentity, ParticipantSid, RoomEvent, TrackEvent, TrackId};
    use chrono::Utc;

    fn node(n: &str) -> NodeId {
        NodeId::parse(n).expect("node")
    }
    fn sid(s: &str) -> ParticipantSid {
        ParticipantSid::parse(s).expect("sid")
    }
    fn who(w: &str) -> ParticipantIdentity {
        ParticipantIdentity::parse(w).expect("identity")
    }
    fn room_id() -> RoomId {
        RoomId::parse("standup").expect("room")
    }
    fn track_id() -> TrackId {
        TrackId::parse("TR_a").expect("track")
    }

    /// A room with ann (s1) on n1, bob (s2) on n2 and carol (s3) on no node.
    fn room() -> Room {
        let created: RoomEvent = RoomCreated {
            app_id: AppId::parse("app").expect("app"),
            name: "standup".into(),
            max_participants: None,
            empty_timeout_s: 60,
            metadata: None,
        }
        .into();
        let join = |w: &str, s: &str, n: Option<&str>| -> RoomEvent {
            ParticipantJoined {
                identity: who(w),
                sid: sid(s),
                name: None,
                node_id: n.map(node),
                jti: None,
                permissions: None,
                metadata: None,
            }
            .into()
        };
        [created, join("ann", "s1", Some("n1")), join("bob", "s2", Some("n2")), join("carol", "s3", None)]
            .iter()
            .fold(Room::default(), |r, e| r.evolve(e, Utc::now()))
    }

    fn published_by(s: &str) -> NodeTrackPublished {
        NodeTrackPublished {
            track_id: track_id(),
            track: TrackPublished {
                room_id: room_id(),
                identity: who("ann"),
                sid: sid(s),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                codec: "video/VP8".into(),
                simulcast: false,
            },
        }
    }

    fn track_of(s: &str) -> Track {
        let e: TrackEvent = published_by(s).track.into();
        Track::default().evolve(&e, Utc::now())
    }

    #[test]
    fn a_node_publishes_only_for_sessions_placed_on_it() {
        let r = room();
        let report: NodeEvent = published_by("s1").into();
        assert!(matches!(judge(&node("n1"), &report, &r, None), Ok(Step::Track(_, TrackCommand::Publish(_)))));
        // Another node's participant, a participant on no node, one not in the room.
        assert!(judge(&node("n2"), &report, &r, None).expect_err("refused").contains("not placed on node n2"));
        for s in ["s2", "s3"] {
            assert!(judge(&node("n1"), &published_by(s).into(), &r, None).is_err(), "{s}");
        }
        assert!(
            judge(&node("n1"), &published_by("s9").into(), &r, None).expect_err("refused").contains("not in the room")
        );
    }

    #[test]
    fn ends_are_accepted_for_its_own_sessions_and_for_sessions_that_left() {
        let r = room();
        let unpublished: NodeEvent = NodeTrackUnpublished { track_id: track_id(), reason: "client_left".into() }.into();
        assert!(judge(&node("n1"), &unpublished, &r, Some(&track_of("s1"))).is_ok());
        assert!(judge(&node("n1"), &unpublished, &r, Some(&track_of("s2"))).is_err());
        // The publisher left already: ending its track is cleanup.
        assert!(judge(&node("n1"), &unpublished, &r, Some(&track_of("s9"))).is_ok());
        assert_eq!(judge(&node("n1"), &unpublished, &r, None), Err("unknown track".into()));

        let ended = |s: &str| -> NodeEvent {
            NodeSessionEnded { room_id: room_id(), identity: who("bob"), sid: sid(s), reason: LeaveReason::ClientLeft }
                .into()
        };
        assert!(matches!(judge(&node("n2"), &ended("s2"), &r, None), Ok(Step::Room(_, RoomCommand::Leave { .. }))));
        assert!(judge(&node("n1"), &ended("s2"), &r, None).expect_err("refused").contains("not placed on node n1"));
        assert!(judge(&node("n1"), &ended("s9"), &r, None).is_ok());

        let sub_end = |s: &str| -> NodeEvent {
            NodeSubscriptionEnded {
                track_id: track_id(),
                subscriber: who("bob"),
                subscriber_sid: sid(s),
                reason: "unpublished".into(),
            }
            .into()
        };
        assert!(judge(&node("n2"), &sub_end("s2"), &r, Some(&track_of("s1"))).is_ok());
        assert!(judge(&node("n1"), &sub_end("s2"), &r, Some(&track_of("s1"))).is_err());
    }

    #[test]
    fn a_subscription_starts_only_for_a_subscriber_on_the_node() {
        let r = room();
        let started = |s: &str| -> NodeEvent {
            NodeSubscriptionStarted { track_id: track_id(), subscriber: who("bob"), subscriber_sid: sid(s) }.into()
        };
        assert!(matches!(
            judge(&node("n2"), &started("s2"), &r, Some(&track_of("s1"))),
            Ok(Step::Track(_, TrackCommand::Subscribe { .. }))
        ));
        assert!(judge(&node("n1"), &started("s2"), &r, Some(&track_of("s1"))).is_err());
        assert!(judge(&node("n2"), &started("s9"), &r, Some(&track_of("s1"))).is_err());
        assert!(judge(&node("n2"), &started("s2"), &r, None).is_err());
    }

    #[test]
    fn a_report_cannot_give_a_session_another_identity() {
        let r = room();
        let mut report = published_by("s1");
        report.track.identity = who("bob");
        let refused = judge(&node("n1"), &report.into(), &r, None).expect_err("refused");
        assert!(refused.contains("is not bob's"), "{refused}");
        let started: NodeEvent =
            NodeSubscriptionStarted { track_id: track_id(), subscriber: who("ann"), subscriber_sid: sid("s2") }.into();
        assert!(judge(&node("n2"), &started, &r, Some(&track_of("s1"))).is_err());
    }

    #[test]
    fn registrations_and_liveness_are_not_reports() {
        let lost: NodeEvent = arc_events::node::NodeUndrained {}.into();
        assert!(!lost.is_report());
        assert!(judge(&node("n1"), &lost, &room(), None).is_err());
    }
}
