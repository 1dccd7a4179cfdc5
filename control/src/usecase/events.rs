//! The event log as an operator reads it (`GET /v1/events`, `arcctl events`):
//! pages forward from a position, the last N events, the position at a
//! moment in time, one event, and a live follow. Filters: one aggregate
//! (`room:<id>`) and event types. These read the log itself, not a read
//! model: what they show is what is stored.

use std::collections::VecDeque;

use arc_eventlog::{EventLog, Position, RecordedEvent};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};

use super::{UseCaseError, UseCaseResult};
use arc_events::{AggregateKind, AggregateRef};

/// Most events one page or tail answers.
pub const PAGE_MAX: usize = 1000;
/// Most events a filtered page or tail looks at before it answers (a page
/// then gives the position to go on from; a tail looks no further back).
pub const SCAN_MAX: usize = 10_000;
/// Longest event type filter list.
const TYPES_MAX: usize = 32;

/// Which events to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// One aggregate: its kind (`room`, `app`, `node`, …) and id.
    pub aggregate: Option<AggregateRef>,
    /// Event types (`room.created`); a type ending in `.*` matches its prefix
    /// (`room.*`). Empty: every type.
    pub types: Vec<String>,
}

impl EventFilter {
    /// From the query's `aggregate=<kind>:<id>` and `type=<t>[,<t>…]`.
    pub fn parse(aggregate: Option<&str>, types: Option<&str>) -> UseCaseResult<Self> {
        let aggregate = match aggregate.map(str::trim).filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => {
                let (kind, id) = a.split_once(':').ok_or_else(|| {
                    UseCaseError::invalid("aggregate", format!("{a:?} is not <kind>:<id> (e.g. room:rm_…)"))
                })?;
                let known = AggregateKind::ALL.map(AggregateKind::as_str).join(", ");
                let kind = AggregateKind::parse(kind).ok_or_else(|| {
                    UseCaseError::invalid("aggregate", format!("{kind:?} is not an aggregate kind ({known})"))
                })?;
                Some(
                    AggregateRef::new(kind, id)
                        .map_err(|e| UseCaseError::invalid("aggregate", format!("{id:?}: {e}")))?,
                )
            }
        };
        let types: Vec<String> = types
            .into_iter()
            .flat_map(|t| t.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect();
        if types.len() > TYPES_MAX {
            return Err(UseCaseError::invalid("type", format!("at most {TYPES_MAX} types")));
        }
        if let Some(bad) =
            types.iter().find(|t| t.len() > 128 || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._*-".contains(c)))
        {
            return Err(UseCaseError::invalid(
                "type",
                format!("{bad:?} is not an event type (e.g. room.created, room.*)"),
            ));
        }
        Ok(Self { aggregate, types })
    }

    /// Whether `e` passes.
    pub fn matches(&self, e: &RecordedEvent) -> bool {
        let raw = &e.raw;
        if let Some(a) = &self.aggregate
            && (raw.aggregate_type != a.kind().as_str() || raw.aggregate_id != a.id())
        {
            return false;
        }
        self.types.is_empty()
            || self.types.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => raw.event_type.starts_with(prefix),
                None => raw.event_type == *t,
            })
    }
}

/// Events in log order, and where to go on from.
#[derive(Debug, Clone)]
pub struct EventPage {
    pub events: Vec<RecordedEvent>,
    /// The last position looked at: the next page starts after it (equal to
    /// `head` when the page reached the end of the log).
    pub next: Position,
    /// The log's head when the page was read.
    pub head: Position,
}

/// Up to `limit` events after `after` that pass `filter`.
pub async fn page(log: &dyn EventLog, after: Position, limit: usize, filter: &EventFilter) -> UseCaseResult<EventPage> {
    let limit = limit.clamp(1, PAGE_MAX);
    let head = log.head().await?;
    if let Some(aggregate) = &filter.aggregate {
        let events: Vec<RecordedEvent> = log
            .read_aggregate(aggregate, 0)
            .await?
            .into_iter()
            .filter(|e| e.position > after && filter.matches(e))
            .take(limit)
            .collect();
        let next = if events.len() == limit { events.last().map_or(after, |e| e.position) } else { head.max(after) };
        return Ok(EventPage { events, next, head });
    }
    let mut events = Vec::new();
    let mut next = after;
    let mut scanned = 0usize;
    while events.len() < limit && scanned < SCAN_MAX && next < head {
        let batch = log.read_all(next, PAGE_MAX).await?;
        let Some(last) = batch.last().map(|e| e.position) else { break };
        for e in batch {
            scanned += 1;
            next = e.position;
            if filter.matches(&e) {
                events.push(e);
                if events.len() == limit {
                    break;
                }
            }
        }
        if next < last {
            break;
        }
    }
    Ok(EventPage { events, next: next.max(after), head })
}

/// The last `n` events that pass `filter` (a type filter looks at the last
/// [`SCAN_MAX`] events of the log).
pub async fn tail(log: &dyn EventLog, n: usize, filter: &EventFilter) -> UseCaseResult<EventPage> {
    let n = n.clamp(1, PAGE_MAX);
    let head = log.head().await?;
    if let Some(aggregate) = &filter.aggregate {
        let all = log.read_aggregate(aggregate, 0).await?;
        let matching: Vec<RecordedEvent> = all.into_iter().filter(|e| filter.matches(e)).collect();
        let events = matching[matching.len().saturating_sub(n)..].to_vec();
        return Ok(EventPage { events, next: head, head });
    }
    let back = if filter.types.is_empty() { n } else { SCAN_MAX };
    let mut after = log.position_back(head, back as u64);
    let mut kept: VecDeque<RecordedEvent> = VecDeque::with_capacity(n + 1);
    while after < head {
        let batch = log.read_all(after, PAGE_MAX).await?;
        let Some(last) = batch.last().map(|e| e.position) else { break };
        for e in batch.into_iter().filter(|e| e.position <= head && filter.matches(e)) {
            if kept.len() == n {
                kept.pop_front();
            }
            kept.push_back(e);
        }
        after = last;
    }
    Ok(EventPage { events: kept.into(), next: head, head })
}

/// The position to read after for the events from `at` on: the last event
/// that happened before `at` (by `occurred_at`, which follows log order up
/// to the clocks of the instances that wrote it). A binary search over
/// positions, one read each.
pub async fn position_at(log: &dyn EventLog, at: DateTime<Utc>) -> UseCaseResult<Position> {
    let head = log.head().await?;
    let (mut lo, mut hi) = (Position::START.0, head.0);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match log.read_all(Position(mid), 1).await?.first() {
            Some(e) if e.raw.occurred_at < at => lo = e.position.0.max(mid + 1),
            _ => hi = mid,
        }
    }
    Ok(Position(lo))
}

/// How many events lie after `after` up to `head`, counting at most `cap`
/// (a projection's lag for `/v1/status`; reads only when there is a lag).
pub async fn count_between(log: &dyn EventLog, after: Position, head: Position, cap: u64) -> UseCaseResult<u64> {
    let mut count = 0u64;
    let mut at = after;
    while at < head && count < cap {
        let batch = log.read_all(at, PAGE_MAX).await?;
        let Some(last) = batch.last().map(|e| e.position) else { break };
        count += batch.iter().filter(|e| e.position <= head).count() as u64;
        at = last;
    }
    Ok(count.min(cap))
}

/// The event at `position`, if there is one.
pub async fn event_at(log: &dyn EventLog, position: Position) -> UseCaseResult<Option<RecordedEvent>> {
    if position == Position::START {
        return Ok(None);
    }
    let found = log.read_all(Position(position.0 - 1), 1).await?;
    Ok(found.into_iter().next().filter(|e| e.position == position))
}

/// Every event after `after` that passes `filter`, then live ones, until the
/// log fails (the stream's last item is the error).
pub async fn follow(
    log: &dyn EventLog,
    after: Position,
    filter: EventFilter,
) -> UseCaseResult<impl Stream<Item = UseCaseResult<RecordedEvent>> + Send + use<>> {
    let subscription = log.subscribe(after).await?;
    Ok(subscription.filter_map(move |item| {
        let out = match item {
            Ok(e) if filter.matches(&e) => Some(Ok(e)),
            Ok(_) => None,
            Err(e) => Some(Err(UseCaseError::from(e))),
        };
        std::future::ready(out)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_refuse_clearly() {
        let f = EventFilter::parse(Some("room:rm_1"), Some("room.created, room.participant_*")).expect("parse");
        assert_eq!(f.aggregate, Some(AggregateRef::new(AggregateKind::Room, "rm_1").expect("ref")));
        assert_eq!(f.types, vec!["room.created".to_owned(), "room.participant_*".to_owned()]);
        assert_eq!(EventFilter::parse(None, Some(" ")).expect("parse"), EventFilter::default());
        for (aggregate, types) in [
            (Some("room"), None),
            (Some(":x"), None),
            (Some("room:"), None),
            (Some("moon:x"), None),
            (None, Some("room created")),
        ] {
            let e = EventFilter::parse(aggregate, types).expect_err("refused");
            assert!(matches!(e, UseCaseError::Invalid { .. }), "{e}");
        }
    }
}
