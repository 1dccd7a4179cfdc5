//! Signed HTTP webhooks to each application's endpoints, driven entirely by
//! the event log: **the log is the queue**.
//!
//! - The **planner** ([`spawn`], [`catch_up`], [`rebuild`]) is a projection.
//!   It follows the log from its checkpoint (`projection_checkpoints`, name
//!   [`PROJECTION_NAME`]) and turns every source event of an app that has
//!   endpoints into one pending delivery per endpoint URL
//!   (`webhook_deliveries`), with the body fixed at planning time. Rows and
//!   checkpoint commit in one transaction; a rebuild reproduces the same rows
//!   (delivery ids are hashes of event id and URL).
//! - The **sender** POSTs due deliveries and appends each outcome to the log
//!   (`webhook.delivered`, `webhook.attempt_failed`, `webhook.dead_lettered`,
//!   aggregate `webhook`, id = delivery id); the planner folds them back
//!   into the rows. Operators redeliver dead ones with [`redeliver`]
//!   (`webhook.redelivery_requested`). Nothing is held only in memory, so
//!   nothing is dropped because a queue is full or a process was killed.
//!
//! # Receiver contract
//!
//! Each delivery is an HTTP `POST` of a JSON document to an endpoint URL
//! registered with `app.webhooks_set`:
//!
//! | header | value |
//! |---|---|
//! | `content-type` | `application/json` |
//! | `arc-webhook-id` | the source event's id (a UUID): the **idempotency key** |
//! | `arc-timestamp` | Unix seconds when this attempt was signed |
//! | `arc-signature` | `v1=<hex>`: HMAC-SHA256, keyed with the app secret, of `"<arc-timestamp>.<raw body>"` |
//! | `arc-webhook-attempt` | `1` for the first attempt, then `2`, `3`, … (back to `1` after a redelivery) |
//! | `user-agent` | `arc-webhooks/<version>` |
//!
//! Body:
//!
//! ```json
//! {
//!   "id": "0193c1d2-e3f4-7a8b-9c0d-1e2f3a4b5c6d",
//!   "type": "room.participant_joined",
//!   "app_id": "app_…",
//!   "room_id": "rm_…",
//!   "track_id": "tr_…",
//!   "recording_id": "rec_…",
//!   "occurred_at": "2025-01-01T12:00:00.000Z",
//!   "data": { "identity": "alice", "sid": "pa_…" }
//! }
//! ```
//!
//! `track_id` is present only for `track.*` events and `recording_id` only
//! for `recording.*` events; `data` is the event's payload as defined in
//! `schemas/events/<type>.v<version>.json`. Types delivered: `room.created`,
//! `room.closed`, `room.participant_joined`, `room.participant_left`,
//! `track.published`, `track.unpublished`, `recording.started`,
//! `recording.finished`, `recording.failed`. Ignore fields and types you do
//! not know.
//!
//! **Verify** every request before acting on it: compute
//! `HMAC-SHA256(app_secret, "<arc-timestamp>" + "." + <raw body bytes>)`,
//! hex-encode it, and compare it in constant time with the value after `v1=`
//! (accept the request if any of several comma-separated `v1=` values
//! matches; Arc sends one today). Reject timestamps too far from your clock
//! (replays), e.g. more than 5 minutes. Verify the raw bytes, not re-serialised
//! JSON. In Rust this is
//! `arc_auth::webhook::verify(&secret, ts_header, sig_header, body, now_unix, 300)`.
//! Each attempt is signed with the app's *current* secret at the time of the
//! attempt, so after a rotation retries carry the new one.
//!
//! **Answer** any `2xx` within the configured timeout ([`WebhookConfig::timeout`]) to
//! acknowledge. Anything else — another status (redirects are *not*
//! followed), a timeout, a refused connection — is a failed attempt: it is
//! retried with exponential backoff (`min(base·2^(n-1), max)` plus up to 10%
//! jitter) and, after [`WebhookConfig::attempts_max`] attempts, dead-lettered
//! until an operator redelivers it.
//!
//! **Deduplicate** by `arc-webhook-id`. Delivery is *at least once*: if the
//! sender dies between your `2xx` and recording it in the log, or your `2xx`
//! arrives after the timeout, the same event is sent again with the same id
//! and the same body (a new timestamp and signature). Remember the ids you
//! processed (for at least as long as the retry schedule lasts) and answer
//! `2xx` to a repeat without acting on it again.
//!
//! **Ordering.** Events of one room are delivered to one URL one at a time
//! in log order: the next one is sent only after the previous one was
//! acknowledged (or dead-lettered), so `room.closed` never arrives before
//! `room.created`. A dead-lettered event stops holding back the room's later
//! events (otherwise one bad event would stall its room forever), and a
//! redelivered one arrives late; use `occurred_at` if that matters to you.
//! There is no order across rooms or across URLs.
//!
//! # Operations
//!
//! Call [`migrate`] once at start, then [`spawn`]. The planner's tables live
//! in the read-model database beside arc-control's (which owns `apps` and
//! `projection_checkpoints`); the sender reads each app's sealed secret from
//! `apps` and opens it with the master key. If the app is deleted, or has no
//! secret once arc-control's `apps` read model has reached the delivery, the
//! delivery is dead-lettered with `app deleted`. While the apps read model
//! is behind, the delivery waits (no attempt is counted). Disabled apps
//! still receive their webhooks. Deliveries planned before an endpoint was
//! removed by a later `app.webhooks_set` are still attempted.
//!
//! Endpoints may be `http://` or `https://` (rustls; certificates are checked
//! against the system's store, the Mozilla roots and
//! [`WebhookConfig::ca_pem`]). Redirects are not followed: a 3xx is a failed
//! attempt.
//!
//! # Layout
//! - this file: the public calls; [`spawn`] runs planner and sender while
//!   this instance holds the `webhook_deliveries` lease (one per cluster).
//! - `plan`: the pure fold (routing, delivery ids, bodies, outcomes).
//! - `planner`: the runner (rows + checkpoint in one transaction).
//! - `sender`: picking due deliveries, POSTing, recording outcomes.
//! - `db`, `query`: SQL.

use std::sync::Arc;
use std::time::Duration;

use arc_auth::seal::MasterKey;
use arc_eventlog::{EventLog, LogError, Position};
use arc_events::Actor;
use thiserror::Error;
use tokio::sync::watch;

mod db;
mod plan;
mod planner;
mod query;
mod sender;
pub mod ssrf;

pub use planner::{BATCH_MAX, PROJECTION_NAME};
pub use query::LIST_MAX;
pub use sender::{ATTEMPT_HEADER, TICK, USER_AGENT};

/// How the sender retries and how much it sends at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Attempts before a delivery is dead-lettered (at least 1).
    pub attempts_max: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub backoff_base: Duration,
    /// Longest wait between attempts (before jitter).
    pub backoff_max: Duration,
    /// Whole-request timeout of one attempt.
    pub timeout: Duration,
    /// Most requests in flight at once (never two of the same URL and room).
    pub concurrency: usize,
    /// Extra CA certificates (PEM, one or more) trusted for `https://`
    /// endpoints, on top of the system's store and the Mozilla roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Which non-public addresses deliveries may reach ([`ssrf`]).
    pub policy: ssrf::AddressPolicy,
}

impl Default for WebhookConfig {
    /// 10 attempts, 5 s doubling up to 1 h (about 40 min until dead), 10 s timeout, 16 at once.
    fn default() -> Self {
        Self {
            attempts_max: 10,
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            concurrency: 16,
            ca_pem: None,
            policy: ssrf::AddressPolicy::default(),
        }
    }
}

/// Why a webhook operation failed.
#[derive(Debug, Error)]
pub enum WebhookError {
    /// No such delivery (or list cursor).
    #[error("webhook delivery not found")]
    NotFound,
    /// Only dead-lettered deliveries can be redelivered.
    #[error("webhook delivery is not dead-lettered")]
    NotDead,
    /// A malformed argument or stored value.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The read-model database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The event log failed (including a conflict with a concurrent writer).
    #[error(transparent)]
    Log(#[from] LogError),
    /// An event could not be encoded (a bug).
    #[error(transparent)]
    Encode(#[from] arc_events::EncodeError),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
    /// Another instance's planner moved the checkpoint past this one's (it
    /// took the lease over); nothing was written.
    #[error("another instance moved the webhook planner's checkpoint past {0}")]
    Superseded(Position),
}

/// One delivery: one source event to one endpoint URL (an API DTO).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Delivery {
    pub delivery_id: String,
    pub app_id: String,
    pub url: String,
    /// The source event's id (the receiver's `arc-webhook-id`).
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made (reset to 0 by a redelivery).
    pub attempts: i64,
    /// When the next attempt is due (RFC 3339); `None` unless pending.
    pub next_attempt_at: Option<String>,
    /// HTTP status of the last attempt, if the endpoint answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the source event occurred (RFC 3339).
    pub created_at: String,
    /// When the delivery last changed (RFC 3339, from the log).
    pub updated_at: String,
}

/// Creates the planner's tables and indexes if missing. Call once at start.
/// (`apps` and `projection_checkpoints` are arc-control's.)
pub async fn migrate(pool: &sqlx::AnyPool) -> Result<(), WebhookError> {
    // Several instances starting at once on one PostgreSQL race on
    // `CREATE TABLE IF NOT EXISTS` (a duplicate key in pg_type): the DDL runs
    // under an advisory lock, on one connection. SQLite serialises DDL itself.
    let mut conn = pool.acquire().await?;
    let postgres = !db::is_sqlite(pool);
    if postgres {
        sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
    }
    let mut result = Ok(());
    for statement in db::SCHEMA {
        if let Err(e) = sqlx::query(*statement).execute(&mut *conn).await {
            result = Err(e.into());
            break;
        }
    }
    if result.is_ok() {
        // Tables made by an older release lack the newer columns.
        for &(probe, add) in db::ADDED_COLUMNS {
            if sqlx::query(probe).execute(&mut *conn).await.is_err()
                && let Err(e) = sqlx::query(add).execute(&mut *conn).await
            {
                result = Err(e.into());
                break;
            }
        }
    }
    if postgres {
        sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK).execute(&mut *conn).await?;
    }
    result
}

/// The PostgreSQL advisory lock key held while the webhook tables are created.
const MIGRATION_LOCK: i64 = 0x4152_435f_5748_4b31; // "ARC_WHK1"

/// Spawns the planner and the sender onto `tasks`; returns the planner's
/// progress (the log position folded so far) as a sender, so the caller can
/// also move it with checkpoint notifications from another instance
/// ([`PROJECTION_NAME`]). Fails, spawning nothing, if the HTTP client cannot
/// be built (e.g. `ca_pem` holds no certificate).
///
/// Planner and sender run in the instance holding the `webhook_deliveries`
/// lease of `leases` (one per cluster: every delivery is planned once and
/// sent by one sender); the other instances follow its checkpoint.
///
/// The database flavour is taken from the pool's URL: `sqlite:` writes take
/// the lock with `BEGIN IMMEDIATE`; anything else uses plain transactions.
pub fn spawn(
    tasks: &mut tokio::task::JoinSet<()>,
    pool: sqlx::AnyPool,
    log: Arc<dyn EventLog>,
    master_key: Arc<MasterKey>,
    config: WebhookConfig,
    leases: &arc_lease::Leases,
) -> Result<watch::Sender<Position>, WebhookError> {
    let ctx = Arc::new(sender::Ctx::new(pool.clone(), log.clone(), master_key, config)?);
    let (progress_tx, _) = watch::channel(Position::START);
    let progress = progress_tx.clone();
    let mut lease = leases.lease(PROJECTION_NAME);
    tasks.spawn(async move {
        loop {
            if !lease.acquire().await {
                // Another instance plans and sends: track its checkpoint.
                if let Ok(c) = planner::checkpoint(&pool).await {
                    advance(&progress_tx, c.position);
                }
                tokio::time::sleep(arc_lease::RETRY).await;
                continue;
            }
            let checkpoint = match planner::checkpoint(&pool).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "webhook planner: reading the checkpoint failed; retrying");
                    tokio::time::sleep(planner::RETRY_DELAY).await;
                    continue;
                }
            };
            let mut planner = planner::Planner::with_checkpoint(
                pool.clone(),
                log.clone(),
                checkpoint,
                progress_tx.clone(),
                lease.is_shared(),
            );
            tokio::select! {
                () = planner.run() => {}
                () = sender::run(ctx.clone(), progress_tx.subscribe()) => {}
                () = lease.lost() => {
                    tracing::warn!("webhooks: lost the lease; another instance plans and sends now");
                }
            }
        }
    });
    Ok(progress)
}

/// Moves a progress channel forward to `p` (never back).
pub fn advance(progress: &watch::Sender<Position>, p: Position) {
    progress.send_if_modified(|cur| {
        if p > *cur {
            *cur = p;
            true
        } else {
            false
        }
    });
}

/// Applies the log up to `until` (for `arc-control catch-up`); returns the
/// events applied. Waits for the log if `until` is beyond its head.
pub async fn catch_up(pool: &sqlx::AnyPool, log: Arc<dyn EventLog>, until: Position) -> Result<u64, WebhookError> {
    planner::catch_up(pool, log, until).await
}

/// Empties the planner's tables and checkpoint and replays the log up to its
/// head (for `arc-control rebuild`); returns the events replayed. Delivery
/// states come back from the outcome events, so nothing is sent again.
pub async fn rebuild(pool: &sqlx::AnyPool, log: Arc<dyn EventLog>) -> Result<u64, WebhookError> {
    planner::rebuild(pool, log).await
}

/// An app's deliveries in log order (then delivery id), optionally in one
/// state, after the delivery `after` (a cursor: the last id of the previous
/// page; [`WebhookError::NotFound`] if it is not one of the app's). `limit`
/// is clamped to `1..=`[`LIST_MAX`]. [`WebhookError::Invalid`] for an
/// unknown state.
pub async fn list(
    pool: &sqlx::AnyPool,
    app_id: &str,
    state: Option<&str>,
    limit: i64,
    after: Option<&str>,
) -> Result<Vec<Delivery>, WebhookError> {
    query::list(pool, app_id, state, limit, after).await
}

/// Deliveries per state (`pending`, `delivered`, `dead`), for status and
/// metrics: the backlog is the pending ones.
pub async fn counts(pool: &sqlx::AnyPool) -> Result<Vec<(String, i64)>, WebhookError> {
    Ok(sqlx::query_as("SELECT state, COUNT(*) FROM webhook_deliveries GROUP BY state ORDER BY state")
        .fetch_all(pool)
        .await?)
}

/// One delivery.
pub async fn get(pool: &sqlx::AnyPool, delivery_id: &str) -> Result<Option<Delivery>, WebhookError> {
    query::get(pool, delivery_id).await
}

/// Appends `webhook.redelivery_requested` for a dead delivery and returns its
/// position; [`WebhookError::NotDead`] if it is pending or delivered,
/// [`WebhookError::NotFound`] if unknown. The append expects the delivery's
/// last seq as the read model knows it, so a stale read fails with a
/// [`LogError::Conflict`] instead of racing the sender.
pub async fn redeliver(
    pool: &sqlx::AnyPool,
    log: &dyn EventLog,
    delivery_id: &str,
    actor: Actor,
) -> Result<Position, WebhookError> {
    query::redeliver(pool, log, delivery_id, actor).await
}
