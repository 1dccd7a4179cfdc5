//! One writer per cluster. Several `arc-control` instances share one
//! PostgreSQL: each projection, the janitors and the webhook sender must run
//! in exactly one of them at a time (else a lagging instance writes an older
//! row over a newer one, and webhooks go out twice). A [`Lease`] is a
//! PostgreSQL session-level advisory lock on a key derived from its name,
//! held on a connection of its own: it is released when that connection
//! closes — the instance died, or lost the database — and another instance
//! trying every [`RETRY`] takes it over.
//!
//! In embedded mode (SQLite, one process) every lease is held at once.
//!
//! A lease's connection is named `arc-lease <name> pid <pid>`: an operator
//! sees the holders with `SELECT application_name FROM pg_stat_activity
//! JOIN pg_locks USING (pid) WHERE locktype = 'advisory'`.
//!
//! Followers learn the writer's progress from [`CHANNEL`] notifications the
//! writer sends in the transaction that commits its rows and checkpoint
//! ([`NOTIFY_SQL`]), so read-your-writes holds on every instance without
//! polling.
//!
//! # Layout
//! - this file: [`Leases`] (a factory), [`Lease`], [`listen`].

use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

/// How often a follower tries to take a lease, and a holder checks it still holds.
pub const RETRY: Duration = Duration::from_secs(1);
/// The notification channel of checkpoints.
pub const CHANNEL: &str = "arc_checkpoint";
/// Sends a checkpoint notification (`$1` = [`payload`]); run it in the
/// transaction that commits the checkpoint, so it goes out with the commit.
pub const NOTIFY_SQL: &str = "SELECT pg_notify('arc_checkpoint', $1)";

/// The payload of a checkpoint notification.
pub fn payload(name: &str, position: u64, events: u64) -> String {
    format!("{name} {position} {events}")
}

/// Reads a payload back: (name, position, events).
pub fn parse(payload: &str) -> Option<(&str, u64, u64)> {
    let mut it = payload.split(' ');
    let name = it.next().filter(|n| !n.is_empty())?;
    let position = it.next()?.parse().ok()?;
    let events = it.next()?.parse().ok()?;
    it.next().is_none().then_some((name, position, events))
}

/// Makes leases: on PostgreSQL (cluster mode), or always held (embedded).
#[derive(Debug, Clone)]
pub struct Leases {
    url: Option<String>,
}

impl Leases {
    /// Every lease held at once (one process: SQLite).
    pub fn embedded() -> Self {
        Self { url: None }
    }

    /// Leases on the PostgreSQL at `url`.
    pub fn postgres(url: &str) -> Self {
        Self { url: Some(url.to_owned()) }
    }

    /// For a read-model database URL: PostgreSQL leases for `postgres://…`,
    /// else held at once.
    pub fn for_database(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::postgres(url)
        } else {
            Self::embedded()
        }
    }

    /// Whether leases are shared between instances.
    pub fn shared(&self) -> bool {
        self.url.is_some()
    }

    /// The database URL of shared leases.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The lease called `name` (not yet taken).
    pub fn lease(&self, name: &str) -> Lease {
        Lease { name: name.to_owned(), key: key(name), url: self.url.clone(), conn: None }
    }
}

/// The advisory lock key of a lease: FNV-1a of its name (stable across builds).
fn key(name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "arc-lease:".bytes().chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// One lease.
pub struct Lease {
    name: String,
    key: i64,
    url: Option<String>,
    /// The connection holding the lock, while held.
    conn: Option<PgConnection>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("name", &self.name).field("held", &self.held()).finish()
    }
}

impl Lease {
    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease is shared between instances (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        self.url.is_some()
    }

    /// Whether this instance holds the lease (as far as it last knew).
    pub fn held(&self) -> bool {
        self.url.is_none() || self.conn.is_some()
    }

    /// Tries to take the lease; answers whether it is held now.
    pub async fn acquire(&mut self) -> bool {
        let Some(url) = &self.url else { return true };
        if self.conn.is_some() {
            return self.check().await;
        }
        // Named, so an operator sees in pg_stat_activity who holds what.
        let options = match url.parse::<PgConnectOptions>() {
            Ok(o) => o.application_name(&format!("arc-lease {} pid {}", self.name, std::process::id())),
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "the database URL does not parse");
                return false;
            }
        };
        let mut conn = match PgConnection::connect_with(&options).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "cannot reach the database for a lease");
                return false;
            }
        };
        let got: Result<bool, sqlx::Error> =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(self.key).fetch_one(&mut conn).await;
        match got {
            Ok(true) => {
                tracing::info!(lease = %self.name, "this instance is the writer now");
                self.conn = Some(conn);
                true
            }
            Ok(false) => {
                let _ = conn.close().await;
                false
            }
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "taking a lease");
                false
            }
        }
    }

    /// Whether the lease is still held (its connection answers).
    pub async fn check(&mut self) -> bool {
        let Some(conn) = self.conn.as_mut() else { return self.url.is_none() };
        if conn.ping().await.is_ok() {
            return true;
        }
        tracing::warn!(lease = %self.name, "lost the lease (its database connection failed)");
        self.conn = None;
        false
    }

    /// Resolves when the lease is lost (checked every [`RETRY`]); never for
    /// an embedded lease.
    pub async fn lost(&mut self) {
        if self.url.is_none() {
            return std::future::pending().await;
        }
        loop {
            tokio::time::sleep(RETRY).await;
            if !self.check().await {
                return;
            }
        }
    }

    /// Gives the lease up (another instance may take it).
    pub async fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(self.key).execute(&mut conn).await;
            let _ = conn.close().await;
        }
    }
}

/// Listens to checkpoint notifications at `url` and calls `each(name,
/// position, events)` for each, reconnecting after failures, forever.
pub async fn listen(url: String, mut each: impl FnMut(&str, u64, u64) + Send) {
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "checkpoint listener cannot connect; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::debug!(error = %e, "checkpoint listener cannot listen; retrying");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(n) => {
                    if let Some((name, position, events)) = parse(n.payload()) {
                        each(name, position, events);
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "checkpoint listener failed; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_keys_differ() {
        assert_eq!(parse(&payload("rooms", 42, 7)), Some(("rooms", 42, 7)));
        assert_eq!(parse("rooms 42"), None);
        assert_eq!(parse("rooms x 7"), None);
        assert_eq!(parse(" 1 2"), None);
        assert_eq!(parse("a 1 2 3"), None);
        assert_ne!(key("rooms"), key("nodes"));
        assert_eq!(key("rooms"), key("rooms"));
    }

    #[tokio::test]
    async fn embedded_leases_are_held_at_once() {
        let mut l = Leases::embedded().lease("rooms");
        assert!(l.acquire().await);
        assert!(l.held());
        assert!(l.check().await);
        assert!(!Leases::for_database("sqlite://x").shared());
        assert!(Leases::for_database("postgres://u@h/db").shared());
    }
}
