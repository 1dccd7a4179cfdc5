//! Signalling for rooms of people (`/v1/rtc`): the protocol's messages
//! ([`protocol`], with JSON Schemas in `schemas/signal/`), one socket's view
//! of its room folded from the log ([`view`], pure), and the instance's one
//! follower of the log that feeds every socket ([`hub`]), and the relay of
//! data messages between sockets, in process or over NATS ([`relay`]). The socket itself
//! is an entry point in `api/rtc.rs`; what it does goes through
//! `usecase::signal`.

pub mod hub;
pub mod protocol;
pub mod relay;
pub mod view;

pub use hub::Hub;
pub use relay::Relay;
