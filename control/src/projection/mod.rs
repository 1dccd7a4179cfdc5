//! Projections: pure folds of the event log into read-model rows, and the
//! runner that feeds them.
//!
//! A projection names the row an event touches ([`Projection::key`]) and
//! folds the event into that row ([`Projection::fold`], pure, no I/O). The
//! runner owns everything else: it subscribes to the log from the stored
//! checkpoint, takes whatever events are ready (up to [`BATCH_MAX`]), loads
//! the touched rows, folds, and writes the changed rows **and the new
//! checkpoint in one SQL transaction** — so a crash never applies an event
//! twice or skips one. (Live on a single instance, a batch with nothing for
//! the projection only moves the checkpoint in memory; the stored one
//! catches up within a second: see `Runner::apply`.) [`rebuild`] empties a projection's tables and replays
//! the log from the start.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_eventlog::{EventLog, LogError, Position, RecordedEvent};
use arc_events::{Decoded, Envelope};
use futures::StreamExt;
use sqlx::AnyConnection;
use tokio::sync::watch;

use crate::error::ControlError;
use crate::readdb::ReadDb;

pub mod apps;
pub mod nodes;
pub mod participants;
pub mod revoked;
pub mod rooms;
pub mod tracks;

/// Most events folded in one transaction.
pub const BATCH_MAX: usize = 2000;
/// Rows a runner keeps in memory between batches.
pub const ROW_CACHE_MAX: usize = 50_000;
/// First wait before resubscribing after the log failed; it doubles up to
/// [`RETRY_DELAY_MAX`] while failures repeat, and a reconnect to the log cuts
/// it short (the runner resumes the moment the log answers again).
const RETRY_DELAY_MIN: Duration = Duration::from_millis(50);
/// Longest wait between resubscriptions (a cluster electing a stream leader
/// sends no reconnect signal: this bounds how late a runner notices the end).
const RETRY_DELAY_MAX: Duration = Duration::from_millis(250);

/// Longest stored "last error" text (a driver's message can be long).
const FAILURE_TEXT_MAX: usize = 500;

/// A projection's failures on this instance (`/v1/status`, `/metrics`):
/// how many, and the last one with its time. Cheap to clone; written only
/// when something fails, read by status requests.
#[derive(Debug, Clone, Default)]
pub struct Failures(Arc<std::sync::Mutex<FailureState>>);

/// What [`Failures`] holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureState {
    /// Failures since this instance started (log outages count once per
    /// attempt to resubscribe; skipped records once each).
    pub count: u64,
    /// The last one, as logged.
    pub last: Option<String>,
    /// When it happened (Unix milliseconds).
    pub last_at_ms: Option<i64>,
}

impl Failures {
    /// Counts one failure and keeps its text as the last one.
    pub fn record(&self, what: impl std::fmt::Display) {
        let mut text = what.to_string();
        if text.len() > FAILURE_TEXT_MAX {
            let mut end = FAILURE_TEXT_MAX;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.count += 1;
        state.last = Some(text);
        state.last_at_ms = Some(now_ms());
    }

    /// What has been recorded so far.
    pub fn snapshot(&self) -> FailureState {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A query on the read-model database, for [`Projection::bind`].
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// A read model: a pure fold plus the shape of its rows.
///
/// The runner writes rows with generated multi-row upserts
/// (`INSERT … VALUES (…), (…) ON CONFLICT (key) DO UPDATE`), so a projection
/// only names its table and columns and binds a row's values in that order.
pub trait Projection: Send + Sync + 'static {
    /// Name under which the checkpoint is stored.
    const NAME: &'static str;
    /// The table holding the rows (emptied by a rebuild).
    const TABLE: &'static str;
    /// Every column, the key first.
    const COLUMNS: &'static [&'static str];
    /// One row of the read model.
    type Row: Clone + PartialEq + Send + Sync + std::fmt::Debug;

    /// The key of the row this event touches, if any.
    fn key(event: &Envelope) -> Option<String>;

    /// Folds one event into the row (`None` = no row yet / delete). Pure.
    fn fold(row: Option<Self::Row>, event: &Envelope) -> Option<Self::Row>;

    /// Binds a row's values in [`Self::COLUMNS`] order.
    fn bind<'q>(query: AnyQuery<'q>, row: &'q Self::Row) -> AnyQuery<'q>;

    /// Reads a row selected as [`Self::COLUMNS`].
    fn from_row(row: &sqlx::any::AnyRow) -> Result<Self::Row, sqlx::Error>;
}

/// Rows per generated upsert statement; batches are cut into these sizes so
/// the few statement shapes stay in the prepared-statement cache.
const UPSERT_CHUNKS: [usize; 6] = [128, 32, 8, 4, 2, 1];

fn upsert_sql<P: Projection>(rows: usize) -> String {
    let width = P::COLUMNS.len();
    let values: Vec<String> = (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=width).map(|c| format!("${}", r * width + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    let updates: Vec<String> = P::COLUMNS[1..].iter().map(|c| format!("{c} = excluded.{c}")).collect();
    format!(
        "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
        P::TABLE,
        P::COLUMNS.join(", "),
        values.join(", "),
        P::COLUMNS[0],
        updates.join(", ")
    )
}

async fn load_row<P: Projection>(conn: &mut AnyConnection, key: &str) -> Result<Option<P::Row>, sqlx::Error> {
    let sql = format!("SELECT {} FROM {} WHERE {} = $1", P::COLUMNS.join(", "), P::TABLE, P::COLUMNS[0]);
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key).fetch_optional(conn).await?.map(|r| P::from_row(&r)).transpose()
}

async fn save_rows<P: Projection>(
    conn: &mut AnyConnection,
    rows: &[(&String, Option<&P::Row>)],
) -> Result<(), sqlx::Error> {
    let upserts: Vec<&P::Row> = rows.iter().filter_map(|(_, r)| *r).collect();
    let mut rest = &upserts[..];
    while !rest.is_empty() {
        let size = UPSERT_CHUNKS.iter().copied().find(|n| *n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        let sql = upsert_sql::<P>(size);
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for row in chunk {
            query = P::bind(query, row);
        }
        query.execute(&mut *conn).await?;
        rest = tail;
    }
    for (key, _) in rows.iter().filter(|(_, r)| r.is_none()) {
        let sql = format!("DELETE FROM {} WHERE {} = $1", P::TABLE, P::COLUMNS[0]);
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key.as_str()).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Where a projection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub position: Position,
    pub events: u64,
}

/// Reads a projection's checkpoint.
pub async fn checkpoint(db: &ReadDb, name: &str) -> Result<Checkpoint, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT position, events FROM projection_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(&db.pool)
        .await?;
    Ok(row
        .map(|(p, e)| Checkpoint { position: Position(p.max(0) as u64), events: e.max(0) as u64 })
        .unwrap_or_default())
}

/// Moves checkpoint `name` from `from` to `to` inside `tx`, only if the
/// stored one is still `from` (a fence: a writer that lost its lease without
/// noticing yet commits nothing). Creates the row the first time.
pub(crate) async fn move_checkpoint(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    name: &str,
    from: Position,
    to: Checkpoint,
) -> Result<(), ControlError> {
    let moved = sqlx::query(
        "INSERT INTO projection_checkpoints (name, position, events, updated_at_ms) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, events = excluded.events, \
         updated_at_ms = excluded.updated_at_ms WHERE projection_checkpoints.position = $5",
    )
    .bind(name)
    .bind(to.position.0 as i64)
    .bind(to.events as i64)
    .bind(now_ms())
    .bind(from.0 as i64)
    .execute(&mut **tx)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(ControlError::Unavailable(format!("{name}: another instance moved the checkpoint past {from}")));
    }
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs one projection against one log and one database.
#[derive(Debug)]
pub struct Runner<P: Projection> {
    db: ReadDb,
    log: Arc<dyn EventLog>,
    /// Whether this instance may write the projection (one writer per cluster).
    lease: arc_lease::Lease,
    /// Whether other instances follow this one's commits (checkpoint notifications).
    notify: bool,
    cache: HashMap<String, Option<P::Row>>,
    /// The cache holds every row of the table (true after a rebuild started
    /// from empty tables, until the first eviction): misses need no SELECT.
    cache_complete: bool,
    checkpoint: Checkpoint,
    /// The position the database holds for this projection (the fence of
    /// the next write). Behind `checkpoint` while batches with nothing for
    /// this projection were passed over without a write (see [`Self::apply`]).
    stored: Position,
    /// When the checkpoint was last written.
    stored_at: Instant,
    /// Following the log live in a single-instance deployment: batches with
    /// nothing for this projection need no write (see [`Self::apply`]).
    lazy: bool,
    progress: watch::Sender<Checkpoint>,
    failures: Failures,
}

impl<P: Projection> Runner<P> {
    /// A runner starting from the stored checkpoint.
    pub async fn new(db: ReadDb, log: Arc<dyn EventLog>) -> Result<Self, ControlError> {
        let checkpoint = checkpoint(&db, P::NAME).await?;
        let cache_complete = checkpoint.position == Position::START && table_empty::<P>(&db).await?;
        let (progress, _) = watch::channel(checkpoint);
        let lease = arc_lease::Leases::embedded().lease(P::NAME);
        Ok(Self {
            db,
            log,
            lease,
            notify: false,
            cache: HashMap::new(),
            cache_complete,
            checkpoint,
            stored: checkpoint.position,
            stored_at: Instant::now(),
            lazy: false,
            progress,
            failures: Failures::default(),
        })
    }

    /// The runner writes only while it holds its lease (`leases` shared
    /// between instances: one writer per cluster).
    #[must_use]
    pub fn with_leases(mut self, leases: &arc_lease::Leases) -> Self {
        self.lease = leases.lease(P::NAME);
        self.notify = leases.shared();
        self
    }

    /// A handle that moves this runner's progress forward (for the
    /// checkpoint notifications another instance's writer sends).
    pub fn progress_sender(&self) -> watch::Sender<Checkpoint> {
        self.progress.clone()
    }

    /// This runner's failures (shared: they keep counting after `run` takes the runner).
    pub fn failures(&self) -> Failures {
        self.failures.clone()
    }

    /// Where the runner stands.
    pub fn checkpoint(&self) -> Checkpoint {
        self.checkpoint
    }

    /// Progress updates (the checkpoint after each committed batch).
    pub fn progress(&self) -> watch::Receiver<Checkpoint> {
        self.progress.subscribe()
    }

    /// Follows the log forever, resubscribing after failures: at once when
    /// the log's connection comes back, else after a short growing delay.
    /// Writes only while this instance holds the projection's lease; else it
    /// tracks the writer's checkpoint.
    pub async fn run(mut self) {
        // One instance (the embedded deployment): nobody else follows the
        // stored checkpoint, so it may lag a little (see `apply`).
        self.lazy = !self.notify && !self.lease.is_shared();
        let mut reconnects = self.log.reconnects();
        let mut delay = RETRY_DELAY_MIN;
        loop {
            if !self.lease.acquire().await {
                // Another instance writes: track its checkpoint (notifications
                // move it at once; this catches any that were missed).
                if let Ok(c) = checkpoint(&self.db, P::NAME).await {
                    track(&self.progress, c);
                }
                tokio::time::sleep(arc_lease::RETRY).await;
                continue;
            }
            if self.lease.is_shared() {
                // Another instance may have written since: start from the stored checkpoint.
                match checkpoint(&self.db, P::NAME).await {
                    Ok(c) if c.position > self.checkpoint.position => {
                        self.checkpoint = c;
                        self.stored = c.position;
                        self.cache.clear();
                        self.cache_complete = false;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(projection = P::NAME, error = %e, "reading the checkpoint failed");
                        self.failures.record(format_args!("reading the checkpoint: {e}"));
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            if let Some(r) = reconnects.as_mut() {
                r.mark_unchanged();
            }
            let before = self.checkpoint.position;
            // The lease is watched beside the work: losing it stops the writes.
            let mut lease = std::mem::replace(&mut self.lease, arc_lease::Leases::embedded().lease(P::NAME));
            // …and so is a rebuild request (`projection_rebuilds`, checked every second).
            let requests = self.db.clone();
            let stop = tokio::select! {
                r = self.follow(None) => Stop::Followed(r),
                () = lease.lost() => Stop::LeaseLost,
                () = rebuild_requested(&requests, P::NAME) => Stop::Rebuild,
            };
            self.lease = lease;
            let followed = match stop {
                Stop::Followed(r) => r,
                Stop::LeaseLost => {
                    tracing::warn!(projection = P::NAME, "lost the lease; another instance writes now");
                    self.cache.clear();
                    self.cache_complete = false;
                    continue;
                }
                Stop::Rebuild => {
                    match self.reset().await {
                        Ok(()) => tracing::info!(projection = P::NAME, "rebuilding: replaying the log from its start"),
                        Err(e) => {
                            tracing::error!(projection = P::NAME, error = %e, "starting a rebuild failed; retrying");
                            self.failures.record(format_args!("starting a rebuild: {e}"));
                            tokio::time::sleep(delay).await;
                        }
                    }
                    continue;
                }
            };
            match followed {
                Ok(()) => tracing::warn!(projection = P::NAME, "log subscription ended; resubscribing"),
                // Said once per outage, not once per retry.
                Err(ControlError::Log(LogError::Unavailable(why))) if delay == RETRY_DELAY_MIN => {
                    tracing::warn!(projection = P::NAME, %why, "log unavailable; resubscribing when it is back");
                    self.failures.record(format_args!("log unavailable: {why}"));
                }
                Err(ControlError::Log(LogError::Unavailable(why))) => {
                    tracing::debug!(projection = P::NAME, %why, "log still unavailable");
                    self.failures.record(format_args!("log unavailable: {why}"));
                }
                Err(e) => {
                    tracing::error!(projection = P::NAME, error = %e, "projection failed; retrying");
                    self.failures.record(&e);
                }
            }
            self.cache.clear();
            self.cache_complete = false;
            if self.checkpoint.position > before {
                delay = RETRY_DELAY_MIN;
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

    /// Starts a requested rebuild (this runner holds the lease): empties the
    /// table, resets the checkpoint and deletes the request in one
    /// transaction (followers on other instances learn of it from the
    /// notification), then follows from the start with an empty cache.
    async fn reset(&mut self) -> Result<(), ControlError> {
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", P::TABLE))).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO projection_checkpoints (name, position, events, updated_at_ms) VALUES ($1, 0, 0, $2) \
             ON CONFLICT (name) DO UPDATE SET position = 0, events = 0, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(P::NAME)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM projection_rebuilds WHERE name = $1").bind(P::NAME).execute(&mut *tx).await?;
        if self.notify {
            let payload = arc_lease::payload(P::NAME, 0, 0);
            sqlx::query(arc_lease::NOTIFY_SQL).bind(payload).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.checkpoint = Checkpoint::default();
        self.stored = Position::START;
        self.stored_at = Instant::now();
        self.cache.clear();
        self.cache_complete = true;
        self.progress.send_replace(self.checkpoint);
        Ok(())
    }

    /// Applies events until the checkpoint reaches `until` (or forever if `None`).
    ///
    /// Reading and decoding run in their own task, a few batches ahead of the
    /// SQL writes (a bounded channel), so both cores work during a rebuild.
    pub async fn follow(&mut self, until: Option<Position>) -> Result<(), ControlError> {
        if until.is_some_and(|u| self.checkpoint.position >= u) {
            return Ok(());
        }
        let events = self.log.subscribe(self.checkpoint.position).await?.ready_chunks(BATCH_MAX);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<Item>, LogError>>(PREFETCH_BATCHES);
        let reader = tokio::spawn(read_ahead::<P>(events, tx, self.failures.clone()));
        let result = async {
            loop {
                // While the stored checkpoint lags (see `apply`), an idle
                // log gets it stored after STORED_LAG_MAX.
                let batch = if self.lazy && self.stored < self.checkpoint.position {
                    match tokio::time::timeout(STORED_LAG_MAX, rx.recv()).await {
                        Ok(batch) => batch,
                        Err(_) => {
                            self.apply(Vec::new()).await?;
                            continue;
                        }
                    }
                } else {
                    rx.recv().await
                };
                let Some(batch) = batch else { return Ok(()) };
                let batch = batch?;
                if !batch.is_empty() {
                    self.apply(batch).await?;
                }
                if until.is_some_and(|u| self.checkpoint.position >= u) {
                    return Ok(());
                }
            }
        }
        .await;
        reader.abort();
        result
    }

    /// Folds one batch and commits rows plus checkpoint atomically.
    ///
    /// Following live on a single instance, a batch that holds nothing for
    /// this projection (no event it keys) moves the checkpoint in memory
    /// only: most events concern one or two read models, and a transaction
    /// per read model per event was most of an embedded write's latency. The
    /// stored checkpoint then lags by at most [`STORED_LAG_MAX`] (the next
    /// write, or the first batch after that time, stores it); after a crash
    /// the runner reads those events again and passes over them again. An
    /// empty batch stores the checkpoint as it is.
    async fn apply(&mut self, batch: Vec<Item>) -> Result<(), ControlError> {
        if self.lazy
            && !batch.is_empty()
            && self.stored_at.elapsed() < STORED_LAG_MAX
            && batch.iter().all(|i| i.keyed.is_none())
        {
            let mut next = self.checkpoint;
            for item in &batch {
                if item.position > next.position {
                    next = Checkpoint { position: item.position, events: next.events + 1 };
                }
            }
            self.checkpoint = next;
            self.progress.send_replace(next);
            return Ok(());
        }
        if batch.is_empty() {
            // Only the stored checkpoint catches up: nothing to trace.
            return self.write(batch).await;
        }
        // One span per written batch, linked to the requests whose events
        // it folds (their `traceparent`): a request's trace leads here.
        let span = tracing::info_span!("projection.apply", projection = P::NAME, events = batch.len());
        arc_telemetry::link_to(
            &span,
            batch.iter().filter_map(|i| i.keyed.as_ref().and_then(|(_, e)| e.traceparent.as_deref())),
            TRACE_LINKS_MAX,
        );
        use tracing::Instrument as _;
        self.write(batch).instrument(span).await
    }

    /// [`Self::apply`]'s transaction: rows and checkpoint.
    async fn write(&mut self, batch: Vec<Item>) -> Result<(), ControlError> {
        let _turn = self.db.write_turn().await;
        let mut tx = self.db.begin_write().await?;
        let mut dirty: HashSet<String> = HashSet::new();
        let mut staged: HashMap<String, Option<P::Row>> = HashMap::new();
        let mut last = self.checkpoint.position;
        let mut applied = 0u64;
        for item in batch {
            // Already applied (a redelivery): applying it again would double-count.
            if item.position <= last {
                tracing::warn!(projection = P::NAME, position = %item.position, "skipping a redelivered event");
                self.failures.record(format_args!("skipped a redelivered event at {}", item.position));
                continue;
            }
            last = item.position;
            applied += 1;
            let Some((key, envelope)) = item.keyed else { continue };
            let current = match staged.get(&key).or_else(|| self.cache.get(&key)) {
                Some(row) => row.clone(),
                None if self.cache_complete => None,
                None => load_row::<P>(&mut tx, &key).await?,
            };
            let next = P::fold(current.clone(), &envelope);
            if next != current {
                dirty.insert(key.clone());
            }
            staged.insert(key, next);
        }
        let mut writes: Vec<(&String, Option<&P::Row>)> =
            dirty.iter().map(|k| (k, staged.get(k).and_then(|r| r.as_ref()))).collect();
        writes.sort_by(|a, b| a.0.cmp(b.0));
        save_rows::<P>(&mut tx, &writes).await?;
        let next = Checkpoint { position: last, events: self.checkpoint.events + applied };
        // A fence: if another writer moved the checkpoint since this runner
        // read it (it lost its lease without noticing yet), nothing commits.
        move_checkpoint(&mut tx, P::NAME, self.stored, next).await?;
        if self.notify {
            // Followers on other instances move with the commit.
            let payload = arc_lease::payload(P::NAME, next.position.0, next.events);
            sqlx::query(arc_lease::NOTIFY_SQL).bind(payload).execute(&mut *tx).await?;
        }
        tx.commit().await?;

        self.checkpoint = next;
        self.stored = next.position;
        self.stored_at = Instant::now();
        if self.cache.len() + staged.len() > ROW_CACHE_MAX {
            self.cache.clear();
            self.cache_complete = false;
        }
        self.cache.extend(staged);
        self.progress.send_replace(next);
        Ok(())
    }
}

/// Why the runner stopped following.
enum Stop {
    Followed(Result<(), ControlError>),
    LeaseLost,
    Rebuild,
}

/// Most requests one batch's span links to (a rebuild's batches hold thousands).
const TRACE_LINKS_MAX: usize = 32;

/// How far (in time) a single instance's stored checkpoint may lag the
/// events it passed over without a write.
const STORED_LAG_MAX: Duration = Duration::from_secs(1);

/// How often a writer looks for a rebuild request.
const REBUILD_POLL: Duration = Duration::from_secs(1);

/// Resolves once a rebuild of `name` is requested (a row in
/// `projection_rebuilds`); read errors count as "not requested".
async fn rebuild_requested(db: &ReadDb, name: &str) {
    loop {
        tokio::time::sleep(REBUILD_POLL).await;
        let found: Result<Option<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT requested_at_ms FROM projection_rebuilds WHERE name = $1")
                .bind(name)
                .fetch_optional(&db.pool)
                .await;
        if matches!(found, Ok(Some(_))) {
            return;
        }
    }
}

/// Asks the writer of projection `name` (on whichever instance holds its
/// lease) to rebuild it online; a second request before it starts is one.
pub async fn request_rebuild(db: &ReadDb, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_rebuilds (name, requested_at_ms) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET requested_at_ms = excluded.requested_at_ms",
    )
    .bind(name)
    .bind(now_ms())
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The projections whose rebuild is requested and not started yet.
pub async fn rebuilds_pending(db: &ReadDb) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM projection_rebuilds ORDER BY name").fetch_all(&db.pool).await
}

/// Follows the stored checkpoint (read from the database while another
/// instance writes): moves the progress to `c` — back too when `c` has
/// fewer events, which a rebuild's reset makes (or a read that raced a newer
/// notification: moving back is always safe, it only makes readers wait
/// until the next notification or read).
pub fn track(progress: &watch::Sender<Checkpoint>, c: Checkpoint) {
    progress.send_if_modified(|cur| {
        if c.position > cur.position || c.events < cur.events {
            *cur = c;
            true
        } else {
            false
        }
    });
}

/// Follows a writer's commit notification: forward only, except the reset
/// a rebuild announces (position 0, no events), which moves it back to the
/// start. (Notifications arrive in commit order, possibly after this
/// instance's own runner moved on: only the reset may move back.)
pub fn notified(progress: &watch::Sender<Checkpoint>, c: Checkpoint) {
    if c == Checkpoint::default() {
        progress.send_if_modified(|cur| std::mem::replace(cur, c) != c);
    } else {
        advance(progress, c);
    }
}

/// Moves a progress channel forward to `c` (never back).
pub fn advance(progress: &watch::Sender<Checkpoint>, c: Checkpoint) {
    progress.send_if_modified(|cur| {
        if c.position > cur.position {
            *cur = c;
            true
        } else {
            false
        }
    });
}

/// One event as the runner needs it: its position, and — if this projection
/// cares — the row key and the decoded envelope.
#[derive(Debug)]
struct Item {
    position: Position,
    keyed: Option<(String, Box<Envelope>)>,
}

/// Batches waiting for the runner beyond the one the reader is filling.
const PREFETCH_BATCHES: usize = 1;

/// Reads and decodes ahead of the runner. What arrives while the runner is
/// busy joins one batch (up to [`BATCH_MAX`]), which goes out as soon as the
/// runner can take it: a live follow hands over every event at once, and a
/// rebuild commits large batches even when the log delivers a few events at
/// a time (JetStream's pull consumer: about 30 per poll, which made one SQL
/// transaction per 30 events).
async fn read_ahead<P: Projection>(
    mut events: impl futures::Stream<Item = Vec<Result<RecordedEvent, LogError>>> + Unpin,
    tx: tokio::sync::mpsc::Sender<Result<Vec<Item>, LogError>>,
    failures: Failures,
) {
    let mut pending: Vec<Item> = Vec::new();
    let mut failure = None;
    let mut ended = false;
    while !ended {
        tokio::select! {
            biased;
            permit = tx.reserve(), if !pending.is_empty() => {
                let Ok(permit) = permit else { return };
                permit.send(Ok(std::mem::take(&mut pending)));
            }
            batch = events.next(), if pending.len() < BATCH_MAX => {
                let Some(batch) = batch else {
                    ended = true;
                    continue;
                };
                for event in batch {
                    match event {
                        Ok(recorded) => {
                            pending.push(Item { position: recorded.position, keyed: decode::<P>(&recorded, &failures) });
                        }
                        Err(LogError::Corrupt { position, reason }) => {
                            tracing::error!(projection = P::NAME, position, %reason, "skipping a corrupt log record");
                            failures.record(format_args!("skipped a corrupt log record at {position}: {reason}"));
                        }
                        Err(e) => {
                            failure = Some(e);
                            ended = true;
                            break;
                        }
                    }
                }
            }
        }
    }
    if !pending.is_empty() && tx.send(Ok(pending)).await.is_err() {
        return;
    }
    if let Some(e) = failure {
        let _ = tx.send(Err(e)).await;
    }
}

fn decode<P: Projection>(recorded: &RecordedEvent, failures: &Failures) -> Option<(String, Box<Envelope>)> {
    let envelope = match recorded.raw.decode() {
        Ok(Decoded::Known(e)) => e,
        Ok(Decoded::Unknown { event_type, version }) => {
            tracing::warn!(projection = P::NAME, %event_type, version, "skipping an event type this build does not know");
            return None;
        }
        Err(e) => {
            tracing::error!(projection = P::NAME, position = %recorded.position, error = %e, "skipping an undecodable event");
            failures.record(format_args!("skipped an undecodable event at {}: {e}", recorded.position));
            return None;
        }
    };
    P::key(&envelope).map(|key| (key, envelope))
}

async fn table_empty<P: Projection>(db: &ReadDb) -> Result<bool, sqlx::Error> {
    let sql = format!("SELECT COUNT(*) FROM {}", P::TABLE);
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&db.pool).await?;
    Ok(n == 0)
}

/// Empties the projection's tables and checkpoint (one transaction), then
/// replays the log up to its current head. Returns the events replayed.
pub async fn rebuild<P: Projection>(db: &ReadDb, log: Arc<dyn EventLog>) -> Result<u64, ControlError> {
    {
        let _turn = db.write_turn().await;
        let mut tx = db.begin_write().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {}", P::TABLE))).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(P::NAME).execute(&mut *tx).await?;
        tx.commit().await?;
    }
    let head = log.head().await?;
    let mut runner = Runner::<P>::new(db.clone(), log).await?;
    runner.follow(Some(head)).await?;
    Ok(runner.checkpoint.events)
}

/// Every projection arc-control runs, by name.
pub const ALL: [&str; 6] = [
    rooms::RoomsProjection::NAME,
    nodes::NodesProjection::NAME,
    apps::AppsProjection::NAME,
    participants::ParticipantsProjection::NAME,
    tracks::TracksProjection::NAME,
    revoked::RevokedProjection::NAME,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: u64, events: u64) -> Checkpoint {
        Checkpoint { position: Position(position), events }
    }

    #[test]
    fn notifications_move_forward_except_a_rebuilds_reset() {
        let (tx, rx) = watch::channel(at(200, 200));
        // A late notification of an earlier commit: no step back.
        notified(&tx, at(100, 100));
        assert_eq!(*rx.borrow(), at(200, 200));
        notified(&tx, at(300, 300));
        assert_eq!(*rx.borrow(), at(300, 300));
        // The reset a rebuild announces: back to the start, then forward again.
        notified(&tx, Checkpoint::default());
        assert_eq!(*rx.borrow(), Checkpoint::default());
        notified(&tx, at(50, 50));
        assert_eq!(*rx.borrow(), at(50, 50));
    }

    #[test]
    fn the_stored_checkpoint_is_followed_back_after_a_reset() {
        let (tx, rx) = watch::channel(at(500, 500));
        // Read from the database while a rebuild runs: fewer events.
        track(&tx, at(120, 120));
        assert_eq!(*rx.borrow(), at(120, 120));
        track(&tx, at(120, 120));
        track(&tx, at(600, 600));
        assert_eq!(*rx.borrow(), at(600, 600));
        advance(&tx, at(10, 10));
        assert_eq!(*rx.borrow(), at(600, 600), "advance never moves back");
    }
}
