//! Payloads of media-node events. The aggregate id is the [`NodeId`](crate::NodeId).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;

/// A media node started and announced itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeRegistered {
    /// Where the control plane reaches the node (host:port of its signalling endpoint).
    pub address: String,
    /// Public IPs announced to clients as ICE candidates.
    #[serde(default)]
    pub public_ips: Vec<String>,
    /// CPU architecture, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    /// CPU cores available to the node.
    pub cores: u32,
    /// Most concurrent sessions the node accepts.
    pub capacity: u32,
    /// Arc version the node runs.
    pub version: String,
}

/// Load a node reports every 2 s, on the load board beside the log (not an event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
pub struct NodeLoad {
    pub sessions: u32,
    pub tracks: u32,
    pub packets_in_per_s: u64,
    pub packets_out_per_s: u64,
    pub bits_in_per_s: u64,
    pub bits_out_per_s: u64,
    /// CPU use of the node process, 0–100 per core summed over cores.
    pub cpu_percent: f32,
}

/// A node was alive, with this load. Retired: nodes wrote one every 2 s
/// before load samples moved to the load board; logs from then still carry
/// them, and they still count as "seen".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeHeartbeat {
    pub load: NodeLoad,
}

/// A node accepts no new rooms and waits for its rooms to empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeDraining {
    /// Who asked: `sigterm`, `operator`.
    pub reason: String,
}

/// A draining node accepts new rooms again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeUndrained {}

/// A node missed its heartbeats, or NATS has had no responder on its
/// request subject for a while, and it is considered dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeLost {
    /// The last heartbeat (or registration) seen from it.
    pub last_seen_at: DateTime<Utc>,
    /// Set when the node was declared lost because nothing answered on its
    /// request subject since then ("no responders": its process or its NATS
    /// connection was gone), before its heartbeats ran out. Absent in events
    /// written before this field, and when the heartbeats ran out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable_since: Option<DateTime<Utc>>,
}

/// A node left cleanly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeDeregistered {}

impl EventData for NodeRegistered {
    const TYPE: &'static str = "node.registered";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeHeartbeat {
    const TYPE: &'static str = "node.heartbeat";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeDraining {
    const TYPE: &'static str = "node.draining";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeUndrained {
    const TYPE: &'static str = "node.undrained";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeLost {
    const TYPE: &'static str = "node.lost";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeDeregistered {
    const TYPE: &'static str = "node.deregistered";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
