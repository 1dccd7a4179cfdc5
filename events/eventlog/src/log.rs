//! The [`EventLog`] trait and the values it speaks in.

use std::fmt;
use std::pin::Pin;

use arc_events::{AggregateRef, RawEvent};
use async_trait::async_trait;
use futures::Stream;

use crate::error::LogError;

/// Most events in one append (one command's events).
pub const APPEND_EVENTS_MAX: usize = 1000;
/// Largest encoded append, in bytes (below NATS's default 1 MiB max payload).
pub const APPEND_BYTES_MAX: usize = 900 * 1024;

/// A place in the global order of the log. Opaque but totally ordered:
/// every event has a distinct position, and later appends have larger ones.
/// `Position::START` is before the first event.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// Before every event.
    pub const START: Self = Self(0);
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", self.0)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the appender believes the aggregate's last sequence is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Expected {
    /// The aggregate's last event has this seq; `0` means "it has no events yet".
    Exact(u64),
    /// Append after whatever is there (the backend still assigns gapless seqs).
    Any,
}

/// One command's events for one aggregate, stored atomically.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub aggregate: AggregateRef,
    pub expected: Expected,
    /// The events; their `seq` is assigned by the log (`expected + 1 ..`).
    pub events: Vec<RawEvent>,
}

/// The result of an append.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Appended {
    /// Position of the first event of the batch.
    pub first: Position,
    /// Position of the last event of the batch.
    pub last: Position,
    /// The aggregate's seq after the append.
    pub last_seq: u64,
    /// The batch had been stored before (same event ids); nothing was written.
    pub duplicate: bool,
}

/// An event as read back from the log.
#[derive(Clone, PartialEq, Debug)]
pub struct RecordedEvent {
    pub position: Position,
    pub raw: RawEvent,
}

/// A live stream of events in log order: first the backlog after the start
/// position, then new events as they are appended.
pub type Subscription = Pin<Box<dyn Stream<Item = Result<RecordedEvent, LogError>> + Send>>;

/// The event log. Both backends pass the same conformance suite
/// (`events/eventlog/tests/conformance.rs`).
#[async_trait]
pub trait EventLog: Send + Sync + fmt::Debug + 'static {
    /// Appends one batch to one aggregate, atomically: all events or none.
    /// Re-appending a batch whose first event id is already stored returns the
    /// original positions with `duplicate: true` (JetStream: within its
    /// duplicate window).
    async fn append(&self, request: AppendRequest) -> Result<Appended, LogError>;

    /// The aggregate's events with `seq > after_seq`, in order.
    async fn read_aggregate(&self, aggregate: &AggregateRef, after_seq: u64) -> Result<Vec<RecordedEvent>, LogError>;

    /// The same, given where event `after_seq` was stored (`at`, its
    /// position), so a backend that walks an aggregate's messages
    /// (JetStream) starts there instead of at the aggregate's first one.
    /// A wrong hint costs time, never events: the result is the same.
    async fn read_aggregate_after(
        &self,
        aggregate: &AggregateRef,
        after_seq: u64,
        at: Position,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        let _ = at;
        self.read_aggregate(aggregate, after_seq).await
    }

    /// Up to `limit` events after `after`, in log order.
    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, LogError>;

    /// Every event after `after`, then live ones. Callers keep their own
    /// position (a projection stores it with its read model) and resume from it.
    async fn subscribe(&self, after: Position) -> Result<Subscription, LogError>;

    /// The position of the last event (`Position::START` if empty).
    async fn head(&self) -> Result<Position, LogError>;

    /// A position at least `n` events before `from`: reading after it
    /// reaches `from` through `n` events or more (all of them when the log
    /// holds fewer). For tails (`arcctl events tail`). The default suits
    /// logs whose positions count events one by one (the embedded log).
    fn position_back(&self, from: Position, n: u64) -> Position {
        Position(from.0.saturating_sub(n))
    }

    /// Short backend name for logs and status pages.
    fn backend(&self) -> &'static str;

    /// Where media nodes put their latest load, beside the log (samples are
    /// not events: see [`crate::load`]).
    fn load_board(&self) -> std::sync::Arc<dyn crate::load::LoadBoard>;

    /// Where aggregate snapshots are kept, beside the log (see [`crate::snapshot`]).
    fn snapshots(&self) -> std::sync::Arc<dyn crate::snapshot::SnapshotStore>;

    /// Whether the log is reachable as far as this process can tell without
    /// asking (the state of its connection). While it is not, every call
    /// above fails at once with [`LogError::Unavailable`] instead of waiting.
    fn connected(&self) -> bool {
        true
    }

    /// Changes each time the connection to the log is established again
    /// after it was lost (a counter), so followers resubscribe at once
    /// instead of waiting for a timeout. `None`: the log never reconnects.
    fn reconnects(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// Checks a request against the limits and fills in each event's aggregate
/// fields and seq, starting after `last_seq`.
pub(crate) fn prepare(request: &AppendRequest, last_seq: u64) -> Result<Vec<RawEvent>, LogError> {
    validate(request)?;
    let mut events = request.events.clone();
    for (i, e) in events.iter_mut().enumerate() {
        e.seq = last_seq + 1 + i as u64;
    }
    Ok(events)
}

pub(crate) fn validate(request: &AppendRequest) -> Result<(), LogError> {
    if request.events.is_empty() {
        return Err(LogError::Invalid("no events".into()));
    }
    if request.events.len() > APPEND_EVENTS_MAX {
        return Err(LogError::TooLarge { what: "event count", actual: request.events.len(), max: APPEND_EVENTS_MAX });
    }
    let kind = request.aggregate.kind().as_str();
    let id = request.aggregate.id();
    for e in &request.events {
        if e.aggregate_type != kind || e.aggregate_id != id {
            return Err(LogError::Invalid(format!(
                "event {} names {}.{} but is appended to {}",
                e.id, e.aggregate_type, e.aggregate_id, request.aggregate
            )));
        }
    }
    let mut ids: Vec<_> = request.events.iter().map(|e| e.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != request.events.len() {
        return Err(LogError::Invalid("the batch repeats an event id".into()));
    }
    Ok(())
}
