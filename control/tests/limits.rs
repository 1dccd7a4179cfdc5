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
