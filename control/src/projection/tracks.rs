//! The tracks read model: one row per published track with its mute state.

use arc_events::track::{MediaKind, MutedBy, TrackSource};
use arc_events::{Envelope, Event, TrackEvent};
use sqlx::Row;

use super::{AnyQuery, Projection};

/// One track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRow {
    pub track_id: String,
    pub room_id: String,
    pub identity: String,
    pub sid: String,
    pub kind: String,
    pub source: String,
    pub codec: String,
    pub simulcast: bool,
    pub muted: bool,
    pub muted_by: Option<String>,
    /// `published` or `unpublished`.
    pub state: String,
    pub published_at_ms: i64,
    pub unpublished_at_ms: Option<i64>,
}

/// Folds track events into `tracks`.
#[derive(Debug)]
pub struct TracksProjection;

pub(crate) const COLUMNS: &[&str] = &[
    "track_id",
    "room_id",
    "identity",
    "sid",
    "kind",
    "source",
    "codec",
    "simulcast",
    "muted",
    "muted_by",
    "state",
    "published_at_ms",
    "unpublished_at_ms",
];

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<TrackRow, sqlx::Error> {
    Ok(TrackRow {
        track_id: r.try_get(0)?,
        room_id: r.try_get(1)?,
        identity: r.try_get(2)?,
        sid: r.try_get(3)?,
        kind: r.try_get(4)?,
        source: r.try_get(5)?,
        codec: r.try_get(6)?,
        simulcast: r.try_get::<i64, _>(7)? != 0,
        muted: r.try_get::<i64, _>(8)? != 0,
        muted_by: r.try_get(9)?,
        state: r.try_get(10)?,
        published_at_ms: r.try_get(11)?,
        unpublished_at_ms: r.try_get(12)?,
    })
}

fn kind(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

fn source(s: TrackSource) -> &'static str {
    match s {
        TrackSource::Camera => "camera",
        TrackSource::Microphone => "microphone",
        TrackSource::ScreenShare => "screen_share",
        TrackSource::ScreenShareAudio => "screen_share_audio",
        TrackSource::Ingest => "ingest",
        TrackSource::Other => "other",
    }
}

fn muted_by(m: MutedBy) -> &'static str {
    match m {
        MutedBy::Publisher => "publisher",
        MutedBy::Moderator => "moderator",
    }
}

impl Projection for TracksProjection {
    const NAME: &'static str = "tracks";
    const TABLE: &'static str = "tracks";
    const COLUMNS: &'static [&'static str] = COLUMNS;
    type Row = TrackRow;

    fn bind<'q>(q: AnyQuery<'q>, r: &'q TrackRow) -> AnyQuery<'q> {
        q.bind(r.track_id.as_str())
            .bind(r.room_id.as_str())
            .bind(r.identity.as_str())
            .bind(r.sid.as_str())
            .bind(r.kind.as_str())
            .bind(r.source.as_str())
            .bind(r.codec.as_str())
            .bind(i64::from(r.simulcast))
            .bind(i64::from(r.muted))
            .bind(r.muted_by.as_deref())
            .bind(r.state.as_str())
            .bind(r.published_at_ms)
            .bind(r.unpublished_at_ms)
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<TrackRow, sqlx::Error> {
        from_row(row)
    }

    fn key(event: &Envelope) -> Option<String> {
        matches!(event.event, Event::Track(_)).then(|| event.aggregate.id().to_owned())
    }

    fn fold(row: Option<TrackRow>, e: &Envelope) -> Option<TrackRow> {
        let Event::Track(event) = &e.event else { return row };
        let at = e.occurred_at.timestamp_millis();
        match (event, row) {
            (TrackEvent::Published(p), _) => Some(TrackRow {
                track_id: e.aggregate.id().to_owned(),
                room_id: p.room_id.to_string(),
                identity: p.identity.to_string(),
                sid: p.sid.to_string(),
                kind: kind(p.kind).into(),
                source: source(p.source).into(),
                codec: p.codec.clone(),
                simulcast: p.simulcast,
                muted: false,
                muted_by: None,
                state: "published".into(),
                published_at_ms: at,
                unpublished_at_ms: None,
            }),
            (_, None) => None,
            (TrackEvent::Muted(m), Some(mut r)) => {
                r.muted = true;
                r.muted_by = Some(muted_by(m.by).into());
                Some(r)
            }
            (TrackEvent::Unmuted(m), Some(mut r)) => {
                r.muted = false;
                r.muted_by = Some(muted_by(m.by).into());
                Some(r)
            }
            (TrackEvent::Unpublished(_), Some(mut r)) => {
                r.state = "unpublished".into();
                r.unpublished_at_ms = Some(at);
                Some(r)
            }
            // Subscriptions live in the log (and the track aggregate); the row is unchanged.
            (TrackEvent::SubscriptionStarted(_) | TrackEvent::SubscriptionEnded(_), Some(r)) => Some(r),
        }
    }
}
