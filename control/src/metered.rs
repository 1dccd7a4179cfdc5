//! The event log as arc-control uses it, measured: every append is counted
//! by outcome and timed, and the events it stored are counted, for
//! `/metrics` (`arc_log_appends_total{outcome}`,
//! `arc_log_appended_events_total`, `arc_log_append_duration_seconds`).
//! Everything else goes straight to the log underneath.

use std::sync::Arc;
use std::time::Instant;

use arc_eventlog::{AppendRequest, Appended, EventLog, LogError, Position, RecordedEvent, Subscription};
use arc_events::AggregateRef;
use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The append figures (cheap to clone: the metrics are shared).
#[derive(Clone, Debug)]
pub struct LogMetrics {
    appends: Family<OutcomeLabels, Counter>,
    events: Counter,
    latency: Histogram,
}

impl Default for LogMetrics {
    fn default() -> Self {
        Self {
            appends: Family::default(),
            events: Counter::default(),
            // 0.1 ms to about 3.3 s.
            latency: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
        }
    }
}

impl LogMetrics {
    /// Adds the families to `registry` (prefixed as the registry is).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "log_appends",
            "Appends to the event log by outcome (ok, duplicate, conflict, refused, unavailable, failed)",
            self.appends.clone(),
        );
        registry.register("log_appended_events", "Events stored by this instance's appends", self.events.clone());
        registry.register_with_unit(
            "log_append_duration",
            "Time from an append's start to the log's acknowledgement (durable), whatever its outcome",
            Unit::Seconds,
            self.latency.clone(),
        );
    }

    fn record(&self, result: &Result<Appended, LogError>, events: usize, seconds: f64) {
        let outcome = match result {
            Ok(a) if a.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(LogError::Conflict { .. }) => "conflict",
            Err(LogError::Invalid(_) | LogError::TooLarge { .. }) => "refused",
            Err(LogError::Unavailable(_)) => "unavailable",
            Err(_) => "failed",
        };
        self.appends.get_or_create(&OutcomeLabels { outcome }).inc();
        if matches!(result, Ok(a) if !a.duplicate) {
            self.events.inc_by(events as u64);
        }
        self.latency.observe(seconds);
    }
}

/// A log that records [`LogMetrics`] for its appends.
#[derive(Debug)]
pub struct MeteredLog {
    inner: Arc<dyn EventLog>,
    metrics: LogMetrics,
}

impl MeteredLog {
    pub fn new(inner: Arc<dyn EventLog>, metrics: LogMetrics) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl EventLog for MeteredLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, LogError> {
        let events = request.events.len();
        let started = Instant::now();
        let result = self.inner.append(request).await;
        self.metrics.record(&result, events, started.elapsed().as_secs_f64());
        result
    }

    async fn read_aggregate(&self, aggregate: &AggregateRef, after_seq: u64) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_aggregate(aggregate, after_seq).await
    }

    async fn read_aggregate_after(
        &self,
        aggregate: &AggregateRef,
        after_seq: u64,
        at: Position,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_aggregate_after(aggregate, after_seq, at).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.inner.read_all(after, limit).await
    }

    async fn subscribe(&self, after: Position) -> Result<Subscription, LogError> {
        self.inner.subscribe(after).await
    }

    async fn head(&self) -> Result<Position, LogError> {
        self.inner.head().await
    }

    fn position_back(&self, from: Position, n: u64) -> Position {
        self.inner.position_back(from, n)
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn load_board(&self) -> Arc<dyn arc_eventlog::load::LoadBoard> {
        self.inner.load_board()
    }

    fn snapshots(&self) -> Arc<dyn arc_eventlog::snapshot::SnapshotStore> {
        self.inner.snapshots()
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn reconnects(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.reconnects()
    }
}
