//! Payloads of webhook-delivery events. The aggregate id is the
//! [`DeliveryId`](crate::DeliveryId): one source event to one endpoint URL.
//!
//! The delivery planner turns source events into pending deliveries; the
//! sender records every attempt here, so the log is the delivery queue and
//! operators can see (and redeliver) what happened.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::envelope::AggregateKind;
use crate::event::EventData;
use crate::ids::{AppId, EventId};

/// The endpoint acknowledged the delivery with a 2xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookDelivered {
    pub app_id: AppId,
    /// The event that was delivered (the receiver's idempotency key).
    pub event_id: EventId,
    pub url: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The HTTP status returned.
    pub status: u16,
    pub duration_ms: u64,
}

/// One attempt failed; another follows at `retry_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookAttemptFailed {
    pub app_id: AppId,
    pub event_id: EventId,
    pub url: String,
    pub attempt: u32,
    /// The HTTP status, when the endpoint answered at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, e.g. `timeout` or `status 500`.
    pub error: String,
    pub retry_at: DateTime<Utc>,
}

/// Every attempt failed; the delivery waits for an operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookDeadLettered {
    pub app_id: AppId,
    pub event_id: EventId,
    pub url: String,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub error: String,
}

/// An operator asked to deliver a dead-lettered delivery again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookRedeliveryRequested {
    pub app_id: AppId,
    pub event_id: EventId,
    pub url: String,
}

impl EventData for WebhookDelivered {
    const TYPE: &'static str = "webhook.delivered";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Webhook;
}
impl EventData for WebhookAttemptFailed {
    const TYPE: &'static str = "webhook.attempt_failed";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Webhook;
}
impl EventData for WebhookDeadLettered {
    const TYPE: &'static str = "webhook.dead_lettered";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Webhook;
}
impl EventData for WebhookRedeliveryRequested {
    const TYPE: &'static str = "webhook.redelivery_requested";
    const VERSION: u16 = 1;
    const AGGREGATE: AggregateKind = AggregateKind::Webhook;
}
