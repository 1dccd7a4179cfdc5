//! The media node embedded in `arc-control dev`, so one process is a whole
//! platform. The only place the control plane touches `arc-media` (behind the
//! `embedded-node` feature, on by default): everything else speaks the node
//! protocol (`arc-nodeproto`) and would reach a node over NATS the same way.

use std::sync::Arc;

use arc_eventlog::EventLog;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::ControlError;
use crate::server::DEV_NODE_ID;

/// A running embedded node.
#[derive(Debug, Clone)]
pub struct EmbeddedNode {
    handle: arc_media::media::MediaHandle,
}

impl EmbeddedNode {
    /// The UDP address of its media port.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.handle.local_addr()
    }

    /// The node as the media router reaches it.
    pub fn service(&self) -> Arc<dyn arc_nodeproto::NodeService> {
        Arc::new(self.handle.clone())
    }

    /// The node's operator endpoint (`/metrics`, `/healthz`, `/readyz`, as a
    /// separate `arc-media` serves them), for `dev` to mount under `/media`.
    pub fn operator_router(&self, log: Arc<dyn EventLog>) -> axum::Router {
        arc_media::metrics::router(self.handle.clone(), log)
    }

    /// Ends its sessions (reason `node_shutdown`) and stops it.
    pub async fn shutdown(&self) {
        self.handle.shutdown().await;
    }
}

/// Binds the media port and starts the node's tasks (media, reporter, the
/// log follower, the agent) in `tasks`.
pub async fn start(
    config: &Config,
    log: Arc<dyn EventLog>,
    signals: tokio::sync::broadcast::Sender<Arc<arc_nodeproto::RoomSignal>>,
    tasks: &mut JoinSet<()>,
) -> Result<EmbeddedNode, ControlError> {
    // INVARIANT: DEV_NODE_ID is a valid token literal.
    let node_id = arc_events::NodeId::parse(DEV_NODE_ID).expect("valid literal id");
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let media_config = arc_media::media::MediaConfig {
        udp_listen: config.media_udp,
        announce: config.media_announce.clone(),
        sessions_max: config.media_capacity,
        workers: config.media_workers,
        own_srtp_egress: config.media_own_srtp_egress,
    };
    let (handle, media_task) = arc_media::media::start(media_config, events_tx)
        .await
        .map_err(|e| ControlError::Config(format!("cannot bind the media port {}: {e}", config.media_udp)))?;
    let port = handle.local_addr().port();
    tasks.spawn(async move {
        let _ = media_task.await;
    });
    tasks.spawn(arc_media::report::run(
        log.clone(),
        node_id.clone(),
        events_rx,
        arc_media::report::SignalSink::Local(signals),
    ));
    // The follower starts at the head taken before the node accepts sessions.
    let follow_from = log.head().await.map_err(ControlError::from)?;
    tasks.spawn(arc_media::follow::run(log.clone(), handle.clone(), follow_from));
    let agent_media = Some(handle.clone());
    let capacity = config.media_capacity;
    let public_ips = config.media_announce.iter().map(ToString::to_string).collect();
    tasks.spawn(async move {
        let info = arc_events::node::NodeRegistered {
            address: format!("embedded (media udp port {port})"),
            public_ips,
            arch: std::env::consts::ARCH.into(),
            cores: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            capacity,
            version: env!("CARGO_PKG_VERSION").into(),
        };
        if let Err(e) =
            arc_media::agent::run(log, node_id, info, agent_media, std::time::Duration::ZERO, std::future::pending())
                .await
        {
            tracing::error!(error = %e, "the embedded media node stopped");
        }
    });
    Ok(EmbeddedNode { handle })
}
