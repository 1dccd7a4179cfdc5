//! How the control plane reaches media nodes, and which node gets a room.
//!
//! Placement reads projections and the load board: a room stays on the node
//! its active participants are on (sticky) while that node is up or
//! draining; a new room goes to the least-loaded node that is `up` (not
//! draining, not lost) and reachable — fewest participants placed (the
//! projections), then fewest sessions and least CPU (its latest load
//! sample, on the board beside the log).
//! Requests go to the embedded node in `dev` (in process) or over NATS
//! request/reply to `arc.media.<node>.rpc` (same JSON types either way).

use std::sync::Arc;
use std::time::Duration;

use arc_nodeproto::{NodeReply, NodeRequest, NodeService, SessionError};

use crate::readdb::ReadDb;

/// How long a node has to answer a request over NATS.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request to a node failed before the node could answer.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no media node is available")]
    NoNode,
    #[error("media node {0} did not answer: {1}")]
    Unreachable(String, String),
    #[error("read models: {0}")]
    Db(#[from] sqlx::Error),
}

/// What a liveness probe of a node found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It answered (whatever it said).
    Answered,
    /// NATS has no subscriber on its request subject: the node's process or
    /// its connection is gone (NATS knows at once when a process dies).
    Gone,
    /// No answer in time, or NATS unreachable from here: says nothing either
    /// way (a busy node; a network split on this side).
    Unknown(String),
}

/// The ways to reach nodes.
#[derive(Debug, Clone, Default)]
pub struct MediaRouter {
    /// The node embedded in this process (`dev`): (node id, its service).
    pub local: Option<(String, Arc<dyn NodeService>)>,
    /// NATS, for nodes that are separate processes.
    pub nats: Option<async_nats::Client>,
    /// Nodes' latest load samples (none: placement goes by participants placed).
    pub board: Option<Arc<dyn arc_eventlog::LoadBoard>>,
}

impl MediaRouter {
    /// Whether requests to this node have a way to go (NATS, or it is the embedded node).
    pub fn can_reach(&self, node_id: &str) -> bool {
        self.reachable(node_id)
    }

    fn reachable(&self, node_id: &str) -> bool {
        self.nats.is_some() || self.local.as_ref().is_some_and(|(id, _)| id == node_id)
    }

    /// Picks the node for a room (see the module docs).
    #[tracing::instrument(name = "node.place", skip_all, fields(room = room_id))]
    pub async fn place(&self, db: &ReadDb, room_id: &str) -> Result<String, RouteError> {
        let sticky: Option<String> = sqlx::query_scalar(
            "SELECT p.node_id FROM participants p JOIN nodes n ON n.node_id = p.node_id \
             WHERE p.room_id = $1 AND p.state = 'active' AND n.state IN ('up', 'draining') ORDER BY p.joined_at_ms LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&db.pool)
        .await?;
        if let Some(node) = sticky.filter(|n| self.reachable(n)) {
            return Ok(node);
        }
        // Load = participants placed on the node (current as of this
        // instance's projections), then its reported sessions and CPU.
        let candidates: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT n.node_id, (SELECT COUNT(*) FROM participants p WHERE p.node_id = n.node_id AND p.state = 'active') AS placed, \
             n.capacity FROM nodes n WHERE n.state = 'up' ORDER BY placed, n.node_id",
        )
        .fetch_all(&db.pool)
        .await?;
        // Samples unreadable (the board is down): go by participants placed.
        let samples = match &self.board {
            Some(board) => board.latest().await.unwrap_or_default(),
            None => Default::default(),
        };
        let load = |id: &str| {
            arc_events::NodeId::parse(id)
                .ok()
                .and_then(|n| samples.get(&n))
                .map_or((0, 0), |s| (s.load.sessions, (s.load.cpu_percent.max(0.0) * 100.0) as u64))
        };
        candidates
            .into_iter()
            .filter(|(_, placed, capacity)| *capacity <= 0 || placed < capacity)
            .filter(|(id, _, _)| self.reachable(id))
            .min_by_key(|(id, placed, _)| (*placed, load(id), id.clone()))
            .map(|(id, _, _)| id)
            .ok_or(RouteError::NoNode)
    }

    /// Asks a node over NATS whether it is there (`NodeRequest::Ping`), with
    /// `timeout`. The embedded node, and nodes without NATS, always answer.
    pub async fn probe(&self, node_id: &str, timeout: Duration) -> Probe {
        if self.local.as_ref().is_some_and(|(id, _)| id == node_id) {
            return Probe::Answered;
        }
        let Some(nats) = &self.nats else { return Probe::Answered };
        let Ok(id) = arc_events::NodeId::parse(node_id) else { return Probe::Unknown("bad node id".into()) };
        let body = arc_nodeproto::encode_request(&NodeRequest::Ping);
        match tokio::time::timeout(timeout, nats.request(arc_nodeproto::subject(&id), body.into())).await {
            Err(_) => Probe::Unknown("timed out".into()),
            Ok(Ok(_)) => Probe::Answered,
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Probe::Gone,
            Ok(Err(e)) => Probe::Unknown(e.to_string()),
        }
    }

    /// Sends one request to a node and returns its reply. The request is a
    /// span of its own; over NATS its trace context travels in the message's
    /// headers (`traceparent`), so the node's span joins the same trace.
    #[tracing::instrument(name = "node.request", skip_all, fields(otel.kind = "client", node = node_id, request = req.kind()))]
    pub async fn request(&self, node_id: &str, req: NodeRequest) -> Result<NodeReply, RouteError> {
        if let Some((id, service)) = &self.local
            && id == node_id
        {
            return Ok(service.serve(req).await);
        }
        let Some(nats) = &self.nats else { return Err(RouteError::NoNode) };
        let id =
            arc_events::NodeId::parse(node_id).map_err(|e| RouteError::Unreachable(node_id.into(), e.to_string()))?;
        let body = arc_nodeproto::encode_request(&req);
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in arc_telemetry::current_context_headers() {
            headers.insert(k.as_str(), v.as_str());
        }
        let request = nats.request_with_headers(arc_nodeproto::subject(&id), headers, body.into());
        let reply = tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| RouteError::Unreachable(node_id.into(), "timed out".into()))?
            .map_err(|e| RouteError::Unreachable(node_id.into(), e.to_string()))?;
        arc_nodeproto::decode_reply(&reply.payload)
            .map_err(|e| RouteError::Unreachable(node_id.into(), format!("bad reply: {e}")))
    }
}

/// A node's error as the API reports it: (HTTP status, code, message).
pub fn session_error_status(e: &SessionError) -> (u16, &'static str) {
    match e {
        SessionError::BadSdp { .. } => (400, "bad_sdp"),
        SessionError::NoCommonCodec { .. } => (406, "no_common_codec"),
        SessionError::NotFound => (404, "session_not_found"),
        SessionError::Draining | SessionError::Unavailable => (503, "node_unavailable"),
        SessionError::Full { .. } => (503, "node_full"),
        SessionError::UnsupportedVersion { .. } | SessionError::Malformed { .. } => (502, "node_protocol"),
        SessionError::Internal { .. } => (500, "internal"),
        SessionError::PreconditionFailed { .. } => (412, "ice_state_changed"),
        SessionError::RestartUnsupported { .. } => (422, "ice_restart_unsupported"),
    }
}
