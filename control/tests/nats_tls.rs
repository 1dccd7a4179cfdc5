//! TLS to NATS: a nats-server that takes only TLS clients whose certificate
//! its CA signed (`verify: true`), arc-control and a media node connecting
//! with `--nats-ca-file`, `--nats-cert-file` and `--nats-key-file` — the
//! node registers, and media flows through it; a client without a
//! certificate is refused by the server, and a missing file is a clear
//! error at start.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arc_tests::nats::NatsServers;
use common::rtc_client::{Client, flow};
use common::{ADMIN_KEY, Mode, admin_get, create_app, mint_token, start_with};
use serde_json::json;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all
/// PEM files in `dir`.
fn make_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("write");
    for (name, sans) in [("server", vec!["127.0.0.1".to_owned(), "localhost".to_owned()]), ("client", vec![])] {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(sans).expect("params");
        let cert = params.signed_by(&key, &ca).expect("signed");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).expect("write");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_and_a_media_node_talk_to_nats_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path();
    make_pki(pki);
    let p = |f: &str| pki.join(f).display().to_string();
    let nats = NatsServers::single_with_config(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n",
        p("server.pem"),
        p("server-key.pem"),
        p("ca.pem")
    ));
    let port = nats.servers[0].client_port;
    let url = format!("tls://127.0.0.1:{port}");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (stream, prefix) = (format!("TLS_{tag}"), format!("t{tag}.evt"));
    let data = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Cluster {
        nats: url.clone(),
        stream: stream.clone(),
        prefix: prefix.clone(),
        database: format!("sqlite://{}", data.path().join("read.db").display()),
        data_dir: data.path().to_path_buf(),
    };
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client-key.pem"));
    let tls_args = ["--nats-ca-file", &ca, "--nats-cert-file", &cert, "--nats-key-file", &key];
    let control = start_with(&mode, &tls_args);
    let base = control.base.clone();

    let mut node = Command::new(common::arc_media_bin())
        .args(["--nats", &url, "--nats-stream", &stream, "--nats-subject-prefix", &prefix, "--node-id", "media-tls"])
        .args(tls_args)
        .args(["--media-udp", "127.0.0.1:0", "--public-ip", "127.0.0.1", "--metrics-listen", "127.0.0.1:0"])
        .env("ARC_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn arc-media");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = admin_get(&base, "/v1/nodes").await;
        if n["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["node_id"] == "media-tls" && x["state"] == "up")) {
            break;
        }
        assert!(Instant::now() < deadline, "the node registered over TLS: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = create_app(&base, ADMIN_KEY, "tls").await;
    let http = reqwest::Client::new();
    let pub_t = mint_token(&base, &app, "cam", "tls-room", json!({"publish": true})).await;
    let sub_t = mint_token(&base, &app, "viewer", "tls-room", json!({"subscribe": true})).await;
    let mut publisher = Client::open(&http, &base, "tls-room", &pub_t, true).await;
    let mut player = Client::open(&http, &base, "tls-room", &sub_t, false).await;
    flow(&mut publisher, &mut player, 50, Duration::from_secs(20)).await;

    // The server takes no client without a certificate its CA signed.
    let bare = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.join("ca.pem"))
        .connection_timeout(Duration::from_secs(2))
        .connect(format!("127.0.0.1:{port}"));
    let refused = tokio::time::timeout(Duration::from_secs(10), bare).await;
    assert!(!matches!(refused, Ok(Ok(_))), "a client without a certificate got in");

    // A file that is not there: the start stops and says which.
    let out = Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg("serve")
        .args(mode.args(None))
        .args(["--nats-ca-file", "/nonexistent/ca.pem"])
        .output()
        .expect("run arc-control");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let _ = node.kill();
    let _ = node.wait();
}
