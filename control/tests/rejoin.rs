//! Participant lifecycles through the real WHIP/WHEP path (`rtc` clients over
//! UDP against `arc-control dev`): whatever the sequence of joins, a room that
//! everybody left lists nobody, counts nobody, and its webhooks told the
//! customer about every join and every leave — the log, the read models, the
//! media node's sessions and the webhook deliveries agree.
//!
//! The rejoin ghost (issue 17): the same identity publishing (WHIP) and
//! playing (WHEP) twice in a room left both participants `active` for ever,
//! because the node's reporter decided the second leave on a cached room
//! state that lacked the second join. Covered here, with overlapping sessions
//! of one identity, sessions whose client vanishes, kick, room close, and a
//! SIGKILL + restart of `arc-control dev` (its embedded node comes back empty;
//! reconciliation ends what the log still held for it).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::rtc_client::{Client, flow, try_post};
use common::{ADMIN_KEY, Mode, Server, mint_token, start_with};
use serde_json::{Value, json};

/// Webhook bodies received, by event id (deliveries are at least once).
type Hooks = Arc<Mutex<HashMap<String, Value>>>;

async fn receiver() -> (String, Hooks) {
    let got: Hooks = Arc::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let got = state.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body)
                    && let Some(id) = v["id"].as_str()
                {
                    got.lock().expect("lock").insert(id.to_owned(), v);
                }
                StatusCode::OK
            }
        }),
    );
    (format!("{}/hook", common::serve_local(app).await), got)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

async fn get(base: &str, path: &str) -> Value {
    http().get(format!("{base}{path}")).bearer_auth(ADMIN_KEY).send().await.expect("get").json().await.expect("json")
}

async fn room_id(base: &str, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(id) = get(base, &format!("/v1/rooms?name={name}")).await["rooms"][0]["room_id"].as_str() {
            return id.to_owned();
        }
        assert!(Instant::now() < deadline, "room {name} listed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (identity, sid) of the room's active participants.
async fn active(base: &str, room_id: &str) -> Vec<(String, String)> {
    let p = get(base, &format!("/v1/rooms/{room_id}/participants")).await;
    p["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| (x["identity"].as_str().unwrap_or("").to_owned(), x["sid"].as_str().unwrap_or("").to_owned()))
        .collect()
}

/// The embedded node's session count (from its heartbeats, every 2 s).
async fn node_sessions(base: &str) -> i64 {
    get(base, "/v1/nodes").await["nodes"][0]["sessions"].as_i64().unwrap_or(-1)
}

/// Waits until the room lists exactly `want` (identities), counts them, and
/// the node holds `sessions` sessions in all.
async fn settle(base: &str, room_id: &str, want: &[&str], sessions: i64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let mut who: Vec<String> = active(base, room_id).await.into_iter().map(|(i, _)| i).collect();
        who.sort();
        let count = get(base, &format!("/v1/rooms/{room_id}")).await["participant_count"].as_i64().unwrap_or(-1);
        let held = node_sessions(base).await;
        let mut want_sorted: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        want_sorted.sort();
        if who == want_sorted && count == want.len() as i64 && held == sessions {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: within {within:?} the room lists {want:?} (got {who:?}), counts {} (got {count}), the node holds {sessions} sessions (got {held})",
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Per sid of this room: (joined, left reason) as the webhooks told it.
fn hooks_of(hooks: &Hooks, room_id: &str) -> HashMap<String, (bool, Option<String>)> {
    let mut out: HashMap<String, (bool, Option<String>)> = HashMap::new();
    for v in hooks.lock().expect("lock").values().filter(|v| v["room_id"] == room_id) {
        let Some(sid) = v["data"]["sid"].as_str() else { continue };
        let e = out.entry(sid.to_owned()).or_default();
        match v["type"].as_str() {
            Some("room.participant_joined") => e.0 = true,
            Some("room.participant_left") => e.1 = v["data"]["reason"].as_str().map(str::to_owned),
            _ => {}
        }
    }
    out
}

/// Per sid of this room in the log: (joined, left reason).
async fn log_of(dir: &std::path::Path, room_id: &str) -> HashMap<String, (bool, Option<String>)> {
    use sqlx::ConnectOptions as _;
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.join("events.db")).read_only(true);
    let mut conn = opts.connect().await.expect("open events.db");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_type, record FROM events WHERE aggregate_id = ? AND event_type IN \
         ('room.participant_joined', 'room.participant_left') ORDER BY position",
    )
    .bind(room_id)
    .fetch_all(&mut conn)
    .await
    .expect("read the log");
    let mut out: HashMap<String, (bool, Option<String>)> = HashMap::new();
    for (ty, record) in rows {
        let v: Value = serde_json::from_str(&record).expect("record is JSON");
        let Some(sid) = v["data"]["sid"].as_str() else { continue };
        let e = out.entry(sid.to_owned()).or_default();
        if ty == "room.participant_joined" {
            e.0 = true;
        } else {
            e.1 = v["data"]["reason"].as_str().map(str::to_owned);
        }
    }
    out
}

/// Every sid that joined the room also left it, in the log and in the
/// webhooks alike (same sids, same reasons); returns the leave reasons.
async fn everyone_left_everywhere(dir: &std::path::Path, hooks: &Hooks, room_id: &str, what: &str) -> Vec<String> {
    let log = log_of(dir, room_id).await;
    assert!(!log.is_empty(), "{what}: the log has joins");
    for (sid, (joined, left)) in &log {
        assert!(*joined && left.is_some(), "{what}: {sid} joined and left in the log: {log:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = hooks_of(hooks, room_id);
        if seen == log {
            break;
        }
        assert!(Instant::now() < deadline, "{what}: webhooks agree with the log:\n log   {log:?}\n hooks {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reasons: Vec<String> = log.into_values().filter_map(|(_, r)| r).collect();
    reasons.sort();
    reasons
}

struct Dev {
    server: Server,
    mode: Mode,
    dir: tempfile::TempDir,
}

fn start_dev(dir: tempfile::TempDir) -> Dev {
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let server = start_with(&mode, &["--janitor-interval-s", "1"]);
    Dev { server, mode, dir }
}

async fn create_app(base: &str, hook: &str) -> (String, String) {
    common::create_app_with(base, ADMIN_KEY, json!({"name": "rejoin", "webhooks": [hook]})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sequence_of_joins_ends_with_an_empty_room() {
    let (hook, hooks) = receiver().await;
    let mut dev = start_dev(tempfile::tempdir().expect("tempdir"));
    let base = dev.server.base.clone();
    let app = create_app(&base, &hook).await;
    let c = http();
    let grants_pub = json!({"publish": true, "subscribe": false});
    let grants_sub = json!({"publish": false, "subscribe": true});

    // 1. The case: the same two identities publish and play, leave
    //    (DELETE), and come back, three times.
    let room = "again";
    let pub_t = mint_token(&base, &app, "pub", room, grants_pub.clone()).await;
    let sub_t = mint_token(&base, &app, "sub", room, grants_sub.clone()).await;
    let mut rid = String::new();
    for round in 0..3 {
        let mut p = Client::open(&c, &base, room, &pub_t, true).await;
        let mut s = Client::open(&c, &base, room, &sub_t, false).await;
        flow(&mut p, &mut s, 10, Duration::from_secs(10)).await;
        rid = room_id(&base, room).await;
        assert_eq!(active(&base, &rid).await.len(), 2, "round {round}: both in the room");
        assert_eq!(p.delete(&c, &base, &pub_t).await, 200);
        assert_eq!(s.delete(&c, &base, &sub_t).await, 200);
        settle(&base, &rid, &[], 0, Duration::from_secs(5), &format!("round {round} after DELETEs")).await;
    }
    let reasons = everyone_left_everywhere(dev.dir.path(), &hooks, &rid, "sequential sessions").await;
    assert_eq!(reasons, vec!["client_left"; 6], "six sessions, each left by its client");

    // 2. Overlapping sessions of one identity: the newer replaces the older
    //    (duplicate_identity), whose media the node ends at once.
    let room = "overlap";
    let pub_t = mint_token(&base, &app, "pub", room, grants_pub.clone()).await;
    let sub_t = mint_token(&base, &app, "sub", room, grants_sub.clone()).await;
    let mut p1 = Client::open(&c, &base, room, &pub_t, true).await;
    let mut s = Client::open(&c, &base, room, &sub_t, false).await;
    flow(&mut p1, &mut s, 10, Duration::from_secs(10)).await;
    let rid = room_id(&base, room).await;
    let mut p2 = Client::open(&c, &base, room, &pub_t, true).await;
    s.received = 0;
    flow(&mut p2, &mut s, 10, Duration::from_secs(10)).await;
    settle(&base, &rid, &["pub", "sub"], 2, Duration::from_secs(5), "a second publisher session replaced the first")
        .await;
    // The old session's DELETE finds nothing: the node ended it already.
    assert_eq!(p1.delete(&c, &base, &pub_t).await, 404, "the replaced session is gone from the node");
    // Many sessions at once under one token: at most one survives, and the
    // room and the node agree on it.
    let mut offers = Vec::new();
    for _ in 0..20 {
        offers.push(Client::new(true).await);
    }
    let url = format!("{base}/v1/whip/{room}");
    let posts = offers.iter().map(|o| try_post(&c, &url, &pub_t, o.offer()));
    let statuses: Vec<u16> = futures::future::join_all(posts).await.into_iter().map(|(s, _, _)| s).collect();
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "201 or 409 (session_replaced): {statuses:?}");
    assert!(statuses.contains(&201), "{statuses:?}");
    settle(&base, &rid, &["pub", "sub"], 2, Duration::from_secs(8), "20 concurrent sessions of one identity").await;
    assert_eq!(s.delete(&c, &base, &sub_t).await, 200);
    // The surviving publisher never connects (nobody drives it): the node drops
    // it after its connect timeout, and it leaves with connection_lost.
    drop(offers);
    drop(p2);
    settle(&base, &rid, &[], 0, Duration::from_secs(40), "the surviving session timed out").await;
    let reasons: HashSet<String> =
        everyone_left_everywhere(dev.dir.path(), &hooks, &rid, "overlapping sessions").await.into_iter().collect();
    assert!(reasons.contains("duplicate_identity"), "{reasons:?}");

    // 3. Clients that vanish (no DELETE): ICE times out, the node ends them.
    let room = "vanish";
    let pub_t = mint_token(&base, &app, "pub", room, grants_pub.clone()).await;
    let sub_t = mint_token(&base, &app, "sub", room, grants_sub.clone()).await;
    let mut p = Client::open(&c, &base, room, &pub_t, true).await;
    let mut s = Client::open(&c, &base, room, &sub_t, false).await;
    flow(&mut p, &mut s, 10, Duration::from_secs(10)).await;
    let rid = room_id(&base, room).await;
    drop(p);
    drop(s);
    settle(&base, &rid, &[], 0, Duration::from_secs(40), "vanished clients").await;
    let reasons = everyone_left_everywhere(dev.dir.path(), &hooks, &rid, "vanished clients").await;
    assert_eq!(reasons, vec!["connection_lost"; 2]);

    // 4. Kick and 5. close, each after a rejoin: the first pair of sessions
    //    leaves by DELETE, the second is kicked (or the room is closed).
    for how in ["kick", "close"] {
        let room = format!("mod-{how}");
        let pub_t = mint_token(&base, &app, "pub", &room, grants_pub.clone()).await;
        let sub_t = mint_token(&base, &app, "sub", &room, grants_sub.clone()).await;
        let mut p = Client::open(&c, &base, &room, &pub_t, true).await;
        let mut s = Client::open(&c, &base, &room, &sub_t, false).await;
        flow(&mut p, &mut s, 10, Duration::from_secs(10)).await;
        let rid = room_id(&base, &room).await;
        assert_eq!(p.delete(&c, &base, &pub_t).await, 200);
        assert_eq!(s.delete(&c, &base, &sub_t).await, 200);
        settle(&base, &rid, &[], 0, Duration::from_secs(5), &format!("{how}: first round")).await;
        let mut p = Client::open(&c, &base, &room, &pub_t, true).await;
        let mut s = Client::open(&c, &base, &room, &sub_t, false).await;
        flow(&mut p, &mut s, 10, Duration::from_secs(10)).await;
        if how == "kick" {
            for who in ["pub", "sub"] {
                let r = c.post(format!("{base}/v1/rooms/{rid}/participants/{who}/kick")).bearer_auth(ADMIN_KEY).send();
                assert_eq!(r.await.expect("kick").status().as_u16(), 200);
            }
        } else {
            let r = c.post(format!("{base}/v1/rooms/{rid}/close")).bearer_auth(ADMIN_KEY).send().await;
            assert_eq!(r.expect("close").status().as_u16(), 200);
        }
        settle(&base, &rid, &[], 0, Duration::from_secs(5), how).await;
        let reasons = everyone_left_everywhere(dev.dir.path(), &hooks, &rid, how).await;
        let ended = if how == "kick" { "kicked" } else { "room_closed" };
        assert_eq!(reasons, vec!["client_left", "client_left", ended, ended], "{how}");
    }

    // 6. SIGKILL arc-control dev while media flows, start it again: its
    //    embedded node comes back with no sessions, and reconciliation ends
    //    what the log still holds (session_lost) within the join grace and two
    //    sweeps.
    let room = "restart";
    let pub_t = mint_token(&base, &app, "pub", room, grants_pub.clone()).await;
    let sub_t = mint_token(&base, &app, "sub", room, grants_sub.clone()).await;
    let mut p = Client::open(&c, &base, room, &pub_t, true).await;
    let mut s = Client::open(&c, &base, room, &sub_t, false).await;
    flow(&mut p, &mut s, 10, Duration::from_secs(10)).await;
    let rid = room_id(&base, room).await;
    let _ = dev.server.child.kill();
    let _ = dev.server.child.wait();
    dev.server = start_with(&dev.mode, &["--janitor-interval-s", "1"]);
    let base = dev.server.base.clone();
    assert_eq!(active(&base, &rid).await.len(), 2, "the log still holds both after the restart");
    let t = Instant::now();
    settle(&base, &rid, &[], 0, Duration::from_secs(30), "after a restart of arc-control dev").await;
    eprintln!("ghosts of the restart ended {:.1} s after it", t.elapsed().as_secs_f64());
    let reasons = everyone_left_everywhere(dev.dir.path(), &hooks, &rid, "restart").await;
    assert_eq!(reasons, vec!["session_lost"; 2]);
    // And the same identities can use the room again afterwards.
    let mut p = Client::open(&c, &base, room, &pub_t, true).await;
    let mut s = Client::open(&c, &base, room, &sub_t, false).await;
    flow(&mut p, &mut s, 10, Duration::from_secs(10)).await;
    assert_eq!(p.delete(&c, &base, &pub_t).await, 200);
    assert_eq!(s.delete(&c, &base, &sub_t).await, 200);
    settle(&base, &rid, &[], 0, Duration::from_secs(5), "after the restart, a clean session").await;
}
