//! The planner's runner: follows the log from its checkpoint and, per batch,
//! folds the events into the planner's tables and writes the touched rows
//! **and the checkpoint in one transaction** (as arc-control's projection
//! runner does), skipping positions at or below the checkpoint.

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, LogError, Position, RecordedEvent};
use arc_events::{Decoded, Envelope};
use futures::StreamExt;
use sqlx::{AnyConnection, AnyPool};
use tokio::sync::watch;

use crate::WebhookError;
use crate::db;
use crate::plan::{self, Need, Table, Tables};

/// Name of the planner's row in `projection_checkpoints`.
pub const PROJECTION_NAME: &str = "webhook_deliveries";
/// Most events folded in one transaction.
pub const BATCH_MAX: usize = 1000;
/// Wait before resubscribing after the log or the database failed.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Where the planner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    pub(crate) position: Position,
    pub(crate) events: u64,
}

pub(crate) async fn checkpoint(pool: &AnyPool) -> Result<Checkpoint, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT position, events FROM projection_checkpoints WHERE name = $1")
        .bind(PROJECTION_NAME)
        .fetch_optional(pool)
        .await?;
    Ok(row
        .map(|(p, e)| Checkpoint { position: Position(p.max(0) as u64), events: e.max(0) as u64 })
        .unwrap_or_default())
}

/// The planner over one log and one database.
#[derive(Debug)]
pub(crate) struct Planner {
    pool: AnyPool,
    log: Arc<dyn EventLog>,
    pub(crate) checkpoint: Checkpoint,
    progress: watch::Sender<Position>,
    /// Whether other instances follow this planner (checkpoint notifications).
    notify: bool,
}

impl Planner {
    /// A planner starting at `checkpoint` (read with [`checkpoint`]).
    pub(crate) fn with_checkpoint(
        pool: AnyPool,
        log: Arc<dyn EventLog>,
        checkpoint: Checkpoint,
        progress: watch::Sender<Position>,
        notify: bool,
    ) -> Self {
        crate::advance(&progress, checkpoint.position);
        Self { pool, log, checkpoint, progress, notify }
    }

    /// Follows the log forever, resubscribing after failures: at once when
    /// the log's connection comes back, else after [`RETRY_DELAY`].
    pub(crate) async fn run(&mut self) {
        let mut reconnects = self.log.reconnects();
        loop {
            if let Some(r) = reconnects.as_mut() {
                r.mark_unchanged();
            }
            match self.follow(None).await {
                Ok(()) => tracing::warn!("webhook planner: log subscription ended; resubscribing"),
                Err(e) => tracing::warn!(error = %e, "webhook planner stopped; resubscribing"),
            }
            match reconnects.as_mut() {
                Some(r) => {
                    let _ = tokio::time::timeout(RETRY_DELAY, r.changed()).await;
                }
                None => tokio::time::sleep(RETRY_DELAY).await,
            }
            // Re-read the checkpoint: a failed commit may or may not have landed.
            match checkpoint(&self.pool).await {
                Ok(c) => self.checkpoint = c,
                Err(e) => tracing::error!(error = %e, "webhook planner: reading the checkpoint failed"),
            }
        }
    }

    /// Applies events until the checkpoint reaches `until` (or forever).
    pub(crate) async fn follow(&mut self, until: Option<Position>) -> Result<(), WebhookError> {
        if until.is_some_and(|u| self.checkpoint.position >= u) {
            return Ok(());
        }
        let mut events = self.log.subscribe(self.checkpoint.position).await?.ready_chunks(BATCH_MAX);
        while let Some(batch) = events.next().await {
            let mut items = Vec::with_capacity(batch.len());
            let mut failure = None;
            for event in batch {
                match event {
                    Ok(recorded) => items.push(recorded),
                    Err(LogError::Corrupt { position, reason }) => {
                        tracing::error!(position, %reason, "webhook planner: skipping a corrupt log record");
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if !items.is_empty() {
                self.apply(items).await?;
            }
            if let Some(e) = failure {
                return Err(e.into());
            }
            if until.is_some_and(|u| self.checkpoint.position >= u) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Folds one batch and commits rows plus checkpoint atomically.
    async fn apply(&mut self, batch: Vec<RecordedEvent>) -> Result<(), WebhookError> {
        let mut tx = db::begin_write(&self.pool).await?;
        let mut tables = Tables::default();
        let mut last = self.checkpoint.position;
        let mut applied = 0u64;
        for item in batch {
            // Already applied (a redelivery): planning it again would duplicate work.
            if item.position <= last {
                tracing::warn!(position = %item.position, "webhook planner: skipping a redelivered event");
                continue;
            }
            last = item.position;
            applied += 1;
            let Some(envelope) = decode(&item) else { continue };
            resolve(&mut tx, &mut tables, &envelope).await?;
            plan::fold(&mut tables, &envelope, item.position);
        }
        db::save(&mut tx, &tables).await?;
        let next = Checkpoint { position: last, events: self.checkpoint.events + applied };
        let moved = sqlx::query(
            "INSERT INTO projection_checkpoints (name, position, events, updated_at_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, events = excluded.events, \
             updated_at_ms = excluded.updated_at_ms WHERE projection_checkpoints.position = $5",
        )
        .bind(PROJECTION_NAME)
        .bind(next.position.0 as i64)
        .bind(next.events as i64)
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(self.checkpoint.position.0 as i64)
        .execute(&mut *tx)
        .await?;
        // A fence: another planner (an instance that took the lease over)
        // moved the checkpoint since this one read it; nothing commits.
        if moved.rows_affected() != 1 {
            return Err(WebhookError::Superseded(self.checkpoint.position));
        }
        if self.notify {
            let payload = arc_lease::payload(PROJECTION_NAME, next.position.0, next.events);
            sqlx::query(arc_lease::NOTIFY_SQL).bind(payload).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.checkpoint = next;
        self.progress.send_replace(next.position);
        Ok(())
    }
}

fn decode(recorded: &RecordedEvent) -> Option<Box<Envelope>> {
    match recorded.raw.decode() {
        Ok(Decoded::Known(e)) => Some(e),
        Ok(Decoded::Unknown { event_type, version }) => {
            tracing::debug!(%event_type, version, "webhook planner: skipping an event type this build does not know");
            None
        }
        Err(e) => {
            tracing::error!(position = %recorded.position, error = %e, "webhook planner: skipping an undecodable event");
            None
        }
    }
}

/// Loads every row the fold of `env` reads (see [`plan::needs`]).
async fn resolve(conn: &mut AnyConnection, tables: &mut Tables, env: &Envelope) -> Result<(), sqlx::Error> {
    let src = plan::source(env);
    let mut previous: Option<(Table, String)> = None;
    for need in plan::needs(env) {
        match need {
            Need::Track(t) => {
                db::load(conn, tables, Table::Tracks, &t).await?;
                previous = Some((Table::Tracks, t));
            }
            Need::Recording(r) => {
                db::load(conn, tables, Table::Recordings, &r).await?;
                previous = Some((Table::Recordings, r));
            }
            Need::RoomOfPrevious => {
                let room = match &previous {
                    Some((Table::Tracks, t)) => tables.tracks.get(t).cloned().flatten(),
                    Some((Table::Recordings, r)) => tables.recordings.get(r).cloned().flatten(),
                    _ => None,
                };
                if let Some(room) = room {
                    db::load(conn, tables, Table::Rooms, &room).await?;
                }
            }
            Need::Room(r) => db::load(conn, tables, Table::Rooms, &r).await?,
            Need::EndpointsOfApp => {
                if let Some(app) = src.as_ref().and_then(|s| tables.app_of(s)) {
                    db::load(conn, tables, Table::Endpoints, &app).await?;
                }
            }
            Need::Delivery(d) => db::load(conn, tables, Table::Deliveries, &d).await?,
        }
    }
    Ok(())
}

/// Applies the log up to `until`; returns the events applied.
pub(crate) async fn catch_up(pool: &AnyPool, log: Arc<dyn EventLog>, until: Position) -> Result<u64, WebhookError> {
    let (progress, _) = watch::channel(Position::START);
    let start = checkpoint(pool).await?;
    let mut planner = Planner::with_checkpoint(pool.clone(), log, start, progress, false);
    let before = planner.checkpoint.events;
    planner.follow(Some(until)).await?;
    Ok(planner.checkpoint.events - before)
}

/// Empties the planner's tables and checkpoint (one transaction), then
/// replays the log up to its current head.
pub(crate) async fn rebuild(pool: &AnyPool, log: Arc<dyn EventLog>) -> Result<u64, WebhookError> {
    let mut tx = db::begin_write(pool).await?;
    for table in db::TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table}"))).execute(&mut *tx).await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(PROJECTION_NAME).execute(&mut *tx).await?;
    tx.commit().await?;
    let head = log.head().await?;
    catch_up(pool, log, head).await
}
