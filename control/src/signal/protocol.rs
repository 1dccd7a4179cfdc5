//! The signalling protocol (`/v1/rtc`, a WebSocket): JSON text messages,
//! each an object with the protocol version `v` and a `type`. The schemas in
//! `schemas/signal/` are generated from these types and checked by a drift
//! test (`ARC_UPDATE_SCHEMAS=1 cargo test -p arc-control --test openapi`
//! rewrites them).
//!
//! Version 1 carries the room's state and its changes (participants, their
//! permissions and metadata, their tracks, the room's metadata), the
//! participant's own metadata, data messages between participants,
//! media sessions opened and closed over the socket (complete offers, no
//! trickle), their ICE restarts, keep-alive and leaving.

use arc_events::participant::Permissions;
use arc_events::room::LeaveReason;
use arc_events::track::{MediaKind, MutedBy, TrackSource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The protocol version this server speaks.
pub const VERSION: u16 = 1;

/// Largest client message accepted (bytes of JSON text); a larger one
/// answers `error` (`too_large`) and the socket stays.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 64 * 1024;

/// Largest WebSocket message read at all: a larger one closes the socket
/// (close code 1009, "message too big"), as the WebSocket layer must.
pub const FRAME_BYTES_MAX: usize = 1024 * 1024;

/// A message from the client: `{"v": 1, "type": "ping", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct ClientEnvelope {
    /// The protocol version the client speaks (1).
    pub v: u16,
    #[serde(flatten)]
    pub message: ClientMessage,
}

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Keep-alive: the server answers `pong` with the same `id`.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Sets the participant's own display name and/or metadata (what is
    /// omitted stays); everyone in the room sees `participant_updated`.
    UpdateMetadata {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<String>,
    },
    /// A data message to everyone else in the room, or to the listed
    /// identities (needs the `publish_data` permission). Ephemeral: never in
    /// the event log; delivered to the sockets open now.
    Data {
        payload: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        to: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// Opens a media session to publish: `sdp` is an offer (its ICE
    /// candidates are not needed: the nodes are ICE-lite and learn the
    /// client's addresses from its connectivity checks); the server answers
    /// `answer` with the same `id`. Needs the `publish` permission.
    Publish {
        id: u64,
        sdp: String,
        /// The offer shares a screen (its video a screen share, its audio the
        /// screen's), beside the camera and microphone.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        screen: bool,
    },
    /// Opens a media session to receive the room's latest publisher, or the
    /// one named by `participant` (an identity); answered like `publish`.
    /// Needs the `subscribe` permission.
    Subscribe {
        id: u64,
        sdp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant: Option<String>,
        /// Receive the participant's screen share rather than its camera and microphone.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        screen: bool,
    },
    /// Closes one of this socket's media sessions; its tracks are
    /// unpublished, its subscriptions end, the participant stays.
    CloseMedia { session_id: String },
    /// What this socket's player session (`session_id`) wants of the video
    /// it plays, when the publisher sends simulcast layers: at most
    /// `quality` (`low`, `medium`, `high`: the default), and no larger than
    /// the size it renders at (`width` × `height` pixels, when given). The
    /// node moves the player to that layer at the layer's next keyframe.
    /// Nothing answers it unless it fails (`error`).
    SetPreferredQuality {
        session_id: String,
        #[serde(default)]
        quality: arc_nodeproto::VideoQuality,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
    },
    /// Restarts ICE on one of this socket's media sessions (its path broke:
    /// ICE failed, the network changed): `ufrag` and `pwd` are the client's
    /// new ICE credentials, from an offer made for an ICE restart. Answered
    /// `ice_restarted` with the same `id`; the session, its tracks and
    /// subscriptions stay, nobody sees a leave.
    RestartIce { id: u64, session_id: String, ufrag: String, pwd: String },
    /// Moderation (the token's `admin` grant): mutes or unmutes another's
    /// track; everyone sees `track_muted`.
    MuteTrack { track_id: String, muted: bool },
    /// Moderation: removes a participant (reason `removed`); its socket gets
    /// `removed`, everyone sees `participant_left`.
    RemoveParticipant { identity: String },
    /// Moderation: sets what a participant may do from now on (its new
    /// media requests are checked against it); everyone sees
    /// `participant_updated`. Taking `publish` away ends its publishing
    /// sessions (its tracks are unpublished), taking `subscribe` away its
    /// playing ones: the node follows the log. The participant stays.
    UpdatePermissions { identity: String, permissions: arc_events::participant::Permissions },
    /// Moderation: closes the room for everyone (`room_closed`).
    CloseRoom,
    /// Leaves the room (reason `client_left`); the server closes the socket.
    Leave,
}

/// Largest data message payload (bytes of UTF-8).
pub const DATA_PAYLOAD_BYTES_MAX: usize = 15 * 1024;
/// Most identities one data message may be addressed to.
pub const DATA_ADDRESSEES_MAX: usize = 100;
/// Longest data message topic (bytes).
pub const DATA_TOPIC_BYTES_MAX: usize = 128;

/// A message from the server: `{"v": 1, "type": "join", …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServerEnvelope {
    /// The protocol version of the server (1).
    pub v: u16,
    #[serde(flatten)]
    pub message: ServerMessage,
}

impl ServerEnvelope {
    /// The JSON text of `message` at this server's version.
    pub fn text(message: ServerMessage) -> String {
        // INVARIANT: these types hold only strings, numbers, booleans and
        // collections of them: they always serialize.
        serde_json::to_string(&Self { v: VERSION, message }).expect("server messages serialize")
    }
}

/// What the server tells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first message: the room, who the client is, who is there with
    /// their tracks.
    Join {
        room: RoomInfo,
        /// The client's own session (its permissions are what it may do).
        participant: ParticipantInfo,
        /// Everyone else in the room now.
        participants: Vec<ParticipantInfo>,
        /// STUN/TURN servers for the client's peer connections (the
        /// operator's `--stun-urls` / `--turn-urls`; TURN with credentials
        /// for this participant, good for `--turn-ttl-s`). Empty: the media
        /// nodes are reached directly on their announced addresses.
        ice_servers: Vec<IceServer>,
        /// The token's `admin` grant: the moderation requests are open to it.
        #[serde(default)]
        moderator: bool,
        /// Give it back (`/v1/rtc?access_token=…&resume=…`) after the socket
        /// dropped, within the resume window (`--signal-timeout-s`): the
        /// session goes on — same participant, media sessions untouched, no
        /// leave or join for the others. A new one comes with every `join`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        resume_token: String,
        /// This socket took over an earlier socket's session (a resume);
        /// `false`: a new session (a resume that was too late starts afresh).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// The whole state again, replacing what the client knew (after the
    /// server fell behind the room's changes).
    RoomState {
        room: RoomInfo,
        participant: ParticipantInfo,
        participants: Vec<ParticipantInfo>,
    },
    ParticipantJoined {
        participant: ParticipantInfo,
    },
    /// Its name, metadata or permissions changed (also for the client itself).
    ParticipantUpdated {
        participant: ParticipantInfo,
    },
    ParticipantLeft {
        sid: String,
        identity: String,
        reason: LeaveReason,
    },
    TrackPublished {
        track: TrackInfo,
    },
    TrackUnpublished {
        track_id: String,
        sid: String,
    },
    /// A track was muted or unmuted, by its publisher or a moderator.
    TrackMuted {
        track_id: String,
        sid: String,
        muted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<MutedBy>,
    },
    RoomUpdated {
        metadata: Option<String>,
    },
    /// The client's session ended (removed, kicked, replaced by a newer
    /// session of its identity …); the server closes the socket.
    Removed {
        reason: LeaveReason,
    },
    /// The client's session ended because its media node was lost or shut
    /// down (`node_lost`, `node_shutdown`): the server closes the socket and
    /// the client joins again with the same token — the room is placed on a
    /// live node. Its participant id changes; the others see it leave with
    /// that reason and join again.
    Reconnect {
        reason: LeaveReason,
    },
    /// The room closed; the server closes the socket.
    RoomClosed {
        reason: String,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Who speaks in the room now, loudest first (empty: nobody); sent when
    /// that changes, at most every half second. From the audio levels the
    /// publishers' browsers put on their packets (RFC 6464).
    ActiveSpeakers {
        speakers: Vec<Speaker>,
    },
    /// A participant's connection quality (its own too): the worse direction
    /// of its media on its node, from packet loss (before retransmission
    /// repairs it) and round trips, evaluated every two seconds; sent when
    /// it changes and again every ten seconds.
    ConnectionQuality {
        sid: String,
        identity: String,
        quality: arc_nodeproto::ConnectionQuality,
    },
    /// Dynacast, to a simulcast publisher only: which layers of its track
    /// in media session `session_id` to send (by rid, smallest first). The
    /// node pauses layers no subscriber asks for (by preferred quality and
    /// rendered size) three seconds after the last one wanting them
    /// stopped, and resumes them as soon as one does; the lowest always
    /// sends. The SDK sets its encodings' `active` to match. Said on a
    /// change and again every ten seconds.
    SendLayers {
        session_id: String,
        track_id: String,
        layers: Vec<arc_nodeproto::LayerState>,
    },
    /// A data message from another participant.
    Data {
        from_sid: String,
        from_identity: String,
        payload: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic: Option<String>,
    },
    /// The answer to `publish` or `subscribe` (`id` is the request's).
    Answer {
        id: u64,
        session_id: String,
        sdp: String,
    },
    /// The answer to `restart_ice` (`id` is the request's): the node's new
    /// ICE credentials, to put in place of the old ones in the session's
    /// answer (as its remote description again).
    IceRestarted {
        id: u64,
        session_id: String,
        ufrag: String,
        pwd: String,
    },
    /// A request could not be done; the socket stays open. `id` names the
    /// `publish`, `subscribe` or `restart_ice` request it answers.
    Error {
        code: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

/// The room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomInfo {
    pub room_id: String,
    pub name: String,
    pub metadata: Option<String>,
    pub max_participants: Option<u32>,
}

/// One participant session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ParticipantInfo {
    pub sid: String,
    pub identity: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub permissions: Permissions,
    pub tracks: Vec<TrackInfo>,
    /// When it joined (Unix milliseconds).
    pub joined_at_ms: i64,
}

/// One active speaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Speaker {
    pub sid: String,
    pub identity: String,
    /// How loud, 0 (silence) to 100 (0 dBov).
    pub level: u8,
}

/// One published track.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrackInfo {
    pub track_id: String,
    /// The publishing participant's session.
    pub sid: String,
    pub kind: MediaKind,
    pub source: TrackSource,
    /// e.g. `video/VP8`.
    pub codec: String,
    pub simulcast: bool,
    pub muted: bool,
}

/// A STUN or TURN server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Parses one client message, refusing what is too large, not JSON, of
/// another version or of an unknown type, with a reason to send back.
pub fn parse_client(text: &str) -> Result<ClientMessage, (&'static str, String)> {
    if text.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(("too_large", format!("a message is at most {CLIENT_MESSAGE_BYTES_MAX} bytes")));
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ("bad_json", e.to_string()))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => return Err(("unsupported_version", format!("this server speaks version {VERSION}, not {v}"))),
        None => {
            return Err((
                "bad_message",
                "a message is an object with \"v\" (the protocol version) and \"type\"".into(),
            ));
        }
    }
    serde_json::from_value::<ClientEnvelope>(value).map(|e| e.message).map_err(|e| ("bad_message", e.to_string()))
}

/// Checks a data message's size, addressees and topic against the limits.
pub fn check_data(payload: &str, to: &[String], topic: Option<&str>) -> Result<(), (&'static str, String)> {
    if payload.len() > DATA_PAYLOAD_BYTES_MAX {
        return Err(("too_large", format!("a data payload is at most {DATA_PAYLOAD_BYTES_MAX} bytes")));
    }
    if to.len() > DATA_ADDRESSEES_MAX {
        return Err(("invalid", format!("a data message goes to at most {DATA_ADDRESSEES_MAX} identities")));
    }
    if topic.is_some_and(|t| t.len() > DATA_TOPIC_BYTES_MAX) {
        return Err(("invalid", format!("a topic is at most {DATA_TOPIC_BYTES_MAX} bytes")));
    }
    Ok(())
}

/// The JSON Schemas of the protocol: (file name, pretty JSON) for
/// `schemas/signal/`.
pub fn schemas() -> Vec<(String, String)> {
    let pretty = |s: &schemars::Schema| {
        // INVARIANT: a schemars::Schema is a JSON value and always serializes.
        let mut text = serde_json::to_string_pretty(s).expect("schema serializes");
        text.push('\n');
        text
    };
    vec![
        (format!("client.v{VERSION}.json"), pretty(&schemars::schema_for!(ClientEnvelope))),
        (format!("server.v{VERSION}.json"), pretty(&schemars::schema_for!(ServerEnvelope))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_bad_ones_say_why() {
        assert_eq!(parse_client(r#"{"v":1,"type":"ping","id":7}"#), Ok(ClientMessage::Ping { id: Some(7) }));
        assert_eq!(parse_client(r#"{"v":1,"type":"leave"}"#), Ok(ClientMessage::Leave));
        assert_eq!(
            parse_client(r#"{"v":1,"type":"update_metadata","metadata":"{\"hand\":true}"}"#),
            Ok(ClientMessage::UpdateMetadata { name: None, metadata: Some("{\"hand\":true}".into()) })
        );
        assert_eq!(parse_client("{").map_err(|e| e.0), Err("bad_json"));
        assert_eq!(parse_client(r#"{"type":"ping"}"#).map_err(|e| e.0), Err("bad_message"));
        assert_eq!(parse_client(r#"{"v":2,"type":"ping"}"#).map_err(|e| e.0), Err("unsupported_version"));
        assert_eq!(parse_client(r#"{"v":1,"type":"fly"}"#).map_err(|e| e.0), Err("bad_message"));
        assert_eq!(parse_client(r#"[1,2]"#).map_err(|e| e.0), Err("bad_message"));
        let big = format!(r#"{{"v":1,"type":"ping","pad":"{}"}}"#, "x".repeat(CLIENT_MESSAGE_BYTES_MAX));
        assert_eq!(parse_client(&big).map_err(|e| e.0), Err("too_large"));
    }

    #[test]
    fn server_messages_carry_the_version_and_their_type() {
        let text = ServerEnvelope::text(ServerMessage::Pong { id: Some(3) });
        assert_eq!(text, r#"{"v":1,"type":"pong","id":3}"#);
        let back: ServerEnvelope = serde_json::from_str(&text).expect("parses back");
        assert_eq!(back.message, ServerMessage::Pong { id: Some(3) });
        let left = ServerEnvelope::text(ServerMessage::ParticipantLeft {
            sid: "pa_1".into(),
            identity: "ann".into(),
            reason: LeaveReason::Kicked,
        });
        assert_eq!(left, r#"{"v":1,"type":"participant_left","sid":"pa_1","identity":"ann","reason":"kicked"}"#);
    }
}
