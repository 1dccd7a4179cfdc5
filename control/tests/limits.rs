//! Failed authentications are limited per source address and per app key
//! (`api/limits.rs`): past the limit the caller gets `429` with
//! `Retry-After` — even with the right credentials, which are then not
//! checked at all — while other addresses and other apps go on. Different
//! source addresses come from binding the client to 127.0.0.x.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{ADMIN_KEY, Mode, create_app, start_with_env};

fn client_from(addr: &str) -> reqwest::Client {
    let ip: IpAddr = addr.parse().expect("ip");
    reqwest::Client::builder().local_address(ip).timeout(Duration::from_secs(10)).build().expect("client")
}

async fn status(r: reqwest::RequestBuilder) -> (u16, Option<u64>) {
    let r = r.send().await.expect("request");
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (r.status().as_u16(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address_and_per_app_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with_env(
        &Mode::Embedded { data_dir: dir.path().to_path_buf() },
        &[],
        &[("ARC_AUTH_FAILURES_PER_ADDR", "5"), ("ARC_AUTH_FAILURES_PER_KEY", "8")],
    );
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "guarded").await;
    let other = create_app(&base, ADMIN_KEY, "bystander").await;

    // One address guessing the admin key: 5 tries, then 429 — the right key too.
    let guesser = client_from("127.0.0.2");
    for i in 0..5 {
        let (s, _) = status(guesser.get(format!("{base}/v1/apps")).bearer_auth(format!("wrong-{i}"))).await;
        assert_eq!(s, 401, "guess {i}");
    }
    let (s, retry) = status(guesser.get(format!("{base}/v1/apps")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(s, 429, "blocked before the key is checked");
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "Retry-After: {retry:?}");
    // So is its signalling socket (a refused token is a 401 too).
    let (s, _) = status(guesser.get(format!("{base}/v1/rtc?access_token=nope"))).await;
    assert_eq!(s, 429);
    // Another address is not affected.
    let (s, _) = status(client_from("127.0.0.3").get(format!("{base}/v1/apps")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(s, 200);

    // Guessing an app's secret from several addresses: the key's limit (8) holds.
    for (n, addr) in ["127.0.0.4", "127.0.0.5"].iter().enumerate() {
        let c = client_from(addr);
        for i in 0..4 {
            let (s, _) =
                status(c.get(format!("{base}/v1/rooms")).basic_auth(&app.0, Some(format!("guess-{n}-{i}")))).await;
            assert_eq!(s, 401);
        }
    }
    let fresh = client_from("127.0.0.6");
    let (s, retry) = status(fresh.get(format!("{base}/v1/rooms")).basic_auth(&app.0, Some(&app.1))).await;
    assert_eq!(s, 429, "the guessed app key is held, whoever asks");
    assert!(retry.is_some());
    let (s, _) = status(fresh.get(format!("{base}/v1/rooms")).basic_auth(&other.0, Some(&other.1))).await;
    assert_eq!(s, 200, "other apps go on");
    // Successes are never counted: many good requests from one address pass.
    let steady = client_from("127.0.0.7");
    for _ in 0..20 {
        let (s, _) = status(steady.get(format!("{base}/v1/rooms")).basic_auth(&other.0, Some(&other.1))).await;
        assert_eq!(s, 200);
    }
}

/// The budgets: requests a minute per app (`--app-requests-per-minute`) and
/// media sessions a minute per access token (`--sessions-per-token-per-minute`:
/// WHIP, WHEP and signalling sockets together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_have_a_request_budget_and_tokens_a_session_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_with_env(
        &Mode::Embedded { data_dir: dir.path().to_path_buf() },
        &[],
        &[("ARC_APP_REQUESTS_PER_MINUTE", "12"), ("ARC_SESSIONS_PER_TOKEN_PER_MINUTE", "3")],
    );
    let base = server.base.clone();
    let busy = create_app(&base, ADMIN_KEY, "busy").await;
    let calm = create_app(&base, ADMIN_KEY, "calm").await;
    let c = client_from("127.0.0.1");
    // Two tokens of the calm app (two of its requests).
    let token = |who: &'static str| {
        c.post(format!("{base}/v1/tokens"))
            .basic_auth(&calm.0, Some(&calm.1))
            .json(&serde_json::json!({"identity": who, "room": "r", "grants": {"join": true, "publish": true}}))
    };
    let t1 = token("one").send().await.expect("token").json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let t2 = token("two").send().await.expect("token").json::<serde_json::Value>().await.expect("json")["token"]
        .as_str()
        .expect("token")
        .to_owned();

    // The busy app: 12 requests, then 429 with Retry-After; the calm app and the admin go on.
    for i in 0..12 {
        let (s, _) = status(c.get(format!("{base}/v1/rooms")).basic_auth(&busy.0, Some(&busy.1))).await;
        assert_eq!(s, 200, "request {i}");
    }
    let (s, retry) = status(c.get(format!("{base}/v1/rooms")).basic_auth(&busy.0, Some(&busy.1))).await;
    assert_eq!(s, 429, "the 13th request of the minute");
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    let (s, _) = status(c.get(format!("{base}/v1/rooms")).basic_auth(&calm.0, Some(&calm.1))).await;
    assert_eq!(s, 200, "another app is not held");
    let (s, _) = status(c.get(format!("{base}/v1/apps")).bearer_auth(ADMIN_KEY)).await;
    assert_eq!(s, 200, "operators are not held");

    // Token one opens three sessions (signalling sockets and WHIP count
    // together; these requests are not upgrades, so each gets a 4xx after
    // it counted), then 429; token two is not held.
    let offer = "v=0\r\n";
    for (i, r) in [
        c.get(format!("{base}/v1/rtc?access_token={t1}")),
        c.post(format!("{base}/v1/whip/r")).bearer_auth(&t1).header("content-type", "application/sdp").body(offer),
        c.get(format!("{base}/v1/rtc?access_token={t1}")),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, _) = status(r).await;
        assert!((400..500).contains(&s) && s != 429, "session {i}: {s}");
    }
    let (s, retry) = status(
        c.post(format!("{base}/v1/whip/r")).bearer_auth(&t1).header("content-type", "application/sdp").body(offer),
    )
    .await;
    assert_eq!(s, 429, "the 4th session of the minute");
    assert!(retry.is_some());
    let (s, _) = status(c.get(format!("{base}/v1/rtc?access_token={t2}"))).await;
    assert!((400..500).contains(&s) && s != 429, "another token: {s}");
}
