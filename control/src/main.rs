//! `arc-control`: Arc's control plane.
//!
//! - `arc-control dev`: everything embedded in one process (event log and
//!   read models in SQLite under `--data-dir`), nothing to install.
//! - `arc-control serve --nats URL --database URL --admin-key KEY`: against
//!   NATS JetStream and PostgreSQL.
//! - `arc-control rebuild`: replays the log into fresh read models.

use std::path::PathBuf;

use arc_eventlog::jetstream::redact_urls;

use anyhow::{Context, Result};
use arc_control::config::{Mode, Settings};
use arc_control::server;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "arc-control", version, about = "Arc's control plane: event log, projections, REST API")]
struct Cli {
    /// TOML config file; environment (ARC_*) and flags override it.
    #[arg(long, global = true, env = "ARC_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

/// Settings given as flags or `ARC_*` variables (flags win).
#[derive(Debug, Args)]
struct SettingsArgs {
    /// Directory for the embedded log, read models and generated keys [default: ./arc-data]
    #[arg(long, global = true, env = "ARC_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:7880]
    #[arg(long, global = true, env = "ARC_LISTEN")]
    listen: Option<String>,
    /// NATS server URL(s), comma-separated: use the JetStream event log
    #[arg(long = "nats", global = true, env = "ARC_NATS_URL")]
    nats_url: Option<String>,
    /// Replicas of the JetStream stream (3 for a three-node cluster) [default: 1]
    #[arg(long, global = true, env = "ARC_NATS_REPLICAS")]
    nats_replicas: Option<usize>,
    /// JetStream stream name [default: ARC_EVENTS]
    #[arg(long, global = true, env = "ARC_NATS_STREAM")]
    nats_stream: Option<String>,
    /// Subject prefix of the stream's subjects [default: arc.evt]
    #[arg(long, global = true, env = "ARC_NATS_SUBJECT_PREFIX")]
    nats_subject_prefix: Option<String>,
    /// Read-model database: postgres://… or sqlite://… [default in dev: sqlite://<data-dir>/read.db]
    #[arg(long = "database", global = true, env = "ARC_DATABASE_URL")]
    database_url: Option<String>,
    /// Admin API key (at least 16 characters); dev generates one into the data dir
    #[arg(long, global = true, env = "ARC_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// More admin keys, each named (the log records the name as who acted): name=key,name=key
    #[arg(long, global = true, env = "ARC_ADMIN_KEYS", hide_env_values = true)]
    admin_keys: Option<String>,
    /// TLS to NATS: the CA that signed the servers' certificates (PEM)
    #[arg(long, global = true, env = "ARC_NATS_CA_FILE")]
    nats_ca_file: Option<std::path::PathBuf>,
    /// TLS to NATS: this client's certificate (PEM), for servers that verify clients
    #[arg(long, global = true, env = "ARC_NATS_CERT_FILE", requires = "nats_key_file")]
    nats_cert_file: Option<std::path::PathBuf>,
    /// TLS to NATS: this client's key (PEM)
    #[arg(long, global = true, env = "ARC_NATS_KEY_FILE", requires = "nats_cert_file")]
    nats_key_file: Option<std::path::PathBuf>,
    /// HTTPS: certificate chain (PEM); reloaded on SIGHUP
    #[arg(long, global = true, env = "ARC_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// HTTPS: private key (PEM); reloaded on SIGHUP
    #[arg(long, global = true, env = "ARC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// dev: HTTPS with a self-signed certificate for localhost, made into <data-dir>/tls/
    #[arg(long, global = true, env = "ARC_TLS_SELF_SIGNED")]
    tls_self_signed: bool,
    /// Seconds between janitor sweeps (idle rooms, silent nodes) [default: 2]
    #[arg(long, global = true, env = "ARC_JANITOR_INTERVAL_S")]
    janitor_interval_s: Option<u64>,
    /// Seconds a signalling WebSocket may stay silent (no message, no pong) before its participant is removed [default: 20]
    #[arg(long, global = true, env = "ARC_SIGNAL_TIMEOUT_S")]
    signal_timeout_s: Option<u64>,
    /// Failed authentications a minute from one address before it gets 429s [default: 30]
    #[arg(long, global = true, env = "ARC_AUTH_FAILURES_PER_ADDR")]
    auth_failures_per_addr: Option<u32>,
    /// Failed authentications a minute naming one app key before it gets 429s [default: 100]
    #[arg(long, global = true, env = "ARC_AUTH_FAILURES_PER_KEY")]
    auth_failures_per_key: Option<u32>,
    /// Requests a minute naming one app key (its Basic credentials or tokens) before 429s [default: 6000]
    #[arg(long, global = true, env = "ARC_APP_REQUESTS_PER_MINUTE")]
    app_requests_per_minute: Option<u32>,
    /// Media sessions (WHIP, WHEP, signalling sockets) one access token may open a minute [default: 30]
    #[arg(long, global = true, env = "ARC_SESSIONS_PER_TOKEN_PER_MINUTE")]
    sessions_per_token_per_minute: Option<u32>,
    /// STUN servers given to clients, comma-separated (stun:host:port)
    #[arg(long, global = true, env = "ARC_STUN_URLS")]
    stun_urls: Option<String>,
    /// TURN servers given to clients with time-limited credentials, comma-separated (turn:host:port?transport=udp, turns:…)
    #[arg(long, global = true, env = "ARC_TURN_URLS")]
    turn_urls: Option<String>,
    /// The secret shared with the TURN servers (coturn's static-auth-secret)
    #[arg(long, global = true, env = "ARC_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// How long a participant's TURN credentials last, in seconds [default: 21600]
    #[arg(long, global = true, env = "ARC_TURN_TTL_S")]
    turn_ttl_s: Option<u64>,
    /// Master key sealing app secrets (64 hex chars); dev generates one into the data dir
    #[arg(long, global = true, env = "ARC_MASTER_KEY", hide_env_values = true)]
    master_key: Option<String>,
    /// Longest token lifetime accepted, in seconds [default: 86400]
    #[arg(long, global = true, env = "ARC_TOKEN_MAX_TTL_S")]
    token_max_ttl_s: Option<u32>,
    /// Default grace period of a rotated-out app secret, in seconds [default: 3600]
    #[arg(long, global = true, env = "ARC_SECRET_GRACE_S")]
    secret_grace_s: Option<u32>,
    /// Webhook attempts before a delivery is dead-lettered [default: 10]
    #[arg(long, global = true, env = "ARC_WEBHOOK_ATTEMPTS_MAX")]
    webhook_attempts_max: Option<u32>,
    /// Delay before the first webhook retry in ms, doubling per attempt [default: 1000]
    #[arg(long, global = true, env = "ARC_WEBHOOK_BACKOFF_BASE_MS")]
    webhook_backoff_base_ms: Option<u64>,
    /// Longest delay between webhook retries in seconds [default: 600]
    #[arg(long, global = true, env = "ARC_WEBHOOK_BACKOFF_MAX_S")]
    webhook_backoff_max_s: Option<u64>,
    /// Timeout of one webhook request in seconds [default: 10]
    #[arg(long, global = true, env = "ARC_WEBHOOK_TIMEOUT_S")]
    webhook_timeout_s: Option<u64>,
    /// PEM file of extra CA certificates to trust for https:// webhook URLs
    #[arg(long, global = true, env = "ARC_WEBHOOK_CA_FILE")]
    webhook_ca_file: Option<PathBuf>,
    /// Non-public address ranges webhooks may reach, comma-separated CIDRs
    /// (e.g. 10.0.0.0/8) [default: none in serve; loopback in dev]
    #[arg(long, global = true, env = "ARC_WEBHOOK_ALLOW_NETS")]
    webhook_allow_nets: Option<String>,
    /// dev: UDP address of the embedded media node's media port [default: 0.0.0.0:7882]
    #[arg(long, global = true, env = "ARC_MEDIA_UDP")]
    media_udp: Option<String>,
    /// dev: IPs the media node announces to clients, comma-separated [default: 127.0.0.1]
    #[arg(long, global = true, env = "ARC_MEDIA_ANNOUNCE")]
    media_announce: Option<String>,
    /// dev: worker threads of the media node (each with its own engine) [default: 0, one per CPU]
    #[arg(long, global = true, env = "ARC_MEDIA_WORKERS")]
    media_workers: Option<usize>,
    /// dev: sessions the media node takes at most [default: 500]
    #[arg(long, global = true, env = "ARC_MEDIA_CAPACITY")]
    media_capacity: Option<u32>,
    /// dev: who protects forwarded media, arc (in place) or rtc [default: arc]
    #[arg(long, global = true, env = "ARC_MEDIA_SRTP_EGRESS")]
    media_srtp_egress: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything embedded in one process: no services needed
    Dev,
    /// Run against NATS JetStream and PostgreSQL
    Serve,
    /// Apply the log to the read models up to its head, from their checkpoints, and exit
    CatchUp,
    /// Rebuild read models from the start of the log (stop arc-control first when embedded)
    Rebuild {
        /// Projections to rebuild (see `arc-control rebuild --help`), or all
        #[arg(default_values_t = vec!["all".to_string()])]
        projections: Vec<String>,
    },
}

impl SettingsArgs {
    fn into_settings(self) -> Settings {
        Settings {
            data_dir: self.data_dir,
            listen: self.listen,
            nats_url: self.nats_url,
            nats_replicas: self.nats_replicas,
            nats_stream: self.nats_stream,
            nats_subject_prefix: self.nats_subject_prefix,
            database_url: self.database_url,
            admin_key: self.admin_key,
            admin_keys: self.admin_keys,
            nats_ca_file: self.nats_ca_file,
            nats_cert_file: self.nats_cert_file,
            nats_key_file: self.nats_key_file,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            tls_self_signed: self.tls_self_signed.then_some(true),
            janitor_interval_s: self.janitor_interval_s,
            signal_timeout_s: self.signal_timeout_s,
            stun_urls: self.stun_urls,
            auth_failures_per_addr: self.auth_failures_per_addr,
            auth_failures_per_key: self.auth_failures_per_key,
            app_requests_per_minute: self.app_requests_per_minute,
            sessions_per_token_per_minute: self.sessions_per_token_per_minute,
            turn_urls: self.turn_urls,
            turn_secret: self.turn_secret,
            turn_ttl_s: self.turn_ttl_s,
            master_key: self.master_key,
            token_max_ttl_s: self.token_max_ttl_s,
            secret_grace_s: self.secret_grace_s,
            webhook_attempts_max: self.webhook_attempts_max,
            webhook_backoff_base_ms: self.webhook_backoff_base_ms,
            webhook_backoff_max_s: self.webhook_backoff_max_s,
            webhook_timeout_s: self.webhook_timeout_s,
            webhook_ca_file: self.webhook_ca_file,
            webhook_allow_nets: self.webhook_allow_nets,
            media_udp: self.media_udp,
            media_announce: self.media_announce,
            media_workers: self.media_workers,
            media_capacity: self.media_capacity,
            media_srtp_egress: self.media_srtp_egress,
        }
    }
}

/// The service name traces carry.
const SERVICE: &str = "arc-control";

fn main() -> std::process::ExitCode {
    // Logs and traces first, outside the async runtime: the OTLP exporter's
    // blocking HTTP client must be made and dropped outside it. Dropping
    // `telemetry` at the end flushes the spans still queued.
    let telemetry = match arc_telemetry::init(SERVICE, "info,sqlx=warn,rtc=warn,rtc_ice=warn,rtc_dtls=error") {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run_cli());
    // Say why at once, then never wait for ever on what is still running
    // (the embedded media node's workers when the start failed half-way).
    let code = match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with its causes, never a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(telemetry);
    code
}

async fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let settings = file.overridden_by(cli.settings.into_settings());
    match cli.command {
        Command::Dev => run(settings.resolve(Mode::Dev)?).await,
        Command::Serve => run(settings.resolve(Mode::Serve)?).await,
        Command::CatchUp => {
            let config = settings.resolve(Mode::Tool)?;
            for (name, events) in server::catch_up(&config).await? {
                println!("{name}: applied {events} events");
            }
            Ok(())
        }
        Command::Rebuild { projections } => {
            let config = settings.resolve(Mode::Tool)?;
            eprintln!(
                "rebuilding {} from the {} log into {}",
                projections.join(", "),
                log_name(&config),
                redact_urls(&config.database_url)
            );
            server::rebuild(&config, &projections, |name, events, took| {
                let rate = events as f64 / took.as_secs_f64().max(1e-9);
                println!("rebuilt {name}: {events} events in {:.2} s ({rate:.0} events/s)", took.as_secs_f64());
            })
            .await?;
            Ok(())
        }
    }
}

fn log_name(config: &arc_control::config::Config) -> String {
    match &config.log {
        arc_control::config::LogConfig::Embedded => {
            format!("embedded ({})", config.events_path().display())
        }
        arc_control::config::LogConfig::JetStream { url, replicas, stream, .. } => {
            format!("JetStream ({}, stream {stream}, R{replicas})", redact_urls(url))
        }
    }
}

async fn run(config: arc_control::config::Config) -> Result<()> {
    let running = server::start(&config).await.context("starting arc-control")?;
    let head = running.log.head().await.context("reading the log head")?;
    let scheme = if running.https.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", running.addr);
    println!("arc-control {} is up", env!("CARGO_PKG_VERSION"));
    println!("  event log     {} (head {head})", log_name(&config));
    println!("  read models   {}", redact_urls(&config.database_url));
    println!("  status page   {url}/");
    if let Some(https) = &running.https {
        println!("  certificate   {} (SHA-256 {}; SIGHUP reloads it)", https.cert.display(), https.fingerprint);
        if config.tls == Some(arc_control::config::Tls::SelfSigned) {
            println!(
                "                (arcctl trusts it: arcctl --url {url} --ca-file {} status)",
                https.cert.display()
            );
        }
    }
    println!("  REST API      {url}/v1/   (health: {url}/healthz)");
    println!("  API docs      {url}/docs   (OpenAPI: {url}/v1/openapi.json)");
    match running.media_udp {
        Some(_) => println!("  metrics       {url}/metrics   (media node: {url}/media/metrics)"),
        None => println!("  metrics       {url}/metrics"),
    }
    if let Some(media) = running.media_udp {
        let announced: Vec<String> = config.media_announce.iter().map(ToString::to_string).collect();
        println!("  media node    {} on udp {media} (announcing {})", server::DEV_NODE_ID, announced.join(", "));
        println!(
            "  try it        {url}/meet (a meeting: open it in two windows), {url}/publish and {url}/play (WHIP: {url}/v1/whip/<room>, WHEP: {url}/v1/whep/<room>)"
        );
    }
    let named: Vec<&str> = config.admin_keys.iter().map(|k| k.name.as_str()).collect();
    if !named.is_empty() {
        println!("  admin keys    {} (named, from configuration)", named.join(", "));
    }
    match &running.admin_key {
        None => {}
        Some((key, true)) => println!(
            "  admin key     {key}\n                (generated now and saved in {}; it is not shown again)",
            config.data_dir.join("admin.key").display()
        ),
        Some((_, false)) if config.admin_key.is_none() => {
            println!("  admin key     in {}", config.data_dir.join("admin.key").display())
        }
        Some(_) => println!("  admin key     from configuration"),
    }
    let sealing = if config.master_key.is_some() {
        "from configuration".to_owned()
    } else {
        format!(
            "in {}: back it up, app secrets cannot be opened without it",
            config.data_dir.join("master.key").display()
        )
    };
    println!("  master key    {} {sealing}", running.master_key_id);
    println!("Ctrl-C to stop.");
    running
        .serve_until(async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await;
    Ok(())
}
