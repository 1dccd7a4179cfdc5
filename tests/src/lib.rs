//! Helpers shared by the black-box tests in `tests/tests/` (and the control
//! plane's): building events, reading a whole log back, checking the
//! invariants every log must keep whatever happened to the processes writing
//! it, and running nats-server processes.
//!
//! # Layout
//! - this file: events, reading back, [`Audit`].
//! - [`benchmarks`]: where the benchmark binaries write their sections of `BENCHMARKS.md`.
//! - [`nats`]: one nats-server or a three-server cluster, killed and restarted at will.
//! - [`rtc_client`]: a WebRTC client (`rtc`, sans-IO, on a real UDP socket)
//!   that publishes synthetic VP8 or plays, through WHIP/WHEP or any offer/answer.

pub mod benchmarks;
pub mod nats;
pub mod rtc_client;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arc_eventlog::{EventLog, LogError, Position, RecordedEvent};
use arc_events::room::{CloseReason, RoomClosed};
use arc_events::{Actor, AggregateKind, AggregateRef, CommandMeta, Event, EventId, RawEvent, RoomEvent};

/// Events per `read_all` page when reading a log back.
pub const READ_PAGE: usize = 1000;

/// The room aggregate `id`.
pub fn room(id: &str) -> AggregateRef {
    AggregateRef::new(AggregateKind::Room, id).expect("a valid aggregate id")
}

/// `n` fresh events (new ids) for `aggregate`; the log assigns their seqs.
pub fn room_events(aggregate: &AggregateRef, n: usize, component: &str) -> Vec<RawEvent> {
    let meta = CommandMeta::new(Actor::system(component), chrono::Utc::now());
    let event: Event = RoomEvent::from(RoomClosed { reason: CloseReason::Requested }).into();
    (0..n).map(|_| RawEvent::encode(aggregate, 0, &event, &meta).expect("encode a room event")).collect()
}

/// Every event of the log, paging through `read_all`.
pub async fn read_everything(log: &dyn EventLog) -> Vec<RecordedEvent> {
    read_everything_patiently(log, Duration::ZERO).await.0
}

/// Every event of the log, paging through `read_all`, retrying a page while
/// the log is `Unavailable` for up to `patience` in all (a cluster that just
/// lost a server). Also returns the errors retried.
pub async fn read_everything_patiently(log: &dyn EventLog, patience: Duration) -> (Vec<RecordedEvent>, Vec<String>) {
    let started = Instant::now();
    let mut out: Vec<RecordedEvent> = Vec::new();
    let mut retried = Vec::new();
    loop {
        let after = out.last().map_or(Position::START, |e| e.position);
        let page = match log.read_all(after, READ_PAGE).await {
            Ok(page) => page,
            Err(e @ LogError::Unavailable(_)) if started.elapsed() < patience => {
                retried.push(format!("read_all after {after} at {:?}: {e}", started.elapsed()));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => panic!("read_all after {after}: {e} (retried before: {retried:?})"),
        };
        assert!(page.len() <= READ_PAGE, "read_all returned {} events, more than its limit {READ_PAGE}", page.len());
        if page.is_empty() {
            return (out, retried);
        }
        out.extend(page);
    }
}

/// Where one stored event is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub position: Position,
    pub aggregate_id: String,
    pub seq: u64,
}

/// A whole log, read back and checked.
#[derive(Debug, Default)]
pub struct Audit {
    /// Every stored event by id.
    pub by_id: HashMap<EventId, Stored>,
    /// Each aggregate's number of events.
    pub per_aggregate: BTreeMap<String, u64>,
}

impl Audit {
    /// Checks what must hold for any log, whatever its writers went through:
    /// every event id stored once, positions strictly increasing, every
    /// record decodes, and each aggregate's seqs are 1..n in log order.
    pub fn check(all: &[RecordedEvent]) -> Self {
        let mut audit = Self::default();
        let mut previous = Position::START;
        for e in all {
            assert!(e.position > previous, "positions must strictly increase: {} after {previous}", e.position);
            previous = e.position;
            if let Err(err) = e.raw.decode() {
                panic!("event {} at {} does not decode: {err}", e.raw.id, e.position);
            }
            let last =
                audit.per_aggregate.entry(format!("{}.{}", e.raw.aggregate_type, e.raw.aggregate_id)).or_insert(0);
            assert_eq!(
                e.raw.seq,
                *last + 1,
                "{}.{}: seq {} at {} follows seq {} (seqs must be gapless, in log order)",
                e.raw.aggregate_type,
                e.raw.aggregate_id,
                e.raw.seq,
                e.position,
                *last
            );
            *last = e.raw.seq;
            let stored = Stored { position: e.position, aggregate_id: e.raw.aggregate_id.clone(), seq: e.raw.seq };
            if let Some(first) = audit.by_id.insert(e.raw.id, stored) {
                panic!("event {} is stored twice: at {} and at {}", e.raw.id, first.position, e.position);
            }
        }
        audit
    }

    /// Events stored.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No events stored.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
