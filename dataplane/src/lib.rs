//! Arc's data-plane appliance, `arc-media`: the media node.
//!
//! The data plane never imports the control plane: the two meet in the event
//! log (`arc-events` types through `arc-eventlog`) and in the node protocol
//! (`arc-nodeproto`, requests and replies over NATS or in process).
//!
//! # Layout
//! - [`forward`]: the forwarding core (sans-IO): rewrite per subscriber
//!   (what the egress adds on the wire — audio level, renumbered VP8 ids —
//!   in [`forward::Wire`]), keyframes, the NACK cache, RED (`audio/red`)
//!   passed through or cut to its newest frame, each incoming track's
//!   reception statistics (loss, jitter).
//! - [`engine`]: the node's engine (sans-IO): sessions and their `rtc` peer
//!   connections, tracks, subscriptions, the forwarder between them, and the
//!   SRTP egress it does itself; bytes and time in, datagrams and events out;
//!   connection quality from subscribers' receiver reports (`engine::quality`);
//!   each player's downlink estimate and the simulcast layers that fit in it,
//!   and the layers publishers are asked to pause (dynacast)
//!   (`engine::bwe`, `engine::layers`).
//! - [`media`]: the driver around the engines: N worker threads, each with
//!   its engine and its `SO_REUSEPORT` socket on the media port (batched
//!   I/O), ICE-TCP, the clock, the request routing ([`media::MediaHandle`])
//!   and which worker carries each room ([`media::placement`]).
//! - [`report`]: the engine's events appended to the log as reports on the
//!   node's own aggregate (arc-control turns them into room and track events).
//! - [`follow`]: the log followed for what ends media (the log is the truth
//!   for the node too).
//! - [`agent`]: registration, heartbeats, drain and deregistration of one node.
//! - [`load`]: the node's own load figures (CPU of the process).
//! - [`permissions`]: what a node's NATS credentials allow (the Ansible
//!   `nats` role's node users are generated from it).
//! - [`metrics`]: the node's operator endpoint: Prometheus `/metrics`
//!   (loss, jitter and round trips as node-wide histograms), `/healthz`,
//!   `/readyz`; `arc-control dev` mounts it under `/media`.
//! - [`loadgen`]: the pure parts of the load generator `arc-load`
//!   (`src/bin/arc-load/`, with its Janus adapter): payload stamps, receivers' loss and latency.

pub mod agent;
pub mod engine;
pub mod follow;
pub mod forward;
pub mod load;
pub mod loadgen;
pub mod media;
pub mod metrics;
pub mod permissions;
pub mod report;

pub use arc_events::aggregate::node::HEARTBEAT_INTERVAL_S;
