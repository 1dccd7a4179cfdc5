//! Two `arc-media` processes under one `arc-control serve` (NATS JetStream +
//! PostgreSQL): rooms are placed on both, WHIP/WHEP requests travel over NATS
//! request/reply, a SIGKILLed node is declared lost, its participants leave
//! with `node_lost`, and a client that POSTs again lands on the live node and
//! gets media. Real Chromium on both ends (`tests/browser/publish_play.mjs`).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, cluster, create_app, mint_token, start_media, start_with};
use serde_json::{Value, json};

/// The sample names (`name` of `name{labels} value`) of an exposition.
fn sample_names(text: &str) -> std::collections::HashSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Every `arc_…` series name in the dashboard's queries.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ansible/grafana/arc.json");
    let text = std::fs::read_to_string(&path).expect("ansible/grafana/arc.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn walk(v: &Value, exprs: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    exprs.push(e.clone());
                }
                m.values().for_each(|x| walk(x, exprs));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, exprs)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() > 20, "the dashboard's queries: {exprs:?}");
    let mut names = std::collections::BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("arc_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

async fn get(base: &str, path: &str) -> Value {
    http()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .unwrap_or(json!({}))
}

fn chromium(base: &str, room: &str, pub_token: &str, sub_token: &str) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser");
    let out = Command::new("node")
        .arg("publish_play.mjs")
        .current_dir(dir)
        .env("ARC_URL", base)
        .env("ROOM", room)
        .env("PUB_TOKEN", pub_token)
        .env("SUB_TOKEN", sub_token)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("chromium {room}: {}", stdout.trim());
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or(json!({"ok": false}))
}

/// The node each active participant of `room` is on.
async fn nodes_of_room(base: &str, room: &str) -> Vec<String> {
    let rooms = get(base, &format!("/v1/rooms?name={room}")).await;
    let Some(id) = rooms["rooms"][0]["room_id"].as_str() else { return vec![] };
    let p = get(base, &format!("/v1/rooms/{id}/participants")).await;
    let mut v: Vec<String> = p["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["node_id"].as_str().map(str::to_owned))
        .collect();
    v.sort();
    v.dedup();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_two_nodes_and_move_when_one_dies() {
    let (nats, stream, prefix, _dir, mode) = cluster("MED", "m").await;
    let control = start_with(&mode, &["--janitor-interval-s", "1"]);
    let base = control.base.clone();
    let a = start_media(&nats, &stream, &prefix, "media-a");
    let mut b = Some(start_media(&nats, &stream, &prefix, "media-b"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = get(&base, "/v1/nodes").await;
        let up = n["nodes"].as_array().into_iter().flatten().filter(|x| x["state"] == "up").count();
        if up == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both media nodes registered: {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = create_app(&base, ADMIN_KEY, "cluster").await;
    let token =
        |identity: &'static str, room: &'static str, grants: Value| mint_token(&base, &app, identity, room, grants);
    let mut placed = Vec::new();
    for room in ["alpha", "beta"] {
        let p = token("cam", room, json!({"publish": true})).await;
        let s = token("viewer", room, json!({"subscribe": true})).await;
        let r = chromium(&base, room, &p, &s);
        assert_eq!(r["ok"], true, "room {room} through a node over NATS: {r}");
        let nodes = nodes_of_room(&base, room).await;
        assert_eq!(nodes.len(), 1, "a room stays on one node: {nodes:?}");
        placed.push(nodes[0].clone());
    }
    assert_ne!(placed[0], placed[1], "the two rooms landed on different nodes: {placed:?}");

    // Each node's operator endpoint: ready, and its metrics show the media it carried.
    let mut exposed =
        sample_names(&http().get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("body"));
    for node in [&a, b.as_ref().expect("b runs")] {
        let ready = http().get(node.metrics.replace("/metrics", "/readyz")).send().await.expect("readyz");
        assert_eq!(ready.status(), 200, "{} is ready", node.id);
        let text = http()
            .get(&node.metrics)
            .header("accept", "application/openmetrics-text; version=1.0.0")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        assert!(text.trim_end().ends_with("# EOF"), "{}: an OpenMetrics exposition", node.id);
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
                .unwrap_or_else(|| panic!("{}: {name} in\n{text}", node.id))
        };
        assert!(value("arc_media_packets_in_total ") > 100.0, "{}: media came in", node.id);
        assert!(value("arc_media_packets_out_total ") > 100.0, "{}: media went out", node.id);
        assert!(value("arc_media_srtp_own_packets_total ") > 100.0, "{}: through Arc's own egress", node.id);
        assert_eq!(value("arc_media_draining "), 0.0);
        value("arc_media_subscriptions ");
        assert!(text.lines().any(|l| l.starts_with("arc_media_worker_sessions{worker=\"0\"}")), "{}", node.id);
        // Connection quality from the players' receiver reports (Chromium
        // answers Arc's sender reports): round trips on loopback are short.
        let rtts = value("arc_media_round_trip_seconds_count ");
        assert!(rtts > 0.0, "{}: round trips measured", node.id);
        let rtt_mean = value("arc_media_round_trip_seconds_sum ") / rtts;
        assert!(rtt_mean < 0.5, "{}: loopback round trips average {rtt_mean} s", node.id);
        assert!(value("arc_media_jitter_seconds_count{direction=\"out\"} ") > 0.0, "{}: players' jitter", node.id);
        value("arc_media_jitter_seconds_count{direction=\"in\"} ");
        value("arc_media_packets_lost_total{direction=\"in\"} ");
        value("arc_media_packets_lost_total{direction=\"out\"} ");
        exposed.extend(sample_names(&text));
    }
    // The Grafana dashboard asks only for series both services expose.
    let missing: Vec<String> = dashboard_metrics().into_iter().filter(|m| !exposed.contains(m)).collect();
    assert!(missing.is_empty(), "ansible/grafana/arc.json names series nobody exposes: {missing:?}");

    // SIGKILL the node carrying "alpha".
    let victim = placed[0].clone();
    let survivor = placed[1].clone();
    if b.as_ref().is_some_and(|m| m.id == victim) {
        drop(b.take());
    } else {
        drop(a);
    }
    let killed_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = get(&base, "/v1/nodes").await;
        let lost = n["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["node_id"] == victim.as_str() && x["state"] == "lost");
        if lost && nodes_of_room(&base, "alpha").await.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{victim} declared lost and its participants gone: {n}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("{victim} lost and its participants left {:.1} s after SIGKILL", killed_at.elapsed().as_secs_f64());
    // Clients POST again and get media from the survivor.
    let p = token("cam", "alpha", json!({"publish": true})).await;
    let s = token("viewer", "alpha", json!({"subscribe": true})).await;
    let r = chromium(&base, "alpha", &p, &s);
    assert_eq!(r["ok"], true, "alpha again after its node died: {r}");
    assert_eq!(nodes_of_room(&base, "alpha").await, vec![survivor.clone()], "alpha moved to the live node");

    // The survivor has reported its load every 2 s all along, on the load
    // board: /v1/nodes shows it fresh, and the log holds only its registration.
    let n = get(&base, "/v1/nodes").await;
    let row = n["nodes"].as_array().into_iter().flatten().find(|x| x["node_id"] == survivor.as_str()).cloned();
    let row = row.unwrap_or_default();
    let at = |k: &str| row[k].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let (seen, registered) = (at("last_seen_at").expect("last_seen_at"), at("registered_at").expect("registered_at"));
    assert!(seen > registered + chrono::Duration::seconds(2), "load samples keep the node seen: {row}");
    assert!(chrono::Utc::now().signed_duration_since(seen) < chrono::Duration::seconds(5), "and fresh: {row}");
    let mut config = arc_eventlog::jetstream::JetStreamConfig::new(&nats);
    config.stream = stream.clone();
    config.subject_prefix = prefix.clone();
    let log = arc_eventlog::jetstream::JetStreamLog::connect(&config).await.expect("connect to the log");
    let node = arc_events::AggregateRef::new(arc_events::AggregateKind::Node, &survivor).expect("node ref");
    let events = arc_eventlog::EventLog::read_aggregate(&log, &node, 0).await.expect("read the node's events");
    // Its reports of its media (node.track_published, …) are there too; of
    // its own lifecycle, only the registration.
    let reports = [
        "node.track_published",
        "node.track_unpublished",
        "node.subscription_started",
        "node.subscription_ended",
        "node.session_ended",
    ];
    let types: Vec<&str> = events.iter().map(|e| e.raw.event_type.as_str()).filter(|t| !reports.contains(t)).collect();
    assert_eq!(
        types,
        vec!["node.registered"],
        "alive {:.0} s, and no heartbeat in the log",
        killed_at.elapsed().as_secs_f64()
    );
}

/// An `arc-media` SIGKILLed and started again under the same node id before
/// it was declared lost: it registers as `up` with no sessions, so the
/// lost-node janitor never fires. Reconciliation ends what the log still held
/// for it (`session_lost`), and the same identities can publish and play again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_node_restarted_under_its_id_leaves_no_ghosts() {
    use common::rtc_client::{Client, flow};
    let (nats, stream, prefix, _dir, mode) = cluster("MRS", "r").await;
    let control = start_with(&mode, &["--janitor-interval-s", "1"]);
    let base = control.base.clone();
    let node = start_media(&nats, &stream, &prefix, "media-r");
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&base, "/v1/nodes").await["nodes"][0]["state"] != "up" {
        assert!(Instant::now() < deadline, "the media node registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = create_app(&base, ADMIN_KEY, "restart").await;
    let pub_t = mint_token(&base, &app, "cam", "gamma", json!({"publish": true})).await;
    let sub_t = mint_token(&base, &app, "viewer", "gamma", json!({"subscribe": true})).await;
    let c = http();
    let mut p = Client::open(&c, &base, "gamma", &pub_t, true).await;
    let mut s = Client::open(&c, &base, "gamma", &sub_t, false).await;
    flow(&mut p, &mut s, 10, Duration::from_secs(15)).await;
    let rooms = get(&base, "/v1/rooms?name=gamma").await;
    let rid = rooms["rooms"][0]["room_id"].as_str().expect("room id").to_owned();
    drop(node);
    let node = start_media(&nats, &stream, &prefix, "media-r");
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(30);
    loop {
        let list = get(&base, &format!("/v1/rooms/{rid}/participants")).await;
        if list["participants"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        let n = get(&base, "/v1/nodes").await;
        assert_eq!(n["nodes"][0]["state"], "up", "the restarted node is up, never lost: {n}");
        assert!(Instant::now() < deadline, "participants of the restarted node ended within 30 s: {list}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("ghosts of the node restart ended {:.1} s after it", restarted.elapsed().as_secs_f64());
    // The same identities publish and play again on the restarted node.
    let mut p = Client::open(&c, &base, "gamma", &pub_t, true).await;
    let mut s = Client::open(&c, &base, "gamma", &sub_t, false).await;
    flow(&mut p, &mut s, 10, Duration::from_secs(15)).await;
    assert_eq!(p.delete(&c, &base, &pub_t).await, 200);
    assert_eq!(s.delete(&c, &base, &sub_t).await, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let room = get(&base, &format!("/v1/rooms/{rid}")).await;
        if room["participant_count"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the room is empty again: {room}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);
}

/// Three people meet through `/meet` on a room placed on one of two
/// `arc-media` nodes; that node is SIGKILLed. NATS has no responder for it
/// at once, so the control plane declares it lost within about a second
/// (without waiting for three missed heartbeats), its participants leave
/// with `node_lost`, each page is told to `reconnect`, joins again by itself
/// and lands on the survivor: every page decodes the other two again. The
/// time from the kill to that is printed (and recorded in BENCHMARKS.md);
/// the test only bounds it loosely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_moves_to_the_live_node_when_its_node_dies() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    let (nats, stream, prefix, _dir, mode) = cluster("MFO", "f").await;
    let control = start_with(&mode, &["--janitor-interval-s", "1"]);
    let base = control.base.clone();
    let mut nodes =
        vec![start_media(&nats, &stream, &prefix, "media-fa"), start_media(&nats, &stream, &prefix, "media-fb")];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = get(&base, "/v1/nodes").await;
        if n["nodes"].as_array().into_iter().flatten().filter(|x| x["state"] == "up").count() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "both media nodes registered: {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let app = create_app(&base, ADMIN_KEY, "failover").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true, "publish_data": true});
    let mut tokens = Vec::new();
    for who in ["ann", "bob", "cy"] {
        tokens.push(mint_token(&base, &app, who, "onair", grants.clone()).await);
    }
    let mut node_js = Command::new("node")
        .arg("meet.mjs")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .env("ARC_URL", &base)
        .env("TOKENS", tokens.join(","))
        .env("NAMES", "Ann,Bob,Cy")
        .env("FAILOVER", "1")
        // Speakers and quality come from nodes of their own here: over NATS.
        .env("SPEAK", "1")
        .env("QUALITY", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node tests/browser/meet.mjs (is Node.js installed?)");
    let mut lines = BufReader::new(node_js.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("\"phase\":\"media\""), "three pages met before the kill: {first}");
    let placed = nodes_of_room(&base, "onair").await;
    assert_eq!(placed.len(), 1, "the meeting is on one node: {placed:?}");
    let victim = nodes.iter().position(|m| m.id == placed[0]).expect("the room's node is one of ours");
    let survivor = nodes[1 - victim].id.clone();
    drop(nodes.remove(victim));
    let killed_at = Instant::now();
    let mut stdin = node_js.stdin.take().expect("stdin");
    stdin.write_all(b"killed\n").expect("tell the pages");
    drop(stdin);
    let last = lines.map_while(Result::ok).last().unwrap_or_default();
    let _ = node_js.wait();
    let elapsed = killed_at.elapsed();
    eprintln!("failover: {last}");
    let r: Value = serde_json::from_str(&last).unwrap_or_else(|_| json!({"ok": false, "raw": last}));
    assert_eq!(r["ok"], true, "every page joined again and has media from the other two: {r}");
    eprintln!(
        "media back on every page {} ms after the SIGKILL ({} ms with closing the browser)",
        r["failover_ms"],
        elapsed.as_millis()
    );
    assert!(r["failover_ms"].as_u64().is_some_and(|ms| ms < 20_000), "{r}");
    // The pages have left by now (the browser closed): the log says where they went.
    let joined = get(&base, "/v1/events?tail=200&type=room.participant_joined").await;
    let on: Vec<&str> =
        joined["events"].as_array().into_iter().flatten().filter_map(|e| e["data"]["node_id"].as_str()).collect();
    assert_eq!(on.len(), 6, "three joins, three joins again: {joined}");
    assert!(on[3..].iter().all(|n| *n == survivor), "the second joins went to the live node: {on:?}");
    // The log says why: lost because nothing answered on its subject, and
    // the three left with `node_lost`.
    let lost = get(&base, "/v1/events?tail=50&type=node.lost").await;
    let lost = lost["events"].as_array().cloned().unwrap_or_default();
    assert!(
        lost.iter().any(|e| e["data"]["unreachable_since"].is_string()),
        "declared lost by the probe, not by missed heartbeats: {lost:?}"
    );
    let left = get(&base, "/v1/events?tail=200&type=room.participant_left").await;
    let node_lost =
        left["events"].as_array().into_iter().flatten().filter(|e| e["data"]["reason"] == "node_lost").count();
    assert_eq!(node_lost, 3, "the three left with node_lost: {left}");
}
