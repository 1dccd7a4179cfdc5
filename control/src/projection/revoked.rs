//! Revoked token ids (`jti`), checked when a token is presented.

use arc_events::{AppEvent, Envelope, Event};
use sqlx::Row;

use super::{AnyQuery, Projection};

/// One revoked token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedRow {
    pub jti: String,
    pub app_id: String,
    pub expires_at_ms: i64,
    pub revoked_at_ms: i64,
    pub reason: Option<String>,
}

/// Folds `app.token_revoked` into `revoked_tokens`.
#[derive(Debug)]
pub struct RevokedProjection;

impl Projection for RevokedProjection {
    const NAME: &'static str = "revoked_tokens";
    const TABLE: &'static str = "revoked_tokens";
    const COLUMNS: &'static [&'static str] = &["jti", "app_id", "expires_at_ms", "revoked_at_ms", "reason"];
    type Row = RevokedRow;

    fn bind<'q>(q: AnyQuery<'q>, r: &'q RevokedRow) -> AnyQuery<'q> {
        q.bind(r.jti.as_str())
            .bind(r.app_id.as_str())
            .bind(r.expires_at_ms)
            .bind(r.revoked_at_ms)
            .bind(r.reason.as_deref())
    }

    fn from_row(r: &sqlx::any::AnyRow) -> Result<RevokedRow, sqlx::Error> {
        Ok(RevokedRow {
            jti: r.try_get(0)?,
            app_id: r.try_get(1)?,
            expires_at_ms: r.try_get(2)?,
            revoked_at_ms: r.try_get(3)?,
            reason: r.try_get(4)?,
        })
    }

    fn key(event: &Envelope) -> Option<String> {
        match &event.event {
            // Scoped by app: two apps may mint the same jti.
            Event::App(AppEvent::TokenRevoked(t)) => Some(format!("{}/{}", event.aggregate.id(), t.jti)),
            _ => None,
        }
    }

    fn fold(row: Option<RevokedRow>, e: &Envelope) -> Option<RevokedRow> {
        match &e.event {
            Event::App(AppEvent::TokenRevoked(t)) => Some(RevokedRow {
                jti: format!("{}/{}", e.aggregate.id(), t.jti),
                app_id: e.aggregate.id().to_owned(),
                expires_at_ms: t.expires_at.timestamp_millis(),
                revoked_at_ms: e.occurred_at.timestamp_millis(),
                reason: t.reason.clone(),
            }),
            _ => row,
        }
    }
}
