//! Webhook deliveries as apps and operators see them: list an app's, read
//! one, redeliver a dead-lettered one. Deliveries are a read model of the
//! log kept by `arc-webhooks` (the planner and the sender); a redelivery is
//! an event (`webhook.redelivery_requested`) like every other change.

use arc_eventlog::Position;
use arc_events::Actor;
use arc_webhooks::Delivery;

use super::{Services, UseCaseError, UseCaseResult};

/// The delivery states a list may ask for.
pub const STATES: [&str; 3] = ["pending", "delivered", "dead"];

/// An app's deliveries in log order, optionally in one state, after the
/// delivery `after` (the previous page's last id); `limit` in 1..=500.
pub async fn deliveries(
    services: &Services,
    app_id: &str,
    state: Option<&str>,
    limit: i64,
    after: Option<&str>,
) -> UseCaseResult<Vec<Delivery>> {
    if let Some(s) = state
        && !STATES.contains(&s)
    {
        return Err(UseCaseError::invalid("state", "must be pending, delivered or dead"));
    }
    Ok(arc_webhooks::list(&services.db.pool, app_id, state, limit, after).await?)
}

/// One delivery, if it exists.
pub async fn delivery(services: &Services, delivery_id: &str) -> UseCaseResult<Option<Delivery>> {
    Ok(arc_webhooks::get(&services.db.pool, delivery_id).await?)
}

/// Asks for a dead-lettered delivery to be sent again (its attempts start
/// from 1); answers the position of the request in the log.
pub async fn redeliver(services: &Services, delivery_id: &str, actor: Actor) -> UseCaseResult<Position> {
    Ok(arc_webhooks::redeliver(&services.db.pool, services.log.as_ref(), delivery_id, actor).await?)
}
