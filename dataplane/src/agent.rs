//! One media node's life: registered, drained and deregistered in the log;
//! its load put on the load board every 2 s (a heartbeat, not an event).
//!
//! Commands go through the node aggregate (`arc_events::aggregate::node`), so
//! the rules — a lost node must register again, draining is idempotent — live
//! in one place. If the control plane declared this node lost (it was paused
//! or cut off), the agent sees it at its next beat and registers anew.

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, ExecuteError, LoadSample, Repository};
use arc_events::aggregate::node::{HEARTBEAT_INTERVAL_S, Node, NodeCommand, NodeError, NodeStatus};
use arc_events::node::{NodeLoad, NodeRegistered};
use arc_events::{Actor, AggregateRef, CommandMeta, NodeId};

use crate::load::CpuMeter;

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The log refused or failed the registration.
    #[error("registering node {node}: {source}")]
    Register {
        node: NodeId,
        #[source]
        source: ExecuteError<NodeError>,
    },
}

/// Runs one node's registration and heartbeats until `shutdown` resolves,
/// then deregisters.
pub async fn run(
    log: Arc<dyn EventLog>,
    node_id: NodeId,
    info: NodeRegistered,
    media: Option<crate::media::MediaHandle>,
    drain_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let board = log.load_board();
    let repo = Repository::<Node>::new(log);
    let aggregate = AggregateRef::from(&node_id);
    let meta = || CommandMeta::new(Actor::Node { node_id: node_id.clone() }, chrono::Utc::now());
    let register = NodeCommand::Register(info.clone());
    repo.execute(&aggregate, &register, &meta())
        .await
        .map_err(|source| AgentError::Register { node: node_id.clone(), source })?;
    tracing::info!(node = %node_id, "registered");

    let mut cpu = CpuMeter::new();
    let mut last: Option<(crate::media::MediaStats, std::time::Instant)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(HEARTBEAT_INTERVAL_S as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        let mut load = NodeLoad { cpu_percent: cpu.sample(), ..NodeLoad::default() };
        if let Some(media) = &media {
            let now = std::time::Instant::now();
            let stats = media.stats().await;
            load.sessions = u32::try_from(stats.sessions).unwrap_or(u32::MAX);
            load.tracks = u32::try_from(stats.tracks).unwrap_or(u32::MAX);
            if let Some((prev, at)) = last {
                let secs = now.saturating_duration_since(at).as_secs_f64().max(0.001);
                let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs) as u64;
                load.packets_in_per_s = rate(stats.packets_in, prev.packets_in);
                load.packets_out_per_s = rate(stats.packets_out, prev.packets_out);
                load.bits_in_per_s = rate(stats.bytes_in, prev.bytes_in) * 8;
                load.bits_out_per_s = rate(stats.bytes_out, prev.bytes_out) * 8;
            }
            last = Some((stats, now));
        }
        // The log or the board unreachable for now: keep trying, the node keeps serving.
        if let Err(e) = board.put(&node_id, &LoadSample { at: chrono::Utc::now(), load }).await {
            tracing::warn!(node = %node_id, error = %e, "heartbeat failed");
        }
        match repo.load(&aggregate).await {
            // Deregistered while running: an older process under this id
            // shut down after this one registered.
            Ok((state, _))
                if matches!(state.status, NodeStatus::Lost | NodeStatus::Absent | NodeStatus::Deregistered) =>
            {
                tracing::warn!(node = %node_id, "the control plane lost track of this node; registering again");
                if let Err(e) = repo.execute(&aggregate, &register, &meta()).await {
                    tracing::warn!(node = %node_id, error = %e, "re-registration failed; will retry");
                }
            }
            // An operator may drain or undrain the node through the log.
            Ok((state, _)) => {
                if let Some(media) = &media {
                    media.set_draining(state.status == NodeStatus::Draining).await;
                }
            }
            Err(e) => tracing::debug!(node = %node_id, error = %e, "reading the node's state failed"),
        }
    }
    // Drain: no new rooms, wait (heartbeating) for the rooms to empty up to
    // the deadline; then the remaining sessions end and their clients move.
    if let Some(media) = &media {
        match repo.execute(&aggregate, &NodeCommand::Drain { reason: "sigterm".into() }, &meta()).await {
            Ok(_) => {
                tracing::info!(node = %node_id, sessions = media.session_count(), deadline_s = drain_timeout.as_secs(), "draining")
            }
            Err(e) => tracing::warn!(node = %node_id, error = %e, "recording the drain failed"),
        }
        media.set_draining(true).await;
        let deadline = tokio::time::Instant::now() + drain_timeout;
        let mut beat = tokio::time::interval(Duration::from_millis(250));
        let mut last_beat = tokio::time::Instant::now();
        while media.session_count() > 0 && tokio::time::Instant::now() < deadline {
            beat.tick().await;
            if last_beat.elapsed() >= Duration::from_secs(HEARTBEAT_INTERVAL_S as u64) {
                last_beat = tokio::time::Instant::now();
                let load = NodeLoad { sessions: media.session_count() as u32, ..NodeLoad::default() };
                if let Err(e) = board.put(&node_id, &LoadSample { at: chrono::Utc::now(), load }).await {
                    tracing::warn!(node = %node_id, error = %e, "heartbeat while draining failed");
                }
            }
        }
        let left = media.session_count();
        if left > 0 {
            tracing::info!(node = %node_id, sessions = left, "drain deadline reached; ending the remaining sessions");
        }
        media.shutdown().await;
    }
    match repo.execute(&aggregate, &NodeCommand::Deregister, &meta()).await {
        Ok(_) => tracing::info!(node = %node_id, "deregistered"),
        Err(e) => tracing::warn!(node = %node_id, error = %e, "deregistration failed"),
    }
    Ok(())
}
