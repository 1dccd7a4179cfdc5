//! Reading deliveries and asking for redelivery (for arc-control's API).

use arc_eventlog::{EventLog, Position};
use arc_events::webhook::WebhookRedeliveryRequested;
use arc_events::{Actor, AppId, Event, WebhookEvent};
use sqlx::AnyPool;

use crate::db::{self, DELIVERY_COLUMNS};
use crate::plan::{DeliveryRow, State, rfc3339_ms};
use crate::sender::{append, parse_event_id};
use crate::{Delivery, WebhookError};

/// Most deliveries one [`crate::list`] call returns.
pub const LIST_MAX: i64 = 1000;

impl From<DeliveryRow> for Delivery {
    fn from(r: DeliveryRow) -> Self {
        Self {
            next_attempt_at: (r.state == State::Pending).then(|| rfc3339_ms(r.next_attempt_ms)),
            delivery_id: r.delivery_id,
            app_id: r.app_id,
            url: r.url,
            event_id: r.event_id,
            event_type: r.event_type,
            state: r.state.as_str().to_owned(),
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: rfc3339_ms(r.created_at_ms),
            updated_at: rfc3339_ms(r.updated_at_ms),
        }
    }
}

pub(crate) async fn list(
    pool: &AnyPool,
    app_id: &str,
    state: Option<&str>,
    limit: i64,
    after: Option<&str>,
) -> Result<Vec<Delivery>, WebhookError> {
    if let Some(s) = state
        && State::parse(s).is_none()
    {
        return Err(WebhookError::Invalid(format!("unknown delivery state {s:?}; known: pending, delivered, dead")));
    }
    let cursor = match after {
        Some(id) => {
            let position: Option<i64> =
                sqlx::query_scalar("SELECT position FROM webhook_deliveries WHERE delivery_id = $1 AND app_id = $2")
                    .bind(id)
                    .bind(app_id)
                    .fetch_optional(pool)
                    .await?;
            Some((position.ok_or(WebhookError::NotFound)?, id))
        }
        None => None,
    };
    let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE app_id = $1");
    let mut n = 1;
    if state.is_some() {
        n += 1;
        sql.push_str(&format!(" AND state = ${n}"));
    }
    if cursor.is_some() {
        sql.push_str(&format!(" AND (position > ${} OR (position = ${} AND delivery_id > ${}))", n + 1, n + 1, n + 2));
        n += 2;
    }
    sql.push_str(&format!(" ORDER BY position, delivery_id LIMIT ${}", n + 1));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(app_id);
    if let Some(s) = state {
        query = query.bind(s);
    }
    if let Some((position, id)) = cursor {
        query = query.bind(position).bind(id);
    }
    let rows = query.bind(limit.clamp(1, LIST_MAX)).fetch_all(pool).await?;
    rows.iter().map(|r| db::delivery_from_row(r).map(Delivery::from).map_err(WebhookError::from)).collect()
}

async fn row(pool: &AnyPool, delivery_id: &str) -> Result<Option<DeliveryRow>, WebhookError> {
    let mut conn = pool.acquire().await?;
    Ok(db::load_delivery(&mut conn, delivery_id).await?)
}

pub(crate) async fn get(pool: &AnyPool, delivery_id: &str) -> Result<Option<Delivery>, WebhookError> {
    Ok(row(pool, delivery_id).await?.map(Delivery::from))
}

pub(crate) async fn redeliver(
    pool: &AnyPool,
    log: &dyn EventLog,
    delivery_id: &str,
    actor: Actor,
) -> Result<Position, WebhookError> {
    let row = row(pool, delivery_id).await?.ok_or(WebhookError::NotFound)?;
    if row.state != State::Dead {
        return Err(WebhookError::NotDead);
    }
    let app_id =
        AppId::parse(&row.app_id).map_err(|e| WebhookError::Invalid(format!("app id {:?}: {e}", row.app_id)))?;
    let event_id = parse_event_id(&row.event_id)?;
    let event = Event::Webhook(WebhookEvent::RedeliveryRequested(WebhookRedeliveryRequested {
        app_id,
        event_id,
        url: row.url.clone(),
    }));
    append(log, &row.delivery_id, row.seq, event, actor, event_id).await
}
