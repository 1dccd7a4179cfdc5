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
//! - [`projection`]: the projection runner and the `rooms` and `nodes` projections.
//! - [`janitor`]: periodic commands — close idle rooms, declare silent nodes lost.
//! - [`api`]: the axum router (`/healthz`, `/v1/...`, the status page).
//! - [`server`]: wiring: opens the log and database, starts runners, janitors and HTTP.
//! - [`error`]: the `ControlError` enum.

pub mod api;
pub mod config;
pub mod error;
pub mod janitor;
pub mod media;
pub mod projection;
pub mod readdb;
pub mod server;
