//! The participants read model: one row per participant session (`sid`).

use arc_events::{Envelope, Event, ParticipantEvent, RoomEvent};
use sqlx::Row;

use super::{AnyQuery, Projection};

/// One participant session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRow {
    pub sid: String,
    pub room_id: String,
    pub identity: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
    /// JSON of [`arc_events::participant::Permissions`].
    pub permissions: Option<String>,
    pub jti: Option<String>,
    pub node_id: Option<String>,
    /// `active` or `left`.
    pub state: String,
    pub left_reason: Option<String>,
    pub joined_at_ms: i64,
    pub left_at_ms: Option<i64>,
}

/// Folds joins, leaves and participant updates into `participants`.
#[derive(Debug)]
pub struct ParticipantsProjection;

pub(crate) const COLUMNS: &[&str] = &[
    "sid",
    "room_id",
    "identity",
    "name",
    "metadata",
    "permissions",
    "jti",
    "node_id",
    "state",
    "left_reason",
    "joined_at_ms",
    "left_at_ms",
];

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<ParticipantRow, sqlx::Error> {
    Ok(ParticipantRow {
        sid: r.try_get(0)?,
        room_id: r.try_get(1)?,
        identity: r.try_get(2)?,
        name: r.try_get(3)?,
        metadata: r.try_get(4)?,
        permissions: r.try_get(5)?,
        jti: r.try_get(6)?,
        node_id: r.try_get(7)?,
        state: r.try_get(8)?,
        left_reason: r.try_get(9)?,
        joined_at_ms: r.try_get(10)?,
        left_at_ms: r.try_get(11)?,
    })
}

impl Projection for ParticipantsProjection {
    const NAME: &'static str = "participants";
    const TABLE: &'static str = "participants";
    const COLUMNS: &'static [&'static str] = COLUMNS;
    type Row = ParticipantRow;

    fn bind<'q>(q: AnyQuery<'q>, r: &'q ParticipantRow) -> AnyQuery<'q> {
        q.bind(r.sid.as_str())
            .bind(r.room_id.as_str())
            .bind(r.identity.as_str())
            .bind(r.name.as_deref())
            .bind(r.metadata.as_deref())
            .bind(r.permissions.as_deref())
            .bind(r.jti.as_deref())
            .bind(r.node_id.as_deref())
            .bind(r.state.as_str())
            .bind(r.left_reason.as_deref())
            .bind(r.joined_at_ms)
            .bind(r.left_at_ms)
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<ParticipantRow, sqlx::Error> {
        from_row(row)
    }

    fn key(event: &Envelope) -> Option<String> {
        match &event.event {
            Event::Room(RoomEvent::ParticipantJoined(j)) => Some(j.sid.to_string()),
            Event::Room(RoomEvent::ParticipantLeft(l)) => Some(l.sid.to_string()),
            Event::Participant(_) => Some(event.aggregate.id().to_owned()),
            _ => None,
        }
    }

    fn fold(row: Option<ParticipantRow>, e: &Envelope) -> Option<ParticipantRow> {
        let at = e.occurred_at.timestamp_millis();
        match (&e.event, row) {
            (Event::Room(RoomEvent::ParticipantJoined(j)), _) => Some(ParticipantRow {
                sid: j.sid.to_string(),
                room_id: e.aggregate.id().to_owned(),
                identity: j.identity.to_string(),
                name: j.name.clone(),
                metadata: j.metadata.clone(),
                permissions: j.permissions.and_then(|p| serde_json::to_string(&p).ok()),
                jti: j.jti.clone(),
                node_id: j.node_id.as_ref().map(ToString::to_string),
                state: "active".into(),
                left_reason: None,
                joined_at_ms: at,
                left_at_ms: None,
            }),
            (_, None) => None,
            (Event::Room(RoomEvent::ParticipantLeft(l)), Some(mut r)) => {
                r.state = "left".into();
                r.left_reason = Some(l.reason.as_str().into());
                r.left_at_ms = Some(at);
                Some(r)
            }
            (Event::Participant(ParticipantEvent::PermissionsUpdated(p)), Some(mut r)) => {
                r.permissions = serde_json::to_string(&p.permissions).ok();
                Some(r)
            }
            (Event::Participant(ParticipantEvent::MetadataUpdated(m)), Some(mut r)) => {
                if m.name.is_some() {
                    r.name = m.name.clone();
                }
                if m.metadata.is_some() {
                    r.metadata = m.metadata.clone();
                }
                Some(r)
            }
            (_, row) => row,
        }
    }
}
