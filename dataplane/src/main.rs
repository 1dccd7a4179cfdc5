//! `arc-media`: the media node. Today: registration and heartbeats in the
//! event log over NATS JetStream (the SFU core arrives later).

use anyhow::{Context, Result};
use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_events::NodeId;
use arc_events::node::NodeRegistered;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "arc-media", version, about = "Arc media node")]
struct Cli {
    /// NATS server URL(s) of the control plane's JetStream, comma-separated
    #[arg(long = "nats", env = "ARC_NATS_URL")]
    nats_url: String,
    /// JetStream stream name
    #[arg(long, env = "ARC_NATS_STREAM", default_value = arc_eventlog::jetstream::STREAM_NAME)]
    nats_stream: String,
    /// Subject prefix of the stream
    #[arg(long, env = "ARC_NATS_SUBJECT_PREFIX", default_value = arc_eventlog::jetstream::SUBJECT_PREFIX)]
    nats_subject_prefix: String,
    /// This node's id (letters, digits, '-' and '_') [default: node-<hostname>]
    #[arg(long, env = "ARC_NODE_ID")]
    node_id: Option<String>,
    /// Address the control plane reaches this node at (host:port)
    #[arg(long, env = "ARC_NODE_ADDRESS", default_value = "127.0.0.1:7881")]
    address: String,
    /// Public IP announced to clients (repeat for several)
    #[arg(long = "public-ip", env = "ARC_PUBLIC_IPS", value_delimiter = ',')]
    public_ips: Vec<String>,
    /// Most concurrent sessions this node accepts
    #[arg(long, env = "ARC_NODE_CAPACITY", default_value_t = 500)]
    capacity: u32,
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let clean: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let clean: String = clean.chars().take(58).collect();
    if clean.is_empty() { "node-local".into() } else { format!("node-{clean}") }
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with its causes, never a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARC_LOG")
                .unwrap_or_else(|_| "info,rtc=warn,rtc_ice=warn,rtc_dtls=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let node_id = NodeId::parse(&cli.node_id.unwrap_or_else(default_node_id)).context("--node-id")?;
    let mut config = JetStreamConfig::new(&cli.nats_url);
    config.stream = cli.nats_stream;
    config.subject_prefix = cli.nats_subject_prefix;
    let log = JetStreamLog::connect(&config).await.context("connecting to the event log")?;
    let info = NodeRegistered {
        address: cli.address,
        public_ips: cli.public_ips,
        arch: std::env::consts::ARCH.to_owned(),
        cores: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        capacity: cli.capacity,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    println!(
        "arc-media {} node {node_id} ({}) joining {}",
        env!("CARGO_PKG_VERSION"),
        info.arch,
        arc_eventlog::jetstream::redact_urls(&cli.nats_url)
    );
    arc_media::agent::run(std::sync::Arc::new(log), node_id, info, async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    Ok(())
}
