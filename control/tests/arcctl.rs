//! `arcctl` (the real binary) against a running arc-control, embedded and on
//! NATS + PostgreSQL: the event log's tail, filters, one event and a live
//! follow, and the exit codes of its failures.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Mode, arcctl_bin, create_app, start};
use serde_json::Value;

fn arcctl(base: &str, key: &str, args: &[&str]) -> Output {
    Command::new(arcctl_bin())
        .args(["--url", base, "--admin-key", key])
        .args(args)
        .env_remove("ARC_URL")
        .env_remove("ARC_ADMIN_KEY")
        .output()
        .expect("run arcctl")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "arcctl failed ({:?}): {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// JSON lines of `arcctl --json events tail …`.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a JSON line {l:?}: {e}"))).collect()
}

async fn the_event_log_through_arcctl(mode: Mode) {
    let server = start(&mode);
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "arcctl").await;
    // Two rooms, through arcctl itself.
    let mut rooms = Vec::new();
    for name in ["one", "two"] {
        let out = ok(&arcctl(&base, ADMIN_KEY, &["--json", "rooms", "create", "--app", &app.0, name]));
        let v: Value = serde_json::from_str(&out).expect("json");
        rooms.push(v["room_id"].as_str().unwrap_or_else(|| panic!("room_id in {v}")).to_owned());
    }

    // One screen of status (the read models have the rooms: creates wait for them).
    let status = ok(&arcctl(&base, ADMIN_KEY, &["status"]));
    assert!(status.contains("rooms 2 open · participants 0"), "{status}");
    assert!(status.contains("webhooks 0 pending, 0 dead"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("PROJECTION") && l.contains("BEHIND")), "{status}");
    assert!(status.lines().any(|l| l.starts_with("rooms ")) && status.contains("caught up"), "{status}");
    match &mode {
        Mode::Embedded { .. } => assert!(status.contains("node-dev"), "the embedded node: {status}"),
        Mode::Cluster { .. } => assert!(status.contains("no media nodes"), "{status}"),
    }
    let json: Value = serde_json::from_str(&ok(&arcctl(&base, ADMIN_KEY, &["--json", "status"]))).expect("json");
    assert!(json["projections"].as_array().is_some_and(|ps| ps.iter().all(|p| p["behind"] == 0)), "{json}");

    // The tail: human lines, newest last.
    let text = ok(&arcctl(&base, ADMIN_KEY, &["events", "tail", "-n", "2"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].contains("room.created") && lines[1].contains(&format!("room:{}#1", rooms[1])), "{text}");

    // --json, one aggregate; then the same event by its position.
    let events = json_lines(&ok(&arcctl(
        &base,
        ADMIN_KEY,
        &["--json", "events", "tail", "--aggregate", &format!("room:{}", rooms[0])],
    )));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "room.created");
    assert_eq!(events[0]["data"]["name"], "one");
    let position = events[0]["position"].as_u64().expect("position");
    let shown: Value =
        serde_json::from_str(&ok(&arcctl(&base, ADMIN_KEY, &["--json", "events", "show", &position.to_string()])))
            .expect("json");
    assert_eq!(shown["id"], events[0]["id"]);

    // Everything of the last hour, and a type filter with a prefix.
    let all = json_lines(&ok(&arcctl(&base, ADMIN_KEY, &["--json", "events", "tail", "--since", "1h"])));
    assert!(all.iter().any(|e| e["type"] == "app.created"), "{all:?}");
    assert!(all.windows(2).all(|w| w[0]["position"].as_u64() < w[1]["position"].as_u64()), "log order");
    let created = json_lines(&ok(&arcctl(&base, ADMIN_KEY, &["--json", "events", "tail", "--type", "room.*"])));
    assert_eq!(created.len(), 2, "{created:?}");

    // Follow: the backlog's last event, then a live one.
    let mut child = Command::new(arcctl_bin())
        .args(["--url", &base, "--admin-key", ADMIN_KEY, "--json", "events", "tail", "-n", "1", "--follow"])
        .args(["--type", "room.*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn arcctl");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first: Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(10)).expect("the backlog")).expect("json");
    assert_eq!(first["aggregate_id"], rooms[1].as_str());
    // Give the follow a moment to connect, then close a room.
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(&arcctl(&base, ADMIN_KEY, &["rooms", "close", &rooms[0]]));
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the live room.closed within 10 s");
        let v: Value = serde_json::from_str(&line).expect("json");
        if v["type"] == "room.closed" {
            break v;
        }
    };
    assert_eq!(closed["aggregate_id"], rooms[0].as_str());
    let _ = child.kill();
    let _ = child.wait();

    // Refusals, each with its exit code and one line.
    let code = |out: Output| (out.status.code(), String::from_utf8_lossy(&out.stderr).lines().count());
    assert_eq!(code(arcctl(&base, "wrong-key", &["events", "tail"])), (Some(4), 1));
    assert_eq!(code(arcctl(&base, "wrong-key", &["status"])), (Some(4), 1));
    assert_eq!(code(arcctl(&base, ADMIN_KEY, &["rooms", "get", "rm_nobody"])), (Some(5), 1));
    assert_eq!(code(arcctl(&base, ADMIN_KEY, &["events", "show", "1099511627775"])), (Some(5), 1));
    assert_eq!(code(arcctl(&base, ADMIN_KEY, &["events", "tail", "--aggregate", "moon:x"])).0, Some(1));
    assert_eq!(arcctl(&base, ADMIN_KEY, &["events", "tail", "-n"]).status.code(), Some(2));
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    assert_eq!(code(arcctl(&format!("http://{closed_port}"), ADMIN_KEY, &["status"])), (Some(3), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_through_arcctl_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    the_event_log_through_arcctl(Mode::Embedded { data_dir: dir.path().to_path_buf() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_through_arcctl_on_nats_and_postgres() {
    let (_nats, _stream, _prefix, _dir, mode) = common::cluster("ARCCTL", "arcctl").await;
    the_event_log_through_arcctl(mode).await;
}
