//! What the control plane asks a media node, and what it answers. The same
//! types go over NATS request/reply (JSON) and through the in-process handle
//! of `arc-control dev`.

use arc_events::ParticipantSid;
use arc_events::room::LeaveReason;
use serde::{Deserialize, Serialize};

/// Open a WebRTC session (a WHIP publisher or a WHEP player).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    pub room_id: String,
    pub identity: String,
    /// The participant session this media session belongs to.
    pub sid: String,
    pub role: Role,
    /// The client's SDP offer.
    pub offer: String,
}

/// Publish, or play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Role {
    Publish,
    /// Play the room's latest publisher, or the named one.
    Subscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant: Option<String>,
    },
}

/// The node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpened {
    pub session_id: String,
    pub answer: String,
}

/// Why a session could not be opened or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "code")]
pub enum SessionError {
    #[error("bad SDP: {reason}")]
    BadSdp { reason: String },
    #[error("no codec in common: offered {offered:?}, this node supports {supported:?}")]
    NoCommonCodec { offered: Vec<String>, supported: Vec<String> },
    #[error("no such session")]
    NotFound,
    #[error("the node is draining and takes no new rooms")]
    Draining,
    #[error("the node is shutting down")]
    Unavailable,
    #[error("{message}")]
    Internal { message: String },
}

/// A request to a node, as it travels over NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum NodeRequest {
    Open(OpenSession),
    /// Trickle ICE or an ICE restart: an `application/trickle-ice-sdpfrag` body.
    Patch {
        session_id: String,
        fragment: String,
    },
    Close {
        session_id: String,
    },
    /// End sessions in a room: one participant session's (`sid`), or every
    /// one (the log already says they left; this stops their media). Sessions
    /// are named by sid, never by identity: an identity that left and came
    /// back is a new participant session whose media must not be touched.
    End {
        room_id: String,
        #[serde(default)]
        sid: Option<ParticipantSid>,
        reason: LeaveReason,
    },
    /// Stop (or resume) forwarding a published track (`tr_…`, as in the log).
    Mute {
        track_id: String,
        muted: bool,
    },
    /// The sessions the node holds now (for reconciliation with the log),
    /// a page of at most [`SESSIONS_PAGE_MAX`] ordered by session id, after
    /// the given one.
    Sessions {
        #[serde(default)]
        after: Option<String>,
    },
}

/// Most sessions in one [`NodeReply::Sessions`] page (keeps a reply far below
/// NATS's default 1 MiB payload limit).
pub const SESSIONS_PAGE_MAX: usize = 1000;

/// One media session as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub room_id: String,
    pub identity: String,
    pub sid: ParticipantSid,
    /// `publish` or `subscribe`.
    pub role: String,
    pub connected: bool,
    /// Milliseconds since the session was opened.
    pub age_ms: u64,
}

/// A node's reply over NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum NodeReply {
    Opened(SessionOpened),
    Patched {
        fragment: Option<String>,
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
    Error(SessionError),
}

/// The NATS subject a node listens on for requests.
pub fn subject(node_id: &str) -> String {
    format!("arc.media.{node_id}.rpc")
}
