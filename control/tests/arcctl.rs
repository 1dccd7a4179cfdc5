//! `arcctl` (the real binary) against a running arc-control, embedded and on
//! NATS + PostgreSQL: the event log's tail, filters, one event and a live
//! follow, and the exit codes of its failures; participants and nodes with
//! their tables (`-o wide`) and documents (`-o json`, `-o yaml`); a context
//! from the config file in place of flags; an online rebuild of a read model
//! followed to its end; and its outputs against snapshot files
//! (`tests/snapshots/arcctl/`, `ARC_UPDATE_SNAPSHOTS=1` rewrites them).

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
        .env_remove("ARC_CONTEXT")
        .env("ARCCTL_CONFIG", "/nonexistent/arcctl.toml")
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

    participants_and_nodes(&base, &rooms[1], &mode).await;
    rebuild_online(&base, &rooms);
    through_a_context(&base);

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

/// `participants …` and `nodes …` in every output format.
async fn participants_and_nodes(base: &str, room: &str, mode: &Mode) {
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/v1/rooms/{room}/participants"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({ "identity": "alice", "name": "Alice A." }))
        .send()
        .await
        .expect("join");
    assert!(resp.status().is_success(), "join: {}", resp.status());

    let table = ok(&arcctl(base, ADMIN_KEY, &["participants", "list", room]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IDENTITY") && !lines[0].contains("SID"), "{table}");
    assert!(lines[1].starts_with("alice") && lines[1].contains("Alice A."), "{table}");
    let json: Value =
        serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["participants", "list", room, "-o", "json"])))
            .expect("json");
    assert_eq!(json["participants"][0]["identity"], "alice");
    let yaml = ok(&arcctl(base, ADMIN_KEY, &["-o", "yaml", "participants", "show", room, "alice"]));
    assert!(yaml.lines().any(|l| l == "identity: alice"), "{yaml}");
    assert!(yaml.lines().any(|l| l == format!("room_id: {room}")), "{yaml}");

    // Permissions: listen only; -o wide shows them.
    let changed: Value = serde_json::from_str(&ok(&arcctl(
        base,
        ADMIN_KEY,
        &["--json", "participants", "permissions", room, "alice", "--can", "subscribe"],
    )))
    .expect("json");
    assert_eq!(changed["permissions"], serde_json::json!({"publish": false, "subscribe": true, "publish_data": false}));
    let wide = ok(&arcctl(base, ADMIN_KEY, &["participants", "list", room, "-o", "wide"]));
    assert!(wide.lines().next().is_some_and(|h| h.contains("SID") && h.contains("CAN")), "{wide}");
    assert!(wide.lines().nth(1).is_some_and(|l| l.contains("subscribe") && !l.contains("publish")), "{wide}");
    assert_eq!(
        arcctl(base, ADMIN_KEY, &["participants", "permissions", room, "alice", "--can", "fly"]).status.code(),
        Some(2)
    );

    // Remove: gone from the list.
    let left: Value =
        serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["-o", "json", "participants", "remove", room, "alice"])))
            .expect("json");
    assert_eq!(left["left"], true);
    let table = ok(&arcctl(base, ADMIN_KEY, &["participants", "list", room]));
    assert_eq!(table.trim(), "nobody is in the room");
    assert_eq!(arcctl(base, ADMIN_KEY, &["participants", "show", room, "alice"]).status.code(), Some(5));

    // Nodes.
    match mode {
        Mode::Embedded { .. } => {
            let wide = ok(&arcctl(base, ADMIN_KEY, &["nodes", "list", "-o", "wide"]));
            assert!(wide.lines().next().is_some_and(|h| h.contains("ARCH/CORES")), "{wide}");
            assert!(wide.lines().any(|l| l.starts_with("node-dev")), "{wide}");
            ok(&arcctl(base, ADMIN_KEY, &["nodes", "drain", "node-dev"]));
            let node: Value =
                serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["nodes", "show", "node-dev", "-o", "json"])))
                    .expect("json");
            assert_eq!(node["state"], "draining", "{node}");
            ok(&arcctl(base, ADMIN_KEY, &["nodes", "undrain", "node-dev"]));
            let node: Value =
                serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["nodes", "show", "node-dev", "-o", "json"])))
                    .expect("json");
            assert_ne!(node["state"], "draining", "{node}");
        }
        Mode::Cluster { .. } => {
            assert_eq!(ok(&arcctl(base, ADMIN_KEY, &["nodes", "list"])).trim(), "no media nodes");
        }
    }
    assert_eq!(arcctl(base, ADMIN_KEY, &["nodes", "show", "no-such-node"]).status.code(), Some(5));
}

/// `context add … --use`, then commands without `--url` or `--admin-key`.
fn through_a_context(base: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("arcctl.toml");
    let run = |args: &[&str]| {
        Command::new(arcctl_bin())
            .args(args)
            .env_remove("ARC_URL")
            .env_remove("ARC_ADMIN_KEY")
            .env_remove("ARC_CONTEXT")
            .env("ARCCTL_CONFIG", &config)
            .output()
            .expect("run arcctl")
    };
    ok(&run(&["context", "add", "here", "--url", base, "--key", ADMIN_KEY, "--use"]));
    ok(&run(&["context", "add", "elsewhere", "--url", "http://127.0.0.1:9"]));
    let list = ok(&run(&["context", "list"]));
    assert!(list.lines().any(|l| l.starts_with('*') && l.contains("here")), "{list}");
    assert!(!list.contains(ADMIN_KEY), "keys are never printed: {list}");
    // The current context's URL and key: the nodes line needs the key.
    let status = ok(&run(&["status"]));
    assert!(!status.contains("give the admin key"), "{status}");
    // --context picks another; a flag beats both.
    assert_eq!(run(&["--context", "elsewhere", "status"]).status.code(), Some(3));
    ok(&run(&["--context", "elsewhere", "--url", base, "--admin-key", ADMIN_KEY, "status"]));
    assert_eq!(run(&["--context", "nowhere", "status"]).status.code(), Some(2));
}

/// `projections rebuild` while the server runs: the read model is emptied
/// and replayed, and reads the same afterwards.
fn rebuild_online(base: &str, rooms: &[String]) {
    let before: Value =
        serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["rooms", "list", "-o", "json"]))).expect("json");
    let done: Value =
        serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["projections", "rebuild", "rooms", "-o", "json"])))
            .expect("json");
    assert_eq!(done["name"], "rooms");
    assert!(done["events"].as_u64().is_some_and(|n| n >= 2), "{done}");
    let after: Value =
        serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["rooms", "list", "-o", "json"]))).expect("json");
    let ids = |v: &Value| {
        let mut ids: Vec<String> =
            v["rooms"].as_array().into_iter().flatten().map(|r| r["room_id"].to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&before), ids(&after), "the rebuilt read model reads the same");
    assert!(rooms.iter().all(|r| ids(&after).iter().any(|id| id.contains(r.as_str()))), "{after}");
    let list = ok(&arcctl(base, ADMIN_KEY, &["projections", "list", "-o", "wide"]));
    assert!(list.lines().next().is_some_and(|h| h.contains("REBUILD")), "{list}");
    assert!(list.lines().any(|l| l.starts_with("rooms") && l.contains("caught up")), "{list}");
    let one: Value =
        serde_json::from_str(&ok(&arcctl(base, ADMIN_KEY, &["projections", "status", "rooms", "-o", "json"])))
            .expect("json");
    assert_eq!(one["caught_up"], true, "{one}");
    assert_eq!(arcctl(base, ADMIN_KEY, &["projections", "rebuild", "moons"]).status.code(), Some(5));
    assert_eq!(arcctl(base, ADMIN_KEY, &["projections", "status", "moons"]).status.code(), Some(5));
}

/// Ids, secrets and times vary from run to run: each is replaced by a
/// placeholder of the same length (so table columns keep their widths) —
/// 32 hex digits after an id's `_` by `x`s, UUIDs by `x`s, the digits of
/// RFC 3339 times by `0`s.
fn redact(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = b.clone();
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    let mut i = 0;
    while i < b.len() {
        // `<prefix>_` + 32 hex (room, app, participant, … ids).
        if b[i] == '_' && i + 33 <= b.len() && b[i + 1..i + 33].iter().all(|c| hex(*c)) {
            out[i + 1..i + 33].fill('x');
            i += 33;
            continue;
        }
        // A UUID: 8-4-4-4-12 hex.
        let uuid = [8, 4, 4, 4, 12];
        if i + 36 <= b.len() && (i == 0 || !hex(b[i - 1])) {
            let mut j = i;
            let ok = uuid.iter().enumerate().all(|(n, len)| {
                let run = b[j..j + len].iter().all(|c| hex(*c));
                j += len;
                let sep = n == 4 || (j < b.len() && b[j] == '-');
                j += usize::from(n < 4);
                run && sep
            });
            if ok {
                for c in &mut out[i..i + 36] {
                    if *c != '-' {
                        *c = 'x';
                    }
                }
                i += 36;
                continue;
            }
        }
        // An RFC 3339 time: YYYY-MM-DDTHH:MM:SS, then its fraction and offset digits.
        let shape = "0000-00-00T00:00:00";
        if i + shape.len() <= b.len()
            && shape.chars().zip(&b[i..]).all(|(s, c)| if s == '0' { c.is_ascii_digit() } else { s == *c })
        {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_digit() || "-T:.+Z".contains(b[j])) {
                if b[j].is_ascii_digit() {
                    out[j] = '0';
                }
                j += 1;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out.into_iter().collect()
}

/// A table's rows in a stable order (ids decide the server's order, and ids
/// are random): the heading first, then the redacted rows sorted.
fn stable_table(text: &str) -> String {
    let redacted = redact(text);
    let mut lines: Vec<&str> = redacted.lines().collect();
    if lines.len() > 2 {
        lines[1..].sort_unstable();
    }
    lines.join("\n") + "\n"
}

/// Compares `got` with `control/tests/snapshots/arcctl/<name>.txt`;
/// `ARC_UPDATE_SNAPSHOTS=1` writes it instead.
fn snapshot(name: &str, got: &str) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/arcctl").join(format!("{name}.txt"));
    if std::env::var_os("ARC_UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("snapshot dir");
        std::fs::write(&path, got).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (ARC_UPDATE_SNAPSHOTS=1 writes it)", path.display()));
    assert!(
        want == got,
        "arcctl's {name} changed (ARC_UPDATE_SNAPSHOTS=1 accepts it):\n--- want\n{want}--- got\n{got}"
    );
}

/// Tables, documents, colours and an error line of the real binary, each
/// against a file beside this test (ids and times redacted): what a change
/// to arcctl's output does is seen in the diff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_match_their_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let server = start(&mode);
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "snap").await;
    for room in ["alpha", "beta"] {
        ok(&arcctl(&base, ADMIN_KEY, &["rooms", "create", "--app", &app.0, room]));
    }
    let http = reqwest::Client::new();
    for who in ["alice", "bob"] {
        let token = common::mint_token(&base, &app, who, "alpha", serde_json::json!({"join": true})).await;
        let r = http.post(format!("{base}/v1/join")).bearer_auth(token).send().await.expect("join");
        assert_eq!(r.status(), 201);
    }
    common::wait_caught_up(&base).await;
    let room = common::room_id(&base, &app, "alpha").await.expect("room id");
    let run = |args: &[&str]| ok(&arcctl(&base, ADMIN_KEY, args));

    snapshot("rooms-list", &stable_table(&run(&["rooms", "list", "--app", &app.0])));
    snapshot("rooms-list-wide", &stable_table(&run(&["rooms", "list", "--app", &app.0, "-o", "wide"])));
    snapshot("participants-list", &stable_table(&run(&["participants", "list", &room])));
    snapshot("participants-list-wide", &stable_table(&run(&["participants", "list", &room, "-o", "wide"])));
    snapshot("participants-show", &redact(&run(&["participants", "show", &room, "alice"])));
    let json: Value = serde_json::from_str(&run(&["participants", "list", &room, "-o", "json"])).expect("json");
    let mut people = json["participants"].as_array().cloned().unwrap_or_default();
    people.sort_by_key(|p| p["identity"].to_string());
    let people = serde_json::to_string_pretty(&serde_json::json!({ "participants": people })).expect("json");
    snapshot("participants-list-json", &(redact(&people) + "\n"));
    snapshot("apps-list", &stable_table(&run(&["apps", "list"])));
    snapshot("projections-list", &stable_table(&run(&["projections", "list"])));
    snapshot("projections-list-color", &stable_table(&run(&["projections", "list", "--color", "always"])));
    let missing = arcctl(&base, ADMIN_KEY, &["--color", "always", "participants", "show", &room, "nobody"]);
    assert_eq!(missing.status.code(), Some(5));
    snapshot("error-color", &redact(&String::from_utf8_lossy(&missing.stderr)));
    // NO_COLOR wins over a terminal, and a pipe (as here) is never coloured.
    assert!(!run(&["projections", "list"]).contains('\u{1b}'));
}
