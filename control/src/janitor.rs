//! Janitors turn the passage of time into commands: they read a projection,
//! pick the aggregates that may need attention, and send the command; the
//! aggregate decides (so a stale read model can never close a busy room).
//!
//! - rooms that have been empty for their timeout → `RoomCommand::CloseIfIdle`
//! - nodes that missed their heartbeats → `NodeCommand::DeclareLostIfSilent`
//! - participants still active on a lost or deregistered node →
//!   `RoomCommand::Leave` (reason `node_lost`), and their tracks →
//!   `TrackCommand::Unpublish` (so the room is placed afresh and clients that
//!   re-POST land on a live node)

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, Repository};
use arc_events::aggregate::node::{HEARTBEAT_INTERVAL_S, HEARTBEATS_MISSED_LOST, Node, NodeCommand};
use arc_events::aggregate::room::{Room, RoomCommand};
use arc_events::aggregate::track::{Track, TrackCommand};
use arc_events::room::LeaveReason;
use arc_events::{Actor, AggregateKind, AggregateRef, CommandMeta, ParticipantIdentity, ParticipantSid};

use crate::readdb::ReadDb;

/// Most aggregates handled per sweep.
const SWEEP_MAX: i64 = 200;

/// Runs both janitors every `interval`, forever.
pub async fn run(db: ReadDb, log: Arc<dyn EventLog>, interval: Duration) {
    let rooms = Repository::<Room>::new(log.clone());
    let nodes = Repository::<Node>::new(log.clone());
    let tracks = Repository::<Track>::new(log);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_rooms(&db, &rooms).await {
            tracing::warn!(error = %e, "room janitor sweep failed");
        }
        if let Err(e) = sweep_nodes(&db, &nodes).await {
            tracing::warn!(error = %e, "node liveness sweep failed");
        }
        if let Err(e) = sweep_orphans(&db, &rooms, &tracks).await {
            tracing::warn!(error = %e, "lost-node participant sweep failed");
        }
    }
}

async fn sweep_rooms(db: &ReadDb, rooms: &Repository<Room>) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now();
    let idle: Vec<String> = sqlx::query_scalar(
        "SELECT room_id FROM rooms WHERE state = 'open' AND participant_count = 0 \
         AND empty_since_ms + empty_timeout_s * 1000 <= $1 ORDER BY room_id LIMIT $2",
    )
    .bind(now.timestamp_millis())
    .bind(SWEEP_MAX)
    .fetch_all(&db.pool)
    .await?;
    for id in idle {
        let Ok(room) = AggregateRef::new(AggregateKind::Room, &id) else {
            continue;
        };
        let meta = CommandMeta::new(Actor::system("room-janitor"), chrono::Utc::now());
        match rooms.execute(&room, &RoomCommand::CloseIfIdle, &meta).await {
            Ok(done) if !done.events.is_empty() => tracing::info!(room = %id, "closed idle room"),
            Ok(_) => {}
            Err(e) => tracing::warn!(room = %id, error = %e, "could not close idle room"),
        }
    }
    Ok(())
}

async fn sweep_nodes(db: &ReadDb, nodes: &Repository<Node>) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now();
    let silent_ms = HEARTBEAT_INTERVAL_S * HEARTBEATS_MISSED_LOST * 1000;
    let silent: Vec<String> = sqlx::query_scalar(
        "SELECT node_id FROM nodes WHERE state IN ('up', 'draining') AND last_seen_ms <= $1 \
         ORDER BY node_id LIMIT $2",
    )
    .bind(now.timestamp_millis() - silent_ms)
    .bind(SWEEP_MAX)
    .fetch_all(&db.pool)
    .await?;
    for id in silent {
        let Ok(node) = AggregateRef::new(AggregateKind::Node, &id) else {
            continue;
        };
        let meta = CommandMeta::new(Actor::system("node-liveness"), chrono::Utc::now());
        match nodes.execute(&node, &NodeCommand::DeclareLostIfSilent, &meta).await {
            Ok(done) if !done.events.is_empty() => tracing::warn!(node = %id, "declared node lost"),
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %id, error = %e, "could not declare node lost"),
        }
    }
    Ok(())
}

async fn sweep_orphans(db: &ReadDb, rooms: &Repository<Room>, tracks: &Repository<Track>) -> Result<(), sqlx::Error> {
    let stranded: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT p.room_id, p.identity, p.sid FROM participants p JOIN nodes n ON n.node_id = p.node_id \
         WHERE p.state = 'active' AND n.state IN ('lost', 'deregistered') ORDER BY p.sid LIMIT $1",
    )
    .bind(SWEEP_MAX)
    .fetch_all(&db.pool)
    .await?;
    for (room_id, identity, sid) in stranded {
        let (Ok(room), Ok(identity), Ok(sid)) = (
            AggregateRef::new(AggregateKind::Room, &room_id),
            ParticipantIdentity::parse(&identity),
            ParticipantSid::parse(&sid),
        ) else {
            continue;
        };
        let meta = CommandMeta::new(Actor::system("node-liveness"), chrono::Utc::now());
        let cmd = RoomCommand::Leave { identity, sid, reason: LeaveReason::NodeLost };
        if let Err(e) = rooms.execute(&room, &cmd, &meta).await {
            tracing::warn!(room = %room_id, error = %e, "could not record a lost node's participant leaving");
        }
    }
    let orphaned: Vec<String> = sqlx::query_scalar(
        "SELECT t.track_id FROM tracks t JOIN participants p ON p.sid = t.sid JOIN nodes n ON n.node_id = p.node_id \
         WHERE t.state = 'published' AND n.state IN ('lost', 'deregistered') ORDER BY t.track_id LIMIT $1",
    )
    .bind(SWEEP_MAX)
    .fetch_all(&db.pool)
    .await?;
    for id in orphaned {
        let Ok(track) = AggregateRef::new(AggregateKind::Track, &id) else { continue };
        let meta = CommandMeta::new(Actor::system("node-liveness"), chrono::Utc::now());
        let cmd = TrackCommand::Unpublish { reason: "node_lost".into() };
        if let Err(e) = tracks.execute(&track, &cmd, &meta).await {
            tracing::warn!(track = %id, error = %e, "could not unpublish a lost node's track");
        }
    }
    Ok(())
}
