//! Several `arc-control serve` instances on one NATS and one PostgreSQL.

mod common;

use common::{Mode, create_pg_database, start};

/// Three instances started at the same moment on an empty database all come
/// up: schema setup is serialised (sqlx's migrations and the webhook tables
/// both take a PostgreSQL advisory lock), not raced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_at_once_on_an_empty_database_all_come_up() {
    let nats = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL not set: run scripts/test");
    let pg = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    for round in 0..3 {
        let database = create_pg_database(&pg).await;
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let modes: Vec<Mode> = dirs
            .iter()
            .map(|d| Mode::Cluster {
                nats: nats.clone(),
                stream: format!("INS_{tag}"),
                prefix: format!("i{tag}.evt"),
                database: database.clone(),
                data_dir: d.path().to_path_buf(),
            })
            .collect();
        let started: Vec<_> = modes.into_iter().map(|m| std::thread::spawn(move || start(&m))).collect();
        let servers: Vec<_> = started
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| panic!("round {round}: an instance failed to start")))
            .collect();
        let http = reqwest::Client::new();
        for s in &servers {
            let r = http.get(format!("{}/v1/status", s.base)).send().await.expect("status");
            assert_eq!(r.status().as_u16(), 200, "round {round}: every instance serves");
        }
    }
}

/// The lease holders in `database`: (lease name, pid of the instance).
async fn holders(database: &str) -> Vec<(String, u32)> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(database).await.expect("connect");
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted \
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND a.application_name LIKE 'arc-lease %'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("pg_locks");
    let _ = conn.close().await;
    let mut out: Vec<(String, u32)> = names
        .iter()
        .filter_map(|n| {
            let rest = n.strip_prefix("arc-lease ")?;
            let (name, pid) = rest.rsplit_once(" pid ")?;
            Some((name.to_owned(), pid.parse().ok()?))
        })
        .collect();
    out.sort();
    out
}

/// `GET /v1/rooms/{room_id}` through `base`, sending `Arc-Position` if given.
async fn get_room(http: &reqwest::Client, base: &str, room_id: &str, position: Option<&str>) -> serde_json::Value {
    let mut request = http.get(format!("{base}/v1/rooms/{room_id}")).bearer_auth(common::ADMIN_KEY);
    if let Some(p) = position {
        request = request.header("arc-position", p);
    }
    request.send().await.expect("get room").json().await.expect("json")
}

/// Every lease an instance takes: six projections, the webhooks, the janitor,
/// the node-report reactor.
const LEASES: usize = 9;

/// What one client saw of one room: the highest `seq` acknowledged or read.
#[derive(Default)]
struct Seen {
    acked: i64,
    read: i64,
}

/// Three instances serve one cluster while a client writes through one and
/// reads through another: every acknowledged write is readable at once on
/// every instance (the writer's commit notifies the others; the read also
/// sends the write's `Arc-Position`), no read goes
/// backwards, each lease has one holder; SIGKILL the holder and the others
/// take its leases over within seconds, writes keep landing, every
/// acknowledged room's webhook arrives (duplicates only for attempts cut
/// off by the kill), `rebuild` refuses while instances run, and the read
/// models equal a rebuild from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_writer_each_and_a_sigkill() {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    use common::{ADMIN_KEY, create_app_with, dump, receiver, run_tool, start_with, wait_caught_up};
    use serde_json::{Value, json};

    let nats = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL not set: run scripts/test");
    let pg = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    let database = create_pg_database(&pg).await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Cluster {
        nats,
        stream: format!("MI_{tag}"),
        prefix: format!("m{tag}.evt"),
        database: database.clone(),
        data_dir: dir.path().to_path_buf(),
    };
    let flags = ["--webhook-backoff-base-ms", "100"];
    let mut servers: Vec<Option<common::Server>> = (0..3).map(|_| Some(start_with(&mode, &flags))).collect();
    let bases: Vec<String> = servers.iter().flatten().map(|s| s.base.clone()).collect();
    let pids: Vec<u32> = servers.iter().flatten().map(|s| s.child.id()).collect();

    // Every lease has exactly one holder among the instances.
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let h = holders(&database).await;
        if h.len() == LEASES {
            break h;
        }
        assert!(Instant::now() < deadline, "leases held after 20 s: {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(held.iter().all(|(_, pid)| pids.contains(pid)), "holders are our instances: {held:?}");
    let mut names: Vec<&String> = held.iter().map(|(n, _)| n).collect();
    names.dedup();
    assert_eq!(names.len(), LEASES, "one holder per lease: {held:?}");
    eprintln!("lease holders: {held:?}");

    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let (hook_url, hooks) = receiver().await;
    let (app_id, _) = create_app_with(&bases[0], ADMIN_KEY, json!({"name": "instances", "webhooks": [hook_url]})).await;

    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut alive: Vec<usize> = vec![0, 1, 2];
    let mut cross_reads = 0u32;
    let mut pending = 0u32;
    let mut write_ms: Vec<f64> = Vec::new();
    let mut killed_at = None;
    let mut takeover = None;
    let rooms = 90;
    for i in 0..rooms {
        if i == 40 {
            // Kill the instance holding the most leases, mid-stream.
            let h = holders(&database).await;
            let mut count: HashMap<u32, usize> = HashMap::new();
            for (_, pid) in &h {
                *count.entry(*pid).or_default() += 1;
            }
            let (&victim_pid, _) = count.iter().max_by_key(|(_, n)| **n).expect("a holder");
            let victim = pids.iter().position(|p| *p == victim_pid).expect("victim is ours");
            if let Some(mut s) = servers[victim].take() {
                s.child.kill().expect("kill");
                s.child.wait().expect("wait");
            }
            alive.retain(|i| *i != victim);
            killed_at = Some(Instant::now());
            eprintln!("SIGKILLed instance {victim} (pid {victim_pid}, {} leases)", count[&victim_pid]);
        }
        if let (Some(at), None) = (killed_at, takeover) {
            let h = holders(&database).await;
            if h.len() == LEASES && h.iter().all(|(_, pid)| alive.iter().any(|a| pids[*a] == *pid)) {
                takeover = Some(at.elapsed());
                eprintln!("all {LEASES} leases taken over after {:?}", at.elapsed());
            }
        }
        let w = alive[i % alive.len()];
        let r = alive[(i + 1) % alive.len()];
        let name = format!("room-{i}");
        let t = Instant::now();
        let resp = http
            .post(format!("{}/v1/rooms", bases[w]))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"app_id": app_id, "name": name, "empty_timeout_s": 600}))
            .send()
            .await
            .expect("create room");
        let status = resp.status().as_u16();
        let position = resp.headers().get("arc-position").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body: Value = resp.json().await.unwrap_or_default();
        match status {
            201 => write_ms.push(t.elapsed().as_secs_f64() * 1000.0),
            202 => {
                pending += 1;
                continue;
            }
            other => panic!("room {i} through instance {w}: {other} {body}"),
        }
        let room_id = body["room_id"].as_str().expect("room_id").to_owned();
        let entry = seen.entry(room_id.clone()).or_default();
        entry.acked = body["seq"].as_i64().expect("seq");
        // Read-your-writes on another instance, at once (and asked for: `Arc-Position`).
        let position = position.unwrap_or_else(|| panic!("a 201 carries Arc-Position: {body}"));
        let got = get_room(&http, &bases[r], &room_id, Some(&position)).await;
        let seq = got["seq"].as_i64().unwrap_or_else(|| panic!("room {room_id} read through instance {r}: {got}"));
        assert!(seq >= entry.acked, "instance {r} read seq {seq} of {room_id}, acknowledged {}", entry.acked);
        entry.read = seq;
        cross_reads += 1;
        // A join through a third instance; the room read back through the first.
        let j = alive[(i + 2) % alive.len()];
        let joined = http
            .post(format!("{}/v1/rooms/{room_id}/participants", bases[j]))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"identity": "ann"}))
            .send()
            .await
            .expect("join");
        if joined.status().as_u16() == 201 {
            let v: Value = joined.json().await.unwrap_or_default();
            if let Some(s) = v["seq"].as_i64() {
                entry.acked = entry.acked.max(s);
            }
            let got = get_room(&http, &bases[w], &room_id, None).await;
            let seq = got["seq"].as_i64().unwrap_or(0);
            assert!(seq >= entry.acked && seq >= entry.read, "a read went backwards on {room_id}: {got}");
            assert_eq!(got["participant_count"], 1, "{got}");
            entry.read = seq;
            cross_reads += 1;
        }
    }
    let takeover = match takeover {
        Some(t) => t,
        None => {
            let at = killed_at.expect("killed");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let h = holders(&database).await;
                if h.len() == LEASES && h.iter().all(|(_, pid)| alive.iter().any(|a| pids[*a] == *pid)) {
                    break at.elapsed();
                }
                assert!(Instant::now() < deadline, "leases not taken over: {h:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    write_ms.sort_by(f64::total_cmp);
    eprintln!(
        "{} rooms acknowledged (201), {pending} pending (202), {cross_reads} reads on another instance all current; \
         create median {:.1} ms, p95 {:.1} ms; leases taken over within {takeover:?}",
        seen.len(),
        write_ms[write_ms.len() / 2],
        write_ms[write_ms.len() * 95 / 100],
    );
    assert!(takeover < Duration::from_secs(10), "takeover took {takeover:?}");

    // A position not reached in time: 503 behind; not a position: 400.
    let base = &bases[alive[0]];
    let far = http.get(format!("{base}/v1/rooms")).bearer_auth(ADMIN_KEY).header("arc-position", u64::MAX.to_string());
    let r = far.send().await.expect("far");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["code"], "behind", "{v}");
    let r = http.get(format!("{base}/v1/rooms")).bearer_auth(ADMIN_KEY).header("arc-position", "soon").send().await;
    let r = r.expect("bad");
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.expect("json");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("Arc-Position")), "{v}");

    // Webhooks: every acknowledged room's events arrive; repeats only for attempts the kill cut off.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = seen.len();
    loop {
        let got = hooks.lock().expect("lock").clone();
        if got.len() >= expected {
            let twice = got.values().filter(|n| **n > 1).count();
            eprintln!("{} webhooks delivered, {twice} more than once", got.len());
            assert!(twice <= 16, "{twice} webhooks delivered twice: more than one sender's in-flight attempts");
            break;
        }
        assert!(Instant::now() < deadline, "{} webhooks of ≥ {expected} arrived", got.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The offline tools refuse to write beside running instances.
    let refused = common::tool_output(&mode, "rebuild", None);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("running arc-control"), "rebuild beside instances: {stderr}");

    // Online rebuilds through one survivor (the writer may be the other),
    // followed by arcctl to their end; the comparison below checks what they wrote.
    for projection in ["participants", "rooms"] {
        let out = std::process::Command::new(common::arcctl_bin())
            .args(["--url", &bases[alive[0]], "--admin-key", ADMIN_KEY, "-o", "json", "projections", "rebuild"])
            .arg(projection)
            .env("ARCCTL_CONFIG", "/nonexistent/arcctl.toml")
            .output()
            .expect("run arcctl");
        assert!(out.status.success(), "rebuild {projection}: {}", String::from_utf8_lossy(&out.stderr));
        eprintln!("online rebuild: {}", String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<String>());
    }

    // The survivors' read models equal a rebuild from zero.
    let last = *alive.last().expect("a survivor");
    wait_caught_up(&bases[last]).await;
    drop(servers);
    run_tool(&mode, "catch-up", None);
    let live = dump(&database).await;
    let fresh = create_pg_database(&pg).await;
    run_tool(&mode, "rebuild", Some(&fresh));
    let rebuilt = dump(&fresh).await;
    assert_eq!(live, rebuilt, "the read models equal a rebuild");
    eprintln!("{} read-model rows equal a rebuild", live.len());
}
