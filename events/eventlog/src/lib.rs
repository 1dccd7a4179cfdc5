//! The event log: Arc's source of truth, behind one [`EventLog`] trait with two
//! real backends.
//!
//! - [`jetstream::JetStreamLog`]: NATS JetStream, stream `ARC_EVENTS`, one
//!   subject per aggregate (`arc.evt.<kind>.<id>`), one message per append
//!   (a batch is atomic), `Nats-Expected-Last-Subject-Sequence` for optimistic
//!   concurrency and `Nats-Msg-Id` for de-duplication. For clusters.
//! - [`sqlite::SqliteLog`]: an embedded log in SQLite (WAL, `synchronous=FULL`),
//!   written by one group-committing task, for `arc-control dev`.
//!
//! Above the trait, [`executor::Repository`] runs commands against pure
//! aggregates: load, `decide`, append with the expected sequence, retry on
//! conflict.
//!
//! # Layout
//! - [`log`]: the trait and its value types ([`Position`], [`Expected`], [`AppendRequest`], …).
//! - [`sqlite`]: the embedded backend.
//! - [`jetstream`]: the NATS JetStream backend.
//! - [`executor`]: command execution over any backend.
//! - [`load`]: the load board, nodes' latest load samples beside the log
//!   (memory in `dev`, a JetStream key-value bucket in clusters).
//! - [`snapshot`]: aggregate snapshots beside the log (a SQLite file in
//!   `dev`, a key-value bucket in clusters), derived and checked against the
//!   log before use.
//! - `kv` (private): the key-value buckets beside the JetStream stream.
//! - [`error`]: [`LogError`], [`ExecuteError`].

pub mod error;
pub mod executor;
pub mod jetstream;
mod kv;
pub mod load;
pub mod log;
pub mod snapshot;
pub mod sqlite;

pub use error::{ExecuteError, LogError};
pub use executor::{Executed, Repository};
pub use load::{LoadBoard, LoadSample};
pub use log::{
    APPEND_BYTES_MAX, APPEND_EVENTS_MAX, AppendRequest, Appended, EventLog, Expected, Position, RecordedEvent,
    Subscription,
};
