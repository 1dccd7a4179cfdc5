//! `Arc-Position`, the log position a client has seen.
//!
//! - On the way out, every answer to a write that appended carries the
//!   position of its last event (what [`ApiState::settle`] waited for).
//! - On the way in, a request carrying `Arc-Position: P` is served only once
//!   this instance's read models have applied P (waiting at most
//!   [`super::SETTLE_WAIT_MAX`], else `503 behind` with `Retry-After`), so a
//!   client that wrote through one instance (or got `202 pending`) reads at
//!   least what it wrote through any other.

use std::cell::Cell;
use std::sync::Arc;

use arc_eventlog::Position;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::{ApiError, POSITION_HEADER};

tokio::task_local! {
    /// The highest position a request's handler settled on (0: none).
    static WRITTEN: Cell<u64>;
}

/// Notes that the current request's write reached `position` (no-op
/// outside a request).
pub(crate) fn record(position: Position) {
    let _ = WRITTEN.try_with(|w| w.set(w.get().max(position.0)));
}

/// Parses a request's `Arc-Position` value.
fn parse(value: &HeaderValue) -> Result<Position, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Position)
        .ok_or_else(|| ApiError::bad_request("Arc-Position", "expected a log position (an unsigned integer)"))
}

/// The middleware.
pub(crate) async fn layer(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if let Some(value) = request.headers().get(POSITION_HEADER) {
        let wanted = match parse(value) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        if !state.settle_quietly(wanted).await {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "behind",
                format!("the read models here have not reached log position {wanted} yet; retry"),
            )
            .into_response();
        }
    }
    let (mut response, written) = WRITTEN
        .scope(Cell::new(0), async {
            let response = next.run(request).await;
            (response, WRITTEN.with(Cell::get))
        })
        .await;
    if written > 0 && !response.headers().contains_key(POSITION_HEADER) {
        response.headers_mut().insert(POSITION_HEADER, HeaderValue::from(written));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_or_name_the_header() {
        assert_eq!(parse(&HeaderValue::from_static("42")).ok(), Some(Position(42)));
        assert_eq!(parse(&HeaderValue::from_static(" 7 ")).ok(), Some(Position(7)));
        for bad in ["", "-1", "x", "1.5", "99999999999999999999999"] {
            let e = parse(&HeaderValue::from_static(bad)).expect_err(bad);
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.contains("Arc-Position"), "{bad}: {e:?}");
        }
    }

    #[tokio::test]
    async fn record_is_scoped_to_a_request() {
        record(Position(5)); // outside: ignored
        let got = WRITTEN
            .scope(Cell::new(0), async {
                record(Position(9));
                record(Position(3));
                WRITTEN.with(Cell::get)
            })
            .await;
        assert_eq!(got, 9);
    }
}
