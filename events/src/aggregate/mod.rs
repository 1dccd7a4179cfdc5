//! Aggregates as pure code: `decide(&state, command, ctx) -> events` holds every
//! business rule; `evolve(state, event) -> state` only applies facts.
//!
//! Nothing here does I/O or reads the clock: time arrives in [`Context`]. The
//! command executor in `arc-eventlog` loads an aggregate's history, folds it
//! with `evolve`, calls `decide`, and appends the result with optimistic
//! concurrency.

use std::error::Error as StdError;

use chrono::{DateTime, Utc};

use crate::envelope::AggregateKind;
use crate::event::Event;

pub mod app;
pub mod node;
pub mod participant;
pub mod room;
pub mod track;

/// What `decide` may know besides the state and the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The time the command is decided at.
    pub now: DateTime<Utc>,
}

/// A consistency boundary whose events share one subject in the log.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// Which subject family the aggregate's events go to.
    const KIND: AggregateKind;
    /// This aggregate's events.
    type Event: Clone + Into<Event> + Send + Sync;
    /// What can be asked of it.
    type Command: Send + Sync;
    /// Why a command is refused (a user's mistake, never an I/O failure).
    type Error: StdError + Send + Sync + 'static;

    /// Decides which events a command produces. An empty vector means
    /// "already so, nothing to do" (commands are idempotent where they can be).
    fn decide(&self, command: &Self::Command, ctx: &Context) -> Result<Vec<Self::Event>, Self::Error>;

    /// Applies one event that happened at `at`. Must not fail: events are facts.
    #[must_use]
    fn evolve(self, event: &Self::Event, at: DateTime<Utc>) -> Self;

    /// Picks this aggregate's events out of the all-kinds enum.
    fn narrow(event: Event) -> Option<Self::Event>;

    /// The version of this aggregate's snapshot form (bump it when the
    /// state's shape changes: older snapshots are then ignored); 0 means the
    /// aggregate is never snapshotted (short-lived ones).
    const SNAPSHOT_VERSION: u16 = 0;

    /// The state as a snapshot (`None` when not snapshotted).
    fn to_snapshot(&self) -> Option<serde_json::Value> {
        None
    }

    /// A state back from its snapshot (`None`: unusable, read the whole history).
    fn from_snapshot(value: serde_json::Value) -> Option<Self> {
        let _ = value;
        None
    }
}

/// The snapshot methods of an aggregate whose state derives serde.
macro_rules! snapshot_with_serde {
    ($version:expr) => {
        const SNAPSHOT_VERSION: u16 = $version;

        fn to_snapshot(&self) -> Option<serde_json::Value> {
            serde_json::to_value(self).ok()
        }

        fn from_snapshot(value: serde_json::Value) -> Option<Self> {
            serde_json::from_value(value).ok()
        }
    };
}
pub(crate) use snapshot_with_serde;

#[cfg(test)]
pub(crate) mod testing {
    //! given/when/then for aggregates.

    use super::{Aggregate, Context};
    use chrono::{DateTime, TimeZone, Utc};

    pub(crate) fn t(secs: i64) -> DateTime<Utc> {
        // INVARIANT: small literal offsets from the epoch are always valid timestamps.
        Utc.timestamp_opt(1_700_000_000 + secs, 0).single().expect("valid timestamp")
    }

    pub(crate) struct Given<A: Aggregate> {
        pub(crate) state: A,
    }

    /// Folds `events`, each at the given second.
    pub(crate) fn given<A: Aggregate>(events: &[(i64, A::Event)]) -> Given<A> {
        let state = events.iter().fold(A::default(), |s, (at, e)| s.evolve(e, t(*at)));
        Given { state }
    }

    impl<A: Aggregate> Given<A> {
        pub(crate) fn when(self, now_s: i64, command: A::Command) -> Result<Vec<A::Event>, A::Error> {
            self.state.decide(&command, &Context { now: t(now_s) })
        }
    }
}
