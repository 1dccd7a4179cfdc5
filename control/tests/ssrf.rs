//! Webhooks cannot be aimed at non-public addresses (server-side request
//! forgery by a tenant): in `serve`, an app's webhook URL that names — or
//! resolves to — a loopback, private, link-local or mapped address is
//! refused when it is set (`400`), and a delivery whose URL goes there is
//! refused again at send time, after name resolution (a URL set while an
//! operator allowed loopback, then the allowance withdrawn: nothing reaches
//! the receiver, the delivery's error says why). `dev` allows loopback.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_KEY, receiver, start_with, start_with_env};
use serde_json::{Value, json};

async fn create(base: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/apps"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .expect("create app");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn open_room(base: &str, app: &(String, String), name: &str) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/rooms"))
        .basic_auth(&app.0, Some(&app.1))
        .json(&json!({"name": name}))
        .send()
        .await
        .expect("create room");
    assert!(r.status().is_success(), "room {name}: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_non_public_addresses_are_refused_when_set_and_when_sent() {
    let (_nats, _stream, _prefix, _dir, mode) = common::cluster("SRF", "s").await;
    let (hook, got) = receiver().await;
    // A name that resolves to 127.0.0.1, as a tenant would use to get around an IP check.
    let by_name = hook.replace("127.0.0.1", "localhost");

    // With loopback allowed by the operator (what the tests' servers get), it is accepted and delivered.
    let server = start_with(&mode, &["--webhook-backoff-base-ms", "100", "--webhook-attempts-max", "2"]);
    let (status, created) = create(&server.base, json!({"name": "tenant", "webhooks": [by_name]})).await;
    assert_eq!(status, 201, "{created}");
    let app = (
        created["app"]["app_key"].as_str().expect("key").to_owned(),
        created["app_secret"].as_str().expect("secret").to_owned(),
    );
    let app_id = created["app"]["app_id"].as_str().unwrap_or(&app.0).to_owned();
    open_room(&server.base, &app, "allowed").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while got.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "the allowed delivery arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(server);

    // The operator's allowance withdrawn (serve's default: nothing non-public).
    let server = start_with_env(
        &mode,
        &["--webhook-backoff-base-ms", "100", "--webhook-attempts-max", "2"],
        &[("ARC_WEBHOOK_ALLOW_NETS", "")],
    );
    let base = server.base.clone();
    for (url, kind) in [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://[::1]:9/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]:9/hook", "loopback"),
        (by_name.as_str(), "loopback"),
        ("http://10.0.0.7/hook", "private"),
        ("http://192.168.1.1/hook", "private"),
        ("http://100.100.100.200/latest/meta-data", "shared"),
        ("http://0.0.0.0:9/", "unspecified"),
    ] {
        let (status, body) = create(&base, json!({"name": "ssrf", "webhooks": [url]})).await;
        assert_eq!(status, 400, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(kind), "{url}: the reason names the kind ({kind}): {body}");
    }
    // Changing an app's webhooks is checked the same way.
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/apps/{app_id}/webhooks"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"urls": ["http://169.254.169.254/"]}))
        .send()
        .await
        .expect("set webhooks");
    assert_eq!(r.status().as_u16(), 400, "{:?}", r.text().await);

    // The app set while loopback was allowed: its next delivery is refused
    // at send time (the name resolves to loopback), nothing arrives.
    let before = got.lock().expect("lock").len();
    open_room(&base, &app, "refused").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let error = loop {
        let list: Value = reqwest::Client::new()
            .get(format!("{base}/v1/apps/{app_id}/webhooks/deliveries?limit=100"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("deliveries")
            .json()
            .await
            .expect("json");
        let refused = list["deliveries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["last_error"].as_str())
            .find(|e| e.contains("loopback"))
            .map(str::to_owned);
        if let Some(e) = refused {
            break e;
        }
        assert!(Instant::now() < deadline, "a delivery refused at send time: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("refused at send time: {error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(got.lock().expect("lock").len(), before, "nothing reached the loopback receiver");
}
