//! The load board: each media node's latest load sample, beside the log,
//! not in it.
//!
//! A node reports its load every [`HEARTBEAT_INTERVAL_S`] seconds. Only the
//! latest sample matters (placement reads it, the liveness janitor reads its
//! time), so samples are not events: the permanent log grows with state
//! changes (registered, draining, lost, …), not with time.
//!
//! - [`MemoryBoard`]: in process, for `arc-control dev` (its one node runs in
//!   the same process; a restart starts with no samples, and a node that has
//!   not reported yet counts as seen at its registration).
//! - [`KvBoard`]: a JetStream key-value bucket beside the event stream, one
//!   key per node, history 1, entries expiring after [`SAMPLE_MAX_AGE`].
//!   Readers keep a copy refreshed at most every [`KV_REFRESH`], so placing
//!   a participant costs no round trip in the common case.
//!
//! [`HEARTBEAT_INTERVAL_S`]: arc_events::aggregate::node::HEARTBEAT_INTERVAL_S

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arc_events::NodeId;
use arc_events::node::NodeLoad;
use async_nats::jetstream;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::LogError;

/// How long a sample stays on a [`KvBoard`] (older ones tell nothing).
pub const SAMPLE_MAX_AGE: Duration = Duration::from_secs(120);
/// Longest a [`KvBoard`] reader's copy is used before it is read again.
pub const KV_REFRESH: Duration = Duration::from_millis(500);
/// Largest sample accepted from the bucket (a node's is ≈ 200 bytes).
const SAMPLE_BYTES_MAX: usize = 4096;

/// One node's latest load, and when the node measured it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSample {
    pub at: DateTime<Utc>,
    pub load: NodeLoad,
}

/// Where nodes put their load and the control plane reads it.
#[async_trait]
pub trait LoadBoard: Send + Sync + fmt::Debug + 'static {
    /// Records `node`'s latest sample (replacing the one before).
    async fn put(&self, node: &NodeId, sample: &LoadSample) -> Result<(), LogError>;

    /// The latest sample of every node that reported recently.
    async fn latest(&self) -> Result<HashMap<NodeId, LoadSample>, LogError>;
}

/// Samples in process memory (`arc-control dev`).
#[derive(Debug, Default)]
pub struct MemoryBoard {
    samples: Mutex<HashMap<NodeId, LoadSample>>,
}

#[async_trait]
impl LoadBoard for MemoryBoard {
    async fn put(&self, node: &NodeId, sample: &LoadSample) -> Result<(), LogError> {
        self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(node.clone(), sample.clone());
        Ok(())
    }

    async fn latest(&self) -> Result<HashMap<NodeId, LoadSample>, LogError> {
        Ok(self.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }
}

/// Samples in a JetStream key-value bucket (clusters).
pub struct KvBoard {
    client: async_nats::Client,
    store: jetstream::kv::Store,
    bucket: String,
    /// The last full read and when it was made.
    copy: tokio::sync::Mutex<Option<(Instant, HashMap<NodeId, LoadSample>)>>,
}

impl fmt::Debug for KvBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvBoard").field("bucket", &self.bucket).finish()
    }
}

impl KvBoard {
    /// Opens the bucket `bucket`, or creates it (when `make`).
    pub async fn open(js: &jetstream::Context, bucket: &str, replicas: usize, make: bool) -> Result<Self, LogError> {
        let spec = crate::kv::BucketSpec {
            name: bucket,
            description: "Arc media nodes' latest load (one key per node)",
            value_bytes_max: SAMPLE_BYTES_MAX,
            max_age: SAMPLE_MAX_AGE,
            replicas,
        };
        let store = crate::kv::bucket(js, &spec, make).await?;
        Ok(Self { client: js.client(), store, bucket: bucket.to_owned(), copy: tokio::sync::Mutex::new(None) })
    }

    fn ensure_connected(&self) -> Result<(), LogError> {
        crate::kv::ensure_connected(&self.client)
    }

    async fn read_all(&self) -> Result<HashMap<NodeId, LoadSample>, LogError> {
        self.ensure_connected()?;
        let unavailable = |e: &dyn fmt::Display| LogError::Unavailable(format!("load bucket {}: {e}", self.bucket));
        let keys: Vec<String> =
            self.store.keys().await.map_err(|e| unavailable(&e))?.try_collect().await.map_err(|e| unavailable(&e))?;
        let mut out = HashMap::with_capacity(keys.len());
        for key in keys {
            // A key that is not a node id, or a value that does not parse, is skipped.
            let Ok(node) = NodeId::parse(&key) else { continue };
            let Some(value) = self.store.get(&key).await.map_err(|e| unavailable(&e))? else { continue };
            if value.len() > SAMPLE_BYTES_MAX {
                continue;
            }
            if let Ok(sample) = serde_json::from_slice::<LoadSample>(&value) {
                out.insert(node, sample);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl LoadBoard for KvBoard {
    async fn put(&self, node: &NodeId, sample: &LoadSample) -> Result<(), LogError> {
        self.ensure_connected()?;
        let value = serde_json::to_vec(sample).map_err(|e| LogError::Unavailable(format!("encoding a sample: {e}")))?;
        self.store
            .put(node.as_str(), value.into())
            .await
            .map_err(|e| LogError::Unavailable(format!("load bucket {}: {e}", self.bucket)))?;
        Ok(())
    }

    async fn latest(&self) -> Result<HashMap<NodeId, LoadSample>, LogError> {
        // One reader refreshes; the others wait for it and share its copy.
        let mut copy = self.copy.lock().await;
        if let Some((at, samples)) = copy.as_ref()
            && at.elapsed() < KV_REFRESH
        {
            return Ok(samples.clone());
        }
        let fresh = self.read_all().await?;
        *copy = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_board_keeps_each_nodes_latest_sample() {
        let board = MemoryBoard::default();
        let a = NodeId::parse("nd_a").expect("id");
        let b = NodeId::parse("nd_b").expect("id");
        let sample = |sessions| LoadSample { at: Utc::now(), load: NodeLoad { sessions, ..NodeLoad::default() } };
        board.put(&a, &sample(1)).await.expect("put");
        board.put(&b, &sample(2)).await.expect("put");
        board.put(&a, &sample(3)).await.expect("put");
        let latest = board.latest().await.expect("latest");
        assert_eq!(latest.len(), 2);
        assert_eq!(latest[&a].load.sessions, 3);
        assert_eq!(latest[&b].load.sessions, 2);
    }
}
