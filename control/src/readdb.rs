//! The read-model database: PostgreSQL in cluster mode, SQLite in embedded
//! mode, behind one sqlx `Any` pool so projections and queries are written
//! once (portable SQL: `$n` placeholders, `BIGINT`/`TEXT`, `ON CONFLICT`).
//!
//! Migrations for both live in `control/migrations/{postgres,sqlite}` and run
//! at start.

use std::path::Path;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions};

use crate::error::ControlError;

static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections in the pool.
const CONNECTIONS_MAX: u32 = 8;

/// Which database holds the read models.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Postgres,
    Sqlite,
}

/// A pool on the read-model database.
#[derive(Debug, Clone)]
pub struct ReadDb {
    pub pool: AnyPool,
    pub flavor: Flavor,
    /// SQLite: one write transaction at a time in this process, taken in
    /// turn ([`Self::write_turn`]). Without it, concurrent writers (the
    /// projection runners) meet SQLite's busy handler, which sleeps 1, 2,
    /// 5, 10 … ms between retries.
    turn: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl ReadDb {
    /// Connects to `url` (`postgres://…` or `sqlite://…`), creating an SQLite
    /// file if needed, and runs the migrations.
    pub async fn connect(url: &str) -> Result<Self, ControlError> {
        sqlx::any::install_default_drivers();
        let flavor = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Flavor::Postgres
        } else if url.starts_with("sqlite:") {
            Flavor::Sqlite
        } else {
            return Err(ControlError::Config(format!(
                "database URL {:?} must start with postgres:// or sqlite://",
                arc_eventlog::jetstream::redact_urls(url)
            )));
        };
        let url = match flavor {
            Flavor::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| ControlError::Config(format!("database URL: {e}")))?
            .disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(if flavor == Flavor::Sqlite { 4 } else { CONNECTIONS_MAX })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if flavor == Flavor::Sqlite {
                        // Concurrent: readers never block the projection writer.
                        // Not fsynced per commit (NORMAL, in WAL mode): read
                        // models are projections of the log, and each runner
                        // commits its rows and its checkpoint in one
                        // transaction, so a commit lost to a power failure
                        // (never to a killed process) rolls rows and
                        // checkpoint back together and is applied again from
                        // the log, which is fsynced on every append.
                        sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                        sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| ControlError::Unavailable(format!("read-model database: {e}")))?;
        let migrator = match flavor {
            Flavor::Postgres => &POSTGRES,
            Flavor::Sqlite => &SQLITE,
        };
        migrator.run(&pool).await.map_err(|e| ControlError::Unavailable(format!("migrating read models: {e}")))?;
        Ok(Self { pool, flavor, turn: std::sync::Arc::default() })
    }

    /// The embedded default: `<data_dir>/read.db`.
    pub fn sqlite_url(data_dir: &Path) -> String {
        format!("sqlite://{}", data_dir.join("read.db").display())
    }

    /// The right to write, on SQLite (hold it until the transaction from
    /// [`Self::begin_write`] is committed or dropped); `None` on PostgreSQL,
    /// whose writers do not wait for one another.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match self.flavor {
            Flavor::Sqlite => Some(self.turn.clone().lock_owned().await),
            Flavor::Postgres => None,
        }
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead
    /// of failing with a stale snapshot.
    pub async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.flavor {
            Flavor::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Flavor::Postgres => self.pool.begin().await,
        }
    }
}

/// A small pool of its own on a PostgreSQL read-model database, for locks
/// held while waiting for the projections (so they never take the
/// connections the projections write with); `None` for SQLite, where one
/// process is the whole platform.
pub async fn lock_pool(url: &str, connections: u32) -> Result<Option<AnyPool>, ControlError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(None);
    }
    sqlx::any::install_default_drivers();
    let options = AnyConnectOptions::from_str(url)
        .map_err(|e| ControlError::Config(format!("database URL: {e}")))?
        .disable_statement_logging();
    let pool = AnyPoolOptions::new().max_connections(connections).min_connections(0).connect_lazy_with(options);
    Ok(Some(pool))
}
