//! Named admin keys: several operators, each with a key of their own; the log
//! says which key did what — every event an admin key causes carries its
//! name, and what changes no other aggregate (a token minted for an app, a
//! rebuild asked for) is an `operator.*` event of that key.

mod common;

use common::{ADMIN_KEY, Mode, admin_get, start_with};
use serde_json::{Value, json};

const OPS_KEY: &str = "ops-key-0123456789abcdef";
const CI_KEY: &str = "ci-key-0123456789abcdef";

async fn post(base: &str, key: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn events_of(page: &Value) -> Vec<Value> {
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_admin_key_is_named_in_the_log_for_what_it_did() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let keys = format!("ops={OPS_KEY},ci-bot={CI_KEY}");
    let server = start_with(&mode, &["--admin-keys", &keys]);
    let base = server.base.clone();

    // ops makes an app; ci-bot mints a token for it; the unnamed key asks
    // for a rebuild; a wrong key is refused like before.
    let (status, app) = post(&base, OPS_KEY, "/v1/apps", json!({"name": "audited"})).await;
    assert_eq!(status, 201, "{app}");
    let app_id = app["app"]["app_id"].as_str().unwrap_or_else(|| panic!("app_id in {app}")).to_owned();
    let (status, minted) = post(
        &base,
        CI_KEY,
        "/v1/tokens",
        json!({"app_id": app_id, "identity": "alice", "room": "standup", "grants": {"subscribe": true}}),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let (status, body) = post(&base, ADMIN_KEY, "/v1/projections/rooms/rebuild", json!({})).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = post(&base, "not-a-key-0123456789abcdef", "/v1/apps", json!({"name": "x"})).await;
    assert_eq!(status, 401, "{body}");

    let created = events_of(&admin_get(&base, "/v1/events?tail=50&type=app.created").await);
    let mine = created.iter().find(|e| e["aggregate_id"] == app_id.as_str()).expect("app.created");
    assert_eq!(mine["actor"], json!({"kind": "admin", "name": "ops"}));

    let minted_events = events_of(&admin_get(&base, "/v1/events?tail=50&type=operator.token_minted").await);
    assert_eq!(minted_events.len(), 1, "{minted_events:?}");
    let m = &minted_events[0];
    assert_eq!(m["aggregate_type"], "operator");
    assert_eq!(m["aggregate_id"], "ci-bot");
    assert_eq!(m["actor"], json!({"kind": "admin", "name": "ci-bot"}));
    assert_eq!(m["data"]["app_id"], app_id.as_str());
    assert_eq!(m["data"]["identity"], "alice");
    assert_eq!(m["data"]["room"], "standup");
    assert_eq!(m["data"]["jti"], minted["jti"]);
    let token = minted["token"].as_str().expect("token");
    assert!(!m.to_string().contains(token), "the token itself is never in the log");

    let rebuilds = events_of(&admin_get(&base, "/v1/events?tail=50&type=operator.projection_rebuild_requested").await);
    assert_eq!(rebuilds.len(), 1, "{rebuilds:?}");
    assert_eq!(rebuilds[0]["actor"], json!({"kind": "admin", "name": "admin"}));
    assert_eq!(rebuilds[0]["data"]["projection"], "rooms");

    // An app minting its own tokens is not an operator: nothing recorded.
    let app_key = app["app"]["app_key"].as_str().expect("app_key").to_owned();
    let secret = app["app_secret"].as_str().expect("app_secret").to_owned();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/tokens"))
        .basic_auth(app_key, Some(secret))
        .json(&json!({"identity": "bob", "room": "standup"}))
        .send()
        .await
        .expect("mint as the app");
    assert_eq!(r.status(), 201);
    let minted_events = events_of(&admin_get(&base, "/v1/events?tail=50&type=operator.token_minted").await);
    assert_eq!(minted_events.len(), 1, "still only ci-bot's: {minted_events:?}");
}

#[test]
fn bad_admin_keys_stop_the_server_with_the_reason_and_never_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (keys, why) in [
        ("ops=short", "at least 16"),
        (&format!("admin={OPS_KEY}") as &str, "rename one"),
        (&format!("ops={ADMIN_KEY}"), "is also admin_key"),
        ("Ops.X=0123456789abcdef0123", "the name must be"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_arc-control"))
            .args(["dev", "--data-dir", &dir.path().display().to_string(), "--listen", "127.0.0.1:0"])
            .args(["--admin-key", ADMIN_KEY, "--admin-keys", keys, "--media-udp", "127.0.0.1:0"])
            .output()
            .expect("run arc-control");
        assert!(!out.status.success(), "{keys}: refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{keys}: {err}");
        assert!(!err.contains("0123456789abcdef"), "{keys}: the message shows a key: {err}");
    }
}
