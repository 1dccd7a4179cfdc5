//! Janitors turn the passage of time into commands: they read a projection,
//! pick the aggregates that may need attention, and send the command; the
//! aggregate decides (so a stale read model can never close a busy room).
//!
//! - rooms that have been empty for their timeout → `RoomCommand::CloseIfIdle`
//! - nodes that missed their heartbeats (no load sample on the load board
//!   for that long) → `NodeCommand::DeclareLostIfSilent`; and, faster, nodes
//!   on whose request subject NATS has had no responder for
//!   [`UNREACHABLE_LOST_MS`] (probed every [`PROBE_INTERVAL`]: a node whose
//!   process died is gone from NATS at once) → the same command with
//!   `unreachable_since`, then its participants are swept at once
//! - participants still active on a lost or deregistered node →
//!   `RoomCommand::Leave` (reason `node_lost`), and their tracks →
//!   `TrackCommand::Unpublish` (so the room is placed afresh and clients that
//!   re-POST land on a live node)
//! - the log and each live node's sessions, reconciled (the log is the truth):
//!   a participant the log holds as active on a node that has had no session
//!   for it on two sweeps in a row (and joined more than
//!   [`RECONCILE_JOIN_GRACE`] ago) leaves with `session_lost`; a session the
//!   node still holds for a participant the log says has left is ended on the
//!   node with the log's reason. So a lost leave or a lost end request can
//!   never keep a room open, nor media flowing, for ever — including after a
//!   node restarts empty under the same id.
//! - signalling sockets whose hold ran out (`signal_sockets`: the instance
//!   that held the socket died with it open) → `RoomCommand::Leave` (reason
//!   `connection_lost`), then the hold is dropped

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, LoadBoard, Repository};
use arc_events::aggregate::node::{
    HEARTBEAT_INTERVAL_S, HEARTBEATS_MISSED_LOST, Node, NodeCommand, UNREACHABLE_LOST_MS,
};
use arc_events::aggregate::room::{Room, RoomCommand};
use arc_events::aggregate::track::{Track, TrackCommand};
use arc_events::room::LeaveReason;
use arc_events::{Actor, AggregateKind, AggregateRef, CommandMeta, ParticipantIdentity, ParticipantSid};

use crate::media::{MediaRouter, Probe};
use crate::readdb::ReadDb;
use arc_nodeproto::{NodeReply, NodeRequest, SESSIONS_PAGE_MAX, SessionInfo};

/// How often live nodes are probed over NATS (`NodeRequest::Ping`).
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// How long a probe waits for its answer (no answer says nothing: a busy node).
const PROBE_TIMEOUT: Duration = Duration::from_millis(750);

/// Most aggregates handled per sweep.
const SWEEP_MAX: i64 = 200;
/// A participant joined less than this long ago may still be on its way to
/// its node (the join is appended before the node is asked to open the
/// session, and that request may take up to [`crate::media::REQUEST_TIMEOUT`]).
pub const RECONCILE_JOIN_GRACE: Duration = Duration::from_secs(15);
/// Pages of sessions read from one node per sweep.
const RECONCILE_PAGES_MAX: usize = 100;
/// Participants of one node checked per sweep.
const RECONCILE_PARTICIPANTS_MAX: i64 = 10_000;
/// Sids per `IN (…)` query.
const SQL_IN_MAX: usize = 200;

/// Runs the janitors every `interval`, forever.
/// A participant's leave from read-model strings: the room and the command,
/// or `None` when a stored id no longer parses (skipped, never a panic).
fn leave(room_id: &str, identity: &str, sid: &str, reason: LeaveReason) -> Option<(AggregateRef, RoomCommand)> {
    let room = AggregateRef::new(AggregateKind::Room, room_id).ok()?;
    let identity = ParticipantIdentity::parse(identity).ok()?;
    let sid = ParticipantSid::parse(sid).ok()?;
    Some((room, RoomCommand::Leave { identity, sid, reason }))
}

/// The janitor's lease: it runs in one instance of a cluster at a time.
pub const LEASE: &str = "janitor";

/// Runs the janitor forever, while this instance holds `lease`.
pub async fn run(
    db: ReadDb,
    log: Arc<dyn EventLog>,
    media: MediaRouter,
    interval: Duration,
    mut lease: arc_lease::Lease,
) {
    let rooms = Repository::<Room>::new(log.clone());
    let nodes = Repository::<Node>::new(log.clone());
    let board = log.load_board();
    let tracks = Repository::<Track>::new(log);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut missing = Missing::default();
    let mut probe = tokio::time::interval(PROBE_INTERVAL);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Watch::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = probe.tick(), if media.nats.is_some() => {
                if !lease.held() {
                    watch = Watch::default();
                    continue;
                }
                // The read models may not have the node's loss yet: its
                // participants are swept by node id, at once.
                for node in watch.probe(&db, &nodes, board.as_ref(), &media).await {
                    if let Err(e) = sweep_orphans(&db, &rooms, &tracks, Some(&node)).await {
                        tracing::warn!(error = %e, "lost-node participant sweep failed");
                    }
                }
                continue;
            }
        }
        if !lease.acquire().await {
            // Another instance sweeps; what this one saw missing may be stale by the time it takes over.
            missing = Missing::default();
            watch = Watch::default();
            continue;
        }
        if let Err(e) = reconcile(&db, &rooms, &media, &mut missing).await {
            tracing::warn!(error = %e, "node session reconciliation failed");
        }
        if let Err(e) = sweep_sockets(&db, &rooms).await {
            tracing::warn!(error = %e, "signalling socket sweep failed");
        }
        if let Err(e) = sweep_rooms(&db, &rooms).await {
            tracing::warn!(error = %e, "room janitor sweep failed");
        }
        if let Err(e) = sweep_nodes(&db, &nodes, board.as_ref()).await {
            tracing::warn!(error = %e, "node liveness sweep failed");
        }
        if let Err(e) = sweep_orphans(&db, &rooms, &tracks, None).await {
            tracing::warn!(error = %e, "lost-node participant sweep failed");
        }
    }
}

/// Ends the sessions of signalling sockets whose instance stopped holding
/// them (it died with the socket open): `connection_lost`, then the hold goes.
async fn sweep_sockets(db: &ReadDb, rooms: &Repository<Room>) -> Result<(), sqlx::Error> {
    let lost: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT sid, room_id, identity FROM signal_sockets WHERE expires_at_ms <= $1 ORDER BY sid LIMIT $2",
    )
    .bind(chrono::Utc::now().timestamp_millis())
    .bind(SWEEP_MAX)
    .fetch_all(&db.pool)
    .await?;
    for (sid, room_id, identity) in lost {
        let command = match (ParticipantIdentity::parse(&identity), ParticipantSid::parse(&sid)) {
            (Ok(identity), Ok(sid)) => RoomCommand::Leave { identity, sid, reason: LeaveReason::ConnectionLost },
            _ => {
                tracing::warn!(%sid, %identity, "a signalling socket row with a bad id; dropping it");
                sqlx::query("DELETE FROM signal_sockets WHERE sid = $1").bind(&sid).execute(&db.pool).await?;
                continue;
            }
        };
        let Ok(room) = AggregateRef::new(AggregateKind::Room, &room_id) else {
            sqlx::query("DELETE FROM signal_sockets WHERE sid = $1").bind(&sid).execute(&db.pool).await?;
            continue;
        };
        let meta = CommandMeta::new(Actor::system("signal-janitor"), chrono::Utc::now());
        match rooms.execute(&room, &command, &meta).await {
            Ok(done) => {
                if !done.events.is_empty() {
                    tracing::info!(%sid, room = %room_id, "ended the session of a socket whose instance is gone");
                }
                sqlx::query("DELETE FROM signal_sockets WHERE sid = $1").bind(&sid).execute(&db.pool).await?;
            }
            Err(e) => tracing::warn!(%sid, error = %e, "could not end a lost socket's session; retrying next sweep"),
        }
    }
    Ok(())
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

/// The fast liveness probe's memory: since when each node has had no
/// responder, and since when this instance's own NATS connection is up.
#[derive(Default)]
struct Watch {
    unreachable: HashMap<String, chrono::DateTime<chrono::Utc>>,
    connected_since: Option<std::time::Instant>,
}

impl Watch {
    /// Probes every live node once; declares lost those unreachable for
    /// [`UNREACHABLE_LOST_MS`] (the aggregate decides). Answers the nodes
    /// declared lost now.
    ///
    /// "No responders" counts only once this instance's own connection has
    /// been up for that long too: after a NATS server restart every client
    /// reconnects, and a node may come back a little after this instance.
    async fn probe(
        &mut self,
        db: &ReadDb,
        nodes: &Repository<Node>,
        board: &dyn LoadBoard,
        media: &MediaRouter,
    ) -> Vec<String> {
        let Some(nats) = &media.nats else { return Vec::new() };
        if nats.connection_state() != async_nats::connection::State::Connected {
            self.unreachable.clear();
            self.connected_since = None;
            return Vec::new();
        }
        let connected_since = *self.connected_since.get_or_insert_with(std::time::Instant::now);
        let settled = connected_since.elapsed() >= Duration::from_millis(UNREACHABLE_LOST_MS.unsigned_abs());
        let live: Vec<String> = match sqlx::query_scalar(
            "SELECT node_id FROM nodes WHERE state IN ('up', 'draining') ORDER BY node_id LIMIT $1",
        )
        .bind(SWEEP_MAX)
        .fetch_all(&db.pool)
        .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "node probe: read models unreadable");
                return Vec::new();
            }
        };
        // "Unreachable since" is when the probe went out that found nobody.
        let now = chrono::Utc::now();
        let answers = futures::future::join_all(live.iter().map(|id| media.probe(id, PROBE_TIMEOUT))).await;
        self.unreachable.retain(|id, _| live.contains(id));
        for (id, answer) in live.iter().zip(answers) {
            match answer {
                Probe::Answered => {
                    self.unreachable.remove(id);
                }
                Probe::Gone if settled => {
                    self.unreachable.entry(id.clone()).or_insert(now);
                }
                Probe::Gone | Probe::Unknown(_) => {}
            }
        }
        let due: Vec<(String, chrono::DateTime<chrono::Utc>)> = self
            .unreachable
            .iter()
            // Ticks come a hair early by the wall clock now and then; the
            // aggregate decides by its own clock, a moment later.
            .filter(|(_, since)| (now - **since).num_milliseconds() + 25 >= UNREACHABLE_LOST_MS)
            .map(|(id, since)| (id.clone(), *since))
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        let samples = board.latest().await.unwrap_or_default();
        let mut declared = Vec::new();
        for (id, since) in due {
            let Ok(node_id) = arc_events::NodeId::parse(&id) else { continue };
            let last_sample_at = samples.get(&node_id).map(|s| s.at);
            let command = NodeCommand::DeclareLostIfSilent { last_sample_at, unreachable_since: Some(since) };
            let meta = CommandMeta::new(Actor::system("node-liveness"), chrono::Utc::now());
            match nodes.execute(&AggregateRef::from(&node_id), &command, &meta).await {
                Ok(done) if !done.events.is_empty() => {
                    tracing::warn!(node = %id, unreachable_ms = (now - since).num_milliseconds(), "declared node lost: nothing answers on its request subject");
                    self.unreachable.remove(&id);
                    declared.push(id);
                }
                // A load sample since it became unreachable: it was back,
                // and its unreachable time counts again from this probe.
                // Kept, a `since` older than its last sign of life stopped
                // this path for good: in a full test run here a node killed
                // a second after a NATS hiccup was declared lost by its
                // missed heartbeats, 7 s later, not by this probe. (A node
                // that still reports but answers nothing on its request
                // subject is now declared lost too, once it goes 0.75 s
                // unseen after such a probe: it can open no session.)
                // Otherwise (the aggregate's clock a hair short of the
                // 750 ms) the next probe asks again.
                Ok(_) => {
                    if last_sample_at.is_some_and(|at| at >= since) {
                        self.unreachable.insert(id, now);
                    }
                }
                Err(e) => tracing::warn!(node = %id, error = %e, "could not declare node lost"),
            }
        }
        declared
    }
}

async fn sweep_nodes(db: &ReadDb, nodes: &Repository<Node>, board: &dyn LoadBoard) -> Result<(), sqlx::Error> {
    // Without the board there is no telling who is silent: sweep next time.
    let samples = match board.latest().await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "load board unreadable; node liveness not swept");
            return Ok(());
        }
    };
    let now = chrono::Utc::now();
    let silent_ms = HEARTBEAT_INTERVAL_S * HEARTBEATS_MISSED_LOST * 1000;
    let live: Vec<(String, i64)> = sqlx::query_as(
        "SELECT node_id, last_seen_ms FROM nodes WHERE state IN ('up', 'draining') ORDER BY node_id LIMIT $1",
    )
    .bind(SWEEP_MAX)
    .fetch_all(&db.pool)
    .await?;
    for (id, seen_ms) in live {
        let Ok(node_id) = arc_events::NodeId::parse(&id) else { continue };
        let last_sample_at = samples.get(&node_id).map(|s| s.at);
        let seen_ms = last_sample_at.map_or(seen_ms, |at| at.timestamp_millis().max(seen_ms));
        if seen_ms > now.timestamp_millis() - silent_ms {
            continue;
        }
        let node = AggregateRef::from(&node_id);
        let meta = CommandMeta::new(Actor::system("node-liveness"), chrono::Utc::now());
        match nodes
            .execute(&node, &NodeCommand::DeclareLostIfSilent { last_sample_at, unreachable_since: None }, &meta)
            .await
        {
            Ok(done) if !done.events.is_empty() => tracing::warn!(node = %id, "declared node lost"),
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %id, error = %e, "could not declare node lost"),
        }
    }
    Ok(())
}

/// Ends the participants and tracks of lost or deregistered nodes — or of
/// `lost`, a node just declared lost (the read models may not know yet).
async fn sweep_orphans(
    db: &ReadDb,
    rooms: &Repository<Room>,
    tracks: &Repository<Track>,
    lost: Option<&str>,
) -> Result<(), sqlx::Error> {
    let stranded: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT p.room_id, p.identity, p.sid FROM participants p JOIN nodes n ON n.node_id = p.node_id \
         WHERE p.state = 'active' AND (n.state IN ('lost', 'deregistered') OR n.node_id = $2) ORDER BY p.sid LIMIT $1",
    )
    .bind(SWEEP_MAX)
    .bind(lost.unwrap_or(""))
    .fetch_all(&db.pool)
    .await?;
    for (room_id, identity, sid) in stranded {
        let Some((room, cmd)) = leave(&room_id, &identity, &sid, LeaveReason::NodeLost) else { continue };
        let meta = CommandMeta::new(Actor::system("node-liveness"), chrono::Utc::now());
        if let Err(e) = rooms.execute(&room, &cmd, &meta).await {
            tracing::warn!(room = %room_id, error = %e, "could not record a lost node's participant leaving");
        }
    }
    let orphaned: Vec<String> = sqlx::query_scalar(
        "SELECT t.track_id FROM tracks t JOIN participants p ON p.sid = t.sid JOIN nodes n ON n.node_id = p.node_id \
         WHERE t.state = 'published' AND (n.state IN ('lost', 'deregistered') OR n.node_id = $2) ORDER BY t.track_id LIMIT $1",
    )
    .bind(SWEEP_MAX)
    .bind(lost.unwrap_or(""))
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

/// Participants seen without a session on their node at the previous sweep:
/// (node, sid). A participant is ended only when missing twice in a row, so a
/// leave the node's reporter is about to append wins with its own reason.
#[derive(Debug, Default)]
struct Missing(HashSet<(String, String)>);

/// One node's sessions, all pages (bounded); `None` if the node did not answer.
async fn node_sessions(media: &MediaRouter, node: &str) -> Option<Vec<SessionInfo>> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..RECONCILE_PAGES_MAX {
        match media.request(node, NodeRequest::Sessions { after: after.clone() }).await {
            Ok(NodeReply::Sessions { sessions, more }) => {
                after = sessions.last().map(|s| s.session_id.clone());
                let full = sessions.len() >= SESSIONS_PAGE_MAX;
                out.extend(sessions);
                if !more || !full {
                    return Some(out);
                }
            }
            Ok(other) => {
                // A node of an older version: nothing to reconcile with.
                tracing::debug!(%node, ?other, "node did not list its sessions");
                return None;
            }
            Err(e) => {
                tracing::debug!(%node, error = %e, "node did not answer the session list");
                return None;
            }
        }
    }
    tracing::warn!(%node, pages = RECONCILE_PAGES_MAX, "too many sessions to reconcile in one sweep");
    None
}

/// Reconciles every live, reachable node's sessions with the log (module docs).
async fn reconcile(
    db: &ReadDb,
    rooms: &Repository<Room>,
    media: &MediaRouter,
    missing: &mut Missing,
) -> Result<(), sqlx::Error> {
    let live: Vec<String> =
        sqlx::query_scalar("SELECT node_id FROM nodes WHERE state IN ('up', 'draining') ORDER BY node_id LIMIT $1")
            .bind(SWEEP_MAX)
            .fetch_all(&db.pool)
            .await?;
    let mut still_missing = HashSet::new();
    for node in live {
        if !media.can_reach(&node) {
            continue;
        }
        let Some(sessions) = node_sessions(media, &node).await else { continue };
        let held: HashSet<&str> = sessions.iter().map(|s| s.sid.as_str()).collect();
        // Active in the log, no session on the node.
        let joined_before =
            chrono::Utc::now().timestamp_millis() - i64::try_from(RECONCILE_JOIN_GRACE.as_millis()).unwrap_or(i64::MAX);
        // A participant whose signalling socket is open is accounted for by
        // the socket: its media sessions come and go (`attached`).
        let active: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT room_id, identity, sid FROM participants WHERE state = 'active' AND node_id = $1 \
             AND joined_at_ms <= $2 \
             AND sid NOT IN (SELECT sid FROM signal_sockets WHERE expires_at_ms > $4) ORDER BY sid LIMIT $3",
        )
        .bind(&node)
        .bind(joined_before)
        .bind(RECONCILE_PARTICIPANTS_MAX)
        .bind(chrono::Utc::now().timestamp_millis())
        .fetch_all(&db.pool)
        .await?;
        for (room_id, identity, sid) in active {
            if held.contains(sid.as_str()) {
                continue;
            }
            let key = (node.clone(), sid.clone());
            if !missing.0.contains(&key) {
                still_missing.insert(key);
                continue;
            }
            let Some((room, cmd)) = leave(&room_id, &identity, &sid, LeaveReason::SessionLost) else { continue };
            let meta = CommandMeta::new(Actor::system("session-reconciler"), chrono::Utc::now());
            match rooms.execute(&room, &cmd, &meta).await {
                Ok(done) if !done.events.is_empty() => {
                    tracing::warn!(%node, room = %room_id, %sid, "participant had no session on its node; ended it")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%node, room = %room_id, error = %e, "could not end a participant without a session")
                }
            }
        }
        // Held by the node, left in the log: the end request was lost.
        let mut left: HashMap<String, String> = HashMap::new();
        let sids: Vec<&str> = held.iter().copied().collect();
        for chunk in sids.chunks(SQL_IN_MAX) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT sid, COALESCE(left_reason, 'other') FROM participants WHERE state = 'left' AND sid IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
            for sid in chunk {
                q = q.bind(*sid);
            }
            left.extend(q.fetch_all(&db.pool).await?);
        }
        for s in sessions.iter().filter(|s| left.contains_key(s.sid.as_str())) {
            let reason = LeaveReason::parse(left.get(s.sid.as_str()).map_or("other", String::as_str));
            let req = NodeRequest::End { room_id: s.room_id.clone(), sid: Some(s.sid.clone()), reason };
            match media.request(&node, req).await {
                Ok(_) => {
                    tracing::warn!(%node, room = %s.room_id, sid = %s.sid, ?reason, "ended media the log says has ended")
                }
                Err(e) => tracing::debug!(%node, error = %e, "could not end a left participant's media"),
            }
        }
    }
    missing.0 = still_missing;
    Ok(())
}
