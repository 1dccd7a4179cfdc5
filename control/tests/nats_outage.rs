//! `arc-control serve` through a NATS outage, under load: clients create
//! rooms (four of them) and apps (one) while the NATS server is SIGKILLed and
//! started again on the same store (one server), or while the stream leader
//! of a three-server R3 cluster is SIGKILLed and started again.
//!
//! - During the outage nothing hangs: every write answers 503 with
//!   `Retry-After` within [`OUTAGE_ANSWER_MAX`].
//! - Once NATS answers again, writes succeed and the read models catch up
//!   (`/readyz`) within [`CATCH_UP_MAX`].
//! - No write answers 404 or 500 for something it created (a lagging read
//!   model answers 202 Accepted); no acknowledged room or app is missing; the
//!   read models equal a rebuild from the log.
//!
//! - With one server, an `arc-media` node carries a publisher and a player
//!   (`rtc` clients) through the outage: media keeps flowing (it does not
//!   need NATS) and the node is `up` again afterwards; and the app's webhooks
//!   are all delivered, none twice.
//!
//! Starts its own nats-servers (`arc_tests::nats`); SQLite read models, as an
//! operator with one control host would run it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_tests::nats::NatsServers;
use common::rtc_client::{Client, flow};
use common::{
    ADMIN_KEY, Mode, create_app_with, dump, mint_token, receiver, run_tool, start_media, start_with, wait_caught_up,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Longest a write may take to answer while the log is down (one server).
const OUTAGE_ANSWER_MAX: Duration = Duration::from_millis(1500);
/// Longest a write may take while a cluster elects a new stream leader (the
/// log's operation timeout, 2 s, plus the request's own work).
const ELECTION_ANSWER_MAX: Duration = Duration::from_millis(3500);
/// From NATS answering again to every projection at the log's head.
const CATCH_UP_MAX: Duration = Duration::from_secs(2);
/// A client gives up on a request after this long (none may need it).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients creating rooms at once.
const ROOM_CLIENTS: usize = 4;

/// One request as a client saw it.
#[derive(Debug, Clone)]
struct Outcome {
    /// `room` or `app`.
    kind: &'static str,
    /// The room's name, or the created app's key.
    name: String,
    /// Since the test started.
    started: Duration,
    took: Duration,
    /// 0: no answer (the client timed out or the connection failed).
    status: u16,
    retry_after: bool,
    /// The error code of a non-2xx answer.
    code: String,
}

type Outcomes = Arc<Mutex<Vec<Outcome>>>;

async fn request(
    http: &reqwest::Client,
    req: reqwest::RequestBuilder,
    t0: Instant,
    kind: &'static str,
    name: String,
    out: &Outcomes,
) -> Value {
    let started = t0.elapsed();
    let at = Instant::now();
    let (status, retry_after, body) = match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let retry_after = r.headers().contains_key("retry-after");
            (status, retry_after, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, false, Value::Null),
    };
    let _ = http;
    let took = at.elapsed();
    let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
    let name = if kind == "app" { body["app_key"].as_str().unwrap_or("").to_owned() } else { name };
    out.lock().await.push(Outcome { kind, name, started, took, status, retry_after, code });
    body
}

async fn room_client(base: String, app: (String, String), i: usize, t0: Instant, stop: Arc<AtomicBool>, out: Outcomes) {
    let http = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().expect("client");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("c{i}-{n}");
        let req = http
            .post(format!("{base}/v1/rooms"))
            .basic_auth(&app.0, Some(&app.1))
            .json(&json!({"name": name, "empty_timeout_s": 3600}));
        request(&http, req, t0, "room", name, &out).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn app_client(base: String, t0: Instant, stop: Arc<AtomicBool>, out: Outcomes) {
    let http = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().expect("client");
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let req = http.post(format!("{base}/v1/apps")).bearer_auth(ADMIN_KEY).json(&json!({"name": format!("a{n}")}));
        request(&http, req, t0, "app", String::new(), &out).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ready(http: &reqwest::Client, base: &str) -> bool {
    http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().as_u16() == 200)
}

/// The stream leader's server name, asked of any live server.
async fn stream_leader(urls: &[String], stream: &str) -> Option<String> {
    for url in urls {
        let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(2), async_nats::connect(url.as_str())).await
        else {
            continue;
        };
        let js = async_nats::jetstream::new(client);
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(2), js.get_stream(stream)).await
            && let Ok(info) = s.info().await
            && let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone())
        {
            return Some(leader);
        }
    }
    None
}

async fn outage(mut nats: NatsServers, replicas: usize) {
    let cluster = replicas > 1;
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("OUT_{tag}");
    let mode = Mode::Cluster {
        nats: nats.url_list(),
        stream: stream.clone(),
        prefix: format!("o{tag}.evt"),
        database: format!("sqlite://{}", dir.path().join("read.db").display()),
        data_dir: dir.path().to_path_buf(),
    };
    nats.wait_jetstream(Duration::from_secs(30)).await;
    let replicas_arg = replicas.to_string();
    // Webhooks to loopback are an operator's choice in serve.
    let server = start_with(&mode, &["--nats-replicas", &replicas_arg, "--webhook-backoff-base-ms", "100"]);
    let base = server.base.clone();
    let http = reqwest::Client::builder().timeout(CLIENT_TIMEOUT).build().expect("client");
    let (hook_url, hooks) = receiver().await;
    let app = create_app_with(&base, ADMIN_KEY, json!({"name": "outage", "webhooks": [hook_url]})).await;
    // One server: a media node with a live session rides through the outage.
    let mut media = None;
    if !cluster {
        let node = start_media(&nats.url_list(), &stream, &format!("o{tag}.evt"), "media-o");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("{base}/v1/nodes"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("nodes")
            .json::<Value>()
            .await
            .expect("json")["nodes"][0]["state"]
            != "up"
        {
            assert!(Instant::now() < deadline, "the media node registered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pub_t = mint_token(&base, &app, "cam", "live", json!({"publish": true})).await;
        let sub_t = mint_token(&base, &app, "viewer", "live", json!({"subscribe": true})).await;
        let mut p = Client::open(&http, &base, "live", &pub_t, true).await;
        let mut v = Client::open(&http, &base, "live", &sub_t, false).await;
        flow(&mut p, &mut v, 10, Duration::from_secs(15)).await;
        // Drive both clients for the rest of the test; `received` counts the
        // player's packets.
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop_media = Arc::new(AtomicBool::new(false));
        let (r, stop_m) = (received.clone(), stop_media.clone());
        let driver = tokio::spawn(async move {
            let mut seq = 1000u16;
            while !stop_m.load(Ordering::Relaxed) {
                seq = seq.wrapping_add(1);
                p.send_frame(seq, seq.is_multiple_of(30));
                p.drive(Duration::from_millis(5)).await;
                v.drive(Duration::from_millis(5)).await;
                r.store(v.received, Ordering::Relaxed);
            }
        });
        media = Some((node, received, stop_media, driver));
    }

    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let out: Outcomes = Arc::default();
    let mut clients = Vec::new();
    for i in 0..ROOM_CLIENTS {
        clients.push(tokio::spawn(room_client(base.clone(), app.clone(), i, t0, stop.clone(), out.clone())));
    }
    clients.push(tokio::spawn(app_client(base.clone(), t0, stop.clone(), out.clone())));

    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = if cluster {
        stream_leader(&nats.urls(), &stream).await.unwrap_or_else(|| "n1".into())
    } else {
        "n1".to_owned()
    };
    nats.kill(&victim);
    let killed = t0.elapsed();
    eprintln!("SIGKILLed nats-server {victim} at {killed:?}");
    let at_kill = media.as_ref().map(|(_, r, _, _)| r.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(3)).await;
    if let (Some((_, r, _, _)), Some(before)) = (media.as_ref(), at_kill) {
        // Media keeps flowing while the log is gone.
        let during = r.load(Ordering::Relaxed) - before;
        eprintln!("the player received {during} packets during the outage");
        assert!(during >= 100, "media flowed during the NATS outage: {during} packets");
    }
    nats.restart(&victim);
    let restarted = t0.elapsed();
    while !nats.healthy(&victim) {
        assert!(t0.elapsed() < restarted + Duration::from_secs(20), "nats-server {victim} came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let back = t0.elapsed();
    eprintln!("nats-server {victim} restarted at {restarted:?}, answering at {back:?}");
    // The read models catch up with the log, writes going on all the while.
    let ready_at = loop {
        if ready(&http, &base).await {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < back + Duration::from_secs(30), "arc-control ready again within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client task");
    }
    let outcomes = out.lock().await.clone();

    // What the clients saw.
    let first_ok_after_kill = outcomes
        .iter()
        .filter(|o| o.started > killed && (o.status == 201 || o.status == 202))
        .map(|o| o.started + o.took)
        .min();
    let during: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.started > killed + Duration::from_millis(300) && o.started < restarted).collect();
    let failed_fast = during.iter().filter(|o| o.status == 503).count();
    let max_during = during.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "{} requests; during the outage {} answered ({} × 503), slowest {max_during:?}; first success after the kill at {first_ok_after_kill:?}; ready at {ready_at:?}",
        outcomes.len(),
        during.len(),
        failed_fast,
    );
    for o in &outcomes {
        assert_ne!(o.status, 0, "a request got no answer within {CLIENT_TIMEOUT:?} (it hung): {o:?}");
        assert!(
            [201, 202, 503].contains(&o.status),
            "every write is created (201/202) or refused as retryable (503), never 404/500: {o:?}"
        );
        if o.status == 503 {
            assert!(o.retry_after, "a 503 carries Retry-After: {o:?}");
            assert_eq!(o.code, "log_unavailable", "{o:?}");
        }
    }
    assert!(!during.is_empty(), "requests were made during the outage");
    if cluster {
        for o in &during {
            assert!(
                o.took <= ELECTION_ANSWER_MAX,
                "a write answered within {ELECTION_ANSWER_MAX:?} during the election: {o:?}"
            );
        }
    } else {
        for o in &during {
            assert_eq!(o.status, 503, "with the only server down, writes are refused: {o:?}");
            assert!(o.took <= OUTAGE_ANSWER_MAX, "a write answered 503 within {OUTAGE_ANSWER_MAX:?}: {o:?}");
        }
        let first = first_ok_after_kill.expect("writes succeeded after NATS came back");
        assert!(
            first <= back + CATCH_UP_MAX,
            "the first write succeeded {:?} after NATS answered again (at most {CATCH_UP_MAX:?})",
            first.saturating_sub(back)
        );
    }
    // "NATS answers again": the restarted server (one server), or the stream
    // taking writes again under a new leader (a cluster, which never stopped
    // answering but could not write while it elected one).
    let answering = if cluster { first_ok_after_kill.expect("writes succeeded after the election") } else { back };
    eprintln!("read models caught up {:?} after NATS answered again", ready_at.saturating_sub(answering));
    assert!(
        ready_at <= answering + CATCH_UP_MAX,
        "the read models caught up {:?} after NATS answered again (at most {CATCH_UP_MAX:?})",
        ready_at.saturating_sub(answering)
    );
    // The media node is up again, its session still alive.
    if let Some((node, received, stop_media, driver)) = media.take() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n: Value = http
                .get(format!("{base}/v1/nodes"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .expect("nodes")
                .json()
                .await
                .expect("json");
            let fresh = n["nodes"][0]["last_seen_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| chrono::Utc::now().signed_duration_since(t) < chrono::Duration::seconds(3));
            if n["nodes"][0]["state"] == "up" && fresh {
                break;
            }
            assert!(Instant::now() < deadline, "the media node heartbeats again after the outage: {n}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let before = received.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = received.load(Ordering::Relaxed) - before;
        assert!(after >= 30, "media still flows after the outage: {after} packets in 1 s");
        stop_media.store(true, Ordering::Relaxed);
        driver.await.expect("media driver");
        let rid = common::room_id(&base, &app, "live").await.expect("room id");
        let list: Value = http
            .get(format!("{base}/v1/rooms/{rid}/participants"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("participants")
            .json()
            .await
            .expect("json");
        assert_eq!(list["participants"].as_array().map(Vec::len), Some(2), "publisher and player are still in: {list}");
        drop(node);
    }

    // Nothing acknowledged is missing.
    wait_caught_up(&base).await;
    // The outage is on record: each projection counted failures and keeps
    // the last one (`/v1/status`, `arc_projection_failures_total`).
    if !cluster {
        let status: Value =
            http.get(format!("{base}/v1/status")).send().await.expect("status").json().await.expect("json");
        for p in status["projections"].as_array().expect("projections") {
            assert!(p["failures"].as_u64().is_some_and(|n| n >= 1), "the outage counted as a failure: {p}");
            let last = p["last_error"].as_str().unwrap_or_default();
            assert!(last.contains("log unavailable"), "the last error says why: {p}");
            assert!(p["last_error_at_ms"].as_i64().is_some_and(|t| t > 0), "and when: {p}");
        }
        let metrics = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("arc_projection_failures_total{projection=\"rooms\"}") && !l.ends_with(" 0")),
            "the failures are exported"
        );
    }
    let rooms: Value = http
        .get(format!("{base}/v1/rooms?limit=500&state=open"))
        .basic_auth(&app.0, Some(&app.1))
        .send()
        .await
        .expect("rooms")
        .json()
        .await
        .expect("json");
    let mut listed: Vec<String> =
        rooms["rooms"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str().map(str::to_owned)).collect();
    let mut after = rooms["next_after"].as_str().map(str::to_owned);
    while let Some(a) = after {
        let page: Value = http
            .get(format!("{base}/v1/rooms?limit=500&state=open&after={a}"))
            .basic_auth(&app.0, Some(&app.1))
            .send()
            .await
            .expect("rooms")
            .json()
            .await
            .expect("json");
        listed.extend(
            page["rooms"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str().map(str::to_owned)),
        );
        after = page["next_after"].as_str().map(str::to_owned);
    }
    let acked_rooms: Vec<&Outcome> =
        outcomes.iter().filter(|o| o.kind == "room" && (o.status == 201 || o.status == 202)).collect();
    for o in &acked_rooms {
        assert!(listed.contains(&o.name), "acknowledged room {} is in the read model", o.name);
    }
    for o in outcomes.iter().filter(|o| o.kind == "app" && o.status == 201) {
        let r = http.get(format!("{base}/v1/apps/{}", o.name)).bearer_auth(ADMIN_KEY).send().await.expect("app");
        assert_eq!(r.status().as_u16(), 200, "acknowledged app {} is in the read model", o.name);
    }
    // Every acknowledged room's room.created webhook arrived, none twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = hooks.lock().expect("lock").clone();
        let twice: Vec<(&String, &u32)> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "webhooks delivered more than once while no instance died: {twice:?}");
        if got.len() >= acked_rooms.len() {
            eprintln!("{} webhooks delivered, each once", got.len());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhooks of {} acknowledged rooms delivered ({} arrived)",
            acked_rooms.len(),
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "{} rooms and {} apps acknowledged, all present",
        acked_rooms.len(),
        outcomes.iter().filter(|o| o.kind == "app" && o.status == 201).count()
    );

    // The live read models equal a rebuild from the log.
    drop(server);
    let live = dump(&mode.read_db()).await;
    let fresh = format!("sqlite://{}", dir.path().join("rebuilt.db").display());
    run_tool(&mode, "rebuild", Some(&fresh));
    let rebuilt = dump(&fresh).await;
    assert_eq!(live.len(), rebuilt.len(), "row counts differ");
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b, "live read model differs from a rebuild");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_nats_server_killed_and_restarted_under_load() {
    outage(NatsServers::single(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_of_a_cluster_killed_and_restarted_under_load() {
    outage(NatsServers::cluster(), 3).await;
}

/// Three NATS servers and arc-control started at the same moment, as boxes
/// booting together do: arc-control waits for the cluster to elect its meta
/// leader and learn its peers (it once exited with "no suitable peers for
/// placement"), then serves. A log wanting three replicas of a lone server is
/// refused at once, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arc_control_waits_for_a_forming_cluster_and_refuses_an_impossible_one() {
    let nats = NatsServers::cluster();
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mode = Mode::Cluster {
        nats: nats.url_list(),
        stream: format!("FORM_{tag}"),
        prefix: format!("f{tag}.evt"),
        database: format!("sqlite://{}", dir.path().join("read.db").display()),
        data_dir: dir.path().to_path_buf(),
    };
    // No wait for JetStream: the servers are still finding each other.
    let server = start_with(&mode, &["--nats-replicas", "3"]);
    let (app_key, _) = create_app_with(&server.base, ADMIN_KEY, json!({"name": "forming"})).await;
    assert!(!app_key.is_empty(), "an app was created on the new cluster");
    drop(server);

    let lone = NatsServers::single();
    lone.wait_jetstream(Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Cluster {
        nats: lone.url_list(),
        stream: format!("LONE_{tag}"),
        prefix: format!("l{tag}.evt"),
        database: format!("sqlite://{}", dir.path().join("read.db").display()),
        data_dir: dir.path().to_path_buf(),
    };
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg("serve")
        .args(mode.args(None))
        .args(["--nats-replicas", "3"])
        .env("ARC_LOG", "warn")
        .output()
        .expect("run arc-control");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "arc-control refused an R3 log on one server: {stderr}");
    assert!(stderr.contains("replicas > 1 not supported"), "the reason is printed: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "refused at once, not after the startup wait: {stderr}");
}
