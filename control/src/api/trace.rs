//! One span per API request (the root of its trace when OpenTelemetry is
//! on): method, route template and status; a caller's W3C `traceparent`
//! makes it a child of the caller's trace. The answer names its trace in
//! `Arc-Trace-Id`, so an operator can find the trace of a request a user
//! reports. Probes and scrapes (`/metrics`, `/healthz`, `/readyz`) are not
//! traced.

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The response header naming the request's trace (32 hex digits).
pub const TRACE_ID_HEADER: &str = "arc-trace-id";

pub(crate) async fn span(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    if matches!(route.as_str(), "/metrics" | "/healthz" | "/readyz") {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    arc_telemetry::set_parent_from_headers(
        &span,
        req.headers().iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let trace_id = span.in_scope(arc_telemetry::current_trace_id).map(|id| {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        span.record("trace_id", hex.as_str());
        hex
    });
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if let Some(hex) = trace_id
        && let Ok(v) = HeaderValue::from_str(&hex)
    {
        response.headers_mut().insert(TRACE_ID_HEADER, v);
    }
    response
}
