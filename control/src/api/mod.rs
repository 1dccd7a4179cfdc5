//! The HTTP API (axum): health, status, metrics, apps, tokens, rooms, participants,
//! webhooks and nodes, the event log (read-only: `events`), the status page
//! and the OpenAPI document.
//!
//! Handlers authenticate the caller (`auth`), parse input, call a use case
//! (`crate::usecase`: every rule and orchestration lives there, shared with
//! the other entry points) or query a read model, and map the outcome to
//! HTTP. Every error is JSON `{"error": {"code", "message"}}` with a fitting
//! status, mapped in one place ([`error`]).
//!
//! Writes wait (bounded) until this process's projections have applied them,
//! so a client reading right after its own write sees it; their answers carry
//! `Arc-Position`, which a later request may send back to read at least that
//! far on any instance (`position.rs`).
//!
//! Every request but probes and scrapes is one span (`trace.rs`), the root
//! of its OpenTelemetry trace when traces are exported; the answer names
//! the trace in `Arc-Trace-Id`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_eventlog::Position;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::response::Html;
use axum::routing::{get, patch, post, put};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;

use crate::usecase::Services;

pub mod apps;
pub(crate) mod auth;
pub(crate) mod dev;
pub mod error;
pub mod events;
pub(crate) mod json_errors;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub(crate) mod position;
pub mod rooms;
pub(crate) mod rtc;
pub mod trace;
pub mod whip;

use error::{ApiError, ApiResult, ErrorBody};

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = arc_events::limits::REQUEST_BODY_BYTES_MAX;
/// Most items returned by one list call.
pub const PAGE_MAX: i64 = 500;
/// Longest a write waits for the local projections to apply it.
pub const SETTLE_WAIT_MAX: Duration = crate::usecase::SETTLE_WAIT_MAX;

/// What handlers share: the use cases' services (`state.rooms`, `state.db`,
/// … through `Deref`) and what only the HTTP API needs.
#[derive(Debug)]
pub struct ApiState {
    pub services: Arc<Services>,
    /// The admin keys, each with the name the log records as its actor.
    pub admin_keys: Vec<crate::config::AdminKey>,
    pub started: Instant,
    /// Progress of the webhook delivery planner.
    pub webhooks: Option<watch::Receiver<Position>>,
    /// What `/metrics` exposes.
    pub metrics: metrics::Metrics,
    /// `POST /v1/dev/token` answers (`arc-control dev`, to this machine only).
    pub dev_tokens: bool,
    /// Failed authentications, counted per address and app key.
    pub auth_limits: limits::AuthLimits,
}

impl std::ops::Deref for ApiState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

impl ApiState {
    /// Waits until every local projection has applied `position` (bounded by
    /// [`SETTLE_WAIT_MAX`]); answers whether they did. A slow projection only
    /// delays a write, never fails it.
    pub(crate) async fn settle(&self, position: Option<Position>) -> bool {
        let Some(position) = position else { return true };
        position::record(position);
        if !self.settle_quietly(position).await {
            tracing::warn!(%position, "projections are behind; answering before they caught up");
            return false;
        }
        true
    }

    /// [`Self::settle`] for a write whose answer reads its result back from
    /// the read models: when they lag, the answer is `202` with the position
    /// and `location` to poll, never a 404 or a stale body.
    pub(crate) async fn settled(&self, position: Option<Position>, location: &str) -> ApiResult<()> {
        match position {
            Some(p) if !self.settle(position).await => Err(ApiError::pending(p.0, location)),
            _ => Ok(()),
        }
    }
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/v1/apps", get(apps::list_apps).post(apps::create_app))
        .route("/v1/apps/{app_id}", get(apps::get_app).delete(apps::delete_app))
        .route("/v1/apps/{app_id}/disable", post(apps::disable_app))
        .route("/v1/apps/{app_id}/enable", post(apps::enable_app))
        .route("/v1/apps/{app_id}/rotate-secret", post(apps::rotate_secret))
        .route("/v1/apps/{app_id}/quotas", put(apps::set_quotas))
        .route("/v1/apps/{app_id}/webhooks", put(apps::set_webhooks))
        .route("/v1/apps/{app_id}/webhooks/deliveries", get(apps::list_deliveries))
        .route("/v1/webhooks/deliveries/{delivery_id}", get(apps::get_delivery))
        .route("/v1/webhooks/deliveries/{delivery_id}/redeliver", post(apps::redeliver))
        .route("/v1/tokens", post(apps::mint_token))
        .route("/v1/tokens/revoke", post(apps::revoke_token))
        .route("/v1/join", post(rooms::join_with_token))
        .route("/v1/rooms", get(rooms::list_rooms).post(rooms::create_room))
        .route("/v1/rooms/{room_id}", get(rooms::get_room))
        .route("/v1/rooms/{room_id}/close", post(rooms::close_room))
        .route("/v1/rooms/{room_id}/metadata", put(rooms::set_room_metadata))
        .route("/v1/rooms/{room_id}/participants", get(rooms::list_participants).post(rooms::join_room))
        .route("/v1/rooms/{room_id}/participants/{identity}", get(rooms::get_participant).delete(rooms::leave_room))
        .route("/v1/rooms/{room_id}/participants/{identity}/kick", post(rooms::kick))
        .route("/v1/rooms/{room_id}/participants/{identity}/permissions", put(rooms::set_permissions))
        .route("/v1/rooms/{room_id}/participants/{identity}/metadata", put(rooms::set_participant_metadata))
        .route("/v1/rooms/{room_id}/tracks/{track_id}/mute", post(rooms::mute_track))
        .route("/v1/whip/{room}", post(whip::whip_post))
        .route("/v1/whip/{room}/sessions/{node_id}/{session_id}", patch(whip::whip_patch).delete(whip::whip_delete))
        .route("/v1/rtc", get(rtc::rtc))
        .route("/v1/dev/token", post(dev::dev_token))
        .route("/v1/whep/{room}", post(whip::whep_post))
        .route("/v1/whep/{room}/sessions/{node_id}/{session_id}", patch(whip::whep_patch).delete(whip::whep_delete))
        .route("/v1/events", get(events::list_events))
        .route("/v1/events/follow", get(events::follow_events))
        .route("/v1/events/{position}", get(events::get_event))
        .route("/v1/nodes", get(list_nodes))
        .route("/v1/nodes/{node_id}/drain", post(drain_node))
        .route("/v1/nodes/{node_id}/undrain", post(undrain_node))
        .route("/v1/projections/{name}/rebuild", post(rebuild_projection))
        .route("/v1/openapi.json", get(openapi::serve_json))
        .route("/docs", get(openapi::serve_docs))
        .route("/publish", get(publish_page))
        .route("/play", get(play_page))
        .route("/meet", get(meet_page))
        .route("/sdk/arc.js", get(sdk_js))
        .route("/ice-restart.js", get(ice_restart_js))
        .route("/sdk/arc.d.ts", get(sdk_types))
        .route("/metrics", get(metrics::metrics))
        // Requests per route template and their latency (matched routes only).
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        // One span per request: the root of its trace (OpenTelemetry).
        .route_layer(axum::middleware::from_fn(trace::span))
        .fallback(|| async { ApiError::not_found("not_found", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), position::layer))
        // Too many failed authentications: 429 before any credential is checked.
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::layer))
        .layer(axum::middleware::map_response(json_errors::json_errors))
        .layer(axum::middleware::from_fn(whip::cors))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Parses a JSON body; an empty body reads as `{}`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("body", e))
}

pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
}

fn check_limit(limit: Option<i64>) -> ApiResult<i64> {
    let limit = limit.unwrap_or(100);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request("limit", format!("must be 1..={PAGE_MAX}")));
    }
    Ok(limit)
}

/// A media node as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeDto {
    pub node_id: String,
    pub address: String,
    /// Announced public addresses (a JSON array of strings).
    #[schema(value_type = Vec<String>)]
    pub public_ips: serde_json::Value,
    pub arch: String,
    pub cores: i64,
    pub capacity: i64,
    pub version: String,
    pub state: String,
    pub registered_at: String,
    pub last_seen_at: String,
    pub sessions: i64,
    pub tracks: i64,
    pub bits_in_per_s: i64,
    pub bits_out_per_s: i64,
    pub cpu_percent: f64,
}

/// The media nodes.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeDto>,
}

/// List media nodes with their last reported load.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", security(("admin" = [])),
    responses(
        (status = 200, description = "Every node, by id (at most 1000)", body = NodeList),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
    ))]
pub(crate) async fn list_nodes(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Json<NodeList>> {
    auth::authenticate(&state, &headers).await?.require_admin()?;
    let rows = crate::usecase::nodes::nodes(&state).await?;
    let mut out = Vec::with_capacity(rows.len());
    for n in rows {
        out.push(NodeDto {
            public_ips: serde_json::from_str(&n.public_ips).unwrap_or(serde_json::Value::Null),
            node_id: n.node_id,
            address: n.address,
            arch: n.arch,
            cores: n.cores,
            capacity: n.capacity,
            version: n.version,
            state: n.state,
            registered_at: iso(n.registered_at_ms),
            last_seen_at: iso(n.last_seen_ms),
            sessions: n.sessions,
            tracks: n.tracks,
            bits_in_per_s: n.bits_in_per_s,
            bits_out_per_s: n.bits_out_per_s,
            cpu_percent: n.cpu_percent,
        });
    }
    Ok(Json(NodeList { nodes: out }))
}

/// A node's drain state after a drain or undrain.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeDrain {
    pub node_id: String,
    pub draining: bool,
}

async fn set_drain(state: &ApiState, headers: &HeaderMap, node_id: &str, drain: bool) -> ApiResult<Json<NodeDrain>> {
    let principal = auth::authenticate(state, headers).await?;
    principal.require_admin()?;
    let position = crate::usecase::nodes::set_drain(state, &principal.actor(), node_id, drain).await?;
    state.settle(position).await;
    Ok(Json(NodeDrain { node_id: node_id.to_owned(), draining: drain }))
}

/// Drain a media node: it takes no new rooms; its rooms carry on until they empty.
/// The node applies it at its next heartbeat (within 2 s).
#[utoipa::path(post, path = "/v1/nodes/{node_id}/drain", tag = "nodes", security(("admin" = [])),
    params(("node_id" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Draining", body = NodeDrain),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is lost or deregistered", body = ErrorBody),
    ))]
pub(crate) async fn drain_node(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    axum::extract::Path(node_id): axum::extract::Path<String>,
) -> ApiResult<Json<NodeDrain>> {
    set_drain(&state, &headers, &node_id, true).await
}

/// Undrain a media node: it takes new rooms again.
#[utoipa::path(post, path = "/v1/nodes/{node_id}/undrain", tag = "nodes", security(("admin" = [])),
    params(("node_id" = String, Path, description = "The node")),
    responses(
        (status = 200, description = "Taking rooms again", body = NodeDrain),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 409, description = "The node is lost or deregistered", body = ErrorBody),
    ))]
pub(crate) async fn undrain_node(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    axum::extract::Path(node_id): axum::extract::Path<String>,
) -> ApiResult<Json<NodeDrain>> {
    set_drain(&state, &headers, &node_id, false).await
}

/// Public health and progress figures (no ids, no secrets).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusDto {
    pub version: &'static str,
    pub log_backend: &'static str,
    /// Whether the event log answered now. While it does not, writes answer
    /// 503 and the read models are served as they were (`stale`).
    pub log_reachable: bool,
    /// Why the log did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
    /// The log's last position (`null` while it is unreachable).
    pub log_head: Option<u64>,
    /// The read models may lag the log: it is unreachable, or a projection
    /// is behind its head.
    pub stale: bool,
    pub uptime_s: u64,
    pub projections: Vec<ProjectionStatus>,
    pub rooms_open: i64,
    pub nodes_up: i64,
    /// Participants in open rooms.
    pub participants_active: i64,
    pub tracks_published: i64,
    /// Webhook deliveries waiting to be sent (the backlog).
    pub webhooks_pending: i64,
    /// Webhook deliveries that gave up (dead letters, `arcctl webhooks redeliver`).
    pub webhooks_dead: i64,
}

/// One projection's progress.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub position: u64,
    pub events: u64,
    /// At the log's head (false while the log is unreachable).
    pub caught_up: bool,
    /// Events between its position and the head, counted up to 10,000
    /// (`null` while the log is unreachable).
    pub behind: Option<u64>,
    /// A rebuild was asked for and its writer has not started it yet (it
    /// looks every second).
    pub rebuild_pending: bool,
    /// Failures in this projection on the instance that answered, since it
    /// started (a log outage counts once per attempt to resubscribe).
    pub failures: u64,
    /// The last of them, as logged (`null`: none since the start).
    pub last_error: Option<String>,
    /// When it happened (Unix milliseconds).
    pub last_error_at_ms: Option<i64>,
}

/// An accepted rebuild request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RebuildRequested {
    pub name: &'static str,
    /// Always true: the projection's writer starts within about a second;
    /// follow it in `/v1/status` (its `events` restart from 0, then
    /// `caught_up` turns true again).
    pub requested: bool,
}

/// Rebuild one read model online: its writer (on whichever instance holds
/// its lease) empties it and replays the log from the start. Until it has
/// caught up, `/v1/status` shows it behind and `/readyz` answers 503 on every
/// instance; writes that wait for their read models wait for it.
#[utoipa::path(post, path = "/v1/projections/{name}/rebuild", tag = "status", security(("admin" = [])),
    params(("name" = String, Path, description = "The projection: rooms, nodes, apps, participants, tracks or revoked_tokens (as /v1/status names them)")),
    responses(
        (status = 202, description = "Requested", body = RebuildRequested),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such projection (or one that cannot be rebuilt online, like the webhook planner)", body = ErrorBody),
    ))]
pub(crate) async fn rebuild_projection(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<(axum::http::StatusCode, Json<RebuildRequested>)> {
    let who = auth::authenticate(&state, &headers).await?;
    who.require_admin()?;
    let name = crate::usecase::projections::request_rebuild(&state, &who.actor(), &name).await?;
    Ok((axum::http::StatusCode::ACCEPTED, Json(RebuildRequested { name, requested: true })))
}

/// Health and progress: log head, projections, open rooms, live nodes (no
/// credentials needed). Answers while the log is unreachable, saying so.
#[utoipa::path(get, path = "/v1/status", tag = "status",
    responses(
        (status = 200, description = "Figures", body = StatusDto),
        (status = 503, description = "The read models are unreachable", body = ErrorBody),
    ))]
pub(crate) async fn status(State(state): State<Arc<ApiState>>) -> ApiResult<Json<StatusDto>> {
    let head = tokio::time::timeout(STATUS_LOG_WAIT_MAX, state.log.head()).await;
    let (head, log_error) = match head {
        Ok(Ok(h)) => (Some(h), None),
        Ok(Err(e)) => (None, Some(e.to_string())),
        Err(_) => (None, Some(format!("no answer within {STATUS_LOG_WAIT_MAX:?}"))),
    };
    let g = crate::usecase::queries::gauges(&state.db).await?;
    let pending = crate::usecase::projections::pending(&state).await?;
    let mut projections = Vec::with_capacity(state.projections.len());
    for p in &state.projections {
        let (name, c, failures) = (p.name, *p.progress.borrow(), p.failures.snapshot());
        let behind = match head {
            Some(h) if c.position >= h => Some(0),
            Some(h) => tokio::time::timeout(
                STATUS_LOG_WAIT_MAX,
                crate::usecase::events::count_between(state.log.as_ref(), c.position, h, STATUS_BEHIND_MAX),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        projections.push(ProjectionStatus {
            name,
            position: c.position.0,
            events: c.events,
            caught_up: head.is_some_and(|h| c.position >= h),
            behind,
            rebuild_pending: pending.iter().any(|p| p == name),
            failures: failures.count,
            last_error: failures.last,
            last_error_at_ms: failures.last_at_ms,
        });
    }
    let count = |list: &[(String, i64)], which: &[&str]| -> i64 {
        list.iter().filter(|(s, _)| which.contains(&s.as_str())).map(|(_, n)| n).sum()
    };
    Ok(Json(StatusDto {
        version: env!("CARGO_PKG_VERSION"),
        log_backend: state.log.backend(),
        log_reachable: head.is_some(),
        log_error,
        log_head: head.map(|h| h.0),
        stale: head.is_none() || projections.iter().any(|p| !p.caught_up),
        uptime_s: state.started.elapsed().as_secs(),
        projections,
        rooms_open: g.rooms_open,
        nodes_up: count(&g.nodes_by_state, &["up", "draining"]),
        participants_active: g.participants_active,
        tracks_published: g.tracks_published,
        webhooks_pending: count(&g.webhook_deliveries, &["pending"]),
        webhooks_dead: count(&g.webhook_deliveries, &["dead"]),
    }))
}

/// Most events `/v1/status` counts behind a projection.
const STATUS_BEHIND_MAX: u64 = 10_000;
/// Longest `/v1/status` and `/readyz` wait for the log's head.
const STATUS_LOG_WAIT_MAX: Duration = Duration::from_secs(1);
/// How long `/readyz` lets the projections take to reach the log's head.
pub const READY_CATCH_UP_MAX: Duration = Duration::from_secs(1);

/// Readiness: `ready` when this server can serve writes and fresh reads —
/// the log answers, and every projection reaches the log's head (as read
/// now) within [`READY_CATCH_UP_MAX`]. Otherwise 503 with the reason, for
/// load balancers and service managers.
#[utoipa::path(get, path = "/readyz", tag = "status",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready: the log is unreachable or the read models lag (the reason is given)", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<Arc<ApiState>>) -> ApiResult<&'static str> {
    let head = match tokio::time::timeout(STATUS_LOG_WAIT_MAX, state.log.head()).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                format!("the event log is unreachable: {e}"),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the event log did not answer",
            ));
        }
    };
    let wait = async {
        for p in &state.projections {
            let mut rx = p.progress.clone();
            let _ = rx.wait_for(|c| c.position >= head).await;
        }
    };
    if tokio::time::timeout(READY_CATCH_UP_MAX, wait).await.is_err() {
        let behind: Vec<&str> =
            state.projections.iter().filter(|p| p.progress.borrow().position < head).map(|p| p.name).collect();
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "projections_behind",
            format!("read models behind the log: {}", behind.join(", ")),
        ));
    }
    Ok("ready")
}

/// Liveness: `ok` while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "status",
    responses((status = 200, description = "Serving", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

async fn publish_page() -> Html<&'static str> {
    Html(include_str!("publish.html"))
}

async fn play_page() -> Html<&'static str> {
    Html(include_str!("play.html"))
}

/// The meeting page: camera, microphone, the others' video, chat, over the
/// signalling socket.
async fn meet_page() -> Html<&'static str> {
    Html(include_str!("meet.html"))
}

/// The browser SDK (`control/sdk`, built by `npm run build` there; the
/// bundle is checked in and checked against a fresh build by `scripts/test`).
async fn sdk_js() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../sdk/dist/arc.js"),
    )
}

/// ICE restart for the /publish and /play pages' WHIP/WHEP sessions.
async fn ice_restart_js() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("ice_restart.js"),
    )
}

/// The SDK's TypeScript declarations.
async fn sdk_types() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("../../sdk/dist/arc.d.ts"),
    )
}

async fn status_page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}
