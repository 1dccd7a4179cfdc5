//! The portal end to end over HTTP, against a running arc-control, in both
//! modes: apps, token minting and verification, joining, quotas, moderation,
//! secret rotation, disabling, and signed webhooks to a local receiver that
//! keep flowing across a SIGKILL of arc-control.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};

mod common;
use common::{ADMIN_KEY, Mode, Server, start_with};

/// What the webhook receiver got: (headers, body), in arrival order.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// A receiver that answers 500 to its first `fail_first` requests, then 200.
async fn receiver(fail_first: usize) -> (String, Received) {
    let got: Received = Arc::default();
    let seen = Arc::new(Mutex::new(0usize));
    let state = (got.clone(), seen);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let (got, seen) = state.clone();
            async move {
                let n = {
                    let mut seen = seen.lock().expect("lock");
                    *seen += 1;
                    *seen
                };
                if n <= fail_first {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                got.lock().expect("lock").push((headers, body.to_vec()));
                StatusCode::OK
            }
        }),
    );
    (format!("{}/hook", common::serve_local(app).await), got)
}

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, auth: &Auth, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        req = match auth {
            Auth::Admin => req.bearer_auth(ADMIN_KEY),
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(k, s) => req.basic_auth(k, Some(s)),
            Auth::Raw(h) => req.header("authorization", h.as_str()),
            Auth::None => req,
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }
}

enum Auth {
    Admin,
    Bearer(String),
    Basic(String, String),
    Raw(String),
    None,
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

async fn mint(api: &Api, app: &Auth, body: Value) -> String {
    let (s, v) = api.call("POST", "/v1/tokens", app, Some(body)).await;
    assert_eq!(s, 201, "mint: {v}");
    v["token"].as_str().expect("token").to_owned()
}

/// Waits until the receiver holds events satisfying `done`.
async fn wait_hooks(got: &Received, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<(HeaderMap, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all: Vec<(HeaderMap, Vec<u8>)> = got.lock().expect("lock").clone();
        let bodies: Vec<Value> =
            all.iter().map(|(_, b)| serde_json::from_slice(b).expect("webhook body is JSON")).collect();
        if done(&bodies) {
            return all;
        }
        assert!(Instant::now() < deadline, "webhooks did not arrive in 30 s: {what}; got {bodies:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(bodies: &[Value], room_id: &str, ty: &str) -> bool {
    bodies.iter().any(|b| b["room_id"] == room_id && b["type"] == ty)
}

async fn scenario(mode: Mode) {
    let flags = ["--webhook-backoff-base-ms", "50", "--webhook-timeout-s", "2"];
    let mut server: Server = start_with(&mode, &flags);
    let api = Api { http: reqwest::Client::new(), base: server.base.clone() };
    let (hook_url, got) = receiver(2).await;

    // An app with quotas and a webhook endpoint; the secret is shown once.
    let (s, v) = api
        .call(
            "POST",
            "/v1/apps",
            &Auth::Admin,
            Some(json!({"name": "Acme", "webhooks": [hook_url],
                        "quotas": {"max_rooms": 2, "max_participants_per_room": 2}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let key = v["app_key"].as_str().expect("app_key").to_owned();
    let secret = v["app_secret"].as_str().expect("app_secret").to_owned();
    assert!(secret.starts_with("sk_"));
    let app = Auth::Basic(key.clone(), secret.clone());
    let (s, v) = api.call("GET", &format!("/v1/apps/{key}"), &app, None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("active")), "{v}");
    assert!(!v.to_string().contains(&secret), "the secret must not be readable back");
    let (s, v) = api.call("GET", "/v1/apps", &app, None).await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "apps list is admin-only");
    let (s, v) = api.call("POST", "/v1/tokens", &Auth::Basic(key.clone(), "sk_wrong".into()), Some(json!({}))).await;
    assert_eq!((s, code(&v)), (401, "bad_credentials"));

    // Tokens and joining: the first join opens the room.
    let ann = mint(&api, &app, json!({"identity": "ann", "room": "standup", "name": "Ann"})).await;
    let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(ann.clone()), None).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["room_created"], true);
    let standup = v["room_id"].as_str().expect("room_id").to_owned();
    let bob = mint(&api, &app, json!({"identity": "bob", "room": "standup"})).await;
    assert_eq!(api.call("POST", "/v1/join", &Auth::Bearer(bob), None).await.0, 201);
    let carol = mint(&api, &app, json!({"identity": "carol", "room": "standup"})).await;
    let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(carol), None).await;
    assert_eq!((s, code(&v), v["error"]["limit"].as_str()), (429, "quota_exceeded", Some("max_participants_per_room")));

    // Rooms by name; the room quota.
    let (s, v) = api.call("POST", "/v1/rooms", &app, Some(json!({"name": "r2", "metadata": "m"}))).await;
    assert_eq!(s, 201, "{v}");
    let r2 = v["room_id"].as_str().expect("room_id").to_owned();
    let (s, v) = api.call("POST", "/v1/rooms", &app, Some(json!({"name": "r2"}))).await;
    assert_eq!((s, code(&v)), (409, "room_exists"));
    let (s, v) = api.call("POST", "/v1/rooms", &app, Some(json!({"name": "r3"}))).await;
    assert_eq!((s, code(&v), v["error"]["limit"].as_str()), (429, "quota_exceeded", Some("max_rooms")));
    let (s, v) = api.call("GET", "/v1/rooms?state=open", &app, None).await;
    assert_eq!(s, 200);
    let names: BTreeSet<&str> =
        v["rooms"].as_array().expect("rooms").iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["r2", "standup"]));
    let (s, v) = api.call("POST", "/v1/rooms", &app, Some(json!({"name": "x", "max_participants": 0}))).await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"));
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("max_participants"), "{v}");
    let (s, v) = api.call("POST", "/v1/rooms", &app, Some(json!({"name": 5}))).await;
    assert_eq!((s, code(&v)), (400, "invalid_argument"));

    // Tokens that must be refused over HTTP (the full suite is in arc-auth's unit tests).
    let later = mint(&api, &app, json!({"identity": "dan", "room": "standup", "not_before_s": 600})).await;
    let parts: Vec<&str> = ann.split('.').collect();
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(json!({"alg": "none"})), parts[1]);
    let tampered = {
        let mut claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(parts[1]).expect("payload"),
        )
        .expect("json");
        claims["room"] = "r2".into();
        format!("{}.{}.{}", parts[0], b64(claims), parts[2])
    };
    for (token, expected) in [
        (later, "token_not_yet_valid"),
        (none, "token_algorithm_not_allowed"),
        (tampered, "token_bad_signature"),
        ("garbage.garbage.garbage".to_owned(), "token_malformed"),
        ("x".repeat(10_000) + ".a.b", "token_too_large"),
    ] {
        let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(token), None).await;
        assert_eq!((s, code(&v)), (401, expected), "{v}");
    }
    let (s, _) = api.call("POST", "/v1/join", &Auth::None, None).await;
    assert_eq!(s, 401);
    let (s, _) = api.call("GET", "/v1/rooms", &Auth::Raw("Digest x".into()), None).await;
    assert_eq!(s, 401);

    // Moderation with a token's admin grant, only in its own room.
    let moder = mint(&api, &app, json!({"identity": "mod", "room": "standup", "grants": {"admin": true}})).await;
    let m = Auth::Bearer(moder);
    let (s, v) = api.call("GET", &format!("/v1/rooms/{standup}/participants"), &m, None).await;
    assert_eq!(s, 200, "{v}");
    let who: BTreeSet<&str> =
        v["participants"].as_array().expect("list").iter().filter_map(|p| p["identity"].as_str()).collect();
    assert_eq!(who, BTreeSet::from(["ann", "bob"]));
    let (s, v) = api.call("GET", &format!("/v1/rooms/{r2}"), &m, None).await;
    assert_eq!((s, code(&v)), (403, "permission_denied"), "wrong room");
    let perms = json!({"publish": false, "subscribe": true, "publish_data": false});
    let (s, v) = api.call("PUT", &format!("/v1/rooms/{standup}/participants/bob/permissions"), &m, Some(perms)).await;
    assert_eq!((s, v["permissions"]["publish"].as_bool()), (200, Some(false)), "{v}");
    let (s, v) = api
        .call("PUT", &format!("/v1/rooms/{standup}/participants/bob/metadata"), &m, Some(json!({"metadata": "hi"})))
        .await;
    assert_eq!((s, v["metadata"].as_str()), (200, Some("hi")), "{v}");
    let (s, v) =
        api.call("PUT", &format!("/v1/rooms/{standup}/metadata"), &m, Some(json!({"metadata": "agenda"}))).await;
    assert_eq!((s, v["metadata"].as_str()), (200, Some("agenda")), "{v}");
    let (s, v) =
        api.call("POST", &format!("/v1/rooms/{standup}/tracks/tr_nope/mute"), &m, Some(json!({"muted": true}))).await;
    assert_eq!((s, code(&v)), (404, "track_not_found"));

    // Kick revokes the token the participant joined with.
    let (s, v) = api.call("POST", &format!("/v1/rooms/{standup}/participants/ann/kick"), &m, None).await;
    assert_eq!((s, v["token_revoked"].as_bool()), (200, Some(true)), "{v}");
    let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(ann.clone()), None).await;
    assert_eq!((s, code(&v)), (401, "token_revoked"));
    let (s, v) = api.call("GET", &format!("/v1/rooms/{standup}/participants/ann"), &m, None).await;
    assert_eq!((s, code(&v)), (404, "participant_not_found"));

    // Rotation with a grace period: old and new secrets both work.
    let (s, v) =
        api.call("POST", &format!("/v1/apps/{key}/rotate-secret"), &Auth::Admin, Some(json!({"grace_s": 600}))).await;
    assert_eq!(s, 200, "{v}");
    let new_secret = v["app_secret"].as_str().expect("secret").to_owned();
    assert!(v["previous_secret_valid_until"].is_string());
    let new_app = Auth::Basic(key.clone(), new_secret.clone());
    let erin = mint(&api, &new_app, json!({"identity": "erin", "room": "r2"})).await;
    assert_eq!(api.call("GET", &format!("/v1/apps/{key}"), &app, None).await.0, 200, "old secret in grace");

    // Disabled apps: tokens and credentials stop working; enabling restores them.
    let (s, _) =
        api.call("POST", &format!("/v1/apps/{key}/disable"), &Auth::Admin, Some(json!({"reason": "bill"}))).await;
    assert_eq!(s, 200);
    let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(erin.clone()), None).await;
    assert_eq!((s, code(&v)), (403, "app_disabled"));
    let (s, v) = api.call("GET", &format!("/v1/apps/{key}"), &new_app, None).await;
    assert_eq!((s, code(&v)), (403, "app_disabled"));
    assert_eq!(api.call("POST", &format!("/v1/apps/{key}/enable"), &Auth::Admin, None).await.0, 200);

    // Webhooks: the first two attempts fail (500), retries deliver; signatures verify.
    let hooks = wait_hooks(&got, "standup joined", |b| {
        has(b, &standup, "room.created") && has(b, &standup, "room.participant_left") && has(b, &r2, "room.created")
    })
    .await;
    check_hooks(&hooks, &[&secret, &new_secret]);

    // SIGKILL arc-control; everything is still there after a restart, and
    // deliveries continue.
    server.child.kill().expect("kill");
    server.child.wait().expect("wait");
    server = start_with(&mode, &flags);
    let api = Api { http: reqwest::Client::new(), base: server.base.clone() };
    let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(erin), None).await;
    assert_eq!(s, 201, "a token minted before the restart still joins: {v}");
    let (s, v) = api.call("POST", "/v1/join", &Auth::Bearer(ann), None).await;
    assert_eq!((s, code(&v)), (401, "token_revoked"), "revocations survive restarts");
    let (s, v) = api.call("POST", &format!("/v1/rooms/{standup}/close"), &new_app, None).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("closed")), "{v}");
    let hooks = wait_hooks(&got, "standup closed after restart", |b| {
        has(b, &standup, "room.closed") && has(b, &r2, "room.participant_joined")
    })
    .await;
    check_hooks(&hooks, &[&secret, &new_secret]);
    let (s, v) = api.call("GET", &format!("/v1/apps/{key}/webhooks/deliveries?state=delivered"), &new_app, None).await;
    assert_eq!(s, 200, "{v}");
    let delivered = v["deliveries"].as_array().expect("deliveries");
    assert!(delivered.len() >= 6, "{v}");
    assert!(delivered.iter().any(|d| d["attempts"].as_i64() >= Some(2)), "retries are recorded: {v}");
    drop(server);
}

/// Every delivery is signed by one of the app's secrets, ids dedupe to
/// exactly one effect, and each room's `room.created` comes first and
/// `room.closed` last.
fn check_hooks(hooks: &[(HeaderMap, Vec<u8>)], secrets: &[&str]) {
    let now = chrono::Utc::now().timestamp();
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut unique = Vec::new();
    for (i, (headers, raw)) in hooks.iter().enumerate() {
        let body: Value = serde_json::from_slice(raw).expect("json");
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let id = h(arc_auth::webhook::ID_HEADER);
        assert_eq!(id, body["id"].as_str().unwrap_or(""), "the idempotency key is the event id");
        let (ts, sig) = (h(arc_auth::webhook::TIMESTAMP_HEADER), h(arc_auth::webhook::SIGNATURE_HEADER));
        let verified = secrets.iter().any(|s| {
            let secret = arc_auth::AppSecret::from_string((*s).to_owned());
            arc_auth::webhook::verify(&secret, &ts, &sig, raw, now, 300).is_ok()
        });
        assert!(verified, "webhook {id} does not verify with the app's secrets");
        if first.insert(id, i).is_none() {
            unique.push(body);
        }
    }
    let mut by_room: HashMap<&str, Vec<&str>> = HashMap::new();
    for b in &unique {
        by_room.entry(b["room_id"].as_str().unwrap_or("")).or_default().push(b["type"].as_str().unwrap_or(""));
    }
    for (room, types) in by_room {
        assert_eq!(types.first(), Some(&"room.created"), "{room}: {types:?}");
        if let Some(i) = types.iter().position(|t| *t == "room.closed") {
            assert_eq!(i, types.len() - 1, "{room}: nothing after room.closed: {types:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_works_end_to_end_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    scenario(Mode::Embedded { data_dir: dir.path().to_path_buf() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_works_end_to_end_on_nats_and_postgres() {
    let (_, _, _, _dir, mode) = common::cluster("PRT", "p").await;
    scenario(mode).await;
}
