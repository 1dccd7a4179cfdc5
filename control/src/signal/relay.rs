//! Data messages between a room's participants: ephemeral, never in the
//! event log. One instance (`dev`) relays them in process; several
//! instances (`serve`) publish each one on core NATS (`<stream>.signal.data`,
//! not captured by the log's stream) and every instance, the sender's too,
//! hands what arrives to its own sockets.
//!
//! The nodes' room signals (active speakers) arrive the same way: from the
//! embedded node in process, from nodes of their own on core NATS
//! (`arc.media.<node>.signals`, every instance subscribes to all).

use std::sync::Arc;

use arc_nodeproto::RoomSignal;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Data messages a slow socket may fall behind before it misses some.
const BACKLOG_MAX: usize = 1024;

/// One data message on its way to a room's sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataMessage {
    pub room_id: String,
    pub from_sid: String,
    pub from_identity: String,
    /// Identities it is for; empty: everyone in the room but the sender.
    pub to: Vec<String>,
    pub topic: Option<String>,
    pub payload: String,
}

impl DataMessage {
    /// Whether the socket of session `sid` (identity `identity`) in `room_id` gets it.
    pub fn is_for(&self, room_id: &str, sid: &str, identity: &str) -> bool {
        self.room_id == room_id && self.from_sid != sid && (self.to.is_empty() || self.to.iter().any(|t| t == identity))
    }
}

/// The relay of one instance.
#[derive(Debug, Clone)]
pub struct Relay {
    local: broadcast::Sender<Arc<DataMessage>>,
    signals: broadcast::Sender<Arc<RoomSignal>>,
    nats: Option<(async_nats::Client, String)>,
}

/// Why a data message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the message bus is unavailable: {0}")]
    Unavailable(String),
}

impl Relay {
    /// Relays in this process only (one instance).
    pub fn local() -> Self {
        Self { local: broadcast::channel(BACKLOG_MAX).0, signals: broadcast::channel(BACKLOG_MAX).0, nats: None }
    }

    /// Relays through NATS subject `<stream>.signal.data` (several instances);
    /// spawn [`Self::run`] to receive.
    pub fn nats(client: async_nats::Client, stream: &str) -> Self {
        Self {
            local: broadcast::channel(BACKLOG_MAX).0,
            signals: broadcast::channel(BACKLOG_MAX).0,
            nats: Some((client, format!("{stream}.signal.data"))),
        }
    }

    /// Room signals from now on.
    pub fn signals(&self) -> broadcast::Receiver<Arc<RoomSignal>> {
        self.signals.subscribe()
    }

    /// Where an embedded node hands its room signals.
    pub fn signal_sender(&self) -> broadcast::Sender<Arc<RoomSignal>> {
        self.signals.clone()
    }

    /// What arrives from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<DataMessage>> {
        self.local.subscribe()
    }

    /// Sends `m` to its room's sockets, on every instance.
    pub async fn send(&self, m: DataMessage) -> Result<(), RelayError> {
        match &self.nats {
            None => {
                let _ = self.local.send(Arc::new(m));
                Ok(())
            }
            Some((client, subject)) => {
                let body = serde_json::to_vec(&m).map_err(|e| RelayError::Unavailable(e.to_string()))?;
                client.publish(subject.clone(), body.into()).await.map_err(|e| RelayError::Unavailable(e.to_string()))
            }
        }
    }

    /// Receives the other instances' (and this one's) messages, and the
    /// nodes' room signals, from NATS, forever; returns at once for a local relay.
    pub async fn run(self) {
        let Some((client, subject)) = self.nats.clone() else { return };
        tokio::spawn(Self::signals_from(client.clone(), self.signals.clone()));
        loop {
            match client.subscribe(subject.clone()).await {
                Ok(mut sub) => {
                    while let Some(msg) = sub.next().await {
                        match serde_json::from_slice::<DataMessage>(&msg.payload) {
                            Ok(m) => {
                                let _ = self.local.send(Arc::new(m));
                            }
                            Err(e) => tracing::debug!(error = %e, "a foreign message on the data subject; skipped"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "subscribing to the data subject failed; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Every node's room signals, from NATS, forever.
    async fn signals_from(client: async_nats::Client, tx: broadcast::Sender<Arc<RoomSignal>>) {
        loop {
            match client.subscribe(arc_nodeproto::SIGNALS_SUBJECT_ALL).await {
                Ok(mut sub) => {
                    while let Some(msg) = sub.next().await {
                        match arc_nodeproto::decode_signal(&msg.payload) {
                            Ok(s) => {
                                let _ = tx.send(Arc::new(s));
                            }
                            Err(e) => {
                                tracing::debug!(subject = %msg.subject, error = %e, "a room signal that does not parse; skipped")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "subscribing to the nodes' room signals failed; retrying"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_goes_to_its_room_and_addressees_but_not_back() {
        let m = DataMessage {
            room_id: "rm_a".into(),
            from_sid: "pa_1".into(),
            from_identity: "ann".into(),
            to: Vec::new(),
            topic: None,
            payload: "hi".into(),
        };
        assert!(m.is_for("rm_a", "pa_2", "bob"));
        assert!(!m.is_for("rm_a", "pa_1", "ann"), "not back to the sender");
        assert!(!m.is_for("rm_b", "pa_2", "bob"), "not to another room");
        let direct = DataMessage { to: vec!["cy".into()], ..m };
        assert!(direct.is_for("rm_a", "pa_3", "cy"));
        assert!(!direct.is_for("rm_a", "pa_2", "bob"));
    }
}
