//! The event log, read-only, for operators (the admin key): pages, tails,
//! one event, and a live follow over server-sent events. The handlers
//! parse, authorize and map; `usecase::events` reads.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{Position, RecordedEvent};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiState;
use super::auth::authenticate;
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::usecase::events::{self as uc, EventFilter};

/// One stored event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EventDto {
    /// Its position in the log (the cursor: pass it as `after`).
    position: u64,
    /// Its id (UUIDv7).
    id: String,
    /// Its type, e.g. `room.created`.
    #[serde(rename = "type")]
    event_type: String,
    /// Schema version of `data` (`schemas/events/<type>.v<version>.json`).
    version: u16,
    /// Aggregate kind (`room`, `app`, `node`, …).
    aggregate_type: String,
    aggregate_id: String,
    /// Position in the aggregate's own history, from 1.
    seq: u64,
    occurred_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<String>,
    /// The W3C trace context of the span that appended it (when traced):
    /// find the request's trace in your tracing backend by its trace id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    /// Who caused it (`{"kind": "admin"}`, `{"kind": "app", …}`, …).
    #[schema(value_type = Object)]
    actor: serde_json::Value,
    /// The event's own fields.
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

impl From<RecordedEvent> for EventDto {
    fn from(e: RecordedEvent) -> Self {
        let r = e.raw;
        Self {
            position: e.position.0,
            id: r.id.to_string(),
            event_type: r.event_type,
            version: r.version,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            seq: r.seq,
            occurred_at: r.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            correlation_id: r.correlation_id.map(|c| c.to_string()),
            causation_id: r.causation_id.map(|c| c.to_string()),
            traceparent: r.traceparent,
            actor: serde_json::to_value(&r.actor).unwrap_or(serde_json::Value::Null),
            data: r.data,
        }
    }
}

/// Events in log order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EventList {
    events: Vec<EventDto>,
    /// The last position this answer looked at: pass it as `after` for the
    /// next page (a filtered page may be short, or empty, before the head).
    next: u64,
    /// The log's head when this was read.
    head: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListEvents {
    /// Events after this position (default: from the start).
    after: Option<u64>,
    /// Events from this moment on: RFC 3339 (`2026-11-30T10:00:00Z`) or an
    /// age (`90s`, `15m`, `2h`, `7d`). Not with `after`.
    since: Option<String>,
    /// The last N events (1..=1000) instead of a page; not with `after` or
    /// `since`. With a type filter and no aggregate, it looks at the log's
    /// last 10,000 events.
    tail: Option<u32>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<u32>,
    /// One aggregate: `<kind>:<id>`, e.g. `room:rm_…`.
    aggregate: Option<String>,
    /// Event types, comma-separated; `room.*` matches a prefix.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    types: Option<String>,
}

/// Parses `since`: RFC 3339, or an age before `now`.
fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || ApiError::bad_request("since", format!("{s:?} is neither RFC 3339 nor an age like 90s, 15m, 2h, 7d"));
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let seconds = match unit {
        's' => n,
        'm' => n.checked_mul(60).ok_or_else(bad)?,
        'h' => n.checked_mul(3600).ok_or_else(bad)?,
        'd' => n.checked_mul(86_400).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if !(0..=10 * 365 * 86_400).contains(&seconds) {
        return Err(bad());
    }
    Ok(now - chrono::Duration::seconds(seconds))
}

/// Where a read starts, from `after` or `since` (they exclude each other).
async fn start(state: &ApiState, after: Option<u64>, since: Option<&str>) -> ApiResult<Position> {
    match (after, since) {
        (Some(_), Some(_)) => Err(ApiError::bad_request("since", "give after or since, not both")),
        (Some(p), None) => Ok(Position(p)),
        (None, Some(s)) => Ok(uc::position_at(state.log.as_ref(), parse_since(s, Utc::now())?).await?),
        (None, None) => Ok(Position::START),
    }
}

/// Read the event log: a page after a position (or from a moment), or its
/// last events, filtered by aggregate and type.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(ListEvents), security(("admin" = [])),
    responses(
        (status = 200, description = "Events in log order", body = EventList),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 503, description = "The log is unreachable", body = ErrorBody),
    ))]
pub(crate) async fn list_events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListEvents>,
) -> ApiResult<Json<EventList>> {
    authenticate(&state, &headers).await?.require_admin()?;
    let filter = EventFilter::parse(q.aggregate.as_deref(), q.types.as_deref())?;
    let page = match q.tail {
        Some(n) => {
            if q.after.is_some() || q.since.is_some() {
                return Err(ApiError::bad_request("tail", "not with after or since"));
            }
            if !(1..=uc::PAGE_MAX as u32).contains(&n) {
                return Err(ApiError::bad_request("tail", format!("must be 1..={}", uc::PAGE_MAX)));
            }
            uc::tail(state.log.as_ref(), n as usize, &filter).await?
        }
        None => {
            let limit = q.limit.unwrap_or(100);
            if !(1..=uc::PAGE_MAX as u32).contains(&limit) {
                return Err(ApiError::bad_request("limit", format!("must be 1..={}", uc::PAGE_MAX)));
            }
            let after = start(&state, q.after, q.since.as_deref()).await?;
            uc::page(state.log.as_ref(), after, limit as usize, &filter).await?
        }
    };
    Ok(Json(EventList {
        events: page.events.into_iter().map(Into::into).collect(),
        next: page.next.0,
        head: page.head.0,
    }))
}

/// One event, by its position.
#[utoipa::path(get, path = "/v1/events/{position}", tag = "events", security(("admin" = [])),
    params(("position" = u64, Path, description = "The event's position in the log")),
    responses(
        (status = 200, description = "The event", body = EventDto),
        (status = 400, description = "Not a position", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No event at that position", body = ErrorBody),
    ))]
pub(crate) async fn get_event(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(position): Path<String>,
) -> ApiResult<Json<EventDto>> {
    authenticate(&state, &headers).await?.require_admin()?;
    let position: u64 = position.parse().map_err(|_| {
        ApiError::bad_request("position", format!("{position:?} is not a log position (an unsigned integer)"))
    })?;
    uc::event_at(state.log.as_ref(), Position(position))
        .await?
        .map(|e| Json(e.into()))
        .ok_or_else(|| ApiError::not_found("event_not_found", format!("no event at position {position}")))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FollowEvents {
    /// Events after this position (default: only new ones; a reconnecting
    /// client sends `Last-Event-ID` instead).
    after: Option<u64>,
    /// Events from this moment on (as for `GET /v1/events`).
    since: Option<String>,
    /// One aggregate: `<kind>:<id>`.
    aggregate: Option<String>,
    /// Event types, comma-separated; `room.*` matches a prefix.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    types: Option<String>,
}

/// Follow the event log live (server-sent events): each event is an SSE
/// `event: arc` with `id: <position>` and the event's JSON as data; a
/// comment every 15 s keeps the connection open. When the log fails, an
/// `event: error` ends the stream; reconnect with `Last-Event-ID`.
#[utoipa::path(get, path = "/v1/events/follow", tag = "events", params(FollowEvents), security(("admin" = [])),
    responses(
        (status = 200, description = "A `text/event-stream` of events", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 503, description = "The log is unreachable", body = ErrorBody),
    ))]
pub(crate) async fn follow_events(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<FollowEvents>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    authenticate(&state, &headers).await?.require_admin()?;
    let filter = EventFilter::parse(q.aggregate.as_deref(), q.types.as_deref())?;
    let resume = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID", "must be a log position (an unsigned integer)"))
        })
        .transpose()?;
    let after = match resume {
        Some(p) => Position(p),
        None if q.after.is_none() && q.since.is_none() => {
            state.log.head().await.map_err(crate::usecase::UseCaseError::from)?
        }
        None => start(&state, q.after, q.since.as_deref()).await?,
    };
    let events = uc::follow(state.log.as_ref(), after, filter).await?;
    let stream = events
        .map(|item| match item {
            Ok(e) => {
                let id = e.position.0.to_string();
                match serde_json::to_string(&EventDto::from(e)) {
                    Ok(json) => (SseEvent::default().event("arc").id(id).data(json), false),
                    Err(e) => (SseEvent::default().event("error").data(format!("encoding an event: {e}")), true),
                }
            }
            Err(e) => (SseEvent::default().event("error").data(e.to_string()), true),
        })
        // The stream ends with its first error.
        .scan(false, |ended, (event, failed)| {
            let out = (!*ended).then_some(Ok::<_, Infallible>(event));
            *ended |= failed;
            std::future::ready(out)
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_rfc3339_or_an_age() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("time").with_timezone(&Utc);
        let at = |s: &str| parse_since(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("2026-11-30T10:00:00Z").ok().as_deref(), Some("2026-11-30T10:00:00+00:00"));
        assert_eq!(at("90s").ok().as_deref(), Some("2026-11-30T11:58:30+00:00"));
        assert_eq!(at("15m").ok().as_deref(), Some("2026-11-30T11:45:00+00:00"));
        assert_eq!(at("2h").ok().as_deref(), Some("2026-11-30T10:00:00+00:00"));
        assert_eq!(at("1d").ok().as_deref(), Some("2026-11-29T12:00:00+00:00"));
        for bad in ["", "m", "5", "5w", "-5m", "99999999999999d", "yesterday", "5é"] {
            assert!(at(bad).is_err(), "{bad:?} accepted");
        }
    }
}
