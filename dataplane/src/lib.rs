//! Arc's data-plane appliance, `arc-media`.
//!
//! Today it is the node's control loop: it registers the node in the event
//! log, reports load every [`HEARTBEAT_INTERVAL_S`] seconds, and deregisters
//! on shutdown. The SFU forwarding core arrives with the media-node issue.
//!
//! The data plane never imports the control plane: the two meet in the event
//! log (`arc-events` types through `arc-eventlog`).
//!
//! # Layout
//! - [`agent`]: registration, heartbeats and deregistration of one node.
//! - [`load`]: the node's own load figures (CPU of the process).

pub mod agent;
pub mod forward;
pub mod load;
pub mod media;
pub mod report;

pub use arc_events::aggregate::node::HEARTBEAT_INTERVAL_S;
