//! Every event type of Arc, the envelope it travels in, and the pure
//! aggregates that decide which events a command produces.
//!
//! This crate is the log's format and the only place event types are defined.
//! It depends on no other crate of Arc and does no I/O.
//!
//! # Layout
//! - [`ids`]: typed identifiers (`RoomId`, `NodeId`, `EventId`, …), validated tokens.
//! - [`limits`]: the bounds on client input, one constant each, used by every
//!   check (aggregates, tokens, the API, the node protocol) and listed in the
//!   OpenAPI document.
//! - [`envelope`]: [`AggregateKind`], [`Actor`], the stored [`RawEvent`] and the typed [`Envelope`].
//! - [`event`]: the registry — one enum per aggregate and [`Event`] over all of them.
//! - [`app`], [`room`], [`participant`], [`track`], [`recording`], [`call`], [`node`], [`webhook`]:
//!   the payload structs of each aggregate's events (one struct per type and version).
//! - [`upcast`](crate::upcast): rewrites old event versions into current ones before folds see them.
//! - [`aggregate`]: the [`Aggregate`] trait (`decide` / `evolve`, and the
//!   snapshot form of long-lived ones) and the app, room, participant, track
//!   and node aggregates.
//! - [`schema`]: JSON Schemas of every event, as checked into `schemas/events/`,
//!   and the drift check of a schema directory (also used by `arc-nodeproto`).
//! - [`error`]: this crate's errors.

pub mod aggregate;
pub mod app;
pub mod call;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ids;
pub mod limits;
pub mod node;
pub mod operator;
pub mod participant;
pub mod recording;
pub mod room;
pub mod schema;
pub mod track;
mod upcast;
pub mod webhook;

pub use aggregate::{Aggregate, Context};
pub use envelope::{Actor, AggregateKind, AggregateRef, CommandMeta, Decoded, Envelope, RawEvent};
pub use error::{DecodeError, EncodeError, IdError};
pub use event::{
    AppEvent, CallEvent, Event, EventData, EventType, NodeEvent, OperatorEvent, ParticipantEvent, RecordingEvent,
    RoomEvent, TrackEvent, WebhookEvent,
};
pub use ids::{
    AppId, CallId, CorrelationId, DeliveryId, EventId, MediaSessionId, NodeId, ParticipantIdentity, ParticipantSid,
    RecordingId, RoomId, TrackId,
};
