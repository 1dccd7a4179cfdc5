//! Running commands against aggregates: load the history, fold it with
//! `evolve`, `decide`, and append the new events expecting the sequence that
//! was read. On a conflict the aggregate is caught up and the command decided
//! again, up to [`CONFLICT_RETRIES_MAX`] times.
//!
//! A [`Repository`] keeps the folded state of recently used aggregates
//! (bounded by [`STATE_CACHE_MAX`]) so a busy aggregate — a node heartbeating
//! every two seconds — is not re-read from the start for every command; the
//! cache is only a hint, optimistic concurrency keeps it honest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_events::{Aggregate, AggregateRef, CommandMeta, Context, Decoded, RawEvent};

use crate::error::{ExecuteError, LogError};
use crate::log::{AppendRequest, Appended, EventLog, Expected, RecordedEvent};

/// Attempts before a command on a contended aggregate gives up.
pub const CONFLICT_RETRIES_MAX: u32 = 8;
/// Aggregates whose folded state a repository remembers.
pub const STATE_CACHE_MAX: usize = 10_000;

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
    cache: Mutex<HashMap<AggregateRef, (A, u64)>>,
}

impl<A: Aggregate + std::fmt::Debug> Repository<A> {
    /// A repository over `log`.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self { log, cache: Mutex::new(HashMap::new()) }
    }

    /// The aggregate's current state and seq, read from the log.
    pub async fn load(&self, aggregate: &AggregateRef) -> Result<(A, u64), LogError> {
        let cached = self.cache_get(aggregate);
        let (state, seq) = cached.unwrap_or_default();
        let (state, seq) = fold_history(state, seq, &self.log.read_aggregate(aggregate, seq).await?);
        self.cache_put(aggregate, &state, seq);
        Ok((state, seq))
    }

    /// Decides `command` on the aggregate and appends the resulting events.
    pub async fn execute(
        &self,
        aggregate: &AggregateRef,
        command: &A::Command,
        meta: &CommandMeta,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let ctx = Context { now: meta.occurred_at };
        // Whether `state` may lag the log: a cached state is a hint, and only
        // an append (with its expected seq) proves it current.
        let (mut state, mut seq, mut maybe_stale) = match self.cache_get(aggregate) {
            Some((state, seq)) => (state, seq, true),
            None => {
                let (state, seq) = self.load(aggregate).await?;
                (state, seq, false)
            }
        };
        for _ in 0..CONFLICT_RETRIES_MAX {
            let decided = state.decide(command, &ctx);
            // "Nothing to do" and refusals are never appended, so nothing
            // checks them against the log: decided on a cached state they
            // would silently act on the past (a leave judged against a room
            // whose newer join another process wrote; the rejoin ghost). Catch
            // up first and decide again.
            if maybe_stale && !decided.as_ref().is_ok_and(|e| !e.is_empty()) {
                let newer = self.log.read_aggregate(aggregate, seq).await?;
                maybe_stale = false;
                if !newer.is_empty() {
                    (state, seq) = fold_history(state, seq, &newer);
                    self.cache_put(aggregate, &state, seq);
                    continue;
                }
            }
            let events = decided.map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed { state, events, appended: None, seq });
            }
            let raw = events
                .iter()
                .enumerate()
                .map(|(i, e)| RawEvent::encode(aggregate, seq + 1 + i as u64, &e.clone().into(), meta))
                .collect::<Result<Vec<_>, _>>()?;
            let request = AppendRequest { aggregate: aggregate.clone(), expected: Expected::Exact(seq), events: raw };
            match self.log.append(request).await {
                Ok(appended) => {
                    let at = meta.occurred_at;
                    let state = events.iter().fold(state, |s, e| s.evolve(e, at));
                    self.cache_put(aggregate, &state, appended.last_seq);
                    return Ok(Executed { state, events, appended: Some(appended), seq: appended.last_seq });
                }
                Err(LogError::Conflict { .. }) => {
                    // Someone else appended: catch up from where we were and decide again.
                    let newer = self.log.read_aggregate(aggregate, seq).await?;
                    (state, seq) = fold_history(state, seq, &newer);
                    self.cache_put(aggregate, &state, seq);
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

    fn cache_get(&self, aggregate: &AggregateRef) -> Option<(A, u64)> {
        self.cache.lock().ok()?.get(aggregate).cloned()
    }

    fn cache_put(&self, aggregate: &AggregateRef, state: &A, seq: u64) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= STATE_CACHE_MAX && !cache.contains_key(aggregate) {
                cache.clear();
            }
            cache.insert(aggregate.clone(), (state.clone(), seq));
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
