//! Aggregate snapshots: a long-lived aggregate's folded state at some seq,
//! stored beside the log, so loading it reads the tail of its history
//! instead of all of it.
//!
//! A snapshot is derived data, never a source of truth:
//! - it names the event it was folded up to (seq, position and event id);
//!   the repository reads the log from that event and uses the snapshot only
//!   if the log still holds that very event there (a log restored from an
//!   older backup, or a stream made anew, makes it fall back to a full read);
//! - it carries the aggregate's `SNAPSHOT_VERSION`: a build whose state has
//!   another shape ignores it and writes a new one;
//! - losing every snapshot costs time, never state.
//!
//! Backends: [`SqliteSnapshots`] (a file beside the embedded log's, its own
//! writer, so snapshots never queue behind appends) and [`KvSnapshots`] (a
//! JetStream key-value bucket `<stream>_SNAP`, key `<kind>.<id>`, history 1).

use std::fmt;
use std::path::Path;

use arc_events::AggregateRef;
use async_nats::jetstream;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::error::LogError;
use crate::log::Position;

/// Largest snapshot stored (a bigger state is simply not snapshotted:
/// under NATS's default 1 MiB message limit).
pub const SNAPSHOT_BYTES_MAX: usize = 900 * 1024;

/// One aggregate's folded state, and the event it was folded up to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's `SNAPSHOT_VERSION` when it was taken.
    pub version: u16,
    /// The seq of the last event folded.
    pub seq: u64,
    /// Where that event is in the log.
    pub position: u64,
    /// That event's id.
    pub event_id: String,
    /// The state (the aggregate's own serialisation).
    pub state: serde_json::Value,
}

impl Snapshot {
    /// The position of the last event folded.
    pub fn position(&self) -> Position {
        Position(self.position)
    }
}

/// Where snapshots are kept.
#[async_trait]
pub trait SnapshotStore: Send + Sync + fmt::Debug + 'static {
    /// The aggregate's latest snapshot, if any (one that does not parse is none).
    async fn get(&self, aggregate: &AggregateRef) -> Result<Option<Snapshot>, LogError>;

    /// Replaces the aggregate's snapshot. One over [`SNAPSHOT_BYTES_MAX`] is
    /// not stored (`Ok(false)`).
    async fn put(&self, aggregate: &AggregateRef, snapshot: &Snapshot) -> Result<bool, LogError>;
}

fn encode(snapshot: &Snapshot) -> Result<Option<Vec<u8>>, LogError> {
    let body = serde_json::to_vec(snapshot).map_err(|e| LogError::Unavailable(format!("encoding a snapshot: {e}")))?;
    Ok((body.len() <= SNAPSHOT_BYTES_MAX).then_some(body))
}

fn decode(aggregate: &AggregateRef, body: &[u8]) -> Option<Snapshot> {
    match serde_json::from_slice(body) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(%aggregate, error = %e, "ignoring a snapshot that does not parse");
            None
        }
    }
}

/// Snapshots in their own SQLite file (the embedded log's).
#[derive(Debug)]
pub struct SqliteSnapshots {
    pool: SqlitePool,
}

impl SqliteSnapshots {
    /// Opens (or creates) the file at `path`.
    pub async fn open(path: &Path) -> Result<Self, LogError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Derived data: a snapshot lost in a power cut is re-taken.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(options).await?;
        sqlx::query("CREATE TABLE IF NOT EXISTS snapshots (aggregate TEXT PRIMARY KEY, body BLOB NOT NULL)")
            .execute(&pool)
            .await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl SnapshotStore for SqliteSnapshots {
    async fn get(&self, aggregate: &AggregateRef) -> Result<Option<Snapshot>, LogError> {
        let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM snapshots WHERE aggregate = ?")
            .bind(aggregate.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(body.and_then(|b| decode(aggregate, &b)))
    }

    async fn put(&self, aggregate: &AggregateRef, snapshot: &Snapshot) -> Result<bool, LogError> {
        let Some(body) = encode(snapshot)? else { return Ok(false) };
        sqlx::query(
            "INSERT INTO snapshots (aggregate, body) VALUES (?, ?) \
             ON CONFLICT (aggregate) DO UPDATE SET body = excluded.body",
        )
        .bind(aggregate.to_string())
        .bind(body)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }
}

/// Snapshots in a JetStream key-value bucket.
pub struct KvSnapshots {
    client: async_nats::Client,
    store: jetstream::kv::Store,
    bucket: String,
    /// Whether this connection stores snapshots (scoped credentials do not).
    writable: bool,
}

impl fmt::Debug for KvSnapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvSnapshots").field("bucket", &self.bucket).finish()
    }
}

impl KvSnapshots {
    /// Opens the bucket `bucket`, or creates it (when `manage`). Without
    /// `manage` (scoped credentials) snapshots are read, never stored.
    pub async fn open(js: &jetstream::Context, bucket: &str, replicas: usize, manage: bool) -> Result<Self, LogError> {
        let spec = crate::kv::BucketSpec {
            name: bucket,
            description: "Arc aggregate snapshots (derived from the log; safe to delete)",
            value_bytes_max: SNAPSHOT_BYTES_MAX,
            max_age: std::time::Duration::ZERO,
            replicas,
        };
        let store = crate::kv::bucket(js, &spec, manage).await?;
        Ok(Self { client: js.client(), store, bucket: bucket.to_owned(), writable: manage })
    }

    fn ensure_connected(&self) -> Result<(), LogError> {
        crate::kv::ensure_connected(&self.client)
    }

    fn key(aggregate: &AggregateRef) -> String {
        // Kinds and ids are tokens ([A-Za-z0-9_-]): valid key parts.
        format!("{}.{}", aggregate.kind(), aggregate.id())
    }
}

#[async_trait]
impl SnapshotStore for KvSnapshots {
    async fn get(&self, aggregate: &AggregateRef) -> Result<Option<Snapshot>, LogError> {
        self.ensure_connected()?;
        let body = self
            .store
            .get(Self::key(aggregate))
            .await
            .map_err(|e| LogError::Unavailable(format!("snapshot bucket {}: {e}", self.bucket)))?;
        Ok(body.and_then(|b| decode(aggregate, &b)))
    }

    async fn put(&self, aggregate: &AggregateRef, snapshot: &Snapshot) -> Result<bool, LogError> {
        if !self.writable {
            // Scoped credentials may not write the bucket: not stored, and not
            // tried again for another `SNAPSHOT_EVERY` events.
            return Ok(false);
        }
        self.ensure_connected()?;
        let Some(body) = encode(snapshot)? else { return Ok(false) };
        self.store
            .put(Self::key(aggregate), body.into())
            .await
            .map_err(|e| LogError::Unavailable(format!("snapshot bucket {}: {e}", self.bucket)))?;
        Ok(true)
    }
}
