//! Kill `arc-control` with SIGKILL at random moments while commands stream in,
//! restart it, and check that no acknowledged event was lost and that the
//! read models equal a rebuild from zero — embedded (SQLite) and cluster
//! (NATS JetStream + PostgreSQL) modes.
//!
//! The cluster run needs `ARC_TEST_NATS_URL` and `ARC_TEST_PG_ADMIN_URL`,
//! which `scripts/test` exports after starting nats-server and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_eventlog::EventLog;

mod common;
use arc_events::{AggregateKind, AggregateRef};
use common::{ADMIN_KEY, Mode, create_pg_database, dump, run_tool, start, wait_caught_up};

/// What the load generator saw acknowledged: room → highest acknowledged seq.
type Acked = Arc<Mutex<BTreeMap<String, u64>>>;

fn ack(acked: &Acked, room: &str, seq: u64) {
    let mut map = acked.lock().expect("lock");
    let e = map.entry(room.to_owned()).or_insert(0);
    *e = (*e).max(seq);
}

/// Drives rooms through create → join → leave → close while the server comes and goes.
async fn create_app(base: &str) -> String {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/apps"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "load"}))
        .send()
        .await
        .expect("create app");
    assert_eq!(r.status(), 201);
    let v: serde_json::Value = r.json().await.expect("json");
    v["app_key"].as_str().expect("app_key").to_owned()
}

async fn load(base: Arc<Mutex<String>>, app: String, acked: Acked, stop: Arc<std::sync::atomic::AtomicBool>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    let mut i = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        i += 1;
        let name = format!("room-{i}");
        let url = base.lock().expect("lock").clone();
        let created = http
            .post(format!("{url}/v1/rooms"))
            .bearer_auth(ADMIN_KEY)
            .json(&serde_json::json!({"app_id": app, "name": name, "empty_timeout_s": 600}))
            .send()
            .await;
        let room = match created {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let (Some(room), Some(seq)) = (v["room_id"].as_str(), v["seq"].as_u64()) else { continue };
                ack(&acked, room, seq);
                room.to_owned()
            }
            // Refused or cut off (the server died mid-request): not acknowledged.
            _ => continue,
        };
        for who in ["ann", "bob"] {
            let target = format!("{url}/v1/rooms/{room}/participants");
            match http.post(&target).bearer_auth(ADMIN_KEY).json(&serde_json::json!({"identity": who})).send().await {
                Ok(r) if r.status().is_success() => {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    if let Some(seq) = v["seq"].as_u64() {
                        ack(&acked, &room, seq);
                    }
                }
                _ => break,
            }
        }
        if i.is_multiple_of(3) {
            let target = format!("{url}/v1/rooms/{room}/close");
            if let Ok(r) = http.post(&target).bearer_auth(ADMIN_KEY).send().await
                && r.status().is_success()
            {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                if let Some(seq) = v["seq"].as_u64() {
                    ack(&acked, &room, seq);
                }
            }
        }
    }
}

async fn open_log(mode: &Mode) -> Arc<dyn EventLog> {
    match mode {
        Mode::Embedded { data_dir } => {
            Arc::new(arc_eventlog::sqlite::SqliteLog::open(&data_dir.join("events.db")).await.expect("open log"))
        }
        Mode::Cluster { nats, stream, prefix, .. } => {
            let mut c = arc_eventlog::jetstream::JetStreamConfig::new(nats);
            c.stream = stream.clone();
            c.subject_prefix = prefix.clone();
            Arc::new(arc_eventlog::jetstream::JetStreamLog::connect(&c).await.expect("connect"))
        }
    }
}

async fn kill_restart_and_compare(mode: Mode, fresh_db: String) {
    let acked: Acked = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut server = start(&mode);
    let base = Arc::new(Mutex::new(server.base.clone()));
    let app = create_app(&server.base).await;
    let generator = tokio::spawn(load(base.clone(), app, acked.clone(), stop.clone()));

    for round in 0..4 {
        let pause = Duration::from_millis(300 + (rand::random::<u64>() % 900));
        tokio::time::sleep(pause).await;
        // SIGKILL: no chance to flush or say goodbye.
        server.child.kill().expect("kill");
        server.child.wait().expect("wait");
        let n: u64 = acked.lock().expect("lock").values().sum();
        eprintln!("round {round}: killed after {pause:?}; {n} events acknowledged so far");
        server = start(&mode);
        *base.lock().expect("lock") = server.base.clone();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    generator.await.expect("load generator");
    wait_caught_up(&server.base).await;
    // Stop the way a crash does, then let the read models finish from their
    // checkpoints offline (`catch-up`): they must equal a rebuild from zero.
    drop(server);
    run_tool(&mode, "catch-up", None);
    let live = dump(&mode.read_db()).await;

    // No acknowledged event is lost.
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 5, "the load generator got too few acknowledgements: {acked:?}");
    let log = open_log(&mode).await;
    for (room, seq) in &acked {
        let agg = AggregateRef::new(AggregateKind::Room, room).expect("valid id");
        let history = log.read_aggregate(&agg, 0).await.expect("read");
        let seqs: Vec<u64> = history.iter().map(|e| e.raw.seq).collect();
        assert!(seqs.len() as u64 >= *seq, "{room}: acknowledged seq {seq}, log has {seqs:?}");
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{room}: gapless");
        assert_eq!(history[0].raw.event_type, "room.created");
    }
    drop(log);

    // The live read models equal a rebuild from zero.
    run_tool(&mode, "rebuild", Some(&fresh_db));
    let rebuilt = dump(&fresh_db).await;
    assert_eq!(live.len(), rebuilt.len(), "row counts differ");
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b, "live read model differs from a rebuild");
    }
    assert!(live.iter().any(|r| r.starts_with("rooms|")), "rooms were projected");
    eprintln!("{} rooms acknowledged; {} read-model rows equal a rebuild", acked.len(), live.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_sigkill_and_equals_rebuild() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let fresh = format!("sqlite://{}", dir.path().join("rebuilt.db").display());
    kill_restart_and_compare(mode, fresh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_survives_sigkill_and_equals_rebuild() {
    let nats = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL not set: run scripts/test");
    let pg = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mode = Mode::Cluster {
        nats,
        stream: format!("CTL_{tag}"),
        prefix: format!("c{tag}.evt"),
        database: create_pg_database(&pg).await,
        data_dir: dir.path().to_path_buf(),
    };
    let fresh = create_pg_database(&pg).await;
    kill_restart_and_compare(mode, fresh).await;
}
