//! The apps read model: one row per application with its state, sealed
//! secrets, quotas and webhook endpoints. Secrets stay sealed here.

use arc_events::{AppEvent, Envelope, Event};
use sqlx::Row;

use super::{AnyQuery, Projection};

/// One application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRow {
    pub app_id: String,
    pub name: String,
    /// `active`, `disabled` or `deleted`.
    pub state: String,
    pub disabled_reason: Option<String>,
    /// JSON of the current [`arc_events::app::SealedSecret`].
    pub secret_sealed: Option<String>,
    /// JSON of the rotated-out secret while it is still valid.
    pub previous_sealed: Option<String>,
    pub previous_valid_until_ms: Option<i64>,
    pub max_rooms: Option<i64>,
    pub max_participants_per_room: Option<i64>,
    pub max_participants: Option<i64>,
    /// JSON array of URLs.
    pub webhooks: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub last_seq: i64,
}

/// Folds app events into `apps`.
#[derive(Debug)]
pub struct AppsProjection;

pub(crate) const COLUMNS: &[&str] = &[
    "app_id",
    "name",
    "state",
    "disabled_reason",
    "secret_sealed",
    "previous_sealed",
    "previous_valid_until_ms",
    "max_rooms",
    "max_participants_per_room",
    "max_participants",
    "webhooks",
    "created_at_ms",
    "updated_at_ms",
    "last_seq",
];

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<AppRow, sqlx::Error> {
    Ok(AppRow {
        app_id: r.try_get(0)?,
        name: r.try_get(1)?,
        state: r.try_get(2)?,
        disabled_reason: r.try_get(3)?,
        secret_sealed: r.try_get(4)?,
        previous_sealed: r.try_get(5)?,
        previous_valid_until_ms: r.try_get(6)?,
        max_rooms: r.try_get(7)?,
        max_participants_per_room: r.try_get(8)?,
        max_participants: r.try_get(9)?,
        webhooks: r.try_get(10)?,
        created_at_ms: r.try_get(11)?,
        updated_at_ms: r.try_get(12)?,
        last_seq: r.try_get(13)?,
    })
}

impl Projection for AppsProjection {
    const NAME: &'static str = "apps";
    const TABLE: &'static str = "apps";
    const COLUMNS: &'static [&'static str] = COLUMNS;
    type Row = AppRow;

    fn bind<'q>(q: AnyQuery<'q>, r: &'q AppRow) -> AnyQuery<'q> {
        q.bind(r.app_id.as_str())
            .bind(r.name.as_str())
            .bind(r.state.as_str())
            .bind(r.disabled_reason.as_deref())
            .bind(r.secret_sealed.as_deref())
            .bind(r.previous_sealed.as_deref())
            .bind(r.previous_valid_until_ms)
            .bind(r.max_rooms)
            .bind(r.max_participants_per_room)
            .bind(r.max_participants)
            .bind(r.webhooks.as_str())
            .bind(r.created_at_ms)
            .bind(r.updated_at_ms)
            .bind(r.last_seq)
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<AppRow, sqlx::Error> {
        from_row(row)
    }

    fn key(event: &Envelope) -> Option<String> {
        match &event.event {
            // Revocations have their own read model; they do not touch the app's row.
            Event::App(AppEvent::TokenRevoked(_)) => None,
            Event::App(_) => Some(event.aggregate.id().to_owned()),
            _ => None,
        }
    }

    fn fold(row: Option<AppRow>, e: &Envelope) -> Option<AppRow> {
        let Event::App(event) = &e.event else { return row };
        let at = e.occurred_at.timestamp_millis();
        let mut r = match (event, row) {
            (AppEvent::Created(c), _) => AppRow {
                app_id: e.aggregate.id().to_owned(),
                name: c.name.clone(),
                state: "active".into(),
                disabled_reason: None,
                secret_sealed: None,
                previous_sealed: None,
                previous_valid_until_ms: None,
                max_rooms: None,
                max_participants_per_room: None,
                max_participants: None,
                webhooks: "[]".into(),
                created_at_ms: at,
                updated_at_ms: at,
                last_seq: 0,
            },
            (_, None) => return None,
            (_, Some(r)) => r,
        };
        match event {
            AppEvent::Created(_) | AppEvent::TokenRevoked(_) => {}
            AppEvent::Disabled(d) => {
                r.state = "disabled".into();
                r.disabled_reason = d.reason.clone();
            }
            AppEvent::Enabled(_) => {
                r.state = "active".into();
                r.disabled_reason = None;
            }
            AppEvent::Deleted(_) => {
                r.state = "deleted".into();
                r.secret_sealed = None;
                r.previous_sealed = None;
                r.previous_valid_until_ms = None;
            }
            AppEvent::SecretRotated(s) => {
                let new = serde_json::to_string(&s.secret).ok();
                match s.previous_valid_until {
                    Some(until) => {
                        r.previous_sealed = r.secret_sealed.take();
                        r.previous_valid_until_ms = Some(until.timestamp_millis());
                    }
                    None => {
                        r.previous_sealed = None;
                        r.previous_valid_until_ms = None;
                    }
                }
                r.secret_sealed = new;
            }
            AppEvent::QuotasSet(q) => {
                r.max_rooms = q.quotas.max_rooms.map(i64::from);
                r.max_participants_per_room = q.quotas.max_participants_per_room.map(i64::from);
                r.max_participants = q.quotas.max_participants.map(i64::from);
            }
            AppEvent::WebhooksSet(w) => {
                r.webhooks = serde_json::to_string(&w.urls).unwrap_or_else(|_| "[]".into());
            }
        }
        r.updated_at_ms = at;
        r.last_seq = e.seq as i64;
        Some(r)
    }
}
