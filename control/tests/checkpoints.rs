//! Embedded mode passes over batches that hold nothing for a read model
//! without a write (its checkpoint moves in memory): the stored checkpoints
//! still reach the log's head once the log is idle for a second, so a
//! restart re-reads at most that second of events.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Mode, admin_get, create_app, start};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_checkpoints_reach_the_head_when_the_log_is_idle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let server = start(&mode);
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "checkpoints").await;
    let http = reqwest::Client::new();
    for name in ["a", "b", "c"] {
        let r = http
            .post(format!("{base}/v1/rooms"))
            .basic_auth(&app.0, Some(&app.1))
            .json(&json!({"name": name}))
            .send()
            .await
            .expect("create room");
        assert_eq!(r.status(), 201);
    }
    // Every projection has applied the head (in memory: the answers waited for it).
    let status = admin_get(&base, "/v1/status").await;
    let head = status["log_head"].as_u64().expect("head");
    assert!(status["projections"].as_array().is_some_and(|ps| ps.iter().all(|p| p["position"] == head)), "{status}");

    // Within the lag bound and a little, every stored checkpoint is the head.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&mode.read_db()).await.expect("read db");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, position FROM projection_checkpoints").fetch_all(&pool).await.expect("select");
        let lagging: Vec<&(String, i64)> = rows
            .iter()
            .filter(|(name, _)| arc_control::projection::ALL.contains(&name.as_str()))
            .filter(|(_, p)| *p as u64 != head)
            .collect();
        if rows.len() >= arc_control::projection::ALL.len() && lagging.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "stored checkpoints at the head {head} within 5 s: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
