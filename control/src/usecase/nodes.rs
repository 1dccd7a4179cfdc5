//! Media nodes as operators see and steer them: the list with each node's
//! latest load (the read model overlaid with the load board), drain and
//! undrain.

use arc_eventlog::Position;
use arc_events::aggregate::node::NodeCommand;
use arc_events::{Actor, NodeId};

use super::{Services, UseCaseError, UseCaseResult, queries};
use crate::projection::nodes::NodeRow;

/// Every node (at most 1,000, by id), with its load and last-seen time from
/// its latest sample on the load board when that sample is from its current
/// registration and it is live; without the board, as the read model has it.
pub async fn nodes(s: &Services) -> UseCaseResult<Vec<NodeRow>> {
    let mut rows = queries::nodes(&s.db).await?;
    let samples = s.log.load_board().latest().await.unwrap_or_default();
    for n in &mut rows {
        let live = n.state == "up" || n.state == "draining";
        let sample = NodeId::parse(&n.node_id).ok().and_then(|id| samples.get(&id));
        if let Some(sample) = sample.filter(|x| live && x.at.timestamp_millis() >= n.registered_at_ms) {
            n.last_seen_ms = n.last_seen_ms.max(sample.at.timestamp_millis());
            n.sessions = i64::from(sample.load.sessions);
            n.tracks = i64::from(sample.load.tracks);
            n.bits_in_per_s = i64::try_from(sample.load.bits_in_per_s).unwrap_or(i64::MAX);
            n.bits_out_per_s = i64::try_from(sample.load.bits_out_per_s).unwrap_or(i64::MAX);
            n.cpu_percent = f64::from(sample.load.cpu_percent);
        }
    }
    Ok(rows)
}

/// Drains a node (no new rooms; its rooms carry on until they empty) or
/// undrains it. The node reads its state from the log at its next beat.
pub async fn set_drain(s: &Services, actor: &Actor, node_id: &str, drain: bool) -> UseCaseResult<Option<Position>> {
    let node = NodeId::parse(node_id).map_err(|e| UseCaseError::invalid("node_id", e))?;
    let command = if drain { NodeCommand::Drain { reason: "operator".into() } } else { NodeCommand::Undrain };
    let meta = super::command_meta(actor);
    let done = s.nodes.execute(&(&node).into(), &command, &meta).await?;
    Ok(done.appended.map(|a| a.last))
}
