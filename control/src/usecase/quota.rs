//! Strict app quotas (`max_rooms`, `max_participants`). Usage is counted
//! from the read models, which lag the log, so two racing requests could
//! both see room for one more. A quota-checked write therefore takes the
//! app's **quota turn** first: one such write per app at a time, across
//! every instance (a PostgreSQL transaction-level advisory lock on the app;
//! in embedded mode, where one process is the whole platform, a lock in this
//! process). Holding the turn, it waits until this instance's read models
//! have applied the log's head (so the usage it reads includes every write
//! made before the turn), checks, appends, and waits again until its own
//! write is applied, then lets the next one in. Apps without these quotas
//! never take a turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::AnyPool;

use super::{Services, UseCaseError, UseCaseResult};

/// The first key of the advisory lock (the second is the app's): "ARCQ".
/// Two-key locks never collide with the one-key locks of the leases.
const LOCK_CLASS: i32 = 0x4152_4351;

/// Connections kept for quota turns (apart from the read models' pool, so
/// turns waiting for the projections never starve the projection writer).
pub const TURN_CONNECTIONS_MAX: u32 = 4;

/// Per-app turns in this process.
#[derive(Debug, Default)]
pub struct QuotaTurns {
    local: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// PostgreSQL: the pool the advisory locks are taken on.
    pool: Option<AnyPool>,
}

/// An app's quota turn, held until dropped.
pub(crate) struct Turn {
    _local: tokio::sync::OwnedMutexGuard<()>,
    _pg: Option<sqlx::Transaction<'static, sqlx::Any>>,
}

/// FNV-1a of the app id, as the advisory lock's second key.
fn app_key(app_id: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in app_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

impl QuotaTurns {
    /// Turns taken in this process, and (PostgreSQL) on `pool` across instances.
    pub fn new(pool: Option<AnyPool>) -> Self {
        Self { local: Mutex::default(), pool }
    }

    fn local(&self, app_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(app_id.to_owned()).or_default().clone()
    }
}

/// Takes `app_id`'s quota turn and waits until this instance's read models
/// show everything the log held when it got the turn.
pub(crate) async fn turn(state: &Services, app_id: &str) -> UseCaseResult<Turn> {
    let local = state.quota.local(app_id).lock_owned().await;
    let pg = match &state.quota.pool {
        Some(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(LOCK_CLASS)
                .bind(app_key(app_id))
                .execute(&mut *tx)
                .await?;
            Some(tx)
        }
        None => None,
    };
    let head = state.log.head().await?;
    if !state.settle_quietly(head).await {
        return Err(UseCaseError::Behind { head: head.0 });
    }
    Ok(Turn { _local: local, _pg: pg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_get_stable_distinct_keys() {
        assert_eq!(app_key("ap_a"), app_key("ap_a"));
        assert_ne!(app_key("ap_a"), app_key("ap_b"));
    }
}
