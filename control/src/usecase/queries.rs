//! Read-model queries the use cases and the entry points share (the one
//! place their SQL lives). Reads are as current as this instance's
//! projections; writes that must see everything take a quota turn first.

use arc_events::AppId;

use super::UseCaseResult;
use crate::projection::apps::{self, AppRow};
use crate::projection::nodes::{self, NodeRow};
use crate::projection::participants::{self, ParticipantRow};
use crate::projection::rooms::{self, RoomRow};
use crate::projection::tracks::{self, TrackRow};
use crate::readdb::ReadDb;

/// Open rooms and participants of an app.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppUsage {
    pub rooms_open: i64,
    pub participants: i64,
}

/// An app, if it exists (a malformed id names none).
pub async fn app(db: &ReadDb, app_id: &str) -> UseCaseResult<Option<AppRow>> {
    if AppId::parse(app_id).is_err() {
        return Ok(None);
    }
    let sql = format!("SELECT {} FROM apps WHERE app_id = $1", apps::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app_id).fetch_optional(&db.pool).await?;
    Ok(row.map(|r| apps::from_row(&r)).transpose()?)
}

/// Apps by id after `after` (paging), in `state` unless it is empty.
pub async fn apps(db: &ReadDb, state: &str, after: &str, limit: i64) -> UseCaseResult<Vec<AppRow>> {
    let sql = format!(
        "SELECT {} FROM apps WHERE ($1 = '' OR state = $1) AND app_id > $2 ORDER BY app_id LIMIT $3",
        apps::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(state).bind(after).bind(limit).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(apps::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// An app's open rooms and participants.
pub async fn usage(db: &ReadDb, app_id: &str) -> UseCaseResult<AppUsage> {
    let (rooms_open, participants): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(participant_count), 0) AS BIGINT) FROM rooms WHERE app_id = $1 AND state = 'open'",
    )
    .bind(app_id)
    .fetch_one(&db.pool)
    .await?;
    Ok(AppUsage { rooms_open, participants: participants.unwrap_or(0) })
}

/// A room by id.
pub async fn room(db: &ReadDb, room_id: &str) -> UseCaseResult<Option<RoomRow>> {
    let sql = format!("SELECT {} FROM rooms WHERE room_id = $1", rooms::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(&db.pool).await?;
    Ok(row.map(|r| rooms::from_row(&r)).transpose()?)
}

/// Which rooms to list ('' in a field: any).
#[derive(Debug, Clone, Default)]
pub struct RoomFilter {
    pub app_id: String,
    pub state: String,
    pub name: String,
    /// Room ids after this one (paging).
    pub after: String,
    pub limit: i64,
}

/// Rooms by id, filtered.
pub async fn rooms(db: &ReadDb, f: &RoomFilter) -> UseCaseResult<Vec<RoomRow>> {
    let sql = format!(
        "SELECT {} FROM rooms WHERE ($1 = '' OR app_id = $1) AND ($2 = '' OR state = $2) AND ($3 = '' OR name = $3) \
         AND room_id > $4 ORDER BY room_id LIMIT $5",
        rooms::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&f.app_id)
        .bind(&f.state)
        .bind(&f.name)
        .bind(&f.after)
        .bind(f.limit)
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.iter().map(rooms::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// Who is in a room now (at most 10,000), by identity.
pub async fn active_participants(db: &ReadDb, room_id: &str) -> UseCaseResult<Vec<ParticipantRow>> {
    let sql = format!(
        "SELECT {} FROM participants WHERE room_id = $1 AND state = 'active' ORDER BY identity LIMIT 10000",
        participants::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(participants::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// The identity's current session in the room, if it is in it.
pub async fn active_participant(db: &ReadDb, room_id: &str, identity: &str) -> UseCaseResult<Option<ParticipantRow>> {
    let sql = format!(
        "SELECT {} FROM participants WHERE room_id = $1 AND identity = $2 AND state = 'active' \
         ORDER BY joined_at_ms DESC LIMIT 1",
        participants::COLUMNS.join(", ")
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(identity).fetch_optional(&db.pool).await?;
    Ok(row.map(|r| participants::from_row(&r)).transpose()?)
}

/// A participant session by sid (active or not).
pub async fn participant(db: &ReadDb, sid: &str) -> UseCaseResult<Option<ParticipantRow>> {
    let sql = format!("SELECT {} FROM participants WHERE sid = $1", participants::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sid).fetch_optional(&db.pool).await?;
    Ok(row.map(|r| participants::from_row(&r)).transpose()?)
}

/// The media node a participant session was placed on, if any.
pub async fn node_of(db: &ReadDb, sid: &str) -> UseCaseResult<Option<String>> {
    Ok(sqlx::query_scalar("SELECT node_id FROM participants WHERE sid = $1")
        .bind(sid)
        .fetch_optional(&db.pool)
        .await?
        .flatten())
}

/// The media nodes carrying a room's active participants.
pub async fn room_nodes(db: &ReadDb, room_id: &str) -> UseCaseResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT node_id FROM participants WHERE room_id = $1 AND state = 'active' AND node_id IS NOT NULL",
    )
    .bind(room_id)
    .fetch_all(&db.pool)
    .await?)
}

/// A session's published tracks.
pub async fn published_tracks(db: &ReadDb, sid: &str) -> UseCaseResult<Vec<TrackRow>> {
    let sql = format!(
        "SELECT {} FROM tracks WHERE sid = $1 AND state = 'published' ORDER BY track_id",
        tracks::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sid).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(tracks::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// The tracks published in a room now (at most 10,000).
pub async fn room_tracks(db: &ReadDb, room_id: &str) -> UseCaseResult<Vec<TrackRow>> {
    let sql = format!(
        "SELECT {} FROM tracks WHERE room_id = $1 AND state = 'published' ORDER BY track_id LIMIT 10000",
        tracks::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(tracks::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// A track by id.
pub async fn track(db: &ReadDb, track_id: &str) -> UseCaseResult<Option<TrackRow>> {
    let sql = format!("SELECT {} FROM tracks WHERE track_id = $1", tracks::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(track_id).fetch_optional(&db.pool).await?;
    Ok(row.map(|r| tracks::from_row(&r)).transpose()?)
}

/// Whether the app revoked the token `jti`.
pub async fn token_revoked(db: &ReadDb, app_id: &str, jti: &str) -> UseCaseResult<bool> {
    let revoked: Option<i64> = sqlx::query_scalar("SELECT expires_at_ms FROM revoked_tokens WHERE jti = $1")
        .bind(format!("{app_id}/{jti}"))
        .fetch_optional(&db.pool)
        .await?;
    Ok(revoked.is_some())
}

/// Every node, by id (at most 1,000).
pub async fn nodes(db: &ReadDb) -> UseCaseResult<Vec<NodeRow>> {
    let sql = format!("SELECT {} FROM nodes ORDER BY node_id LIMIT 1000", nodes::COLUMNS.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&db.pool).await?;
    Ok(rows.iter().map(nodes::from_row).collect::<Result<Vec<_>, _>>()?)
}

/// What the platform holds now, for metrics.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub rooms_open: i64,
    pub participants_active: i64,
    pub tracks_published: i64,
    /// Nodes per state (`up`, `draining`, `lost`, `deregistered`).
    pub nodes_by_state: Vec<(String, i64)>,
    /// Webhook deliveries per state (`pending` is the backlog, `dead` the
    /// dead letters, `delivered`).
    pub webhook_deliveries: Vec<(String, i64)>,
}

/// Counts for the metrics endpoint.
pub async fn gauges(db: &ReadDb) -> UseCaseResult<Gauges> {
    let count = |sql: &'static str| async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool).await };
    Ok(Gauges {
        rooms_open: count("SELECT COUNT(*) FROM rooms WHERE state = 'open'").await?,
        participants_active: count("SELECT COUNT(*) FROM participants WHERE state = 'active'").await?,
        tracks_published: count("SELECT COUNT(*) FROM tracks WHERE state = 'published'").await?,
        nodes_by_state: sqlx::query_as("SELECT state, COUNT(*) FROM nodes GROUP BY state ORDER BY state")
            .fetch_all(&db.pool)
            .await?,
        webhook_deliveries: arc_webhooks::counts(&db.pool).await.map_err(|e| match e {
            arc_webhooks::WebhookError::Db(e) => super::UseCaseError::Db(e),
            other => super::UseCaseError::internal(format!("webhook deliveries: {other}")),
        })?,
    })
}
