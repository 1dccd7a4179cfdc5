//! Shared by the black-box tests of arc-control: start the binary in
//! embedded or cluster mode and find its address.
#![allow(dead_code, unreachable_pub)]

#[allow(unused_imports)]
pub use arc_tests::rtc_client;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Row;

/// Master key of cluster-mode tests (dev generates its own).
pub const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub const ADMIN_KEY: &str = "test-admin-key-0123456789";

/// How to start arc-control against one storage setup.
#[derive(Clone)]
pub enum Mode {
    Embedded { data_dir: PathBuf },
    Cluster { nats: String, stream: String, prefix: String, database: String, data_dir: PathBuf },
}

impl Mode {
    pub fn args(&self, database_override: Option<&str>) -> Vec<String> {
        let mut args = vec!["--admin-key".to_string(), ADMIN_KEY.to_string(), "--listen".into(), "127.0.0.1:0".into()];
        match self {
            Self::Embedded { data_dir } => {
                args.extend(["--data-dir".into(), data_dir.display().to_string()]);
                // The embedded media node: a free port, so tests run side by side.
                args.extend(["--media-udp".into(), "127.0.0.1:0".into()]);
            }
            Self::Cluster { nats, stream, prefix, database, data_dir } => {
                args.extend([
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--nats".into(),
                    nats.clone(),
                    "--nats-stream".into(),
                    stream.clone(),
                    "--nats-subject-prefix".into(),
                    prefix.clone(),
                    "--database".into(),
                    database_override.unwrap_or(database).to_string(),
                    "--master-key".into(),
                    MASTER_KEY.into(),
                ]);
                return args;
            }
        }
        if let Some(db) = database_override {
            args.extend(["--database".into(), db.into()]);
        }
        args
    }

    pub fn read_db(&self) -> String {
        match self {
            Self::Embedded { data_dir } => format!("sqlite://{}", data_dir.join("read.db").display()),
            Self::Cluster { database, .. } => database.clone(),
        }
    }

    pub fn subcommand(&self) -> &'static str {
        match self {
            Self::Embedded { .. } => "dev",
            Self::Cluster { .. } => "serve",
        }
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(mode: &Mode) -> Server {
    start_with(mode, &[])
}

/// Starts arc-control with extra flags.
pub fn start_with(mode: &Mode, extra: &[&str]) -> Server {
    start_with_env(mode, extra, &[])
}

/// What every arc-control a test starts gets (a test's own variables come
/// after and win): the webhook receivers listen on loopback, which `serve`
/// refuses unless allowed (the SSRF test starts one without it); negative
/// suites fail on purpose and many tests reuse tokens, all from loopback
/// (the rate-limit tests set their own limits).
pub const SERVER_TEST_ENV: &[(&str, &str)] = &[
    ("ARC_WEBHOOK_ALLOW_NETS", "127.0.0.0/8,::1/128"),
    ("ARC_AUTH_FAILURES_PER_ADDR", "100000"),
    ("ARC_AUTH_FAILURES_PER_KEY", "100000"),
    ("ARC_APP_REQUESTS_PER_MINUTE", "10000000"),
    ("ARC_SESSIONS_PER_TOKEN_PER_MINUTE", "100000"),
];

/// Starts arc-control with extra flags and environment variables (an
/// extra `--listen` or `--media-udp` replaces the mode's loopback one). Its log
/// filter is `ARC_TEST_LOG` when set (as for `start_media`), e.g. `info`.
pub fn start_with_env(mode: &Mode, extra: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut args = mode.args(None);
    for flag in ["--listen", "--media-udp"] {
        if extra.contains(&flag)
            && let Some(i) = args.iter().position(|a| a == flag)
        {
            args.drain(i..i + 2);
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg(mode.subcommand())
        .args(args)
        .args(extra)
        .envs(SERVER_TEST_ENV.iter().copied())
        .envs(envs.iter().copied())
        .env("ARC_LOG", test_log_filter())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn arc-control");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.trim().strip_prefix("status page") {
                let _ = tx.send(rest.trim().trim_end_matches('/').to_string());
            }
        }
    });
    let base = rx.recv_timeout(Duration::from_secs(60)).expect("arc-control printed its address within 60 s");
    Server { child, base }
}

/// Creates an app with an admin key; returns (app_key, app_secret).
pub async fn create_app(base: &str, admin_key: &str, name: &str) -> (String, String) {
    create_app_with(base, admin_key, serde_json::json!({"name": name})).await
}

/// Creates an app from `body` (name, webhooks, quotas …) with an admin key;
/// returns (app_key, app_secret).
pub async fn create_app_with(base: &str, admin_key: &str, body: serde_json::Value) -> (String, String) {
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/apps"))
        .bearer_auth(admin_key)
        .json(&body)
        .send()
        .await
        .expect("create app")
        .json()
        .await
        .expect("json");
    let key = r["app"]["app_key"].as_str().unwrap_or_else(|| panic!("app_key in {r}"));
    (key.into(), r["app_secret"].as_str().expect("app_secret").into())
}

/// `GET /v1/rooms?<query>` with the app's Basic auth: the answer's body.
pub async fn list_rooms(base: &str, app: &(String, String), query: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}/v1/rooms?{query}"))
        .basic_auth(&app.0, Some(&app.1))
        .send()
        .await
        .expect("rooms")
        .json()
        .await
        .expect("json")
}

/// The id of the app's room called `name`, if the read model lists it.
pub async fn room_id(base: &str, app: &(String, String), name: &str) -> Option<String> {
    let rooms = list_rooms(base, app, &format!("name={name}")).await;
    rooms["rooms"][0]["room_id"].as_str().map(str::to_owned)
}

/// Serves `app` on a free loopback port; returns `http://<addr>`.
pub async fn serve_local(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// The media node's metrics (`/media/metrics`, OpenMetrics), by sample name.
pub async fn media_metrics(base: &str) -> std::collections::HashMap<String, f64> {
    let metrics = reqwest::Client::new()
        .get(format!("{base}/media/metrics"))
        .header("accept", OPENMETRICS_ACCEPT)
        .send()
        .await
        .expect("metrics");
    openmetrics_samples(&metrics.text().await.expect("text"))
}

/// `GET base+path` with the admin key, as JSON (`null` when the body is not JSON).
pub async fn admin_get(base: &str, path: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .json()
        .await
        .unwrap_or(serde_json::Value::Null)
}

/// Mints a participant token through `POST /v1/tokens` (the app's Basic auth).
pub async fn mint_token(
    base: &str,
    app: &(String, String),
    identity: &str,
    room: &str,
    grants: serde_json::Value,
) -> String {
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/v1/tokens"))
        .basic_auth(&app.0, Some(&app.1))
        .json(&serde_json::json!({"identity": identity, "room": room, "grants": grants}))
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    r["token"].as_str().unwrap_or_else(|| panic!("token in {r}")).into()
}

/// A fresh stream, subject prefix and PostgreSQL database on the test
/// services: (NATS URL, stream, prefix, data dir, mode).
pub async fn cluster(stream: &str, subjects: &str) -> (String, String, String, tempfile::TempDir, Mode) {
    let nats = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL not set: run scripts/test");
    let pg = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (stream, prefix) = (format!("{stream}_{tag}"), format!("{subjects}{tag}.evt"));
    let mode = Mode::Cluster {
        nats: nats.clone(),
        stream: stream.clone(),
        prefix: prefix.clone(),
        database: create_pg_database(&pg).await,
        data_dir: dir.path().to_path_buf(),
    };
    (nats, stream, prefix, dir, mode)
}

pub async fn create_pg_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("arc_t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create db");
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
    format!("{base}/{name}")
}

/// Waits until `/v1/status` says every projection caught up (60 s at most).
pub async fn wait_caught_up(base: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/v1/status")).send().await
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["projections"].as_array().is_some_and(|ps| !ps.is_empty() && ps.iter().all(|p| p["caught_up"] == true))
        {
            return;
        }
        assert!(Instant::now() < deadline, "projections did not catch up within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every row of the read models, as text, for comparison.
pub async fn dump(url: &str) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("connect read db");
    let mut out = Vec::new();
    for (table, key) in [
        ("rooms", "room_id"),
        ("nodes", "node_id"),
        ("apps", "app_id"),
        ("participants", "sid"),
        ("tracks", "track_id"),
        ("revoked_tokens", "jti"),
    ] {
        let sql = format!("SELECT * FROM {table} ORDER BY {key}");
        for row in sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.expect("select") {
            let mut cells = vec![table.to_string()];
            for i in 0..row.len() {
                let cell = row
                    .try_get::<Option<i64>, _>(i)
                    .map(|v| format!("{v:?}"))
                    .or_else(|_| row.try_get::<Option<String>, _>(i).map(|v| format!("{v:?}")))
                    .or_else(|_| row.try_get::<Option<f64>, _>(i).map(|v| format!("{v:?}")))
                    .expect("cell");
                cells.push(cell);
            }
            out.push(cells.join("|"));
        }
    }
    pool.close().await;
    out
}

/// Runs `arc-control <command>` (`catch-up`, `rebuild`) against `mode`'s storage.
pub fn run_tool(mode: &Mode, command: &str, database: Option<&str>) {
    let out = tool_output(mode, command, database);
    assert!(out.status.success(), "{command} failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

/// Runs `arc-control <command>` against `mode`'s storage; returns what it did.
pub fn tool_output(mode: &Mode, command: &str, database: Option<&str>) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg(command)
        .args(mode.args(database))
        .env("ARC_LOG", "warn")
        .output()
        .expect("run arc-control")
}

/// An `arc-media` process, SIGKILLed when dropped.
pub struct Media {
    pub child: Child,
    pub id: String,
    /// The node's operator endpoint (`http://…/metrics`).
    pub metrics: String,
}

impl Drop for Media {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `arc-media` binary beside arc-control's (built if missing).
pub fn arc_media_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_arc-control")).with_file_name("arc-media");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo).args(["build", "-p", "arc-media", "--bin", "arc-media"]).status();
        assert!(ok.is_ok_and(|s| s.success()), "building arc-media");
    }
    bin
}

/// The `arcctl` binary beside arc-control's (built if missing).
pub fn arcctl_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_arc-control")).with_file_name("arcctl");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo).args(["build", "-p", "arcctl", "--bin", "arcctl"]).status();
        assert!(ok.is_ok_and(|s| s.success()), "building arcctl");
    }
    bin
}

/// Starts `arc-media` on the given NATS stream as node `id` (media on a free loopback port).
pub fn start_media(nats: &str, stream: &str, prefix: &str, id: &str) -> Media {
    start_media_with_env(nats, stream, prefix, id, &[])
}

/// [`start_media`] with extra environment variables.
pub fn start_media_with_env(nats: &str, stream: &str, prefix: &str, id: &str, envs: &[(&str, &str)]) -> Media {
    let mut child = Command::new(arc_media_bin())
        .args(["--nats", nats, "--nats-stream", stream, "--nats-subject-prefix", prefix, "--node-id", id])
        .args(["--media-udp", "127.0.0.1:0", "--public-ip", "127.0.0.1", "--metrics-listen", "127.0.0.1:0"])
        .env("ARC_LOG", test_log_filter())
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn arc-media");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // The last startup line: the node takes requests by now.
            if let Some(url) = line.trim().strip_prefix("metrics") {
                let _ = tx.send(url.split_whitespace().next().unwrap_or_default().to_owned());
            }
        }
    });
    let metrics = rx.recv_timeout(Duration::from_secs(60)).expect("arc-media started");
    Media { child, id: id.into(), metrics }
}

/// Webhook deliveries received: delivery id (`Arc-Webhook-Id`) → how many times.
pub type Hooks = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

/// A webhook receiver on loopback answering 200; returns its URL and what it got.
pub async fn receiver() -> (String, Hooks) {
    let got: Hooks = Hooks::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let got = state.clone();
            async move {
                if let Some(id) = headers.get("arc-webhook-id").and_then(|v| v.to_str().ok()) {
                    *got.lock().expect("lock").entry(id.to_owned()).or_default() += 1;
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    (format!("{}/hook", serve_local(app).await), got)
}

/// A network namespace this test made for one client (a browser, say), with
/// a veth pair to the host: the host side is `host_ip`, the client's side
/// `client_ip` (a /30 of 10.77.0.0/16 picked from the process id and a
/// counter, so tests side by side do not collide). Whatever runs in it
/// (`exec`) reaches the host only over the veth, so shaping the namespace
/// (`nft`, `tc`) shapes that client's path alone. Removed (with its veth
/// pair) when dropped. Needs root, `ip` (iproute2) and `nft` (nftables),
/// which `scripts/services install` installs.
///
/// The host side's address is this machine's while the namespace lives, so
/// other tests' ICE agents gather it and may lose their media when it goes:
/// a test that makes one must run alone (listed in `.config/nextest.toml`).
pub struct Netns {
    pub name: String,
    pub host_ip: String,
    pub client_ip: String,
    /// The host's end of the veth pair (what reaches the namespace leaves
    /// the host through it).
    pub host_if: String,
}

impl Netns {
    pub fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = std::sync::atomic::AtomicU32::fetch_add(&NEXT, 1, std::sync::atomic::Ordering::Relaxed);
        // 16,384 /30 blocks in 10.77.0.0/16.
        let block = (std::process::id().wrapping_mul(7).wrapping_add(n)) % 16_384;
        let (third, fourth) = (block / 64, (block % 64) * 4);
        let tag = format!("{:x}", std::process::id() * 16 + n);
        let (host_if, client_if) = (format!("ah{tag}"), format!("ac{tag}"));
        let ns = Self {
            name: format!("arc-test-{tag}"),
            host_ip: format!("10.77.{third}.{}", fourth + 1),
            client_ip: format!("10.77.{third}.{}", fourth + 2),
            host_if: host_if.clone(),
        };
        let sh = |args: &[&str]| {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("run {args:?}: {e}"));
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh(&["ip", "netns", "add", &ns.name]);
        sh(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &client_if]);
        sh(&["ip", "link", "set", &client_if, "netns", &ns.name]);
        sh(&["ip", "addr", "add", &format!("{}/30", ns.host_ip), "dev", &host_if]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", &ns.name];
            all.extend_from_slice(args);
            sh(&all);
        };
        inside(&["ip", "addr", "add", &format!("{}/30", ns.client_ip), "dev", &client_if]);
        inside(&["ip", "link", "set", &client_if, "up"]);
        inside(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Drops `percent` % of the UDP datagrams reaching the namespace, at
    /// random (nft `numgen`; the kernel here has no netem).
    pub fn drop_incoming_udp(&self, percent: u32) {
        let rules = format!(
            "table inet arc_loss {{\n chain input {{\n  type filter hook input priority 0;\n  \
             meta l4proto udp numgen random mod 100 < {percent} drop\n }}\n}}\n"
        );
        let out = self.command("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().map(|mut i| i.write_all(rules.as_bytes())).transpose()?;
            c.wait_with_output()
        });
        let out = out.expect("run nft (is nftables installed?)");
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Limits what reaches the namespace (the host's end of the veth sends
    /// it) to `rate` (`tc` units, e.g. `700kbit`) with a token bucket
    /// (`tbf`; the kernel here has no netem): a narrow downlink. What waits
    /// longer than `latency_ms` in its queue is dropped. Called again, it
    /// replaces the limit.
    pub fn limit_downlink(&self, rate: &str, latency_ms: u32) {
        let latency = format!("{latency_ms}ms");
        let args = [
            "qdisc",
            "replace",
            "dev",
            &self.host_if,
            "root",
            "tbf",
            "rate",
            rate,
            "burst",
            "20kb",
            "latency",
            &latency,
        ];
        let out = Command::new("tc").args(args).output().expect("run tc (iproute2)");
        assert!(out.status.success(), "tc {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Lifts [`Self::limit_downlink`]'s limit.
    pub fn lift_downlink_limit(&self) {
        let out = Command::new("tc").args(["qdisc", "del", "dev", &self.host_if, "root"]).output().expect("run tc");
        assert!(out.status.success(), "tc qdisc del: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// The log filter of the arc-control and arc-media processes tests start:
/// `ARC_TEST_LOG` when set (e.g. `info,rtc_dtls=debug` when hunting
/// connection trouble), else warnings (rtc-dtls's only errors).
pub fn test_log_filter() -> String {
    std::env::var("ARC_TEST_LOG").unwrap_or_else(|_| "warn,rtc_dtls=error".into())
}

/// What Prometheus sends: OpenMetrics first.
pub const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5";

/// Samples of an OpenMetrics text exposition: `name{labels}` → value.
/// Panics on a line that is neither a comment, `# EOF`, nor a sample.
pub fn openmetrics_samples(text: &str) -> std::collections::HashMap<String, f64> {
    assert!(text.trim_end().ends_with("# EOF"), "ends with # EOF");
    let mut out = std::collections::HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name: {line:?}"
        );
        assert!(name.starts_with("arc_"), "Arc's own prefix: {line:?}");
        if name_end < series.len() {
            assert!(series.ends_with('}'), "closed labels: {line:?}");
        }
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line:?}"));
        out.insert(series.to_owned(), v);
    }
    out
}
