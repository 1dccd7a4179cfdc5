//! Payloads of recording events. The aggregate id is the [`RecordingId`](crate::RecordingId).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::{NodeId, RoomId, TrackId};

/// A recording started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordingStarted {
    pub room_id: RoomId,
    /// One track, or the whole room when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<TrackId>,
    /// The node writing the recording.
    pub node_id: NodeId,
}

/// A recording finished and its file is complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordingFinished {
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// Where the file is, relative to the recordings store.
    pub location: String,
}

/// A recording failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RecordingFailed {
    pub error: String,
}

impl EventData for RecordingStarted {
    const TYPE: &'static str = "recording.started";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Recording;
}
impl EventData for RecordingFinished {
    const TYPE: &'static str = "recording.finished";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Recording;
}
impl EventData for RecordingFailed {
    const TYPE: &'static str = "recording.failed";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Recording;
}
