//! Payloads of media-node events. The aggregate id is the [`NodeId`](crate::NodeId).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::{ParticipantIdentity, ParticipantSid, RoomId, TrackId};
use crate::room::LeaveReason;
use crate::track::TrackPublished;

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

// What a node saw happen to the media it carries. A node appends these to
// its own aggregate only (its NATS credentials allow no other subject); the
// control plane's node-report reactor (`arc-control`'s `reports.rs`) checks
// each against the room — the session it names must be placed on that node —
// and turns it into the room's or track's own event, with the node as actor
// and the report as cause.

/// The node started forwarding a track a participant publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeTrackPublished {
    pub track_id: TrackId,
    /// The track as its `track.published` will describe it (`sid`: the
    /// publishing session, placed on this node).
    #[serde(flatten)]
    pub track: TrackPublished,
}

/// The node stopped forwarding a published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeTrackUnpublished {
    pub track_id: TrackId,
    /// Why, e.g. `client_left`, `participant_left`.
    pub reason: String,
}

/// The node started forwarding a track to a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSubscriptionStarted {
    pub track_id: TrackId,
    pub subscriber: ParticipantIdentity,
    /// The receiving session (placed on this node).
    pub subscriber_sid: ParticipantSid,
}

/// The node stopped forwarding a track to a participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSubscriptionEnded {
    pub track_id: TrackId,
    pub subscriber: ParticipantIdentity,
    pub subscriber_sid: ParticipantSid,
    /// Why, e.g. `client_left`, `unpublished`.
    pub reason: String,
}

/// A participant's media session on the node ended (the participant hung
/// up, went silent, was ended by the control plane, or the node shut down);
/// the participant leaves the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct NodeSessionEnded {
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    pub sid: ParticipantSid,
    pub reason: LeaveReason,
}

impl EventData for NodeTrackPublished {
    const TYPE: &'static str = "node.track_published";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeTrackUnpublished {
    const TYPE: &'static str = "node.track_unpublished";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeSubscriptionStarted {
    const TYPE: &'static str = "node.subscription_started";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeSubscriptionEnded {
    const TYPE: &'static str = "node.subscription_ended";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}
impl EventData for NodeSessionEnded {
    const TYPE: &'static str = "node.session_ended";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Node;
}

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
