//! Payloads of track events. The aggregate id is the [`TrackId`](crate::TrackId).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::{ParticipantIdentity, ParticipantSid, RoomId};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Audio,
    Video,
}

/// Where a track's media comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrackSource {
    Camera,
    Microphone,
    ScreenShare,
    ScreenShareAudio,
    /// An ingest gateway (RTMP, RTSP, SIP).
    Ingest,
    /// A source named by a newer version of Arc.
    #[serde(other)]
    Other,
}

/// Who changed a track's mute state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MutedBy {
    Publisher,
    Moderator,
}

/// A participant started publishing a track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackPublished {
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    pub sid: ParticipantSid,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// Negotiated codec MIME type, e.g. `video/VP8`.
    pub codec: String,
    /// Whether the publisher sends simulcast layers.
    #[serde(default)]
    pub simulcast: bool,
}

/// A track was muted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackMuted {
    pub by: MutedBy,
}

/// A track was unmuted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackUnmuted {
    pub by: MutedBy,
}

/// A track stopped being published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackUnpublished {
    /// Free-form reason, e.g. `client`, `participant_left`.
    pub reason: String,
}

/// A participant started receiving the track (its media node forwards it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionStarted {
    /// Who receives it.
    pub subscriber: ParticipantIdentity,
    /// The receiving participant's session.
    pub subscriber_sid: ParticipantSid,
}

/// A participant stopped receiving the track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionEnded {
    pub subscriber: ParticipantIdentity,
    pub subscriber_sid: ParticipantSid,
    /// Free-form reason, e.g. `client_left`, `unpublished`, `switched`.
    pub reason: String,
}

impl EventData for SubscriptionStarted {
    const TYPE: &'static str = "track.subscription_started";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Track;
}
impl EventData for SubscriptionEnded {
    const TYPE: &'static str = "track.subscription_ended";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Track;
}

impl EventData for TrackPublished {
    const TYPE: &'static str = "track.published";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Track;
}
impl EventData for TrackMuted {
    const TYPE: &'static str = "track.muted";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Track;
}
impl EventData for TrackUnmuted {
    const TYPE: &'static str = "track.unmuted";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Track;
}
impl EventData for TrackUnpublished {
    const TYPE: &'static str = "track.unpublished";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Track;
}
