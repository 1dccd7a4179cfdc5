//! Portal benchmark: token verification per second on one core, and the
//! latency of create-room and join-authorization over HTTP against a running
//! `arc-control` in embedded mode and (when `ARC_TEST_NATS_URL` and
//! `ARC_TEST_PG_ADMIN_URL` are set) NATS JetStream + PostgreSQL mode.
//!
//! Rerun: `scripts/bench` (all benchmarks) or
//! `ARC_TEST_NATS_URL=… ARC_TEST_PG_ADMIN_URL=… cargo bench -p arc-control --bench portal [-- --quick]`.
//! Writes its section of `BENCHMARKS.md` (between markers, after the notes),
//! or `target/BENCHMARKS.portal.quick.md` with `--quick`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arc_auth::{AppSecret, MintRequest, TokenPolicy};

const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const MASTER_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(args: &[String]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .args(args)
        .args(["--admin-key", ADMIN_KEY, "--listen", "127.0.0.1:0"])
        .env("ARC_LOG", "warn")
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
    let base = rx.recv_timeout(Duration::from_secs(60)).expect("arc-control started");
    Server(child, base)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Verifications per second on one thread, median of `runs`.
fn token_verify(n: usize, runs: usize) -> (f64, f64) {
    let secret = AppSecret::generate();
    let policy = TokenPolicy::default();
    let req = MintRequest {
        identity: "participant-1".into(),
        room: "weekly-standup".into(),
        grants: None,
        ttl_s: Some(3600),
        name: Some("Participant One".into()),
        metadata: None,
        not_before_s: None,
    };
    let now = chrono::Utc::now();
    let (token, _) =
        arc_auth::token::mint("app_0193c1d2e3f47a8b9c0d1e2f3a4b5c6d", &secret, &req, &policy, now).expect("mint");
    let mut rates = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        for _ in 0..n {
            let claims = arc_auth::token::verify(std::hint::black_box(&token), &[&secret], &policy, now).expect("ok");
            std::hint::black_box(claims);
        }
        rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    (median, 1e9 / median)
}

struct Http {
    mode: &'static str,
    create: Vec<f64>,
    join: Vec<f64>,
    /// Joins per second with [`CLIENTS`] clients at once, and their p99 ms.
    concurrent: (f64, f64),
}

/// Clients joining at once in the throughput run.
const CLIENTS: usize = 64;
/// Rooms the concurrent joins spread over.
const CONCURRENT_ROOMS: usize = 200;

/// `joins` joins by [`CLIENTS`] clients at once (each its own keep-alive
/// connection), spread over [`CONCURRENT_ROOMS`] rooms: (joins/s, p99 ms).
async fn concurrent_joins(base: &str, key: &str, secret: &AppSecret, joins: usize) -> (f64, f64) {
    let policy = TokenPolicy::default();
    let tokens: Vec<String> = (0..joins)
        .map(|i| {
            let req = MintRequest {
                identity: format!("many-{i}"),
                room: format!("busy-{}", i % CONCURRENT_ROOMS),
                grants: None,
                ttl_s: Some(3600),
                name: None,
                metadata: None,
                not_before_s: None,
            };
            arc_auth::token::mint(key, secret, &req, &policy, chrono::Utc::now()).expect("mint").0
        })
        .collect();
    let tokens = std::sync::Arc::new(tokens);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let (tokens, next, base) = (tokens.clone(), next.clone(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut took = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let t = Instant::now();
                let r = http.post(format!("{base}/v1/join")).bearer_auth(token).send().await.expect("join");
                assert_eq!(r.status(), 201, "a concurrent join");
                took.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            took
        }));
    }
    let mut all = Vec::with_capacity(joins);
    for t in tasks {
        all.extend(t.await.expect("a client task"));
    }
    let rate = joins as f64 / start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (rate, pct(&all, 0.99))
}

async fn http_run(mode: &'static str, base: &str, n: usize) -> Http {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/apps"))
        .bearer_auth(ADMIN_KEY)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .expect("create app");
    let v: serde_json::Value = r.json().await.expect("json");
    let key = v["app_key"].as_str().expect("key").to_owned();
    let secret = v["app_secret"].as_str().expect("secret").to_owned();
    let mut create = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let r = http
            .post(format!("{base}/v1/rooms"))
            .basic_auth(&key, Some(&secret))
            .json(&serde_json::json!({"name": format!("room-{i}")}))
            .send()
            .await
            .expect("create room");
        assert_eq!(r.status(), 201);
        create.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // Tokens minted up front (an app server's job); join = verify + quota + event.
    let app_secret = AppSecret::from_string(secret);
    let policy = TokenPolicy::default();
    let tokens: Vec<String> = (0..n)
        .map(|i| {
            let req = MintRequest {
                identity: format!("user-{i}"),
                room: format!("room-{}", i % 20),
                grants: None,
                ttl_s: Some(3600),
                name: None,
                metadata: None,
                not_before_s: None,
            };
            arc_auth::token::mint(&key, &app_secret, &req, &policy, chrono::Utc::now()).expect("mint").0
        })
        .collect();
    let mut join = Vec::with_capacity(n);
    for token in &tokens {
        let t = Instant::now();
        let r = http.post(format!("{base}/v1/join")).bearer_auth(token).send().await.expect("join");
        assert_eq!(r.status(), 201);
        join.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    create.sort_by(f64::total_cmp);
    join.sort_by(f64::total_cmp);
    let concurrent = concurrent_joins(base, &key, &app_secret, n * 4).await;
    Http { mode, create, join, concurrent }
}

async fn pg_database(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("arc_b_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create db");
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
    format!("{base}/{name}")
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (verify_n, runs, http_n) = if quick { (20_000, 3, 100) } else { (300_000, 5, 1000) };
    let (rate, ns) = token_verify(verify_n, runs);
    println!("token verification: {rate:.0}/s on one core ({ns:.0} ns each)");

    let mut results = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let server = start(&[
            "dev".into(),
            "--media-udp".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            dir.path().display().to_string(),
        ]);
        results.push(http_run("embedded (SQLite log + SQLite read models)", &server.1, http_n).await);
    }
    if let (Ok(nats), Ok(pg)) = (std::env::var("ARC_TEST_NATS_URL"), std::env::var("ARC_TEST_PG_ADMIN_URL")) {
        let tag = uuid::Uuid::now_v7().simple().to_string();
        let db = pg_database(&pg).await;
        let server = start(&[
            "serve".into(),
            "--data-dir".into(),
            dir.path().join("serve").display().to_string(),
            "--nats".into(),
            nats,
            "--nats-stream".into(),
            format!("BENCH_{tag}"),
            "--nats-subject-prefix".into(),
            format!("b{tag}.evt"),
            "--database".into(),
            db,
            "--master-key".into(),
            MASTER_KEY.into(),
        ]);
        results.push(http_run("NATS JetStream + PostgreSQL", &server.1, http_n).await);
    } else {
        println!("(cluster mode skipped: set ARC_TEST_NATS_URL and ARC_TEST_PG_ADMIN_URL, as scripts/bench does)");
    }

    let mut md = String::new();
    let _ = writeln!(md, "<!-- portal-bench:begin -->\n## Portal (issue 4)\n");
    let _ = writeln!(
        md,
        "Measured by `control/benches/portal.rs` ({}; `scripts/bench` runs it). Date: {}.\n",
        if quick { "quick scale" } else { "full scale" },
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let _ = writeln!(
        md,
        "Token verification (HS256, pinned algorithm, claims and time checks), one thread, median of {runs} runs of {verify_n}: **{rate:.0} verifications/s** ({ns:.0} ns each).\n"
    );
    let _ = writeln!(
        md,
        "HTTP, one client, sequential requests over keep-alive, {http_n} each. Create-room = authenticate the app (Basic), check quotas, append `room.created`, wait for the local projections to apply it. Join = verify the token, check revocation and quotas, open the room if needed, append `room.participant_joined`, wait for projections.\n"
    );
    let _ = writeln!(md, "| mode | create-room p50 ms | p99 ms | join p50 ms | p99 ms |\n|---|---|---|---|---|");
    for r in &results {
        let line = format!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.mode,
            pct(&r.create, 0.5),
            pct(&r.create, 0.99),
            pct(&r.join, 0.5),
            pct(&r.join, 0.99)
        );
        println!("{line}");
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\nJoins with {CLIENTS} clients at once (each its own keep-alive connection; {} joins spread over {CONCURRENT_ROOMS} rooms; the load generator runs on the same machine). Target ≥ 2,000 joins/s in both modes.\n",
        http_n * 4
    );
    let _ = writeln!(md, "| mode | joins/s | p99 ms | |\n|---|---|---|---|");
    for r in &results {
        let (rate, p99) = r.concurrent;
        let line =
            format!("| {} | {rate:.0} | {p99:.2} | {} |", r.mode, if rate >= 2000.0 { "met" } else { "**not met**" });
        println!("{line}");
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(md, "<!-- portal-bench:end -->");

    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = arc_tests::benchmarks::write_section(&root, "portal-bench", &md, quick).expect("write the figures");
    println!("wrote {}", path.display());
}
