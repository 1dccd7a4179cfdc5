//! Arc's control plane: commands that append events, projections that fold
//! them into read models, janitors that turn time into commands, and the
//! HTTP API and status page.
//!
//! Every piece here is stateless: what it knows comes from the event log
//! (through projections), so `arc-control` can be killed and restarted at any
//! moment without losing anything.
//!
//! # Layout
//! - [`config`]: settings from a TOML file, `ARC_*` environment and flags.
//! - [`readdb`]: the read-model database (PostgreSQL or SQLite) and its migrations.
//! - [`projection`]: the projection runner and its projections (rooms, nodes,
//!   apps, participants, tracks, revoked tokens).
//! - [`janitor`]: periodic commands — close idle rooms, declare silent nodes
//!   lost, end what lost nodes held — and the reconciliation of each node's
//!   sessions with the log.
//! - [`reports`]: the node-report reactor — media nodes' reports (on their
//!   own node aggregate) become room and track events, only for sessions
//!   placed on the reporting node.
//! - [`media`]: placement of rooms on nodes, and requests to nodes (the node
//!   protocol, `arc-nodeproto`, over NATS or in process).
//! - [`embedded`]: the media node `dev` carries (feature `embedded-node`; the
//!   only code that imports `arc-media`).
//! - [`usecase`]: the application layer — apps and tokens, rooms, joins,
//!   leaves, kicks, mutes, media sessions, nodes, quota turns, read-model
//!   queries, the signalling socket's requests — that every entry point
//!   calls (no HTTP in it).
//! - [`signal`]: signalling for rooms of people: the `/v1/rtc` protocol and
//!   its schemas, one socket's view of its room folded from the log (pure),
//!   the instance's one log follower for every socket, and the relay of
//!   data messages.
//! - [`api`]: the axum router (`/healthz`, `/readyz`, `/metrics`, `/v1/...`, WHIP/WHEP,
//!   the signalling WebSocket `/v1/rtc`, the status, publish, play and meeting
//!   pages, the OpenAPI document): parse, authorize, call a use case, map to HTTP.
//! - [`server`]: wiring: opens the log and database, starts runners, janitors
//!   and HTTP, each writer under its lease (`arc-lease`: one per cluster).
//! - [`metered`]: the event log wrapped to count and time appends for `/metrics`.
//! - [`error`]: the `ControlError` enum.

pub mod api;
pub mod config;
#[cfg(feature = "embedded-node")]
pub mod embedded;
pub mod error;
pub mod janitor;
pub mod media;
pub mod metered;
pub mod projection;
pub mod readdb;
pub mod reports;
pub mod server;
pub mod signal;
pub mod tls;
pub mod usecase;
