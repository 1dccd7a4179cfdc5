//! End to end: the embedded SQLite log, an SQLite read database, a real
//! planner and sender, and an axum receiver on 127.0.0.1 that verifies
//! every signature.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_auth::seal::MasterKey;
use arc_auth::secret::AppSecret;
use arc_eventlog::sqlite::SqliteLog;
use arc_eventlog::{AppendRequest, EventLog, Expected, Position};
use arc_events::{Actor, AggregateKind, AggregateRef, Decoded, EventId, RawEvent};
use arc_webhooks::{WebhookConfig, WebhookError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use tokio::task::JoinSet;

const APP: &str = "app_test";
const DEADLINE: Duration = Duration::from_secs(15);

fn config(attempts_max: u32) -> WebhookConfig {
    WebhookConfig {
        attempts_max,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
        concurrency: 16,
        ca_pem: None,
        // The receivers here listen on loopback.
        policy: arc_webhooks::ssrf::AddressPolicy::loopback(),
    }
}

// ---------------------------------------------------------------- receiver

/// What the receiver answers.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Healthy,
    /// 500 for the first `n` attempts of each event id, then 200.
    FailFirst(usize),
    AlwaysFail,
}

#[derive(Debug, Clone)]
struct Hit {
    id: String,
    attempt: u32,
    verified: bool,
    body: Value,
    status: u16,
}

#[derive(Debug)]
struct Receiver {
    secret: AppSecret,
    mode: Mutex<Mode>,
    delay: Duration,
    hits: Mutex<Vec<Hit>>,
    in_flight: Mutex<HashMap<String, usize>>,
    overlapped: AtomicBool,
}

/// Decrements a room's in-flight count even if the handler is dropped.
struct InFlight(Arc<Receiver>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.0.in_flight.lock().expect("lock").get_mut(&self.1) {
            *n -= 1;
        }
    }
}

impl Receiver {
    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().expect("lock").clone()
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let id = header(&headers, arc_auth::webhook::ID_HEADER);
    let now = chrono::Utc::now().timestamp();
    let verified = arc_auth::webhook::verify(
        &r.secret,
        &header(&headers, arc_auth::webhook::TIMESTAMP_HEADER),
        &header(&headers, arc_auth::webhook::SIGNATURE_HEADER),
        &body,
        now,
        300,
    )
    .is_ok()
        && header(&headers, "content-type") == "application/json"
        && header(&headers, "user-agent").starts_with("arc-webhooks/");
    let attempt = header(&headers, arc_webhooks::ATTEMPT_HEADER).parse().unwrap_or(0);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let room = json["room_id"].as_str().unwrap_or_default().to_owned();
    let _guard = {
        let mut in_flight = r.in_flight.lock().expect("lock");
        let n = in_flight.entry(room.clone()).or_default();
        *n += 1;
        if *n > 1 {
            r.overlapped.store(true, Ordering::SeqCst);
        }
        InFlight(r.clone(), room)
    };
    let status = {
        let mut hits = r.hits.lock().expect("lock");
        let earlier = hits.iter().filter(|h| h.id == id).count();
        let status = match *r.mode.lock().expect("lock") {
            Mode::Healthy => 200,
            Mode::FailFirst(n) if earlier < n => 500,
            Mode::FailFirst(_) => 200,
            Mode::AlwaysFail => 500,
        };
        hits.push(Hit { id, attempt, verified, body: json, status });
        status
    };
    if !r.delay.is_zero() {
        tokio::time::sleep(r.delay).await;
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

async fn start_receiver(secret: AppSecret, mode: Mode, delay: Duration) -> (Arc<Receiver>, SocketAddr) {
    let r = Arc::new(Receiver {
        secret,
        mode: Mutex::new(mode),
        delay,
        hits: Mutex::new(Vec::new()),
        in_flight: Mutex::new(HashMap::new()),
        overlapped: AtomicBool::new(false),
    });
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (r, addr)
}

// ---------------------------------------------------------------- fixture

struct Fixture {
    dir: tempfile::TempDir,
    read_db: String,
    /// `None` only while restarting.
    log: Option<SqliteLog>,
    pool: AnyPool,
    master: Arc<MasterKey>,
    secret: AppSecret,
    seqs: HashMap<AggregateRef, u64>,
    tasks: JoinSet<()>,
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}/read.db?mode=rwc", dir.display())
}

async fn open_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let options = AnyConnectOptions::from_str(url).expect("url");
    AnyPoolOptions::new()
        .max_connections(4)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .expect("read db")
}

/// A fresh PostgreSQL database, if `scripts/test` started PostgreSQL.
async fn postgres_database() -> Option<String> {
    use sqlx::Connection;
    let Ok(admin) = std::env::var("ARC_TEST_PG_ADMIN_URL") else {
        eprintln!("SKIPPED: ARC_TEST_PG_ADMIN_URL not set (scripts/test sets it)");
        return None;
    };
    let name = format!("arc_wh_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create db");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

impl Fixture {
    /// The embedded log and an SQLite read database in a tempdir.
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = sqlite_url(dir.path());
        Self::with_read_db(dir, url).await
    }

    async fn with_read_db(dir: tempfile::TempDir, read_db: String) -> Self {
        let log = SqliteLog::open(&dir.path().join("events.db")).await.expect("log");
        let pool = open_pool(&read_db).await;
        // arc-control's tables, as its migrations create them (the columns we read).
        sqlx::query("CREATE TABLE apps (app_id TEXT PRIMARY KEY, state TEXT NOT NULL, secret_sealed TEXT)")
            .execute(&pool)
            .await
            .expect("apps");
        sqlx::query(
            "CREATE TABLE projection_checkpoints (name TEXT PRIMARY KEY, position BIGINT NOT NULL, \
             events BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await
        .expect("checkpoints");
        arc_webhooks::migrate(&pool).await.expect("migrate");
        arc_webhooks::migrate(&pool).await.expect("migrate twice");
        let master = Arc::new(MasterKey::generate());
        let secret = AppSecret::generate();
        let mut f =
            Self { dir, read_db, log: Some(log), pool, master, secret, seqs: HashMap::new(), tasks: JoinSet::new() };
        f.add_app(APP, "active").await;
        f
    }

    fn sqlite(&self) -> &SqliteLog {
        self.log.as_ref().expect("log open")
    }

    fn log(&self) -> Arc<dyn EventLog> {
        Arc::new(self.sqlite().clone())
    }

    /// Closes and reopens the log and the read database on the same files.
    async fn reopen(&mut self) {
        self.pool.close().await;
        if let Some(log) = self.log.take() {
            log.close().await;
        }
        let path = self.dir.path().join("events.db");
        for _ in 0..100 {
            match SqliteLog::open(&path).await {
                Ok(l) => {
                    self.log = Some(l);
                    break;
                }
                // The lock is released once the last clone of the old log is gone.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(self.log.is_some(), "reopen the log");
        self.pool = open_pool(&self.read_db).await;
    }

    async fn add_app(&mut self, app: &str, state: &str) {
        let sealed = arc_auth::seal::seal(&self.master, self.secret.expose().as_bytes(), app.as_bytes());
        sqlx::query("INSERT INTO apps (app_id, state, secret_sealed) VALUES ($1, $2, $3)")
            .bind(app)
            .bind(state)
            .bind(serde_json::to_string(&sealed).expect("json"))
            .execute(&self.pool)
            .await
            .expect("insert app");
        self.append(AggregateKind::App, app, "app.created", json!({"name": "test"})).await;
    }

    /// Appends one event (type version 1) with the next seq of its aggregate.
    async fn append(&mut self, kind: AggregateKind, id: &str, event_type: &str, data: Value) -> (Position, EventId) {
        let aggregate = AggregateRef::new(kind, id).expect("aggregate");
        let seq = self.seqs.get(&aggregate).copied().unwrap_or(0);
        let raw = RawEvent {
            id: EventId::new(),
            aggregate_type: kind.as_str().to_owned(),
            aggregate_id: id.to_owned(),
            seq: seq + 1,
            event_type: event_type.to_owned(),
            version: 1,
            occurred_at: chrono::Utc::now(),
            correlation_id: None,
            traceparent: None,
            causation_id: None,
            actor: Actor::Admin { name: None },
            data,
        };
        assert!(matches!(raw.decode(), Ok(Decoded::Known(_))), "test event {event_type} does not decode");
        let event_id = raw.id;
        let appended = self
            .sqlite()
            .append(AppendRequest { aggregate, expected: Expected::Exact(seq), events: vec![raw] })
            .await
            .expect("append");
        self.seqs.insert(AggregateRef::new(kind, id).expect("aggregate"), seq + 1);
        (appended.last, event_id)
    }

    async fn set_webhooks(&mut self, app: &str, urls: &[String]) {
        self.append(AggregateKind::App, app, "app.webhooks_set", json!({ "urls": urls })).await;
    }

    /// created, alice joins, bob joins, alice leaves, bob leaves, closed.
    async fn room_lifecycle_event(&mut self, room: &str, step: usize) -> Option<EventId> {
        let (kind, data) = match step {
            0 => ("room.created", json!({"app_id": APP, "name": room, "empty_timeout_s": 60})),
            1 => ("room.participant_joined", json!({"identity": "alice", "sid": format!("pa_{room}_a")})),
            2 => ("room.participant_joined", json!({"identity": "bob", "sid": format!("pa_{room}_b")})),
            3 => (
                "room.participant_left",
                json!({"identity": "alice", "sid": format!("pa_{room}_a"), "reason": "client_left"}),
            ),
            4 => (
                "room.participant_left",
                json!({"identity": "bob", "sid": format!("pa_{room}_b"), "reason": "client_left"}),
            ),
            5 => ("room.closed", json!({"reason": "requested"})),
            _ => return None,
        };
        Some(self.append(AggregateKind::Room, room, kind, data).await.1)
    }

    fn spawn(&mut self, config: WebhookConfig) -> tokio::sync::watch::Receiver<Position> {
        let log = self.log();
        arc_webhooks::spawn(
            &mut self.tasks,
            self.pool.clone(),
            log,
            self.master.clone(),
            config,
            &arc_lease::Leases::embedded(),
        )
        .expect("spawn")
        .subscribe()
    }

    async fn deliveries(&self, state: Option<&str>) -> Vec<arc_webhooks::Delivery> {
        arc_webhooks::list(&self.pool, APP, state, 1000, None).await.expect("list")
    }

    async fn wait_delivered(&self, n: usize) {
        eventually(&format!("{n} deliveries delivered"), || async {
            self.deliveries(Some("delivered")).await.len() >= n
        })
        .await;
    }

    async fn outcome_types(&self, delivery_id: &str) -> Vec<String> {
        let aggregate = AggregateRef::new(AggregateKind::Webhook, delivery_id).expect("aggregate");
        self.sqlite().read_aggregate(&aggregate, 0).await.expect("read").into_iter().map(|e| e.raw.event_type).collect()
    }
}

async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if condition().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/hook")
}

/// Event ids in the order each first arrived, per room.
fn first_arrivals(hits: &[Hit]) -> HashMap<String, Vec<String>> {
    let mut seen = HashSet::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for h in hits {
        if seen.insert(h.id.clone()) {
            out.entry(h.body["room_id"].as_str().unwrap_or_default().to_owned()).or_default().push(h.id.clone());
        }
    }
    out
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_signed_once_and_in_room_order() {
    let mut f = Fixture::new().await;
    let (receiver, addr) = start_receiver(f.secret.clone(), Mode::Healthy, Duration::from_millis(3)).await;
    f.set_webhooks(APP, &[url(addr)]).await;
    let progress = f.spawn(config(5));

    let rooms = ["rm_a", "rm_b", "rm_c"];
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for step in 0..6 {
        for room in rooms {
            let id = f.room_lifecycle_event(room, step).await.expect("step");
            expected.entry(room.to_owned()).or_default().push(id.to_string());
        }
    }
    f.wait_delivered(18).await;
    assert!(*progress.borrow() > Position::START);

    let hits = receiver.hits();
    assert_eq!(hits.len(), 18, "exactly one request per event without failures: {hits:#?}");
    assert!(hits.iter().all(|h| h.verified), "every request carries a valid signature and headers");
    assert!(hits.iter().all(|h| h.attempt == 1));
    assert_eq!(first_arrivals(&hits), expected, "per-room order is log order");
    assert!(!receiver.overlapped.load(Ordering::SeqCst), "never two requests of one room at once");

    // The body is the documented shape.
    let created = hits.iter().find(|h| h.body["type"] == "room.created" && h.body["room_id"] == "rm_b").expect("hit");
    assert_eq!(created.body["app_id"], APP);
    assert_eq!(created.body["id"], created.id);
    assert_eq!(created.body["data"]["name"], "rm_b");
    assert!(chrono::DateTime::parse_from_rfc3339(created.body["occurred_at"].as_str().expect("str")).is_ok());
    let joined = hits.iter().find(|h| h.body["type"] == "room.participant_joined").expect("hit");
    assert_eq!(joined.body["data"]["identity"], "alice");

    // The read API: list with a cursor, get, and redeliver refusing live deliveries.
    let all = f.deliveries(None).await;
    assert_eq!(all.len(), 18);
    assert!(all.iter().all(|d| d.state == "delivered" && d.attempts == 1 && d.last_status == Some(200)));
    assert!(all.iter().all(|d| d.next_attempt_at.is_none()));
    let page = arc_webhooks::list(&f.pool, APP, None, 5, None).await.expect("page");
    let next = arc_webhooks::list(&f.pool, APP, None, 100, Some(&page[4].delivery_id)).await.expect("next page");
    assert_eq!(page.len() + next.len(), 18);
    assert_eq!(next[0].delivery_id, all[5].delivery_id);
    assert!(matches!(arc_webhooks::list(&f.pool, APP, Some("queued"), 5, None).await, Err(WebhookError::Invalid(_))));
    assert!(matches!(arc_webhooks::list(&f.pool, APP, None, 5, Some("wd_nope")).await, Err(WebhookError::NotFound)));
    let one = arc_webhooks::get(&f.pool, &all[0].delivery_id).await.expect("get").expect("found");
    assert_eq!(one, all[0]);
    assert!(arc_webhooks::get(&f.pool, "wd_nope").await.expect("get").is_none());
    let log = f.log();
    assert!(matches!(
        arc_webhooks::redeliver(&f.pool, log.as_ref(), &all[0].delivery_id, Actor::Admin { name: None }).await,
        Err(WebhookError::NotDead)
    ));
    assert!(matches!(
        arc_webhooks::redeliver(&f.pool, log.as_ref(), "wd_nope", Actor::Admin { name: None }).await,
        Err(WebhookError::NotFound)
    ));

    // A rebuild reproduces the same rows from the log (ids, bodies, states).
    f.tasks.shutdown().await;
    let replayed = arc_webhooks::rebuild(&f.pool, f.log()).await.expect("rebuild");
    assert_eq!(replayed, f.sqlite().head().await.expect("head").0);
    assert_eq!(f.deliveries(None).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_read_db_retries_orders_and_rebuilds() {
    let Some(database) = postgres_database().await else { return };
    let mut f = Fixture::with_read_db(tempfile::tempdir().expect("tempdir"), database).await;
    let (receiver, addr) = start_receiver(f.secret.clone(), Mode::FailFirst(1), Duration::from_millis(2)).await;
    f.set_webhooks(APP, &[url(addr)]).await;
    f.spawn(config(5));
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for step in 0..6 {
        for room in ["rm_p1", "rm_p2"] {
            let id = f.room_lifecycle_event(room, step).await.expect("step");
            expected.entry(room.to_owned()).or_default().push(id.to_string());
        }
    }
    f.wait_delivered(12).await;
    let hits = receiver.hits();
    assert!(hits.iter().all(|h| h.verified));
    assert_eq!(hits.len(), 24, "one failed and one good attempt per event");
    assert_eq!(first_arrivals(&hits), expected);
    assert!(!receiver.overlapped.load(Ordering::SeqCst));
    let all = f.deliveries(None).await;
    assert!(all.iter().all(|d| d.attempts == 2 && d.last_status == Some(200)));
    assert_eq!(f.outcome_types(&all[0].delivery_id).await, vec!["webhook.attempt_failed", "webhook.delivered"]);
    let next = arc_webhooks::list(&f.pool, APP, Some("delivered"), 100, Some(&all[3].delivery_id)).await.expect("page");
    assert_eq!(next.len(), 8);
    f.tasks.shutdown().await;
    arc_webhooks::rebuild(&f.pool, f.log()).await.expect("rebuild");
    assert_eq!(f.deliveries(None).await, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_and_hold_back_the_room() {
    let mut f = Fixture::new().await;
    let (receiver, addr) = start_receiver(f.secret.clone(), Mode::FailFirst(2), Duration::ZERO).await;
    f.set_webhooks(APP, &[url(addr)]).await;
    let created = f.room_lifecycle_event("rm_r", 0).await.expect("created").to_string();
    let joined = f.room_lifecycle_event("rm_r", 1).await.expect("joined").to_string();
    f.spawn(config(5));
    f.wait_delivered(2).await;

    let hits = receiver.hits();
    assert!(hits.iter().all(|h| h.verified));
    let attempts = |id: &str| hits.iter().filter(|h| h.id == id).map(|h| (h.attempt, h.status)).collect::<Vec<_>>();
    assert_eq!(attempts(&created), vec![(1, 500), (2, 500), (3, 200)]);
    assert_eq!(attempts(&joined), vec![(1, 500), (2, 500), (3, 200)]);
    // The room's second event was not sent before its first was acknowledged.
    let first_joined = hits.iter().position(|h| h.id == joined).expect("joined");
    let created_ok = hits.iter().position(|h| h.id == created && h.status == 200).expect("created ok");
    assert!(created_ok < first_joined, "{hits:#?}");

    let delivery = f.deliveries(None).await.into_iter().find(|d| d.event_id == created).expect("delivery");
    assert_eq!((delivery.attempts, delivery.last_status, delivery.last_error.as_deref()), (3, Some(200), None));
    assert_eq!(
        f.outcome_types(&delivery.delivery_id).await,
        vec!["webhook.attempt_failed", "webhook.attempt_failed", "webhook.delivered"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_after_max_attempts_then_redelivers() {
    let mut f = Fixture::new().await;
    let (receiver, addr) = start_receiver(f.secret.clone(), Mode::AlwaysFail, Duration::ZERO).await;
    f.set_webhooks(APP, &[url(addr)]).await;
    let created = f.room_lifecycle_event("rm_d", 0).await.expect("created").to_string();
    let progress = f.spawn(config(3));
    eventually("dead-lettered", || async { f.deliveries(Some("dead")).await.len() == 1 }).await;

    let dead = f.deliveries(None).await.remove(0);
    assert_eq!((dead.state.as_str(), dead.attempts, dead.last_status), ("dead", 3, Some(500)));
    assert_eq!(dead.last_error.as_deref(), Some("status 500"));
    assert_eq!(
        f.outcome_types(&dead.delivery_id).await,
        vec!["webhook.attempt_failed", "webhook.attempt_failed", "webhook.dead_lettered"]
    );
    assert_eq!(receiver.hits().iter().map(|h| h.attempt).collect::<Vec<_>>(), vec![1, 2, 3]);

    receiver.set_mode(Mode::Healthy);
    let log = f.log();
    let at = arc_webhooks::redeliver(&f.pool, log.as_ref(), &dead.delivery_id, Actor::Admin { name: None })
        .await
        .expect("redeliver");
    let mut p = progress.clone();
    tokio::time::timeout(DEADLINE, p.wait_for(|x| *x >= at)).await.expect("planner folds").expect("planner alive");
    f.wait_delivered(1).await;

    let hits = receiver.hits();
    let last = hits.last().expect("hit");
    assert_eq!((last.id.as_str(), last.attempt, last.status), (created.as_str(), 1, 200));
    assert!(hits.iter().all(|h| h.verified));
    assert_eq!(
        f.outcome_types(&dead.delivery_id).await,
        vec![
            "webhook.attempt_failed",
            "webhook.attempt_failed",
            "webhook.dead_lettered",
            "webhook.redelivery_requested",
            "webhook.delivered"
        ]
    );
    let delivered = arc_webhooks::get(&f.pool, &dead.delivery_id).await.expect("get").expect("found");
    assert_eq!((delivered.state.as_str(), delivered.attempts), ("delivered", 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_apps_dead_letter_without_sending() {
    let mut f = Fixture::new().await;
    let (receiver, addr) = start_receiver(f.secret.clone(), Mode::Healthy, Duration::ZERO).await;
    f.add_app("app_gone", "deleted").await;
    f.set_webhooks("app_gone", &[url(addr)]).await;
    f.append(
        AggregateKind::Room,
        "rm_g",
        "room.created",
        json!({"app_id": "app_gone", "name": "g", "empty_timeout_s": 60}),
    )
    .await;
    f.spawn(config(3));
    eventually("dead-lettered", || async {
        arc_webhooks::list(&f.pool, "app_gone", Some("dead"), 10, None).await.expect("list").len() == 1
    })
    .await;
    let dead = arc_webhooks::list(&f.pool, "app_gone", None, 10, None).await.expect("list").remove(0);
    assert_eq!((dead.attempts, dead.last_error.as_deref()), (0, Some("app deleted")));
    assert!(receiver.hits().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_plans_without_sending() {
    let mut f = Fixture::new().await;
    f.set_webhooks(APP, &["http://127.0.0.1:9/hook".to_owned()]).await;
    for step in 0..3 {
        f.room_lifecycle_event("rm_c", step).await;
    }
    let head = f.sqlite().head().await.expect("head");
    let applied = arc_webhooks::catch_up(&f.pool, f.log(), head).await.expect("catch up");
    assert_eq!(applied, head.0);
    assert_eq!(arc_webhooks::catch_up(&f.pool, f.log(), head).await.expect("again"), 0);
    let pending = f.deliveries(Some("pending")).await;
    assert_eq!(pending.len(), 3);
    assert!(pending.iter().all(|d| d.attempts == 0 && d.next_attempt_at.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_way_loses_nothing() {
    let mut f = Fixture::new().await;
    let (receiver, addr) = start_receiver(f.secret.clone(), Mode::Healthy, Duration::from_millis(25)).await;
    f.set_webhooks(APP, &[url(addr)]).await;
    let rooms = ["rm_k1", "rm_k2", "rm_k3", "rm_k4"];
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for step in 0..4 {
        for room in rooms {
            let id = f.room_lifecycle_event(room, step).await.expect("step");
            expected.entry(room.to_owned()).or_default().push(id.to_string());
        }
    }
    f.spawn(config(5));
    eventually("a few deliveries", || async { receiver.hits().len() >= 6 }).await;

    // Kill everything mid-way: the tasks, the pool and the log.
    f.tasks.shutdown().await;
    let sent_before = receiver.hits().len();
    f.reopen().await;

    // Events appended while nothing runs are delivered after the restart too.
    for step in 4..6 {
        for room in rooms {
            let id = f.room_lifecycle_event(room, step).await.expect("step");
            expected.entry(room.to_owned()).or_default().push(id.to_string());
        }
    }
    f.spawn(config(5));
    f.wait_delivered(24).await;

    let hits = receiver.hits();
    assert!(sent_before < 16, "the stop happened mid-way ({sent_before} of the first 16 sent)");
    assert!(hits.iter().all(|h| h.verified));
    let unique: HashSet<&str> = hits.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(unique.len(), 24, "every event arrived");
    assert!(hits.len() >= 24);
    // Deduplicated by arc-webhook-id, each room's events arrived in log order.
    assert_eq!(first_arrivals(&hits), expected);
    eprintln!("{} requests for 24 events ({} at-least-once duplicates)", hits.len(), hits.len() - 24);
}

// ---------------------------------------------------------------- https

/// An `axum::serve` listener that terminates TLS (handshake failures are skipped).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The receiver behind TLS with a fresh self-signed certificate for
/// `localhost`; returns the certificate's PEM.
async fn start_tls_receiver(secret: AppSecret) -> (Arc<Receiver>, SocketAddr, String) {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let cert_pem = key.cert.pem();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der()).expect("key der");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)
        .expect("server config");
    let r = Arc::new(Receiver {
        secret,
        mode: Mutex::new(Mode::Healthy),
        delay: Duration::ZERO,
        hits: Mutex::new(Vec::new()),
        in_flight: Mutex::new(HashMap::new()),
        overlapped: AtomicBool::new(false),
    });
    let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(r.clone());
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let listener = TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)) };
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (r, addr, cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoints_verify_the_certificate() {
    let mut f = Fixture::new().await;
    let (receiver, addr, ca_pem) = start_tls_receiver(f.secret.clone()).await;
    f.set_webhooks(APP, &[format!("https://localhost:{}/hook", addr.port())]).await;
    f.room_lifecycle_event("rm_tls", 0).await.expect("created");

    // Without the receiver's CA the certificate is refused: no request is
    // received and the delivery dead-letters naming the cause.
    let progress = f.spawn(config(2));
    eventually("dead-lettered", || async { f.deliveries(Some("dead")).await.len() == 1 }).await;
    let dead = f.deliveries(None).await.remove(0);
    let error = dead.last_error.clone().unwrap_or_default();
    assert!(error.contains("certificate") || error.contains("Certificate"), "error names the certificate: {error}");
    assert!(receiver.hits().is_empty());
    f.tasks.shutdown().await;
    drop(progress);

    // Trusting it (as --webhook-ca-file does), a redelivery arrives signed.
    let mut with_ca = config(2);
    with_ca.ca_pem = Some(ca_pem.into_bytes());
    let progress = f.spawn(with_ca);
    let log = f.log();
    let at = arc_webhooks::redeliver(&f.pool, log.as_ref(), &dead.delivery_id, Actor::Admin { name: None })
        .await
        .expect("redeliver");
    let mut p = progress.clone();
    tokio::time::timeout(DEADLINE, p.wait_for(|x| *x >= at)).await.expect("planner folds").expect("planner alive");
    f.wait_delivered(1).await;
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].verified, "signature verifies over TLS");

    // A file with no certificate in it is a configuration error.
    let mut bad = config(2);
    bad.ca_pem = Some(b"not a certificate".to_vec());
    let mut tasks = JoinSet::new();
    let refused =
        arc_webhooks::spawn(&mut tasks, f.pool.clone(), f.log(), f.master.clone(), bad, &arc_lease::Leases::embedded());
    assert!(matches!(refused, Err(WebhookError::Invalid(ref m)) if m.contains("CA certificates")), "{refused:?}");
    assert!(tasks.is_empty(), "nothing spawned");
}

/// A database whose deliveries table was made by a release without the
/// `traceparent` column gets it at start, keeps its rows, and migrating
/// again (a second instance, a restart) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_adds_columns_to_tables_of_an_older_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = open_pool(&format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display())).await;
    sqlx::query(
        "CREATE TABLE webhook_deliveries (delivery_id TEXT PRIMARY KEY, app_id TEXT NOT NULL, url TEXT NOT NULL, \
         order_key TEXT NOT NULL, position BIGINT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL, \
         body TEXT NOT NULL, state TEXT NOT NULL, attempts BIGINT NOT NULL, next_attempt_ms BIGINT NOT NULL, \
         last_status BIGINT, last_error TEXT, created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL, \
         seq BIGINT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("the old table");
    sqlx::query(
        "INSERT INTO webhook_deliveries VALUES ('d1', 'app_1', 'http://a', 'k', 1, 'e', 'room.created', '{}', \
         'delivered', 1, 0, 200, NULL, 0, 0, 1)",
    )
    .execute(&pool)
    .await
    .expect("an old row");
    arc_webhooks::migrate(&pool).await.expect("migrate");
    arc_webhooks::migrate(&pool).await.expect("migrate again");
    let (id, tp): (String, Option<String>) =
        sqlx::query_as("SELECT delivery_id, traceparent FROM webhook_deliveries").fetch_one(&pool).await.expect("row");
    assert_eq!((id.as_str(), tp), ("d1", None), "the old row is kept, without a trace context");
}
