//! `/metrics` on a running arc-control (embedded, and on NATS + PostgreSQL):
//! the exposition parses line by line, passes `promtool check metrics`
//! (and so does the embedded node's), carries the families it documents,
//! and its figures move with what clients do (rooms opened, joins, requests,
//! appends to the log).

mod common;

use std::collections::HashMap;

use common::{
    ADMIN_KEY, Mode, OPENMETRICS_ACCEPT, create_app, mint_token, openmetrics_samples as parse, start, wait_caught_up,
};
use serde_json::json;

fn sum(samples: &HashMap<String, f64>, prefix: &str, contains: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && contains.iter().all(|c| k.contains(c)))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes as Prometheus does (asking for OpenMetrics).
async fn scrape(base: &str) -> HashMap<String, f64> {
    let r = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .header("accept", OPENMETRICS_ACCEPT)
        .send()
        .await
        .expect("scrape");
    assert_eq!(r.status(), 200);
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "content type {ct}");
    parse(&r.text().await.expect("body"))
}

/// Without an `Accept` for OpenMetrics (curl, promtool) the exposition is
/// the Prometheus text format, and `promtool check metrics` (Prometheus'
/// own linter: names, suffixes, units, help texts) finds nothing in it.
async fn promtool_finds_nothing(url: &str) {
    let r = reqwest::get(url).await.expect("scrape");
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct}");
    let text = r.text().await.expect("body");
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/services install installs it)");
    use std::io::Write as _;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the exposition");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics on {url}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn metrics_move_with_the_platform(mode: Mode) {
    let server = start(&mode);
    let base = server.base.clone();
    let before = scrape(&base).await;
    assert_eq!(before.get("arc_rooms_open"), Some(&0.0));
    let app = create_app(&base, ADMIN_KEY, "metrics").await;
    let http = reqwest::Client::new();
    for name in ["a", "b"] {
        let r = http
            .post(format!("{base}/v1/rooms"))
            .basic_auth(&app.0, Some(&app.1))
            .json(&json!({"name": name}))
            .send()
            .await
            .expect("create room");
        assert_eq!(r.status(), 201);
    }
    for who in ["ann", "bob", "cy"] {
        let token = mint_token(&base, &app, who, "a", json!({"join": true})).await;
        let r = http.post(format!("{base}/v1/join")).bearer_auth(token).send().await.expect("join");
        assert_eq!(r.status(), 201);
    }
    // A bad token: counted under its route with its status, never its path.
    let r = http.post(format!("{base}/v1/join")).bearer_auth("nope").send().await.expect("join");
    assert_eq!(r.status(), 401);
    wait_caught_up(&base).await;
    let after = scrape(&base).await;
    assert_eq!(after.get("arc_rooms_open"), Some(&2.0), "{after:?}");
    assert_eq!(after.get("arc_participants_active"), Some(&3.0), "{after:?}");
    let joins = |status: &str| {
        sum(
            &after,
            "arc_http_requests_total{",
            &["route=\"/v1/join\"", "method=\"POST\"", &format!("status=\"{status}\"")],
        )
    };
    assert_eq!((joins("201"), joins("401")), (3.0, 1.0));
    assert_eq!(sum(&after, "arc_http_requests_total{", &["route=\"/v1/rooms\"", "status=\"201\""]), 2.0);
    // The latency histogram counted the same requests.
    assert_eq!(sum(&after, "arc_http_request_duration_seconds_count{", &["route=\"/v1/join\""]), 4.0);
    assert!(after.keys().all(|k| !k.contains("ann")), "no per-participant labels");
    // Every projection has applied something and caught up.
    let caught_up: Vec<_> = after.iter().filter(|(k, _)| k.starts_with("arc_projection_caught_up{")).collect();
    assert!(caught_up.len() >= 6, "{caught_up:?}");
    assert!(caught_up.iter().all(|(_, v)| **v == 1.0), "{caught_up:?}");
    let lag: Vec<_> = after.iter().filter(|(k, _)| k.starts_with("arc_projection_lag_events{")).collect();
    assert!(lag.len() >= 6 && lag.iter().all(|(_, v)| **v == 0.0), "caught up: no events behind: {lag:?}");
    assert!(after.get("arc_log_head_position").is_some_and(|v| *v > 0.0));
    // This instance's appends: counted by outcome, their events, and timed.
    let ok = sum(&after, "arc_log_appends_total{", &["outcome=\"ok\""]);
    assert!(ok >= 6.0, "an app, two rooms, three joins: {after:?}");
    assert!(after.get("arc_log_appended_events_total").is_some_and(|v| *v >= ok), "{after:?}");
    let timed = after.get("arc_log_append_duration_seconds_count").copied().unwrap_or(0.0);
    assert_eq!(timed, sum(&after, "arc_log_appends_total{", &[]), "every append is timed");
    // No webhook URL: no deliveries, in every state.
    for state in ["pending", "delivered", "dead"] {
        assert_eq!(after.get(&format!("arc_webhook_deliveries{{state=\"{state}\"}}")), Some(&0.0), "{after:?}");
    }
    assert!(after.get("arc_process_cpu_seconds_total").is_some_and(|v| *v > 0.0), "{after:?}");
    assert!(after.get("arc_process_resident_memory_bytes").is_some_and(|v| *v > 1e6));
    // `dev` carries a media node: its own exposition is beside arc-control's,
    // where a separate arc-media serves it (`/media/metrics`, `/media/readyz`).
    promtool_finds_nothing(&format!("{base}/metrics")).await;
    if matches!(mode, Mode::Embedded { .. }) {
        promtool_finds_nothing(&format!("{base}/media/metrics")).await;
        let media = scrape(&format!("{base}/media")).await;
        assert_eq!(media.get("arc_media_sessions"), Some(&0.0), "{media:?}");
        assert_eq!(media.get("arc_media_subscriptions"), Some(&0.0), "{media:?}");
        assert_eq!(media.get("arc_media_draining"), Some(&0.0), "{media:?}");
        assert!(media.contains_key("arc_media_round_trip_seconds_count"), "{media:?}");
        let ready = reqwest::get(format!("{base}/media/readyz")).await.expect("readyz");
        assert_eq!(ready.status(), 200);
    } else {
        let none = reqwest::get(format!("{base}/media/metrics")).await.expect("media metrics");
        assert_eq!(none.status(), 404, "serve has no embedded node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    metrics_move_with_the_platform(Mode::Embedded { data_dir: dir.path().to_path_buf() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_nats_and_postgres() {
    let (_, _, _, _dir, mode) = common::cluster("MET", "met").await;
    metrics_move_with_the_platform(mode).await;
}
