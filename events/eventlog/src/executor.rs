//! Running commands against aggregates: load the history, fold it with
//! `evolve`, `decide`, and append the new events expecting the sequence that
//! was read. On a conflict the aggregate is caught up and the command decided
//! again, up to [`CONFLICT_RETRIES_MAX`] times.
//!
//! A [`Repository`] keeps the folded state of recently used aggregates
//! (bounded by [`STATE_CACHE_MAX`]) so a busy aggregate — a room people join
//! all day — is not re-read from the start for every command; the cache is
//! only a hint, optimistic concurrency keeps it honest. It also remembers
//! where the last folded event is, so catching up reads only what is new.
//!
//! Aggregates with a `SNAPSHOT_VERSION` are loaded from their snapshot
//! ([`crate::snapshot`]) plus the events after it, once checked against the
//! log; a repository takes a new snapshot whenever an aggregate is
//! [`SNAPSHOT_EVERY`] events past its last one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_events::{Aggregate, AggregateRef, CommandMeta, Context, Decoded, RawEvent};

use crate::error::{ExecuteError, LogError};
use crate::log::{AppendRequest, Appended, EventLog, Expected, Position, RecordedEvent};
use crate::snapshot::Snapshot;

/// Attempts before a command on a contended aggregate gives up.
pub const CONFLICT_RETRIES_MAX: u32 = 8;
/// Aggregates whose folded state a repository remembers.
pub const STATE_CACHE_MAX: usize = 10_000;
/// Events past its last snapshot after which an aggregate is snapshotted again.
pub const SNAPSHOT_EVERY: u64 = 1_000;

/// A folded state and where it stands in the log.
#[derive(Debug, Clone)]
struct Folded<A> {
    state: A,
    /// The aggregate's seq (0: no events).
    seq: u64,
    /// Where event `seq` is, and its id (both unknown after a cache miss on 0).
    position: Position,
    event_id: Option<String>,
    /// The seq of its latest snapshot (taken or read) known to this repository.
    snapshot_seq: u64,
}

impl<A: Aggregate> Default for Folded<A> {
    fn default() -> Self {
        Self { state: A::default(), seq: 0, position: Position::START, event_id: None, snapshot_seq: 0 }
    }
}

/// What executing a command did.
#[derive(Debug, Clone)]
pub struct Executed<A: Aggregate> {
    /// The aggregate's state after the command.
    pub state: A,
    /// The events appended (empty when the command changed nothing).
    pub events: Vec<A::Event>,
    /// Where they went, if any were appended.
    pub appended: Option<Appended>,
    /// The aggregate's seq after the command.
    pub seq: u64,
}

/// Executes commands of one aggregate type against a log.
#[derive(Debug)]
pub struct Repository<A: Aggregate> {
    log: Arc<dyn EventLog>,
    cache: Mutex<HashMap<AggregateRef, Folded<A>>>,
    /// Events read from the log and folded (loads and catch-ups), for figures and tests.
    folded: AtomicU64,
}

impl<A: Aggregate + std::fmt::Debug> Repository<A> {
    /// A repository over `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log, cache: Mutex::new(HashMap::new()), folded: AtomicU64::new(0) }
    }

    /// Events this repository has read from the log and folded so far.
    pub fn events_folded(&self) -> u64 {
        self.folded.load(Ordering::Relaxed)
    }

    /// The aggregate's current state and seq, read from the log.
    pub async fn load(&self, aggregate: &AggregateRef) -> Result<(A, u64), LogError> {
        let folded = match self.cache_get(aggregate) {
            Some(cached) => self.catch_up(aggregate, cached).await?,
            None => self.load_cold(aggregate).await?,
        };
        let out = (folded.state.clone(), folded.seq);
        self.cache_put(aggregate, folded);
        Ok(out)
    }

    /// Folds what the log holds after `from`.
    async fn catch_up(&self, aggregate: &AggregateRef, from: Folded<A>) -> Result<Folded<A>, LogError> {
        let newer = self.log.read_aggregate_after(aggregate, from.seq, from.position).await?;
        Ok(self.fold(from, &newer))
    }

    /// A state not in the cache: from its snapshot when there is a usable
    /// one, else from the first event; snapshotted again if it was long.
    async fn load_cold(&self, aggregate: &AggregateRef) -> Result<Folded<A>, LogError> {
        let mut folded = match self.load_from_snapshot(aggregate).await {
            Some(f) => f,
            None => self.catch_up(aggregate, Folded::default()).await?,
        };
        if folded.seq >= folded.snapshot_seq + SNAPSHOT_EVERY {
            self.snapshot(aggregate, &mut folded).await;
        }
        Ok(folded)
    }

    /// The snapshot and the events after it, if the log still holds the
    /// event the snapshot was folded up to, where the snapshot says.
    async fn load_from_snapshot(&self, aggregate: &AggregateRef) -> Option<Folded<A>> {
        if A::SNAPSHOT_VERSION == 0 {
            return None;
        }
        let snapshot = match self.log.snapshots().get(aggregate).await {
            Ok(Some(s)) if s.version == A::SNAPSHOT_VERSION && s.seq > 0 => s,
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(%aggregate, error = %e, "snapshot unreadable; reading the whole history");
                return None;
            }
        };
        let state = A::from_snapshot(snapshot.state.clone())?;
        // From the snapshot's own event, to check it is still there.
        let tail = self.log.read_aggregate_after(aggregate, snapshot.seq - 1, snapshot.position()).await.ok()?;
        let (first, rest) = tail.split_first()?;
        if first.raw.seq != snapshot.seq || first.raw.id.to_string() != snapshot.event_id {
            tracing::warn!(%aggregate, seq = snapshot.seq, "the log no longer holds the event a snapshot was taken at; ignoring it");
            return None;
        }
        let at = Folded {
            state,
            seq: snapshot.seq,
            position: first.position,
            event_id: Some(snapshot.event_id),
            snapshot_seq: snapshot.seq,
        };
        self.folded.fetch_add(1, Ordering::Relaxed);
        Some(self.fold(at, rest))
    }

    /// Stores `folded` as the aggregate's snapshot (best effort: a failure
    /// costs a longer load later, nothing else).
    async fn snapshot(&self, aggregate: &AggregateRef, folded: &mut Folded<A>) {
        let (Some(state), Some(event_id)) = (folded.state.to_snapshot(), folded.event_id.clone()) else { return };
        if A::SNAPSHOT_VERSION == 0 || folded.position == Position::START {
            return;
        }
        let snapshot =
            Snapshot { version: A::SNAPSHOT_VERSION, seq: folded.seq, position: folded.position.0, event_id, state };
        match self.log.snapshots().put(aggregate, &snapshot).await {
            Ok(true) => folded.snapshot_seq = folded.seq,
            Ok(false) => {
                // Too big to store: do not try again for another SNAPSHOT_EVERY events.
                tracing::debug!(%aggregate, "state too big to snapshot");
                folded.snapshot_seq = folded.seq;
            }
            Err(e) => tracing::debug!(%aggregate, error = %e, "snapshot not stored"),
        }
    }

    fn fold(&self, from: Folded<A>, history: &[RecordedEvent]) -> Folded<A> {
        self.folded.fetch_add(history.len() as u64, Ordering::Relaxed);
        let Folded { state, seq, mut position, mut event_id, snapshot_seq } = from;
        if let Some(last) = history.iter().max_by_key(|e| e.raw.seq).filter(|e| e.raw.seq > seq) {
            position = last.position;
            event_id = Some(last.raw.id.to_string());
        }
        let (state, seq) = fold_history(state, seq, history);
        Folded { state, seq, position, event_id, snapshot_seq }
    }

    /// Decides `command` on the aggregate and appends the resulting events.
    #[tracing::instrument(name = "execute", skip_all, fields(aggregate = %aggregate))]
    pub async fn execute(
        &self,
        aggregate: &AggregateRef,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let ctx = Context { now: meta.occurred_at };
        // Whether `state` may lag the log: a cached state is a hint, and only
        // an append (with its expected seq) proves it current.
        let (mut folded, mut maybe_stale) = match self.cache_get(aggregate) {
            Some(cached) => (cached, true),
            None => (self.load_cold(aggregate).await?, false),
        };
        for _ in 0..CONFLICT_RETRIES_MAX {
            let (state, seq) = (&folded.state, folded.seq);
            let decided = state.decide(command, &ctx);
            // "Nothing to do" and refusals are never appended, so nothing
            // checks them against the log: decided on a cached state they
            // would silently act on the past (a leave judged against a room
            // whose newer join another process wrote; the rejoin ghost). Catch
            // up first and decide again.
            if maybe_stale && !decided.as_ref().is_ok_and(|e| !e.is_empty()) {
                let newer = self.log.read_aggregate_after(aggregate, seq, folded.position).await?;
                maybe_stale = false;
                if !newer.is_empty() {
                    folded = self.fold(folded, &newer);
                    self.cache_put(aggregate, folded.clone());
                    continue;
                }
            }
            let events = decided.map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                self.cache_put(aggregate, folded.clone());
                return Ok(Executed { state: folded.state, events, appended: None, seq });
            }
            let raw = events
                .iter()
                .enumerate()
                .map(|(i, e)| RawEvent::encode(aggregate, seq + 1 + i as u64, &e.clone().into(), meta))
                .collect::<Result<Vec<_>, _>>()?;
            let last_id = raw.last().map(|e| e.id.to_string());
            let request = AppendRequest { aggregate: aggregate.clone(), expected: Expected::Exact(seq), events: raw };
            match self.log.append(request).await {
                Ok(appended) => {
                    let at = meta.occurred_at;
                    let state = events.iter().fold(folded.state, |s, e| s.evolve(e, at));
                    let mut after = Folded {
                        state: state.clone(),
                        seq: appended.last_seq,
                        position: appended.last,
                        event_id: last_id,
                        snapshot_seq: folded.snapshot_seq,
                    };
                    if after.seq >= after.snapshot_seq + SNAPSHOT_EVERY {
                        self.snapshot(aggregate, &mut after).await;
                    }
                    self.cache_put(aggregate, after);
                    return Ok(Executed { state, events, appended: Some(appended), seq: appended.last_seq });
                }
                Err(LogError::Conflict { .. }) => {
                    // Someone else appended: catch up from where we were and decide again.
                    folded = self.catch_up(aggregate, folded).await?;
                    self.cache_put(aggregate, folded.clone());
                }
                Err(e) => {
                    self.cache_forget(aggregate);
                    return Err(e.into());
                }
            }
        }
        self.cache_forget(aggregate);
        Err(ExecuteError::Contended { aggregate: aggregate.clone(), attempts: CONFLICT_RETRIES_MAX })
    }

    fn cache_get(&self, aggregate: &AggregateRef) -> Option<Folded<A>> {
        self.cache.lock().ok()?.get(aggregate).cloned()
    }

    fn cache_put(&self, aggregate: &AggregateRef, folded: Folded<A>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= STATE_CACHE_MAX && !cache.contains_key(aggregate) {
                cache.clear();
            }
            cache.insert(aggregate.clone(), folded);
        }
    }

    fn cache_forget(&self, aggregate: &AggregateRef) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(aggregate);
        }
    }
}

/// Folds stored events into `state`; types this build does not know are skipped.
fn fold_history<A: Aggregate>(mut state: A, mut seq: u64, history: &[RecordedEvent]) -> (A, u64) {
    for recorded in history {
        seq = seq.max(recorded.raw.seq);
        match recorded.raw.decode() {
            Ok(Decoded::Known(envelope)) => {
                let at = envelope.occurred_at;
                if let Some(event) = A::narrow(envelope.event) {
                    state = state.evolve(&event, at);
                }
            }
            Ok(Decoded::Unknown { event_type, version }) => {
                tracing::warn!(%event_type, version, position = %recorded.position, "skipping an event type this build does not know");
            }
            Err(e) => {
                tracing::error!(error = %e, position = %recorded.position, "skipping an undecodable event");
            }
        }
    }
    (state, seq)
}
