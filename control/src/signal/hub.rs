//! One follower of the log per instance for every signalling socket: it
//! reads the log from its head on, keeps the room, participant and track
//! events, and broadcasts them; each socket filters its room's. (A socket
//! per log subscription would be one JetStream consumer per participant.)

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::{EventLog, Position};
use arc_events::{Decoded, Envelope, Event};
use futures::StreamExt;
use tokio::sync::broadcast;

/// Events a slow socket may fall behind before it gets the whole state again.
pub const BACKLOG_MAX: usize = 4096;
/// Wait before following the log again after it failed.
const RETRY: Duration = Duration::from_millis(250);

/// The broadcast of the log's room, participant and track events.
#[derive(Debug, Clone)]
pub struct Hub {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Self { tx: broadcast::channel(BACKLOG_MAX).0 }
    }

    /// What the log says from now on (subscribe before reading a snapshot:
    /// what the snapshot misses then arrives here).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }

    /// Follows the log from its head, forever (spawn it once per instance).
    pub async fn run(self, log: Arc<dyn EventLog>) {
        let mut after = loop {
            match log.head().await {
                Ok(h) => break h,
                Err(e) => {
                    tracing::warn!(error = %e, "signalling: reading the log head failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        loop {
            match self.follow(log.as_ref(), &mut after).await {
                Ok(()) => tracing::debug!("signalling: log subscription ended; resubscribing"),
                Err(e) => tracing::debug!(error = %e, "signalling: following the log failed; resubscribing"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn follow(&self, log: &dyn EventLog, after: &mut Position) -> Result<(), arc_eventlog::LogError> {
        let mut events = log.subscribe(*after).await?;
        while let Some(recorded) = events.next().await {
            let recorded = recorded?;
            *after = recorded.position;
            let Ok(Decoded::Known(envelope)) = recorded.raw.decode() else { continue };
            if matches!(envelope.event, Event::Room(_) | Event::Participant(_) | Event::Track(_)) {
                // No socket listening is fine.
                let _ = self.tx.send(Arc::from(envelope));
            }
        }
        Ok(())
    }
}
