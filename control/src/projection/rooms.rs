//! The rooms read model: one row per room with its state and head count.

use arc_events::room::CloseReason;
use arc_events::{Envelope, Event, RoomEvent};
use sqlx::Row;

use super::{AnyQuery, Projection};

/// One room as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomRow {
    pub room_id: String,
    pub app_id: String,
    pub name: String,
    /// `open` or `closed`.
    pub state: String,
    pub max_participants: Option<i64>,
    pub empty_timeout_s: i64,
    pub metadata: Option<String>,
    pub participant_count: i64,
    pub created_at_ms: i64,
    pub closed_at_ms: Option<i64>,
    pub close_reason: Option<String>,
    pub empty_since_ms: Option<i64>,
    pub last_seq: i64,
}

/// Folds room events into `rooms`.
#[derive(Debug)]
pub struct RoomsProjection;

fn close_reason(r: CloseReason) -> &'static str {
    match r {
        CloseReason::Requested => "requested",
        CloseReason::EmptyTimeout => "empty_timeout",
        CloseReason::Other => "other",
    }
}

/// Columns in the order `from_row` reads and `bind` binds them, the key first.
pub(crate) const COLUMNS: &[&str] = &[
    "room_id",
    "app_id",
    "name",
    "state",
    "max_participants",
    "empty_timeout_s",
    "metadata",
    "participant_count",
    "created_at_ms",
    "closed_at_ms",
    "close_reason",
    "empty_since_ms",
    "last_seq",
];

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<RoomRow, sqlx::Error> {
    Ok(RoomRow {
        room_id: r.try_get(0)?,
        app_id: r.try_get(1)?,
        name: r.try_get(2)?,
        state: r.try_get(3)?,
        max_participants: r.try_get(4)?,
        empty_timeout_s: r.try_get(5)?,
        metadata: r.try_get(6)?,
        participant_count: r.try_get(7)?,
        created_at_ms: r.try_get(8)?,
        closed_at_ms: r.try_get(9)?,
        close_reason: r.try_get(10)?,
        empty_since_ms: r.try_get(11)?,
        last_seq: r.try_get(12)?,
    })
}

impl Projection for RoomsProjection {
    const NAME: &'static str = "rooms";
    const TABLE: &'static str = "rooms";
    const COLUMNS: &'static [&'static str] = COLUMNS;
    type Row = RoomRow;

    fn bind<'q>(query: AnyQuery<'q>, row: &'q RoomRow) -> AnyQuery<'q> {
        query
            .bind(row.room_id.as_str())
            .bind(row.app_id.as_str())
            .bind(row.name.as_str())
            .bind(row.state.as_str())
            .bind(row.max_participants)
            .bind(row.empty_timeout_s)
            .bind(row.metadata.as_deref())
            .bind(row.participant_count)
            .bind(row.created_at_ms)
            .bind(row.closed_at_ms)
            .bind(row.close_reason.as_deref())
            .bind(row.empty_since_ms)
            .bind(row.last_seq)
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<RoomRow, sqlx::Error> {
        from_row(row)
    }

    fn key(event: &Envelope) -> Option<String> {
        matches!(event.event, Event::Room(_)).then(|| event.aggregate.id().to_owned())
    }

    fn fold(row: Option<RoomRow>, e: &Envelope) -> Option<RoomRow> {
        let Event::Room(event) = &e.event else {
            return row;
        };
        let at = e.occurred_at.timestamp_millis();
        let seq = e.seq as i64;
        match (event, row) {
            (RoomEvent::Created(c), _) => Some(RoomRow {
                room_id: e.aggregate.id().to_owned(),
                app_id: c.app_id.to_string(),
                name: c.name.clone(),
                state: "open".into(),
                max_participants: c.max_participants.map(i64::from),
                empty_timeout_s: i64::from(c.empty_timeout_s),
                metadata: c.metadata.clone(),
                participant_count: 0,
                created_at_ms: at,
                closed_at_ms: None,
                close_reason: None,
                empty_since_ms: Some(at),
                last_seq: seq,
            }),
            // Events of a room whose creation this read model never saw change nothing.
            (_, None) => None,
            (RoomEvent::ParticipantJoined(_), Some(mut r)) => {
                r.participant_count += 1;
                r.empty_since_ms = None;
                r.last_seq = seq;
                Some(r)
            }
            (RoomEvent::ParticipantLeft(_), Some(mut r)) => {
                r.participant_count = (r.participant_count - 1).max(0);
                if r.participant_count == 0 {
                    r.empty_since_ms = Some(at);
                }
                r.last_seq = seq;
                Some(r)
            }
            (RoomEvent::MetadataUpdated(m), Some(mut r)) => {
                r.metadata = m.metadata.clone();
                r.last_seq = seq;
                Some(r)
            }
            (RoomEvent::Closed(c), Some(mut r)) => {
                r.state = "closed".into();
                r.closed_at_ms = Some(at);
                r.close_reason = Some(close_reason(c.reason).into());
                r.participant_count = 0;
                r.empty_since_ms = None;
                r.last_seq = seq;
                Some(r)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_events::room::{LeaveReason, ParticipantJoined, ParticipantLeft, RoomClosed, RoomCreated};
    use arc_events::{Actor, AggregateKind, AggregateRef, AppId, ParticipantIdentity, ParticipantSid};
    use chrono::TimeZone;

    fn env(seq: u64, at: i64, event: RoomEvent) -> Envelope {
        Envelope {
            id: arc_events::EventId::new(),
            aggregate: AggregateRef::new(AggregateKind::Room, "rm_1").expect("valid"),
            seq,
            occurred_at: chrono::Utc.timestamp_millis_opt(at).single().expect("valid"),
            correlation_id: None,
            traceparent: None,
            causation_id: None,
            actor: Actor::Admin { name: None },
            event: event.into(),
        }
    }

    #[test]
    fn folds_a_room_lifecycle() {
        let who = ParticipantIdentity::parse("ann").expect("valid");
        let sid = ParticipantSid::parse("pa_1").expect("valid");
        let events = [
            env(
                1,
                1000,
                RoomCreated {
                    app_id: AppId::parse("app").expect("valid"),
                    name: "n".into(),
                    max_participants: Some(5),
                    empty_timeout_s: 60,
                    metadata: None,
                }
                .into(),
            ),
            env(
                2,
                2000,
                ParticipantJoined {
                    identity: who.clone(),
                    sid: sid.clone(),
                    name: None,
                    node_id: None,
                    jti: None,
                    permissions: None,
                    metadata: None,
                }
                .into(),
            ),
            env(3, 3000, ParticipantLeft { identity: who, sid, reason: LeaveReason::ClientLeft }.into()),
            env(4, 4000, RoomClosed { reason: CloseReason::EmptyTimeout }.into()),
        ];
        let mut row = None;
        let mut counts = vec![];
        for e in &events {
            row = RoomsProjection::fold(row, e);
            counts.push(row.as_ref().map(|r| r.participant_count));
        }
        assert_eq!(counts, vec![Some(0), Some(1), Some(0), Some(0)]);
        let row = row.expect("row");
        assert_eq!((row.state.as_str(), row.closed_at_ms, row.last_seq), ("closed", Some(4000), 4));
        assert_eq!(row.close_reason.as_deref(), Some("empty_timeout"));
        // Events without a creation leave no row.
        assert_eq!(RoomsProjection::fold(None, &events[1]), None);
    }
}
