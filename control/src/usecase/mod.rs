//! The application layer: the commands and queries every entry point calls —
//! the REST API and WHIP/WHEP today, WebSocket signalling, RTMP/RTSP ingest
//! and SIP legs tomorrow. An entry point parses its input, authorizes the
//! caller, calls one use case here and maps the outcome to its protocol;
//! the rules and the orchestration (quota turns, which aggregate gets which
//! command, which media node is told what, compensations) live here, once.
//!
//! Nothing here knows HTTP: inputs are typed values, outcomes are values or
//! a [`UseCaseError`]. Writes go through the aggregates' repositories (the
//! log); reads go through [`queries`] (the read models).
//!
//! # Layout
//! - [`rooms`]: open and close rooms, room metadata; joins (with a token or
//!   admitted by a gateway), leaves, removals, kicks; participant
//!   permissions and metadata; track mutes; media sessions (WHIP/WHEP).
//! - [`apps`]: apps (create, disable, enable, delete, rotate the secret,
//!   quotas, webhook URLs) and their tokens (mint, revoke).
//! - [`nodes`]: media nodes with their latest load; drain and undrain.
//! - [`quota`]: the app's quota turn that makes `max_rooms` and
//!   `max_participants` strict.
//! - [`queries`]: read-model queries the use cases and the entry points share.
//! - [`projections`]: online rebuilds of a read model (asked for here,
//!   carried out by the projection's writer).
//! - [`webhooks`]: an app's webhook deliveries (list, get) and redelivery of
//!   a dead-lettered one.
//! - [`events`]: the event log as operators read it (pages, tails, a
//!   position by time, one event, a live follow; filtered by aggregate and
//!   type): the one query that reads the log instead of a read model.
//! - [`error`]: the use cases' one error type, `UseCaseError`.

use std::sync::Arc;
use std::time::Duration;

use arc_auth::seal::MasterKey;
use arc_auth::token::TokenPolicy;
use arc_eventlog::{EventLog, Position, Repository};
use arc_events::aggregate::app::App;
use arc_events::aggregate::node::Node;
use arc_events::aggregate::participant::Participant;
use arc_events::aggregate::room::Room;
use arc_events::aggregate::track::Track;
use tokio::sync::watch;

use crate::projection::Checkpoint;
use crate::readdb::ReadDb;

pub mod apps;
pub mod audit;
pub mod error;
pub mod events;
pub mod nodes;
pub mod projections;
pub mod queries;
pub mod quota;
pub mod rooms;
pub mod signal;
pub mod webhooks;

pub use error::{UseCaseError, UseCaseResult};

/// Command metadata for `actor`, now. While a trace is being recorded (the
/// request's, see `api/trace.rs`), the correlation id is the trace's id, so
/// the events a request caused are found from its trace and the trace from
/// its events (`arcctl events show` prints the correlation id).
pub fn command_meta(actor: &arc_events::Actor) -> arc_events::CommandMeta {
    let mut meta = arc_events::CommandMeta::new(actor.clone(), chrono::Utc::now());
    if let Some(trace_id) = arc_telemetry::current_trace_id() {
        meta.correlation_id = arc_events::CorrelationId(uuid::Uuid::from_bytes(trace_id));
        meta.traceparent = arc_telemetry::current_traceparent();
    }
    meta
}

/// Longest a use case waits for the local projections to apply a position.
pub const SETTLE_WAIT_MAX: Duration = Duration::from_secs(2);

/// What the use cases work with: the log (through the aggregates'
/// repositories), the read models, the media nodes, the quota turns.
#[derive(Debug)]
pub struct Services {
    pub log: Arc<dyn EventLog>,
    pub db: ReadDb,
    pub rooms: Repository<Room>,
    pub apps: Repository<App>,
    pub tracks: Repository<Track>,
    pub participants: Repository<Participant>,
    pub nodes: Repository<Node>,
    pub token_policy: TokenPolicy,
    /// Seals app secrets before they reach the log, opens them to sign and verify.
    pub master_key: Arc<MasterKey>,
    /// How long a rotated-out app secret keeps working by default.
    pub secret_grace_s: u32,
    /// Each local projection: its progress and its failures.
    pub projections: Vec<LocalProjection>,
    /// How media nodes are reached.
    pub media: crate::media::MediaRouter,
    /// Fault injection for tests (`ARC_FAULT_SKIP_NODE_REQUESTS=1`): the fast
    /// path requests that end or mute media on a node are not sent, so a test
    /// can show the node applying the log on its own.
    pub fault_skip_node_requests: bool,
    /// Strict quotas: one quota-checked write per app at a time ([`quota`]).
    pub quota: quota::QuotaTurns,
    /// The log's room, participant and track events, for signalling sockets.
    pub signal: crate::signal::Hub,
    /// Data messages between the sockets of a room, on every instance.
    pub signal_relay: crate::signal::Relay,
    /// How long a signalling socket may stay silent before its participant is removed.
    pub signal_timeout: Duration,
    /// The STUN and TURN servers clients are told of.
    pub ice: crate::config::IceSettings,
    /// Which non-public addresses apps' webhook URLs may name.
    pub webhook_policy: arc_webhooks::ssrf::AddressPolicy,
}

/// A projection this instance runs (as its writer or a follower).
#[derive(Debug, Clone)]
pub struct LocalProjection {
    pub name: &'static str,
    /// Its checkpoint, moving as batches commit (here or on the writer).
    pub progress: watch::Receiver<Checkpoint>,
    /// What failed in it on this instance.
    pub failures: crate::projection::Failures,
}

impl Services {
    /// Waits until every local projection has applied `position` (bounded
    /// by [`SETTLE_WAIT_MAX`]); answers whether they did.
    pub async fn settle_quietly(&self, position: Position) -> bool {
        let wait = async {
            for p in &self.projections {
                let mut rx = p.progress.clone();
                let _ = rx.wait_for(|c| c.position >= position).await;
            }
        };
        tokio::time::timeout(SETTLE_WAIT_MAX, wait).await.is_ok()
    }
}
