//! Prometheus metrics at `/metrics` (text exposition, Prometheus naming:
//! `_total`, `_seconds`, `_bytes`; no per-room or per-participant labels).
//!
//! - HTTP: requests by route template, method and status, and their
//!   latency (`arc_http_request_duration_seconds`), recorded by a layer on
//!   the matched routes;
//! - the platform as the read models have it, read at scrape time: open
//!   rooms, active participants, published tracks, nodes by state;
//! - the log and the projections: appends by outcome, events appended and
//!   append latency (`arc_log_append_duration_seconds`, this instance's
//!   appends), the log's head, each projection's position, events applied
//!   and whether it has caught up; media nodes' reports applied and refused;
//! - the process: CPU seconds and resident memory.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::ApiState;
use super::error::ApiResult;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ≈ 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The control plane's metrics.
pub struct Metrics {
    registry: Registry,
    /// Appends to the event log (recorded by [`crate::metered::MeteredLog`]).
    pub log: crate::metered::LogMetrics,
    /// Media nodes' reports (recorded by [`crate::reports`]).
    pub reports: crate::reports::ReportMetrics,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    rooms_open: Gauge,
    participants: Gauge,
    tracks: Gauge,
    nodes: Family<StateLabels, Gauge>,
    webhook_deliveries: Family<StateLabels, Gauge>,
    log_head: Gauge,
    projection_position: Family<ProjectionLabels, Gauge>,
    projection_events: Family<ProjectionLabels, Gauge>,
    projection_caught_up: Family<ProjectionLabels, Gauge>,
    projection_lag: Family<ProjectionLabels, Gauge>,
    projection_failures: Family<ProjectionLabels, Counter>,
    process: arc_telemetry::ProcessMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("arc");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its answer, by route template and method",
            Unit::Seconds,
            latency.clone(),
        );
        let rooms_open = Gauge::default();
        registry.register("rooms_open", "Open rooms (read models)", rooms_open.clone());
        let participants = Gauge::default();
        registry.register("participants_active", "Participants in open rooms (read models)", participants.clone());
        let tracks = Gauge::default();
        registry.register("tracks_published", "Published tracks (read models)", tracks.clone());
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register("media_nodes", "Media nodes by state (up, draining, lost, deregistered)", nodes.clone());
        let webhook_deliveries = Family::<StateLabels, Gauge>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by state (pending = the backlog, dead, delivered)",
            webhook_deliveries.clone(),
        );
        let log_head = Gauge::default();
        registry.register(
            "log_head_position",
            "The event log's head position (as this instance read it)",
            log_head.clone(),
        );
        let projection_position = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_position",
            "Log position each projection has applied",
            projection_position.clone(),
        );
        let projection_events = Family::<ProjectionLabels, Gauge>::default();
        registry.register("projection_events_applied", "Events each projection has applied", projection_events.clone());
        let projection_caught_up = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_caught_up",
            "1 when the projection has applied the log's head, else 0",
            projection_caught_up.clone(),
        );
        let projection_lag = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_lag_events",
            "Events between each projection's position and the log's head, counted up to 10000 (absent while the log is unreachable)",
            projection_lag.clone(),
        );
        let projection_failures = Family::<ProjectionLabels, Counter>::default();
        registry.register(
            "projection_failures",
            "Failures in each projection on this instance (log outages per retry, skipped records, failed writes); the last one is in /v1/status",
            projection_failures.clone(),
        );
        let log = crate::metered::LogMetrics::default();
        log.register(&mut registry);
        let reports = crate::reports::ReportMetrics::default();
        reports.register(&mut registry);
        let process = arc_telemetry::ProcessMetrics::register(&mut registry);
        Self {
            log,
            reports,
            registry,
            requests,
            latency,
            rooms_open,
            participants,
            tracks,
            nodes,
            webhook_deliveries,
            log_head,
            projection_position,
            projection_events,
            projection_caught_up,
            projection_lag,
            projection_failures,
            process,
        }
    }

    fn observe(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        self.latency.get_or_create(&RouteLabels { route: route.clone(), method }).observe(seconds);
        self.requests.get_or_create(&RequestLabels { route, method, status: status.to_string() }).inc();
    }
}

/// A bounded method label (a client may send any token as a method).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::HEAD => "HEAD",
        _ => "other",
    }
}

/// Records every request to a matched route (route template, never the path).
pub(crate) async fn track(State(state): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics.observe(route, method, response.status().as_u16(), started.elapsed().as_secs_f64());
    response
}

/// Prometheus metrics — OpenMetrics when the scraper's `Accept` asks for it
/// (Prometheus does), else the Prometheus text format 0.0.4: HTTP requests and latency by
/// route, open rooms, participants, tracks, nodes by state, webhook
/// deliveries by state, the log's head
/// and each projection's progress, process CPU and memory. No credentials
/// (like `/healthz`); no per-room or per-participant labels.
#[utoipa::path(get, path = "/metrics", tag = "status",
    responses(
        (status = 200, description = "The exposition", content((String = "application/openmetrics-text"), (String = "text/plain"))),
        (status = 503, description = "The read models are unreachable", body = super::error::ErrorBody),
    ))]
pub(crate) async fn metrics(State(state): State<Arc<ApiState>>, headers: axum::http::HeaderMap) -> ApiResult<Response> {
    let m = &state.metrics;
    let g = crate::usecase::queries::gauges(&state.db).await?;
    m.rooms_open.set(g.rooms_open);
    m.participants.set(g.participants_active);
    m.tracks.set(g.tracks_published);
    for (node_state, n) in g.nodes_by_state {
        m.nodes.get_or_create(&StateLabels { state: node_state }).set(n);
    }
    for state in ["pending", "delivered", "dead"] {
        let n = g.webhook_deliveries.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n);
        m.webhook_deliveries.get_or_create(&StateLabels { state: state.to_owned() }).set(n);
    }
    let head =
        tokio::time::timeout(std::time::Duration::from_millis(500), state.log.head()).await.ok().and_then(Result::ok);
    if let Some(h) = head {
        m.log_head.set(i64::try_from(h.0).unwrap_or(i64::MAX));
    }
    for p in &state.projections {
        let c = *p.progress.borrow();
        let labels = ProjectionLabels { projection: p.name };
        let failed = p.failures.snapshot().count;
        {
            // The family's guard must not live across the await below.
            let counter = m.projection_failures.get_or_create(&labels);
            counter.inc_by(failed.saturating_sub(counter.get()));
        }
        m.projection_position.get_or_create(&labels).set(i64::try_from(c.position.0).unwrap_or(i64::MAX));
        m.projection_events.get_or_create(&labels).set(i64::try_from(c.events).unwrap_or(i64::MAX));
        m.projection_caught_up.get_or_create(&labels).set(i64::from(head.is_some_and(|h| c.position >= h)));
        let lag = match head {
            Some(h) if c.position >= h => Some(0),
            Some(h) => tokio::time::timeout(
                super::STATUS_LOG_WAIT_MAX,
                crate::usecase::events::count_between(state.log.as_ref(), c.position, h, super::STATUS_BEHIND_MAX),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        match lag {
            Some(n) => {
                m.projection_lag.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            None => {
                m.projection_lag.remove(&labels);
            }
        }
    }
    m.process.update();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = arc_telemetry::exposition(&m.registry, accept)
        .map_err(|_| super::error::ApiError::internal("encoding the metrics"))?;
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
