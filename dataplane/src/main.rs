//! `arc-media`: the media node. Registers in the event log over NATS
//! JetStream, heartbeats its load, serves WHIP/WHEP session requests from the
//! control plane (`arc.media.<node>.rpc`), forwards media on one UDP port (and
//! ICE-TCP on the same port number), reports participants, tracks and
//! subscriptions, and drains on SIGTERM.

use anyhow::{Context, Result};
use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_events::NodeId;
use arc_events::node::NodeRegistered;
use clap::Parser;
use tracing::Instrument as _;

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
    /// TLS to NATS: the CA that signed the servers' certificates (PEM)
    #[arg(long, env = "ARC_NATS_CA_FILE")]
    nats_ca_file: Option<std::path::PathBuf>,
    /// TLS to NATS: this node's certificate (PEM), for servers that verify clients
    #[arg(long, env = "ARC_NATS_CERT_FILE", requires = "nats_key_file")]
    nats_cert_file: Option<std::path::PathBuf>,
    /// TLS to NATS: this node's key (PEM)
    #[arg(long, env = "ARC_NATS_KEY_FILE", requires = "nats_cert_file")]
    nats_key_file: Option<std::path::PathBuf>,
    /// This node's id (letters, digits, '-' and '_') [default: node-<hostname>]
    #[arg(long, env = "ARC_NODE_ID")]
    node_id: Option<String>,
    /// Address the control plane reaches this node at (host:port)
    #[arg(long, env = "ARC_NODE_ADDRESS", default_value = "127.0.0.1:7881")]
    address: String,
    /// Public IP announced to clients (repeat for several)
    #[arg(long = "public-ip", env = "ARC_PUBLIC_IPS", value_delimiter = ',')]
    public_ips: Vec<String>,
    /// Most concurrent sessions this node accepts (placement counts participants
    /// against it; the node refuses sessions beyond it with 503 node_full)
    #[arg(long, env = "ARC_NODE_CAPACITY", default_value_t = 500)]
    capacity: u32,
    /// UDP address of the one media port (every WebRTC peer uses it)
    #[arg(long, env = "ARC_MEDIA_UDP", default_value = "0.0.0.0:7882")]
    media_udp: std::net::SocketAddr,
    /// Media worker threads (each with its own engine and socket on the media
    /// port); 0: one per CPU the process may use
    #[arg(long, env = "ARC_MEDIA_WORKERS", default_value_t = 0)]
    workers: usize,
    /// Who protects forwarded media: arc (in place, the default) or rtc (its
    /// own sender path: slower; a way back if a client has trouble)
    #[arg(long, env = "ARC_SRTP_EGRESS", value_enum, default_value_t = SrtpEgress::Arc)]
    srtp_egress: SrtpEgress,
    /// On SIGTERM: seconds to wait for the node's rooms to empty before ending the rest
    /// Where the operator endpoint listens: Prometheus `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "ARC_METRICS_LISTEN", default_value = "127.0.0.1:7883")]
    metrics_listen: std::net::SocketAddr,
    #[arg(long, env = "ARC_DRAIN_TIMEOUT_S", default_value_t = 30)]
    drain_timeout_s: u64,
}

/// Who protects forwarded media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SrtpEgress {
    Arc,
    Rtc,
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let clean: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    let clean: String = clean.chars().take(58).collect();
    if clean.is_empty() { "node-local".into() } else { format!("node-{clean}") }
}

/// The service name traces carry.
const SERVICE: &str = "arc-media";

fn main() -> std::process::ExitCode {
    // Logs and traces first, outside the async runtime: the OTLP exporter's
    // blocking HTTP client must be made and dropped outside it. Dropping
    // `telemetry` at the end flushes the spans still queued.
    let telemetry = match arc_telemetry::init(SERVICE, "info,rtc=warn,rtc_ice=warn,rtc_dtls=error") {
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
    let outcome = runtime.block_on(run());
    // Never wait for ever on what is still running (the media workers, when
    // the start failed half-way): the process is ending.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    drop(telemetry);
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with its causes, never a backtrace.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let cli = Cli::parse();
    let node_id = NodeId::parse(&cli.node_id.unwrap_or_else(default_node_id)).context("--node-id")?;
    let mut config = JetStreamConfig::new(&cli.nats_url);
    config.stream = cli.nats_stream;
    config.subject_prefix = cli.nats_subject_prefix;
    config.tls = arc_eventlog::jetstream::NatsTls {
        ca_file: cli.nats_ca_file,
        client: cli.nats_cert_file.zip(cli.nats_key_file),
    };
    // A node uses the stream the control plane made, with credentials that
    // may be scoped to what a node does (`arc_media::permissions`).
    config.access = arc_eventlog::jetstream::Access::Scoped {
        inbox_prefix: arc_media::permissions::inbox_prefix(node_id.as_str()),
    };
    // The operator endpoint's port first: a taken port stops the node before
    // it registers or opens its media port.
    let metrics_listener = tokio::net::TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics endpoint {}", cli.metrics_listen))?;
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
    // The media port, and the reporter that records what happens on it.
    let announce: Vec<std::net::IpAddr> = info.public_ips.iter().filter_map(|ip| ip.parse().ok()).collect();
    if announce.len() != info.public_ips.len() {
        anyhow::bail!("--public-ip takes IP addresses, got {:?}", info.public_ips);
    }
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let media_config = arc_media::media::MediaConfig {
        udp_listen: cli.media_udp,
        announce,
        sessions_max: cli.capacity,
        workers: cli.workers,
        own_srtp_egress: cli.srtp_egress == SrtpEgress::Arc,
    };
    let (media, media_task) = arc_media::media::start(media_config, events_tx)
        .await
        .with_context(|| format!("binding the media port {}", cli.media_udp))?;
    let client = log.client();
    let log: std::sync::Arc<dyn arc_eventlog::EventLog> = std::sync::Arc::new(log);
    let signals = arc_media::report::SignalSink::Nats {
        client: client.clone(),
        subject: arc_nodeproto::signals_subject(&node_id),
    };
    let reporter = tokio::spawn(arc_media::report::run(log.clone(), node_id.clone(), events_rx, signals));
    // The follower starts at the head taken before the node takes requests.
    let follow_from = log.head().await.context("reading the event log's head")?;
    let follower = tokio::spawn(arc_media::follow::run(log.clone(), media.clone(), follow_from));
    let subject = arc_nodeproto::subject(&node_id);
    let mut requests = client.subscribe(subject.clone()).await.context("subscribing to the node's request subject")?;
    let rpc_media = media.clone();
    let rpc_client = client.clone();
    let rpc = tokio::spawn(async move {
        use futures::StreamExt as _;
        while let Some(msg) = requests.next().await {
            let (media, client) = (rpc_media.clone(), rpc_client.clone());
            tokio::spawn(async move {
                let Some(reply_to) = msg.reply else { return };
                // The control plane's trace continues here (its context is in
                // the message's headers).
                let span = tracing::info_span!("node.serve", otel.kind = "server", request = tracing::field::Empty);
                if let Some(headers) = &msg.headers {
                    arc_telemetry::set_parent_from_headers(
                        &span,
                        headers.iter().filter_map(|(k, v)| Some((k.as_ref(), v.first()?.as_str()))),
                    );
                }
                let reply = match arc_nodeproto::decode_request(&msg.payload) {
                    Ok(req) => {
                        span.record("request", req.kind());
                        media.request(req).instrument(span.clone()).await
                    }
                    Err(e) => arc_nodeproto::NodeReply::Error(e.into()),
                };
                if let Err(e) = client.publish(reply_to, arc_nodeproto::encode_reply(&reply).into()).await {
                    tracing::warn!(error = %e, "answering a request");
                }
            });
        }
    });
    println!(
        "  media port    udp {} (announcing {})",
        media.local_addr(),
        if info.public_ips.is_empty() { "the bound address".to_owned() } else { info.public_ips.join(", ") }
    );
    println!("  workers       {}", media.workers());
    println!("  srtp egress   {}", if cli.srtp_egress == SrtpEgress::Arc { "arc (in place)" } else { "rtc" });
    println!("  requests      {subject}");
    let metrics_addr = metrics_listener.local_addr().context("the metrics endpoint's address")?;
    let operator = arc_media::metrics::router(media.clone(), log.clone());
    let metrics_server = tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, operator).await {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    println!("  metrics       http://{metrics_addr}/metrics (health: /healthz, /readyz)");
    let agent_media = media.clone();
    let drain_timeout = std::time::Duration::from_secs(cli.drain_timeout_s);
    arc_media::agent::run(log, node_id, info, Some(agent_media), drain_timeout, async {
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
    // The agent drained and ended the sessions before deregistering.
    rpc.abort();
    follower.abort();
    metrics_server.abort();
    media.shutdown().await;
    let _ = media_task.await;
    // The reporter drains what the sessions' ends produced, then stops.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), reporter).await;
    Ok(())
}
