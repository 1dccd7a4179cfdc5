//! The embedded event log: SQLite through sqlx, for one machine with nothing
//! installed (`arc-control dev`).
//!
//! Durability: WAL journal with `synchronous=FULL`, so an append is
//! acknowledged only after its commit reached the disk. Concurrency and
//! idempotency are enforced by the schema (`UNIQUE (aggregate_type,
//! aggregate_id, seq)`, `UNIQUE (event_id)`), and `position` (the rowid) is
//! the global order.
//!
//! One writer task owns the only write connection and group-commits: it takes
//! every append waiting in its queue (up to [`GROUP_COMMIT_MAX`]), checks them
//! in order, writes them in one transaction and one fsync, then answers each.
//! Readers use a separate read-only pool; live subscribers are woken by a
//! watch channel of the head position, never by polling.
//!
//! A lock file beside the database keeps a second process from writing to the
//! same log (the writer's sequence cache assumes it is the only writer).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_events::{AggregateRef, EventId, RawEvent};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::LogError;
use crate::log::{
    APPEND_BYTES_MAX, AppendRequest, Appended, EventLog, Expected, Position, RecordedEvent, Subscription, prepare,
    validate,
};

/// Most appends committed in one transaction.
pub const GROUP_COMMIT_MAX: usize = 512;
/// Appends waiting for the writer before callers wait for room.
pub const WRITE_QUEUE_MAX: usize = 4096;
/// Aggregates whose last seq the writer remembers.
pub const SEQ_CACHE_MAX: usize = 100_000;
/// Events read per page by subscriptions and rebuilds.
pub const READ_PAGE_MAX: usize = 1000;
/// Read-only connections.
const READERS_MAX: u32 = 4;
/// Rows per INSERT statement (8 parameters each, under SQLite's 32766 limit).
/// A group is cut into these sizes so the few statement shapes stay in the
/// prepared-statement cache instead of being compiled for every group.
const INSERT_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    readers: SqlitePool,
    writes: mpsc::Sender<WriteRequest>,
    head: watch::Receiver<u64>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Nodes' load samples: in memory (the embedded node is in this process).
    board: Arc<crate::load::MemoryBoard>,
    /// Aggregate snapshots, in their own file beside the log's.
    snapshots: Arc<crate::snapshot::SqliteSnapshots>,
    _lock: File,
}

#[derive(Debug)]
struct WriteRequest {
    request: AppendRequest,
    reply: oneshot::Sender<Result<Appended, LogError>>,
}

fn options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path`, e.g. `arc-data/events.db`.
    pub async fn open(path: &Path) -> Result<Self, LogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| LogError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock_path = path.with_extension("lock");
        let lock = File::create(&lock_path)
            .map_err(|e| LogError::Backend(format!("cannot create {}: {e}", lock_path.display())))?;
        lock.try_lock()
            .map_err(|e| LogError::Backend(format!("{} is in use by another process ({e})", path.display())))?;

        let mut writer = SqliteConnection::connect_with(&options(path).create_if_missing(true)).await?;
        MIGRATOR.run(&mut writer).await.map_err(|e| LogError::Backend(format!("migrating the log: {e}")))?;
        let last: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM events").fetch_one(&mut writer).await?;
        let head = u64::try_from(last.unwrap_or(0)).unwrap_or(0);

        let readers =
            SqlitePoolOptions::new().max_connections(READERS_MAX).connect_with(options(path).read_only(true)).await?;
        let snapshots = crate::snapshot::SqliteSnapshots::open(&path.with_extension("snapshots.db")).await?;
        let (head_tx, head_rx) = watch::channel(head);
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_MAX);
        let task =
            tokio::spawn(Writer { conn: writer, next_position: head + 1, seqs: HashMap::new(), head: head_tx }.run(rx));
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                readers,
                writes: tx,
                head: head_rx,
                writer: tokio::sync::Mutex::new(Some(task)),
                board: Arc::default(),
                snapshots: Arc::new(snapshots),
                _lock: lock,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops accepting appends once this and every clone is dropped; waits
    /// for the writer to finish what it holds. Reads keep working.
    pub async fn close(self) {
        let task = self.inner.writer.lock().await.take();
        drop(self);
        if let Some(task) = task {
            // The writer ends once every sender (every clone) is gone.
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

struct Writer {
    conn: SqliteConnection,
    next_position: u64,
    /// Last seq per aggregate, valid because this task is the only writer.
    seqs: HashMap<(String, String), u64>,
    head: watch::Sender<u64>,
}

/// A request accepted by the group's checks, waiting for the commit.
struct Staged {
    rows: Vec<(u64, RawEvent, String)>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<WriteRequest>) {
        let mut group = Vec::with_capacity(GROUP_COMMIT_MAX);
        while rx.recv_many(&mut group, GROUP_COMMIT_MAX).await > 0 {
            let requests: Vec<&AppendRequest> = group.iter().map(|w| &w.request).collect();
            match self.commit(&requests).await {
                Ok(results) => {
                    for (w, r) in group.drain(..).zip(results) {
                        let _ = w.reply.send(r);
                    }
                }
                Err(e) => {
                    // The group failed as a whole (a disk error, or an event id
                    // stored under another aggregate): retry each alone so one
                    // bad append cannot fail the others.
                    tracing::warn!(error = %e, size = group.len(), "group commit failed; retrying appends one by one");
                    for w in group.drain(..) {
                        let r = match self.commit(&[&w.request]).await {
                            Ok(mut rs) => rs.pop().unwrap_or_else(|| Err(LogError::Backend("no result".into()))),
                            Err(e) => Err(classify(e)),
                        };
                        let _ = w.reply.send(r);
                    }
                }
            }
        }
    }

    async fn reset(&mut self) {
        self.seqs.clear();
        if let Ok(last) =
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(position) FROM events").fetch_one(&mut self.conn).await
        {
            self.next_position = u64::try_from(last.unwrap_or(0)).unwrap_or(0) + 1;
        }
    }

    async fn commit(&mut self, requests: &[&AppendRequest]) -> Result<Vec<Result<Appended, LogError>>, sqlx::Error> {
        let result = self.try_commit(requests).await;
        if result.is_err() {
            self.reset().await;
        }
        result
    }

    async fn try_commit(
        &mut self,
        requests: &[&AppendRequest],
    ) -> Result<Vec<Result<Appended, LogError>>, sqlx::Error> {
        let mut tx = self.conn.begin().await?;
        let mut results = Vec::with_capacity(requests.len());
        let mut staged: Vec<Staged> = Vec::with_capacity(requests.len());
        let mut seqs: HashMap<(String, String), u64> = HashMap::new();
        // First event id of each batch staged in this group, for in-group duplicates.
        let mut staged_ids: HashMap<EventId, Appended> = HashMap::new();
        let mut position = self.next_position;

        for request in requests {
            if let Err(e) = validate(request) {
                results.push(Err(e));
                continue;
            }
            let key = (request.aggregate.kind().as_str().to_owned(), request.aggregate.id().to_owned());
            let actual = match seqs.get(&key).or_else(|| self.seqs.get(&key)) {
                Some(s) => *s,
                None => {
                    let s: Option<i64> = sqlx::query_scalar(
                        "SELECT MAX(seq) FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2",
                    )
                    .bind(&key.0)
                    .bind(&key.1)
                    .fetch_one(&mut *tx)
                    .await?;
                    u64::try_from(s.unwrap_or(0)).unwrap_or(0)
                }
            };
            let first_id = request.events[0].id;
            let check_duplicate = match request.expected {
                Expected::Exact(n) => n != actual,
                Expected::Any => true,
            };
            if check_duplicate {
                if let Some(done) = staged_ids.get(&first_id) {
                    results.push(Ok(Appended { duplicate: true, ..*done }));
                    continue;
                }
                if let Some(done) = find_batch(&mut tx, first_id, request.events.len()).await? {
                    results.push(Ok(done));
                    continue;
                }
                if let Expected::Exact(expected) = request.expected {
                    results.push(Err(LogError::Conflict { aggregate: request.aggregate.clone(), expected, actual }));
                    continue;
                }
            }
            let events = match prepare(request, actual) {
                Ok(e) => e,
                Err(e) => {
                    results.push(Err(e));
                    continue;
                }
            };
            let mut rows = Vec::with_capacity(events.len());
            let mut bytes = 0;
            for (i, e) in events.into_iter().enumerate() {
                let json = serde_json::to_string(&e).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                bytes += json.len();
                rows.push((position + i as u64, e, json));
            }
            if bytes > APPEND_BYTES_MAX {
                results.push(Err(LogError::TooLarge { what: "encoded bytes", actual: bytes, max: APPEND_BYTES_MAX }));
                continue;
            }
            let n = rows.len() as u64;
            let appended = Appended {
                first: Position(position),
                last: Position(position + n - 1),
                last_seq: actual + n,
                duplicate: false,
            };
            position += n;
            seqs.insert(key, actual + n);
            staged_ids.insert(first_id, appended);
            staged.push(Staged { rows });
            results.push(Ok(appended));
        }

        let all: Vec<&(u64, RawEvent, String)> = staged.iter().flat_map(|s| s.rows.iter()).collect();
        let mut rest = &all[..];
        while !rest.is_empty() {
            let size = INSERT_CHUNKS.iter().copied().find(|n| *n <= rest.len()).unwrap_or(1);
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO events (position, event_id, aggregate_type, aggregate_id, seq, event_type, occurred_at, record) ",
            );
            q.push_values(chunk.iter(), |mut b, (pos, e, json)| {
                b.push_bind(i64::try_from(*pos).unwrap_or(i64::MAX))
                    .push_bind(e.id.0.to_string())
                    .push_bind(e.aggregate_type.clone())
                    .push_bind(e.aggregate_id.clone())
                    .push_bind(i64::try_from(e.seq).unwrap_or(i64::MAX))
                    .push_bind(e.event_type.clone())
                    .push_bind(e.occurred_at.to_rfc3339())
                    .push_bind(json.clone());
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;

        self.next_position = position;
        if self.seqs.len() + seqs.len() > SEQ_CACHE_MAX {
            self.seqs.clear();
        }
        self.seqs.extend(seqs);
        if !all.is_empty() {
            self.head.send_replace(position - 1);
        }
        Ok(results)
    }
}

/// Looks up a batch by its first event id: `Some` if it is already stored.
async fn find_batch(
    conn: &mut SqliteConnection,
    first_id: EventId,
    len: usize,
) -> Result<Option<Appended>, sqlx::Error> {
    let row = sqlx::query("SELECT position, seq FROM events WHERE event_id = ?1")
        .bind(first_id.0.to_string())
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|row| {
        let first = u64::try_from(row.get::<i64, _>(0)).unwrap_or(0);
        let seq = u64::try_from(row.get::<i64, _>(1)).unwrap_or(0);
        let n = len as u64;
        Appended { first: Position(first), last: Position(first + n - 1), last_seq: seq + n - 1, duplicate: true }
    }))
}

fn classify(e: sqlx::Error) -> LogError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return LogError::Invalid(format!("an event id of this batch is already stored elsewhere ({db})"));
    }
    e.into()
}

fn decode_row(position: i64, record: &str) -> Result<RecordedEvent, LogError> {
    let position = u64::try_from(position).unwrap_or(0);
    let raw: RawEvent =
        serde_json::from_str(record).map_err(|e| LogError::Corrupt { position, reason: e.to_string() })?;
    Ok(RecordedEvent { position: Position(position), raw })
}

async fn read_page(pool: &SqlitePool, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
    let rows = sqlx::query("SELECT position, record FROM events WHERE position > ?1 ORDER BY position LIMIT ?2")
        .bind(i64::try_from(after.0).unwrap_or(i64::MAX))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| decode_row(r.get(0), r.get(1))).collect()
}

#[async_trait]
impl EventLog for SqliteLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, LogError> {
        validate(&request)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .writes
            .send(WriteRequest { request, reply })
            .await
            .map_err(|_| LogError::Unavailable("the log is closed".into()))?;
        answer.await.map_err(|_| LogError::Unavailable("the log writer stopped".into()))?
    }

    async fn read_aggregate(&self, aggregate: &AggregateRef, after_seq: u64) -> Result<Vec<RecordedEvent>, LogError> {
        let rows = sqlx::query(
            "SELECT position, record FROM events WHERE aggregate_type = ?1 AND aggregate_id = ?2 AND seq > ?3 ORDER BY seq",
        )
        .bind(aggregate.kind().as_str())
        .bind(aggregate.id())
        .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
        .fetch_all(&self.inner.readers)
        .await?;
        rows.iter().map(|r| decode_row(r.get(0), r.get(1))).collect()
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        read_page(&self.inner.readers, after, limit).await
    }

    async fn subscribe(&self, after: Position) -> Result<Subscription, LogError> {
        struct State {
            pool: SqlitePool,
            head: watch::Receiver<u64>,
            position: Position,
            buffer: VecDeque<RecordedEvent>,
            failed: bool,
        }
        let state = State {
            pool: self.inner.readers.clone(),
            head: self.inner.head.clone(),
            position: after,
            buffer: VecDeque::new(),
            failed: false,
        };
        Ok(Box::pin(futures::stream::unfold(state, |mut s| async move {
            if s.failed {
                return None;
            }
            loop {
                if let Some(e) = s.buffer.pop_front() {
                    s.position = e.position;
                    return Some((Ok(e), s));
                }
                // Wait (without polling) until the head moves past us.
                let position = s.position.0;
                if s.head.wait_for(|head| *head > position).await.is_err() {
                    // The log was closed: deliver what is stored, then end.
                    if *s.head.borrow() <= position {
                        return None;
                    }
                }
                match read_page(&s.pool, s.position, READ_PAGE_MAX).await {
                    Ok(page) => s.buffer.extend(page),
                    Err(e) => {
                        s.failed = true;
                        return Some((Err(e), s));
                    }
                }
            }
        })))
    }

    async fn head(&self) -> Result<Position, LogError> {
        Ok(Position(*self.inner.head.borrow()))
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn load_board(&self) -> Arc<dyn crate::load::LoadBoard> {
        self.inner.board.clone()
    }

    fn snapshots(&self) -> Arc<dyn crate::snapshot::SnapshotStore> {
        self.inner.snapshots.clone()
    }
}
