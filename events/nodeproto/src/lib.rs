//! The protocol between Arc's control plane and its media nodes: what the
//! control plane asks a node (open a WHIP/WHEP session — or a session
//! attached to a signalling participant, or a screen share —, trickle, close, end a
//! participant's media, mute a track, list sessions) and what the node
//! answers. The same typed messages travel as JSON over NATS request/reply
//! (`arc.media.<node>.rpc`) and through an in-process [`NodeService`] in
//! `arc-control dev`.
//!
//! Neither side imports the other: `arc-control` and `arc-media` both depend
//! on this crate (and on `arc-events` for ids and leave reasons).
//!
//! # Layout
//! - this file: [`NodeRequest`], [`NodeReply`], their payloads,
//!   [`SessionError`], the wire form ([`encode_request`], [`decode_request`],
//!   …, carrying [`PROTOCOL_VERSION`]), the NATS [`subject`], [`NodeService`].
//! - [`schema`]: JSON Schemas of the wire form, checked in under
//!   `schemas/node/` (`tests/schemas.rs` fails when they drift).
//!
//! Versioning: every message on the wire is `{"v": <version>, …}`. A node
//! refuses a request of a newer version with [`SessionError::UnsupportedVersion`]
//! (so a control plane upgraded first gets a clear error, not a guess);
//! adding an optional field does not bump the version.

use arc_events::room::LeaveReason;
use arc_events::{MediaSessionId, NodeId, ParticipantIdentity, ParticipantSid, RoomId, TrackId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod schema;

/// The version of the messages this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Most sessions in one [`NodeReply::Sessions`] page (keeps a reply far below
/// NATS's default 1 MiB payload limit).
pub const SESSIONS_PAGE_MAX: usize = 1000;
/// Largest SDP offer a node takes.
pub const OFFER_BYTES_MAX: usize = arc_events::limits::SDP_OFFER_BYTES_MAX;
/// Largest trickle-ICE fragment a node takes.
pub const FRAGMENT_BYTES_MAX: usize = arc_events::limits::SDP_FRAGMENT_BYTES_MAX;

/// Open a WebRTC session (a WHIP publisher or a WHEP player).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenSession {
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    /// The participant session (in the log) this media session belongs to.
    pub sid: ParticipantSid,
    pub role: Role,
    /// The client's SDP offer.
    pub offer: String,
    /// The session belongs to a participant that lives on without it (one
    /// joined through signalling, which opens and closes media sessions as
    /// it publishes and subscribes): when it ends, its tracks and
    /// subscriptions end, the participant stays. A WHIP/WHEP session
    /// (`false`) is its participant: when it ends, the participant leaves.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
    /// A publish session that shares a screen: its video is a screen share
    /// (its audio the screen's); players ask for it with `Role::Subscribe {
    /// screen: true }`, apart from the camera and microphone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub screen: bool,
}

/// Publish, or play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Role {
    Publish,
    /// Play the room's latest publisher, or the named one.
    Subscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant: Option<ParticipantIdentity>,
        /// Play a screen share (a publish session opened with `screen`)
        /// rather than a camera and microphone.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        screen: bool,
    },
}

impl Role {
    /// Whether this is a publishing (WHIP) session.
    pub fn is_publish(&self) -> bool {
        matches!(self, Self::Publish)
    }
}

/// The node's answer to [`NodeRequest::Open`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionOpened {
    pub session_id: MediaSessionId,
    pub answer: String,
    /// The entity tag of the session's ICE state (RFC 9725 §4.3.1: WHIP/WHEP
    /// answer it as `ETag`; it changes on every ICE restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Why a session could not be opened or changed. These are answers to what
/// a client sent (or to the node's state), never a node failure in disguise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum SessionError {
    /// The offer (or fragment) is not SDP the node can take; `reason` names
    /// the m-line and what is wrong.
    #[error("bad SDP: {reason}")]
    BadSdp { reason: String },
    /// No offered codec is one the node forwards.
    #[error("no codec in common: offered {offered:?}, this node supports {supported:?}")]
    NoCommonCodec { offered: Vec<String>, supported: Vec<String> },
    /// No such session on this node.
    #[error("no such session")]
    NotFound,
    /// The node is draining and takes no new rooms.
    #[error("the node is draining and takes no new rooms")]
    Draining,
    /// The node holds as many sessions as it may (`limit` names the cap).
    #[error("the node is full: {limit} sessions")]
    Full { limit: u32 },
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Unavailable,
    /// The request is of a newer protocol version than the node speaks.
    #[error("the node speaks protocol version {supported}, the request is version {requested}")]
    UnsupportedVersion { requested: u32, supported: u32 },
    /// The request could not be read.
    #[error("malformed request: {reason}")]
    Malformed { reason: String },
    /// Something failed inside the node.
    #[error("{message}")]
    Internal { message: String },
    /// The request named an ICE state (`If-Match`) that is no longer the
    /// session's: an ICE restart happened meanwhile. `etag` is the current one.
    #[error("the session's ICE state is {etag}, not the one the request names")]
    PreconditionFailed { etag: String },
    /// The session's ICE cannot be restarted in place (`reason` says why);
    /// the client opens a new session instead.
    #[error("ICE restart not possible: {reason}")]
    RestartUnsupported { reason: String },
}

/// The video quality a player asks for, when the publisher sends simulcast
/// layers: `low` the smallest layer, `medium` the middle one, `high` the best.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VideoQuality {
    Low,
    Medium,
    #[default]
    High,
}

/// A request to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum NodeRequest {
    Open(OpenSession),
    /// Trickle ICE or an ICE restart (new ICE credentials): an
    /// `application/trickle-ice-sdpfrag` body (RFC 8840, RFC 9725 §4.3).
    /// `if_match`: the `If-Match` the client sent (`*` or an entity tag),
    /// checked against the session's current one.
    Patch {
        session_id: MediaSessionId,
        fragment: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_match: Option<String>,
    },
    /// The client left (WHIP/WHEP DELETE).
    Close {
        session_id: MediaSessionId,
    },
    /// End sessions in a room: one participant session's (`sid`), or every
    /// one (the log already says they left; this stops their media). Sessions
    /// are named by sid, never by identity: an identity that left and came
    /// back is a new participant session whose media must not be touched.
    End {
        room_id: RoomId,
        #[serde(default)]
        sid: Option<ParticipantSid>,
        reason: LeaveReason,
    },
    /// Stop (or resume) forwarding a published track.
    Mute {
        track_id: TrackId,
        muted: bool,
    },
    /// The sessions the node holds now (for reconciliation with the log), a
    /// page of at most [`SESSIONS_PAGE_MAX`] ordered by session id, after the
    /// given one.
    Sessions {
        #[serde(default)]
        after: Option<MediaSessionId>,
    },
    /// A participant's permissions changed (the log says so): its publishing
    /// sessions end unless `publish`, its playing sessions unless `subscribe`
    /// (reason `removed`: a session that was the participant's only one
    /// ends the participant, as for WHIP/WHEP; a signalling participant
    /// stays, its tracks unpublished). Answers `Ended`.
    Restrict {
        room_id: RoomId,
        sid: ParticipantSid,
        publish: bool,
        subscribe: bool,
    },
    /// What a player wants of the video it plays (a simulcast publisher's
    /// layers): at most `quality`, and no larger than needed for the size it
    /// renders at (`width` × `height` pixels, when given). Answers `Preferred`.
    Prefer {
        session_id: MediaSessionId,
        #[serde(default)]
        quality: VideoQuality,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    /// Whether the node is there: any answer says it is (a node older than
    /// this request answers `Error`), and NATS's "no responders" says its
    /// process or connection is gone (the control plane's fast liveness
    /// probe).
    Ping,
}

impl NodeRequest {
    /// The request's operation, as on the wire (`op`): for spans and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Open(_) => "open",
            Self::Patch { .. } => "patch",
            Self::Close { .. } => "close",
            Self::End { .. } => "end",
            Self::Mute { .. } => "mute",
            Self::Sessions { .. } => "sessions",
            Self::Restrict { .. } => "restrict",
            Self::Prefer { .. } => "prefer",
            Self::Ping => "ping",
        }
    }
}

/// One media session as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SessionInfo {
    pub session_id: MediaSessionId,
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    pub sid: ParticipantSid,
    pub role: Role,
    pub connected: bool,
    /// Milliseconds since the session was opened.
    pub age_ms: u64,
}

/// A node's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum NodeReply {
    Opened(SessionOpened),
    /// A trickle fragment was taken (`fragment` none), or an ICE restart
    /// answered: `fragment` carries the node's new credentials, `etag` the
    /// session's new entity tag.
    Patched {
        #[serde(default)]
        fragment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag: Option<String>,
    },
    Closed,
    Ended {
        sessions: usize,
    },
    Muted {
        found: bool,
    },
    /// A page of sessions; `more` when another page follows.
    Sessions {
        sessions: Vec<SessionInfo>,
        more: bool,
    },
    /// The answer to [`NodeRequest::Prefer`]: `found` when the session
    /// exists and plays video.
    Preferred {
        found: bool,
    },
    /// The answer to [`NodeRequest::Ping`].
    Pong,
    Error(SessionError),
}

/// A message as it travels: the protocol version beside the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Wire<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub v: u32,
    #[serde(flatten)]
    pub msg: T,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON of the expected shape.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A newer version than this build speaks.
    #[error("protocol version {requested} is newer than this build's {supported}")]
    Newer { requested: u32, supported: u32 },
}

impl From<ProtocolError> for SessionError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Malformed(reason) => Self::Malformed { reason },
            ProtocolError::Newer { requested, supported } => Self::UnsupportedVersion { requested, supported },
        }
    }
}

fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a, T> {
        v: u32,
        #[serde(flatten)]
        msg: &'a T,
    }
    // INVARIANT: these types serialize to JSON without failing (no maps with
    // non-string keys, no custom serializers that can fail).
    serde_json::to_vec(&Out { v: PROTOCOL_VERSION, msg }).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtocolError> {
    #[derive(Deserialize)]
    struct Version {
        #[serde(default = "one")]
        v: u32,
    }
    fn one() -> u32 {
        1
    }
    let version: Version = serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if version.v > PROTOCOL_VERSION {
        return Err(ProtocolError::Newer { requested: version.v, supported: PROTOCOL_VERSION });
    }
    serde_json::from_slice(bytes).map_err(|e| ProtocolError::Malformed(e.to_string()))
}

/// A request as bytes for NATS.
pub fn encode_request(req: &NodeRequest) -> Vec<u8> {
    encode(req)
}

/// A request from NATS bytes (network input: never panics).
pub fn decode_request(bytes: &[u8]) -> Result<NodeRequest, ProtocolError> {
    decode(bytes)
}

/// A reply as bytes for NATS.
pub fn encode_reply(reply: &NodeReply) -> Vec<u8> {
    encode(reply)
}

/// A reply from NATS bytes (network input: never panics).
pub fn decode_reply(bytes: &[u8]) -> Result<NodeReply, ProtocolError> {
    decode(bytes)
}

/// What a node tells the rooms' signalling as it happens, beside the log
/// (ephemeral, never appended): published on core NATS to
/// [`signals_subject`] by a node of its own, handed over in process by the
/// node embedded in `dev`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", tag = "signal")]
pub enum RoomSignal {
    /// The room's active speakers changed: who speaks now, loudest first
    /// (empty: nobody). Sent when the set or its order changes, at most
    /// every observation interval (half a second).
    Speakers { room_id: RoomId, speakers: Vec<SpeakerLevel> },
    /// A participant's connection quality on this node (the worse of its
    /// legs: loss its publisher's packets show or its subscriber reports,
    /// and round trips), evaluated every two seconds; sent when it changes
    /// and again every ten seconds.
    Quality { room_id: RoomId, sid: ParticipantSid, quality: ConnectionQuality },
    /// Dynacast: which simulcast layers of a published video track its
    /// publisher (participant `sid`, media session `session_id`) should send,
    /// smallest first. Layers above the best any player asks for (by quality
    /// and rendered size) pause three seconds after the last one wanting them
    /// stopped, and resume as soon as one does; the lowest always sends. Sent
    /// on a change and again every ten seconds once anything was said.
    Layers { room_id: RoomId, sid: ParticipantSid, session_id: MediaSessionId, track: TrackId, layers: Vec<LayerState> },
}

/// Whether one simulcast layer (by its RTP stream id) should be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LayerState {
    pub rid: String,
    pub active: bool,
}

/// How well a participant's media gets through (ordered: better first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionQuality {
    /// Loss up to 2 %, round trips up to 300 ms.
    Excellent,
    /// Loss up to 8 %, round trips up to 600 ms.
    Good,
    /// Worse.
    Poor,
}

/// One active speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SpeakerLevel {
    pub sid: ParticipantSid,
    /// Mean loudness while speaking in the last interval: 0 (silence) to 1 (0 dBov).
    pub level: f32,
}

impl RoomSignal {
    /// The room it is about.
    pub fn room_id(&self) -> &RoomId {
        match self {
            Self::Speakers { room_id, .. } | Self::Quality { room_id, .. } | Self::Layers { room_id, .. } => room_id,
        }
    }
}

/// A room signal as bytes for NATS.
pub fn encode_signal(signal: &RoomSignal) -> Vec<u8> {
    encode(signal)
}

/// A room signal from NATS bytes (network input: never panics).
pub fn decode_signal(bytes: &[u8]) -> Result<RoomSignal, ProtocolError> {
    decode(bytes)
}

/// The core NATS subject a node publishes its room signals on.
pub fn signals_subject(node_id: &NodeId) -> String {
    format!("arc.media.{node_id}.signals")
}

/// Every node's room signals (what the control plane subscribes to).
pub const SIGNALS_SUBJECT_ALL: &str = "arc.media.*.signals";

/// The NATS subject a node answers requests on.
pub fn subject(node_id: &NodeId) -> String {
    format!("arc.media.{node_id}.rpc")
}

/// A media node reachable in process (the node embedded in `arc-control dev`).
#[async_trait::async_trait]
pub trait NodeService: Send + Sync + std::fmt::Debug {
    /// Answers one request, as the node would over NATS.
    async fn serve(&self, req: NodeRequest) -> NodeReply;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> NodeRequest {
        NodeRequest::Open(OpenSession {
            room_id: RoomId::parse("rm_1").expect("id"),
            identity: ParticipantIdentity::parse("ann").expect("id"),
            sid: ParticipantSid::parse("pa_1").expect("id"),
            role: Role::Subscribe { participant: None, screen: false },
            offer: "v=0\r\n".into(),
            attached: false,
            screen: false,
        })
    }

    #[test]
    fn messages_round_trip_with_their_version() {
        let bytes = encode_request(&open());
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        assert!(text.contains("\"v\":1"), "{text}");
        assert!(text.contains("\"op\":\"open\""), "{text}");
        assert_eq!(decode_request(&bytes), Ok(open()));
        let reply = NodeReply::Error(SessionError::Full { limit: 10 });
        assert_eq!(decode_reply(&encode_reply(&reply)), Ok(reply));
        // A message without `v` is version 1 (what nodes of the first release sent).
        let old = br#"{"op":"close","session_id":"se_1"}"#;
        assert_eq!(
            decode_request(old),
            Ok(NodeRequest::Close { session_id: MediaSessionId::parse("se_1").expect("id") })
        );
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        assert!(matches!(decode_request(b"garbage"), Err(ProtocolError::Malformed(_))));
        assert!(matches!(decode_request(br#"{"op":"open"}"#), Err(ProtocolError::Malformed(_))));
        assert!(matches!(decode_request(br#"{"op":"close","session_id":"se 1"}"#), Err(ProtocolError::Malformed(_))));
        assert_eq!(
            decode_request(br#"{"v":9,"op":"close","session_id":"se_1"}"#),
            Err(ProtocolError::Newer { requested: 9, supported: PROTOCOL_VERSION })
        );
        assert_eq!(
            SessionError::from(ProtocolError::Newer { requested: 9, supported: 1 }),
            SessionError::UnsupportedVersion { requested: 9, supported: 1 }
        );
    }
}
