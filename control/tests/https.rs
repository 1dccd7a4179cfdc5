//! HTTPS: `arc-control dev --tls-self-signed` serves the REST API, WHIP/WHEP
//! and the signalling socket (`wss://`) over TLS with a certificate made for
//! localhost; plain HTTP on the port gets nothing; SIGHUP swaps the
//! certificate for new connections, and a broken one is refused while the
//! server keeps the pair it has.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::rtc_client::{Client, flow};
use common::{ADMIN_KEY, Mode, arcctl_bin, start_with};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};

fn client_trusting(cert_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem).expect("a PEM certificate"))
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn status(client: &reqwest::Client, base: &str) -> Result<u16, String> {
    client.get(format!("{base}/v1/status")).send().await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"))
}

/// A rustls client configuration trusting only `cert_pem`.
fn rustls_trusting(cert_pem: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(cert_pem) {
        roots.add(cert.expect("certificate")).expect("a root");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Writes a new self-signed pair for localhost over `dir`'s files.
fn new_pair(dir: &Path) -> Vec<u8> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("a certificate");
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).expect("write key");
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("write cert");
    made.cert.pem().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_api_whip_and_signalling_over_https_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let server = start_with(&mode, &["--tls-self-signed"]);
    let base = server.base.clone();
    assert!(base.starts_with("https://127.0.0.1:"), "the printed address is https: {base}");
    let tls_dir = dir.path().join("tls");
    let cert = std::fs::read(tls_dir.join("cert.pem")).expect("the self-signed certificate was written");
    let https = client_trusting(&cert);

    // The API, over TLS; a client that does not trust the certificate, and
    // plain HTTP on the same port, get nothing.
    assert_eq!(status(&https, &base).await, Ok(200));
    let stranger = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("client");
    assert!(status(&stranger, &base).await.is_err(), "an unknown self-signed certificate is refused");
    let plain = base.replacen("https://", "http://", 1);
    assert!(status(&stranger, &plain).await.is_err(), "plain HTTP gets no answer");
    assert_eq!(status(&https, &base).await, Ok(200), "the failed handshakes hurt nobody");

    // arcctl trusts the certificate when told to (--ca-file), and says why
    // it cannot reach the server when not.
    let arcctl = |extra: &[&str]| {
        std::process::Command::new(arcctl_bin())
            .args(["--url", &base, "--admin-key", ADMIN_KEY, "-o", "json"])
            .args(extra)
            .arg("status")
            .env("ARCCTL_CONFIG", "/nonexistent/arcctl.toml")
            .env_remove("ARC_CA_FILE")
            .output()
            .expect("run arcctl")
    };
    let cert_path = tls_dir.join("cert.pem");
    let trusted = arcctl(&["--ca-file", cert_path.to_str().expect("path")]);
    assert!(trusted.status.success(), "arcctl --ca-file: {}", String::from_utf8_lossy(&trusted.stderr));
    let out: Value = serde_json::from_slice(&trusted.stdout).expect("arcctl prints JSON");
    assert_eq!(out["log_reachable"], true, "a status document: {out}");
    let untrusted = arcctl(&[]);
    assert_eq!(untrusted.status.code(), Some(3), "without the CA: unreachable");
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("certificate") || err.contains("Unknown"), "the reason names the certificate: {err}");

    // An app, tokens, and WHIP/WHEP media through https.
    let app: Value = https
        .post(format!("{base}/v1/apps"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "tls"}))
        .send()
        .await
        .expect("create app")
        .json()
        .await
        .expect("json");
    let app_id = app["app"]["app_id"].as_str().unwrap_or_else(|| panic!("app in {app}")).to_owned();
    let mint = |identity: &'static str, grants: Value| {
        let (https, base, app_id) = (https.clone(), base.clone(), app_id.clone());
        async move {
            let r: Value = https
                .post(format!("{base}/v1/tokens"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"app_id": app_id, "identity": identity, "room": "secure", "grants": grants}))
                .send()
                .await
                .expect("mint")
                .json()
                .await
                .expect("json");
            r["token"].as_str().unwrap_or_else(|| panic!("token in {r}")).to_owned()
        }
    };
    let pub_t = mint("cam", json!({"publish": true})).await;
    let sub_t = mint("viewer", json!({"subscribe": true})).await;
    let mut p = Client::open(&https, &base, "secure", &pub_t, true).await;
    let mut s = Client::open(&https, &base, "secure", &sub_t, false).await;
    flow(&mut p, &mut s, 50, Duration::from_secs(20)).await;

    // The signalling socket over wss://.
    let sig_t = mint("alice", json!({"join": true, "subscribe": true})).await;
    let host = base.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&host).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = tokio_rustls::TlsConnector::from(rustls_trusting(&cert)).connect(name, tcp).await.expect("TLS");
    let url = format!("wss://{host}/v1/rtc?access_token={sig_t}");
    let (mut socket, response) = tokio_tungstenite::client_async(url, tls).await.expect("the WebSocket opens");
    assert_eq!(response.status().as_u16(), 101);
    let first = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a message");
    let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = first else {
        panic!("a text message: {first:?}")
    };
    let join: Value = serde_json::from_str(text.as_str()).expect("JSON");
    assert_eq!(join["type"], "join", "{join}");
    let _ = socket.send(tokio_tungstenite::tungstenite::Message::Close(None)).await;

    // SIGHUP with a new pair: new connections get it.
    let new_cert = new_pair(&tls_dir);
    let pid = server.child.id().to_string();
    let hup = || {
        let ok = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
        assert!(ok.success(), "SIGHUP to arc-control");
    };
    hup();
    let renewed = client_trusting(&new_cert);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&renewed, &base).await != Ok(200) {
        assert!(Instant::now() < deadline, "the new certificate served within 10 s of SIGHUP");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh_old = client_trusting(&cert);
    assert!(status(&fresh_old, &base).await.is_err(), "the old certificate is no longer served");

    // A broken pair on SIGHUP: refused, the server keeps the one it has.
    std::fs::write(tls_dir.join("cert.pem"), "garbage").expect("break the certificate");
    hup();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = client_trusting(&new_cert);
    assert_eq!(status(&again, &base).await, Ok(200), "still serving the last good pair");
}

#[test]
fn settings_that_cannot_work_stop_the_start_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not pem").expect("write");
    let g = garbage.display().to_string();
    let data = dir.path().display().to_string();
    for (args, why) in [
        (vec!["dev", "--tls-cert", &g, "--tls-key", &g], "garbage.pem"),
        (vec!["dev", "--tls-self-signed", "--tls-cert", &g, "--tls-key", &g], "not both"),
        (vec!["serve", "--tls-self-signed", "--nats", "nats://127.0.0.1:1"], "for dev"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_arc-control"))
            .args(&args)
            .args(["--data-dir", &data, "--listen", "127.0.0.1:0", "--admin-key", ADMIN_KEY])
            .args(["--database", &format!("sqlite://{data}/read.db")])
            .output()
            .expect("run arc-control");
        assert!(!out.status.success(), "{args:?}: refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    // A taken port stops dev at once, before its media node or log open
    // (it used to hang: the media workers kept the runtime from ending).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .args(["dev", "--data-dir", &data, "--listen", &port, "--media-udp", "127.0.0.1:0"])
        .output()
        .expect("run arc-control");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on") && err.contains("in use"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "it stopped at once, not after {:?}", started.elapsed());
}
