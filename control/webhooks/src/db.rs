//! The planner's tables: creation, write transactions, and row I/O.
//!
//! Portable SQL only (`$n` placeholders, `TEXT`/`BIGINT`, `ON CONFLICT`), so
//! the same statements run on SQLite and PostgreSQL through the `Any` driver.

use sqlx::{AnyConnection, AnyPool, Row};

use crate::plan::{DeliveryRow, State, Table, Tables};

/// Every statement [`crate::migrate`] runs, one per call (PostgreSQL does not
/// take several statements in one prepared query).
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_endpoints (
        app_id TEXT PRIMARY KEY,
        urls   TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS webhook_rooms (
        room_id TEXT PRIMARY KEY,
        app_id  TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS webhook_tracks (
        track_id TEXT PRIMARY KEY,
        room_id  TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS webhook_recordings (
        recording_id TEXT PRIMARY KEY,
        room_id      TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (
        delivery_id     TEXT PRIMARY KEY,
        app_id          TEXT NOT NULL,
        url             TEXT NOT NULL,
        order_key       TEXT NOT NULL,
        position        BIGINT NOT NULL,
        event_id        TEXT NOT NULL,
        event_type      TEXT NOT NULL,
        body            TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        BIGINT NOT NULL,
        next_attempt_ms BIGINT NOT NULL,
        last_status     BIGINT,
        last_error      TEXT,
        created_at_ms   BIGINT NOT NULL,
        updated_at_ms   BIGINT NOT NULL,
        seq             BIGINT NOT NULL,
        traceparent     TEXT
    )",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (state, next_attempt_ms)",
    // `state` in the middle: the head-of-line check looks for an earlier
    // *pending* delivery of the same key without walking its delivered history.
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_order ON webhook_deliveries (order_key, state, position)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_by_app ON webhook_deliveries (app_id, state, position)",
];

/// The planner's tables, emptied by a rebuild.
pub(crate) const TABLES: [&str; 5] =
    ["webhook_endpoints", "webhook_rooms", "webhook_tracks", "webhook_recordings", "webhook_deliveries"];

/// Columns of `webhook_deliveries`, the key first.
pub(crate) const DELIVERY_COLUMNS: &str = "delivery_id, app_id, url, order_key, position, event_id, event_type, body, \
    state, attempts, next_attempt_ms, last_status, last_error, created_at_ms, updated_at_ms, seq, traceparent";

/// Columns added after the first release: (probe, statement adding it) for
/// tables created without them.
pub(crate) const ADDED_COLUMNS: &[(&str, &str)] = &[(
    "SELECT traceparent FROM webhook_deliveries WHERE 1 = 0",
    "ALTER TABLE webhook_deliveries ADD COLUMN traceparent TEXT",
)];

/// Whether the pool is on SQLite, from the scheme of the URL it was opened
/// with (`sqlite:` vs `postgres:`/`postgresql:`).
pub(crate) fn is_sqlite(pool: &AnyPool) -> bool {
    pool.connect_options().database_url.scheme() == "sqlite"
}

/// Begins a write transaction. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`, as arc-control's `ReadDb::begin_write`), so writers
/// queue on the busy timeout instead of failing on a lock upgrade.
pub(crate) async fn begin_write(pool: &AnyPool) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    if is_sqlite(pool) { pool.begin_with("BEGIN IMMEDIATE").await } else { pool.begin().await }
}

pub(crate) fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    let state: String = r.try_get(8)?;
    Ok(DeliveryRow {
        delivery_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        url: r.try_get(2)?,
        order_key: r.try_get(3)?,
        position: r.try_get(4)?,
        event_id: r.try_get(5)?,
        event_type: r.try_get(6)?,
        body: r.try_get(7)?,
        state: State::parse(&state)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown delivery state {state:?}").into()))?,
        attempts: r.try_get(9)?,
        next_attempt_ms: r.try_get(10)?,
        last_status: r.try_get(11)?,
        last_error: r.try_get(12)?,
        created_at_ms: r.try_get(13)?,
        updated_at_ms: r.try_get(14)?,
        seq: r.try_get(15)?,
        traceparent: r.try_get(16)?,
    })
}

/// Reads one delivery.
pub(crate) async fn load_delivery(conn: &mut AnyConnection, id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|r| delivery_from_row(&r))
        .transpose()
}

async fn load_text(conn: &mut AnyConnection, sql: &'static str, key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(sql).bind(key).fetch_optional(conn).await
}

/// Loads a row into `tables` unless the batch already holds it.
pub(crate) async fn load(
    conn: &mut AnyConnection,
    tables: &mut Tables,
    table: Table,
    key: &str,
) -> Result<(), sqlx::Error> {
    match table {
        Table::Endpoints if !tables.endpoints.contains_key(key) => {
            let urls = load_text(conn, "SELECT urls FROM webhook_endpoints WHERE app_id = $1", key).await?;
            let urls = match urls {
                Some(json) => Some(
                    serde_json::from_str::<Vec<String>>(&json)
                        .map_err(|e| sqlx::Error::Decode(format!("webhook_endpoints.urls of {key}: {e}").into()))?,
                ),
                None => None,
            };
            tables.endpoints.insert(key.to_owned(), urls);
        }
        Table::Rooms if !tables.rooms.contains_key(key) => {
            let app = load_text(conn, "SELECT app_id FROM webhook_rooms WHERE room_id = $1", key).await?;
            tables.rooms.insert(key.to_owned(), app);
        }
        Table::Tracks if !tables.tracks.contains_key(key) => {
            let room = load_text(conn, "SELECT room_id FROM webhook_tracks WHERE track_id = $1", key).await?;
            tables.tracks.insert(key.to_owned(), room);
        }
        Table::Recordings if !tables.recordings.contains_key(key) => {
            let room = load_text(conn, "SELECT room_id FROM webhook_recordings WHERE recording_id = $1", key).await?;
            tables.recordings.insert(key.to_owned(), room);
        }
        Table::Deliveries if !tables.deliveries.contains_key(key) => {
            let row = load_delivery(conn, key).await?;
            tables.deliveries.insert(key.to_owned(), row);
        }
        _ => {}
    }
    Ok(())
}

async fn put_text(
    conn: &mut AnyConnection,
    table: &str,
    key_col: &str,
    val_col: &str,
    key: &str,
    value: Option<&str>,
) -> Result<(), sqlx::Error> {
    let sql = match value {
        Some(_) => format!(
            "INSERT INTO {table} ({key_col}, {val_col}) VALUES ($1, $2) \
             ON CONFLICT ({key_col}) DO UPDATE SET {val_col} = excluded.{val_col}"
        ),
        None => format!("DELETE FROM {table} WHERE {key_col} = $1"),
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key);
    if let Some(v) = value {
        q = q.bind(v);
    }
    q.execute(conn).await?;
    Ok(())
}

async fn put_delivery(conn: &mut AnyConnection, key: &str, row: Option<&DeliveryRow>) -> Result<(), sqlx::Error> {
    let Some(r) = row else {
        sqlx::query("DELETE FROM webhook_deliveries WHERE delivery_id = $1").bind(key).execute(conn).await?;
        return Ok(());
    };
    let updates =
        DELIVERY_COLUMNS.split(", ").skip(1).map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "INSERT INTO webhook_deliveries ({DELIVERY_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
         ON CONFLICT (delivery_id) DO UPDATE SET {updates}"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(r.delivery_id.as_str())
        .bind(r.app_id.as_str())
        .bind(r.url.as_str())
        .bind(r.order_key.as_str())
        .bind(r.position)
        .bind(r.event_id.as_str())
        .bind(r.event_type.as_str())
        .bind(r.body.as_str())
        .bind(r.state.as_str())
        .bind(r.attempts)
        .bind(r.next_attempt_ms)
        .bind(r.last_status)
        .bind(r.last_error.as_deref())
        .bind(r.created_at_ms)
        .bind(r.updated_at_ms)
        .bind(r.seq)
        .bind(r.traceparent.as_deref())
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes every dirty row of the batch.
pub(crate) async fn save(conn: &mut AnyConnection, tables: &Tables) -> Result<(), sqlx::Error> {
    for (table, key) in &tables.dirty {
        match table {
            Table::Endpoints => {
                let urls = tables.endpoints.get(key).cloned().flatten();
                let json = urls.map(|u| serde_json::Value::from(u).to_string());
                put_text(conn, "webhook_endpoints", "app_id", "urls", key, json.as_deref()).await?;
            }
            Table::Rooms => {
                let v = tables.rooms.get(key).cloned().flatten();
                put_text(conn, "webhook_rooms", "room_id", "app_id", key, v.as_deref()).await?;
            }
            Table::Tracks => {
                let v = tables.tracks.get(key).cloned().flatten();
                put_text(conn, "webhook_tracks", "track_id", "room_id", key, v.as_deref()).await?;
            }
            Table::Recordings => {
                let v = tables.recordings.get(key).cloned().flatten();
                put_text(conn, "webhook_recordings", "recording_id", "room_id", key, v.as_deref()).await?;
            }
            Table::Deliveries => {
                put_delivery(conn, key, tables.deliveries.get(key).and_then(|r| r.as_ref())).await?;
            }
        }
    }
    Ok(())
}
