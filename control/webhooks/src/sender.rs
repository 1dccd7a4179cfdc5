//! The sender: POSTs due deliveries and records every outcome in the log.
//!
//! It never writes the planner's tables: an outcome is an event
//! (`webhook.delivered`, `webhook.attempt_failed`, `webhook.dead_lettered`)
//! that the planner folds back into the delivery's row. Until the planner's
//! progress reaches an outcome's position, the sender holds that delivery's
//! order key, so it never sends a delivery again on a stale row.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_auth::seal::{MasterKey, SealedSecret};
use arc_auth::secret::AppSecret;
use arc_eventlog::{AppendRequest, EventLog, Expected, LogError, Position};
use arc_events::webhook::{WebhookAttemptFailed, WebhookDeadLettered, WebhookDelivered};
use arc_events::{Actor, AggregateKind, AggregateRef, AppId, CommandMeta, Event, EventId, RawEvent, WebhookEvent};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::{WebhookConfig, WebhookError};

/// The attempt number header (1 for the first attempt).
pub const ATTEMPT_HEADER: &str = "arc-webhook-attempt";
/// The sender's `user-agent`.
pub const USER_AGENT: &str = concat!("arc-webhooks/", env!("CARGO_PKG_VERSION"));
/// The sender wakes up at least this often to look for due deliveries.
pub const TICK: Duration = Duration::from_millis(250);
/// Name of the apps projection's checkpoint (arc-control's `apps` read model).
const APPS_PROJECTION: &str = "apps";
/// How long an order key waits when its app's row is not (yet) readable.
const APP_WAIT: Duration = Duration::from_secs(1);
/// How long an order key waits after the database or the log failed.
const FAILURE_WAIT: Duration = Duration::from_secs(1);
/// Attempts to record one outcome while the log is unreachable (about one a
/// second): the receiver already got the POST, so the outcome is kept and
/// recorded when the log is back rather than sent again. Past this bound the
/// delivery is retried (at least once, never lost).
const OUTCOME_APPEND_ATTEMPTS_MAX: u32 = 900;
/// Most jitter added to a backoff, as a fraction of it.
const JITTER_MAX: f64 = 0.1;
/// Component name of the sender's actor.
pub(crate) const COMPONENT: &str = "webhooks";

/// A delivery due now, as the sender needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Due {
    pub(crate) delivery_id: String,
    pub(crate) app_id: String,
    pub(crate) url: String,
    pub(crate) order_key: String,
    pub(crate) position: i64,
    pub(crate) event_id: String,
    pub(crate) body: String,
    pub(crate) attempts: i64,
    pub(crate) seq: i64,
    /// The source event's trace context (the attempt's span is its child).
    pub(crate) traceparent: Option<String>,
}

/// Pending, due, and head of its order key's line: no pending delivery of
/// the same key comes earlier in the log.
const DUE_SQL: &str = "SELECT d.delivery_id, d.app_id, d.url, d.order_key, d.position, d.event_id, d.body, \
    d.attempts, d.seq, d.traceparent FROM webhook_deliveries d \
    WHERE d.state = 'pending' AND d.next_attempt_ms <= $1 \
    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e \
        WHERE e.order_key = d.order_key AND e.state = 'pending' AND e.position < d.position) \
    ORDER BY d.next_attempt_ms, d.position, d.delivery_id LIMIT $2";

async fn due(pool: &AnyPool, now_ms: i64, limit: usize) -> Result<Vec<Due>, sqlx::Error> {
    type DueRow = (String, String, String, String, i64, String, String, i64, i64, Option<String>);
    let rows: Vec<DueRow> = sqlx::query_as(DUE_SQL).bind(now_ms).bind(limit as i64).fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(|(delivery_id, app_id, url, order_key, position, event_id, body, attempts, seq, traceparent)| Due {
            delivery_id,
            app_id,
            url,
            order_key,
            position,
            event_id,
            body,
            attempts,
            seq,
            traceparent,
        })
        .collect())
}

/// Why an order key may not be picked right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// A delivery of this key is being sent.
    InFlight,
    /// Its outcome was appended here; the planner has not folded it yet.
    UntilPosition(Position),
    /// Try again later (the app is not readable yet, or something failed).
    Until(Instant),
}

impl Hold {
    fn released(self, progress: Position, now: Instant) -> bool {
        match self {
            Self::InFlight => false,
            Self::UntilPosition(p) => progress >= p,
            Self::Until(t) => now >= t,
        }
    }
}

/// Picks up to `free` candidates whose order key is not held, one per key.
pub(crate) fn select(candidates: Vec<Due>, held: &HashMap<String, Hold>, free: usize) -> Vec<Due> {
    let mut out: Vec<Due> = Vec::new();
    for c in candidates {
        if out.len() >= free {
            break;
        }
        if held.contains_key(&c.order_key) || out.iter().any(|o| o.order_key == c.order_key) {
            continue;
        }
        out.push(c);
    }
    out
}

/// Wait before attempt `attempt + 1` after attempt `attempt` failed:
/// `min(base * 2^(attempt-1), max)` plus up to 10% jitter. The jitter is
/// derived from `seed` (the delivery id) and the attempt, so retries of many
/// deliveries spread out while each schedule stays reproducible.
pub(crate) fn backoff(config: &WebhookConfig, attempt: u32, seed: &str) -> Duration {
    let doublings = attempt.saturating_sub(1).min(31);
    let wait = config.backoff_base.saturating_mul(1u32 << doublings).min(config.backoff_max);
    let digest = Sha256::new().chain_update(seed.as_bytes()).chain_update(attempt.to_be_bytes()).finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let fraction = u64::from_be_bytes(bytes) as f64 / u64::MAX as f64;
    wait + wait.mul_f64(JITTER_MAX * fraction)
}

/// What one attempt ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered { attempt: u32, status: u16, duration_ms: u64 },
    Failed { attempt: u32, status: Option<u16>, error: String, retry_at: DateTime<Utc> },
    Dead { attempts: u32, status: Option<u16>, error: String },
}

/// Decides what attempt number `attempt` (from 1) ended with, given the
/// endpoint's answer (`Ok(status)`) or why there was none.
pub(crate) fn decide(
    config: &WebhookConfig,
    delivery_id: &str,
    attempt: u32,
    answer: Result<u16, String>,
    duration_ms: u64,
    now: DateTime<Utc>,
) -> Outcome {
    let (status, error) = match answer {
        Ok(status) if (200..300).contains(&status) => return Outcome::Delivered { attempt, status, duration_ms },
        Ok(status) => (Some(status), format!("status {status}")),
        Err(error) => (None, error),
    };
    if attempt >= config.attempts_max.max(1) {
        return Outcome::Dead { attempts: attempt, status, error };
    }
    let wait = backoff(config, attempt, delivery_id);
    let retry_at = now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
    Outcome::Failed { attempt, status, error, retry_at }
}

/// The app's current signing secret, as far as the read model knows.
#[derive(Debug)]
enum Secret {
    Ready(AppSecret),
    /// The apps read model has not caught up with the delivery yet.
    Wait,
    /// Deleted, or no secret although the read model is past the delivery.
    Gone,
    /// The sealed secret does not open (e.g. another master key).
    Broken(String),
}

async fn secret(pool: &AnyPool, master_key: &MasterKey, due: &Due) -> Result<Secret, sqlx::Error> {
    let row: Option<(String, Option<String>)> =
        sqlx::query_as("SELECT state, secret_sealed FROM apps WHERE app_id = $1")
            .bind(&due.app_id)
            .fetch_optional(pool)
            .await?;
    match row {
        Some((state, _)) if state == "deleted" => return Ok(Secret::Gone),
        Some((_, Some(sealed))) => {
            let sealed: SealedSecret = match serde_json::from_str(&sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Secret::Broken(format!("sealed secret is not readable: {e}"))),
            };
            return Ok(match arc_auth::seal::open(master_key, &sealed, due.app_id.as_bytes()) {
                Ok(plain) => match String::from_utf8(plain.to_vec()) {
                    Ok(s) => Secret::Ready(AppSecret::from_string(s)),
                    Err(_) => Secret::Broken("app secret is not UTF-8".into()),
                },
                Err(e) => Secret::Broken(format!("app secret does not open: {e}")),
            });
        }
        _ => {}
    }
    // No row or no secret: final only once the apps read model has folded
    // the log past this delivery's source event.
    let apps_at: Option<i64> = sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
        .bind(APPS_PROJECTION)
        .fetch_optional(pool)
        .await?;
    Ok(if apps_at.is_some_and(|p| p >= due.position) { Secret::Gone } else { Secret::Wait })
}

/// Everything an attempt needs.
pub(crate) struct Ctx {
    pub(crate) pool: AnyPool,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) master_key: Arc<MasterKey>,
    pub(crate) config: WebhookConfig,
    pub(crate) client: reqwest::Client,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("log", &self.log).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Ctx {
    pub(crate) fn new(
        pool: AnyPool,
        log: Arc<dyn EventLog>,
        master_key: Arc<MasterKey>,
        config: WebhookConfig,
    ) -> Result<Self, WebhookError> {
        let mut builder = reqwest::Client::builder();
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| WebhookError::Invalid(format!("webhook CA certificates: {e}")))?;
            if certs.is_empty() {
                return Err(WebhookError::Invalid("webhook CA certificates: no PEM certificate found".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        // Names resolve through the policy (a refused address is never
        // handed to the client); no proxy, so the connection goes where it was checked.
        let resolver = crate::ssrf::CheckedResolver { policy: Arc::new(config.policy.clone()) };
        let client = builder
            .user_agent(USER_AGENT)
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()
            .map_err(|e| WebhookError::Http(e.to_string()))?;
        Ok(Self { pool, log, master_key, config, client })
    }
}

/// `e` and its causes on one line.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timeout".into();
    }
    let mut out = if e.is_connect() { "connect failed".to_owned() } else { "request failed".to_owned() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

async fn post(ctx: &Ctx, due: &Due, secret: &AppSecret, attempt: u32) -> Result<u16, String> {
    // An IP-literal host is not resolved by the client: checked here.
    crate::ssrf::check_literal(&ctx.config.policy, &due.url).map_err(|why| format!("refused: {why}"))?;
    let timestamp = Utc::now().timestamp();
    let signature = arc_auth::webhook::sign(secret, timestamp, due.body.as_bytes());
    let response = ctx
        .client
        .post(&due.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(arc_auth::webhook::ID_HEADER, &due.event_id)
        .header(arc_auth::webhook::TIMESTAMP_HEADER, timestamp.to_string())
        .header(arc_auth::webhook::SIGNATURE_HEADER, signature)
        .header(ATTEMPT_HEADER, attempt.to_string())
        .body(due.body.clone())
        .send()
        .await
        .map_err(|e| describe(&e))?;
    Ok(response.status().as_u16())
}

/// The outcome as the event recorded in the delivery's aggregate.
fn outcome_event(due: &Due, outcome: Outcome) -> Result<Event, WebhookError> {
    let app_id =
        AppId::parse(&due.app_id).map_err(|e| WebhookError::Invalid(format!("app id {:?}: {e}", due.app_id)))?;
    let event_id = parse_event_id(&due.event_id)?;
    let url = due.url.clone();
    Ok(Event::Webhook(match outcome {
        Outcome::Delivered { attempt, status, duration_ms } => {
            WebhookEvent::Delivered(WebhookDelivered { app_id, event_id, url, attempt, status, duration_ms })
        }
        Outcome::Failed { attempt, status, error, retry_at } => WebhookEvent::AttemptFailed(WebhookAttemptFailed {
            app_id,
            event_id,
            url,
            attempt,
            status,
            error,
            retry_at,
        }),
        Outcome::Dead { attempts, status, error } => {
            WebhookEvent::DeadLettered(WebhookDeadLettered { app_id, event_id, url, attempts, status, error })
        }
    }))
}

pub(crate) fn parse_event_id(s: &str) -> Result<EventId, WebhookError> {
    uuid::Uuid::parse_str(s).map(EventId).map_err(|e| WebhookError::Invalid(format!("event id {s:?}: {e}")))
}

/// Appends `event` to delivery `delivery_id`'s aggregate, whose last seq the
/// caller read as `seq`.
///
/// `Expected::Exact`, not `Any`: an outcome is only valid for the row state
/// it was decided on. If another sender (a second arc-control) or an
/// operator recorded something for this delivery meanwhile, the append
/// conflicts instead of stacking a second, contradictory outcome; the
/// attempt's POST then counts as an at-least-once duplicate.
pub(crate) async fn append(
    log: &dyn EventLog,
    delivery_id: &str,
    seq: i64,
    event: Event,
    actor: Actor,
    causation: EventId,
) -> Result<Position, WebhookError> {
    let aggregate = AggregateRef::new(AggregateKind::Webhook, delivery_id)
        .map_err(|e| WebhookError::Invalid(format!("delivery id {delivery_id:?}: {e}")))?;
    let seq = seq.max(0) as u64;
    let mut meta = CommandMeta::new(actor, Utc::now());
    meta.causation_id = Some(causation);
    let raw = RawEvent::encode(&aggregate, seq + 1, &event, &meta)?;
    let appended = log.append(AppendRequest { aggregate, expected: Expected::Exact(seq), events: vec![raw] }).await?;
    Ok(appended.last)
}

/// One attempt of one delivery; returns how long its order key stays held.
/// Its span is a child of the request that appended the source event (when
/// that was traced), so the request's trace shows its webhooks.
async fn attempt(ctx: &Ctx, due: &Due) -> Result<Hold, WebhookError> {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "webhook.deliver",
        delivery = %due.delivery_id,
        attempt = due.attempts.saturating_add(1),
        app = %due.app_id,
    );
    arc_telemetry::set_parent_traceparent(&span, due.traceparent.as_deref());
    attempt_inner(ctx, due).instrument(span).await
}

async fn attempt_inner(ctx: &Ctx, due: &Due) -> Result<Hold, WebhookError> {
    let attempt = u32::try_from(due.attempts.max(0)).unwrap_or(u32::MAX).saturating_add(1);
    let outcome = match secret(&ctx.pool, &ctx.master_key, due).await? {
        Secret::Wait => {
            tracing::debug!(delivery = %due.delivery_id, app = %due.app_id, "app not in the read model yet; waiting");
            return Ok(Hold::Until(Instant::now() + APP_WAIT));
        }
        Secret::Gone => Outcome::Dead { attempts: attempt - 1, status: None, error: "app deleted".into() },
        Secret::Broken(error) => decide(&ctx.config, &due.delivery_id, attempt, Err(error), 0, Utc::now()),
        Secret::Ready(secret) => {
            let started = std::time::Instant::now();
            let answer = post(ctx, due, &secret, attempt).await;
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            decide(&ctx.config, &due.delivery_id, attempt, answer, duration_ms, Utc::now())
        }
    };
    tracing::debug!(delivery = %due.delivery_id, url = %due.url, ?outcome, "webhook attempt");
    let event = outcome_event(due, outcome)?;
    let causation = parse_event_id(&due.event_id)?;
    let mut recorded =
        append(ctx.log.as_ref(), &due.delivery_id, due.seq, event.clone(), Actor::system(COMPONENT), causation).await;
    let mut reconnects = ctx.log.reconnects();
    for _ in 0..OUTCOME_APPEND_ATTEMPTS_MAX {
        if !matches!(recorded, Err(WebhookError::Log(LogError::Unavailable(_)))) {
            break;
        }
        // The same event (same id) again: a re-send the log de-duplicates.
        match reconnects.as_mut() {
            Some(r) => {
                let _ = tokio::time::timeout(FAILURE_WAIT, r.changed()).await;
            }
            None => tokio::time::sleep(FAILURE_WAIT).await,
        }
        recorded =
            append(ctx.log.as_ref(), &due.delivery_id, due.seq, event.clone(), Actor::system(COMPONENT), causation)
                .await;
    }
    match recorded {
        Ok(position) => Ok(Hold::UntilPosition(position)),
        Err(WebhookError::Log(LogError::Conflict { .. })) => {
            // Someone else recorded an outcome: wait for the planner to fold it.
            tracing::warn!(delivery = %due.delivery_id, "outcome conflicted with another writer; re-reading");
            Ok(Hold::UntilPosition(ctx.log.head().await?))
        }
        Err(e) => Err(e),
    }
}

/// Runs the sender forever.
pub(crate) async fn run(ctx: Arc<Ctx>, mut progress: watch::Receiver<Position>) {
    let concurrency = ctx.config.concurrency.max(1);
    // After a restart, let the planner fold outcomes appended before the
    // stop: otherwise rows that are already delivered look pending.
    loop {
        match ctx.log.head().await {
            Ok(head) => {
                let _ = progress.wait_for(|p| *p >= head).await;
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook sender: reading the log head failed; retrying");
                tokio::time::sleep(FAILURE_WAIT).await;
            }
        }
    }
    let mut held: HashMap<String, Hold> = HashMap::new();
    let mut inflight: JoinSet<Hold> = JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut planner_alive = true;
    loop {
        let now = Instant::now();
        let folded = *progress.borrow_and_update();
        held.retain(|_, hold| !hold.released(folded, now));
        let free = concurrency.saturating_sub(inflight.len());
        if free > 0 {
            match due(&ctx.pool, Utc::now().timestamp_millis(), free + held.len()).await {
                Ok(candidates) => {
                    for d in select(candidates, &held, free) {
                        held.insert(d.order_key.clone(), Hold::InFlight);
                        let ctx = ctx.clone();
                        let key = d.order_key.clone();
                        let handle = inflight.spawn(async move {
                            attempt(&ctx, &d).await.unwrap_or_else(|e| {
                                tracing::warn!(delivery = %d.delivery_id, error = %e, "webhook attempt failed to complete");
                                Hold::Until(Instant::now() + FAILURE_WAIT)
                            })
                        });
                        keys.insert(handle.id(), key);
                    }
                }
                Err(e) => tracing::error!(error = %e, "webhook sender: reading due deliveries failed"),
            }
        }
        tokio::select! {
            Some(done) = inflight.join_next_with_id(), if !inflight.is_empty() => {
                let (id, hold) = match done {
                    Ok((id, hold)) => (id, hold),
                    Err(e) => {
                        tracing::error!(error = %e, "webhook attempt panicked");
                        (e.id(), Hold::Until(Instant::now() + FAILURE_WAIT))
                    }
                };
                if let Some(key) = keys.remove(&id) {
                    held.insert(key, hold);
                }
            }
            changed = progress.changed(), if planner_alive => {
                if changed.is_err() {
                    planner_alive = false;
                }
            }
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        WebhookConfig {
            attempts_max: 4,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            timeout: Duration::from_secs(1),
            concurrency: 2,
            ca_pem: None,
            policy: crate::ssrf::AddressPolicy::loopback(),
        }
    }

    fn due(id: &str, key: &str, position: i64) -> Due {
        Due {
            delivery_id: id.into(),
            app_id: "app_1".into(),
            url: "http://a".into(),
            order_key: key.into(),
            position,
            event_id: "e".into(),
            body: "{}".into(),
            attempts: 0,
            seq: 0,
            traceparent: None,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_max_with_bounded_jitter() {
        let c = config();
        let expected = [100, 200, 350, 350, 350];
        for (i, base) in expected.iter().enumerate() {
            let b = backoff(&c, i as u32 + 1, "wd_x").as_millis() as u64;
            assert!(b >= *base && b <= base + base / 10, "attempt {}: {b} not in [{base}, {base}*1.1]", i + 1);
            assert_eq!(backoff(&c, i as u32 + 1, "wd_x"), backoff(&c, i as u32 + 1, "wd_x"));
        }
        // Huge attempt numbers saturate instead of overflowing.
        assert!(backoff(&c, u32::MAX, "wd_x") <= Duration::from_millis(385));
        // Different deliveries get different jitter.
        let spread: std::collections::HashSet<_> = (0..20).map(|i| backoff(&c, 1, &format!("wd_{i}"))).collect();
        assert!(spread.len() > 10);
    }

    #[test]
    fn decide_retries_then_dead_letters() {
        let c = config();
        let now = DateTime::<Utc>::from_timestamp(1_000, 0).expect("test data");
        assert_eq!(
            decide(&c, "wd_x", 1, Ok(204), 7, now),
            Outcome::Delivered { attempt: 1, status: 204, duration_ms: 7 }
        );
        match decide(&c, "wd_x", 2, Ok(500), 7, now) {
            Outcome::Failed { attempt: 2, status: Some(500), error, retry_at } => {
                assert_eq!(error, "status 500");
                let wait = (retry_at - now).num_milliseconds();
                assert!((200..=220).contains(&wait), "{wait}");
            }
            other => panic!("{other:?}"),
        }
        // Redirects are failures (never followed).
        assert!(matches!(decide(&c, "wd_x", 1, Ok(301), 7, now), Outcome::Failed { status: Some(301), .. }));
        assert_eq!(
            decide(&c, "wd_x", 4, Err("timeout".into()), 7, now),
            Outcome::Dead { attempts: 4, status: None, error: "timeout".into() }
        );
    }

    #[test]
    fn select_takes_one_per_free_unheld_key() {
        let mut held = HashMap::new();
        held.insert("busy".to_owned(), Hold::InFlight);
        let candidates =
            vec![due("a", "busy", 1), due("b", "k1", 2), due("c", "k1", 3), due("d", "k2", 4), due("e", "k3", 5)];
        let picked: Vec<String> = select(candidates.clone(), &held, 2).into_iter().map(|d| d.delivery_id).collect();
        assert_eq!(picked, vec!["b", "d"]);
        let picked: Vec<String> = select(candidates, &held, 10).into_iter().map(|d| d.delivery_id).collect();
        assert_eq!(picked, vec!["b", "d", "e"]);
    }

    #[test]
    fn holds_release_on_progress_or_time() {
        let now = Instant::now();
        assert!(!Hold::InFlight.released(Position(100), now));
        assert!(!Hold::UntilPosition(Position(5)).released(Position(4), now));
        assert!(Hold::UntilPosition(Position(5)).released(Position(5), now));
        assert!(!Hold::Until(now + Duration::from_secs(1)).released(Position(0), now));
        assert!(Hold::Until(now).released(Position(0), now));
    }
}
