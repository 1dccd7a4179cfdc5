//! TLS on every hop: a nats-server that takes only TLS clients whose
//! certificate its CA signed (`verify: true`) and who log in (the media node
//! with a node's permissions), arc-control and a media node connecting with
//! `--nats-ca-file`, `--nats-cert-file` and `--nats-key-file`, arc-control's
//! read models on PostgreSQL over `sslmode=verify-full`, its API and WHIP/WHEP
//! over HTTPS, and the media itself DTLS-SRTP — the node registers and media
//! flows through it; a client without a certificate is refused by the
//! server, and a missing file is a clear error at start.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arc_tests::nats::NatsServers;
use common::rtc_client::{Client, flow};
use common::{ADMIN_KEY, Mode, start_with};
use serde_json::{Value, json};

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
async fn the_stack_runs_with_tls_on_every_hop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path();
    make_pki(pki);
    let p = |f: &str| pki.join(f).display().to_string();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (stream, prefix) = (format!("TLS_{tag}"), format!("t{tag}.evt"));
    let users = [
        "{ user: \"control\", password: \"control-pw-0123456789\" }".to_owned(),
        arc_media::permissions::node(&stream, &prefix, "media-tls").to_conf("media-tls", "node-pw-0123456789"),
    ];
    let nats = NatsServers::single_with_config(&format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 5\n}}\n\
         authorization {{\n  users: [\n    {}\n  ]\n}}\n",
        p("server.pem"),
        p("server-key.pem"),
        p("ca.pem"),
        users.join("\n    ")
    ));
    let port = nats.servers[0].client_port;
    let control_url = format!("tls://control:control-pw-0123456789@127.0.0.1:{port}");
    let node_url = format!("tls://media-tls:node-pw-0123456789@127.0.0.1:{port}");
    // PostgreSQL over verified TLS (the test services offer it).
    let pg_ca = std::env::var("ARC_TEST_PG_CA_FILE").expect("ARC_TEST_PG_CA_FILE not set: run scripts/test");
    let pg_admin = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    let database = format!("{}?sslmode=verify-full&sslrootcert={pg_ca}", common::create_pg_database(&pg_admin).await);
    let data = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Cluster {
        nats: control_url.clone(),
        stream: stream.clone(),
        prefix: prefix.clone(),
        database,
        data_dir: data.path().to_path_buf(),
    };
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client-key.pem"));
    let tls_args = ["--nats-ca-file", &ca, "--nats-cert-file", &cert, "--nats-key-file", &key];
    // HTTPS for the API and WHIP/WHEP (the CA's server certificate for 127.0.0.1).
    let (https_cert, https_key) = (p("server.pem"), p("server-key.pem"));
    let mut args = tls_args.to_vec();
    args.extend(["--tls-cert", &https_cert, "--tls-key", &https_key]);
    let control = start_with(&mode, &args);
    let base = control.base.clone();
    assert!(base.starts_with("https://"), "{base}");
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca")).expect("pem"))
        .build()
        .expect("client");
    let call = |method: reqwest::Method, path: String, body: Value| {
        let (https, base) = (https.clone(), base.clone());
        async move {
            let r = https.request(method, format!("{base}{path}")).bearer_auth(ADMIN_KEY).json(&body).send().await;
            r.expect("an HTTPS answer").json::<Value>().await.unwrap_or(Value::Null)
        }
    };

    let mut node = Command::new(common::arc_media_bin())
        .args([
            "--nats",
            &node_url,
            "--nats-stream",
            &stream,
            "--nats-subject-prefix",
            &prefix,
            "--node-id",
            "media-tls",
        ])
        .args(tls_args)
        .args(["--media-udp", "127.0.0.1:0", "--public-ip", "127.0.0.1", "--metrics-listen", "127.0.0.1:0"])
        .env("ARC_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn arc-media");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = call(reqwest::Method::GET, "/v1/nodes".into(), Value::Null).await;
        if n["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["node_id"] == "media-tls" && x["state"] == "up")) {
            break;
        }
        assert!(Instant::now() < deadline, "the node registered over TLS: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app = call(reqwest::Method::POST, "/v1/apps".into(), json!({"name": "tls"})).await;
    let app_id = app["app"]["app_id"].as_str().unwrap_or_else(|| panic!("app in {app}")).to_owned();
    let mint = |identity: &'static str, grants: Value| {
        let body = json!({"app_id": app_id, "identity": identity, "room": "tls-room", "grants": grants});
        let pending = call(reqwest::Method::POST, "/v1/tokens".into(), body);
        async move {
            let r = pending.await;
            r["token"].as_str().unwrap_or_else(|| panic!("token in {r}")).to_owned()
        }
    };
    let pub_t = mint("cam", json!({"publish": true})).await;
    let sub_t = mint("viewer", json!({"subscribe": true})).await;
    let mut publisher = Client::open(&https, &base, "tls-room", &pub_t, true).await;
    let mut player = Client::open(&https, &base, "tls-room", &sub_t, false).await;
    flow(&mut publisher, &mut player, 50, Duration::from_secs(20)).await;

    // The server takes no client without a certificate its CA signed.
    let bare = async_nats::ConnectOptions::with_user_and_password("control".into(), "control-pw-0123456789".into())
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
