//! The nodes read model: one row per media node with its liveness and load.

use arc_events::{Envelope, Event, NodeEvent};
use sqlx::Row;

use super::{AnyQuery, Projection};

/// One media node as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub node_id: String,
    pub address: String,
    /// JSON array of the announced public IPs.
    pub public_ips: String,
    pub arch: String,
    pub cores: i64,
    pub capacity: i64,
    pub version: String,
    /// `up`, `draining`, `lost` or `deregistered`.
    pub state: String,
    pub registered_at_ms: i64,
    pub last_seen_ms: i64,
    pub sessions: i64,
    pub tracks: i64,
    pub bits_in_per_s: i64,
    pub bits_out_per_s: i64,
    pub cpu_percent: f64,
    pub last_seq: i64,
}

/// Folds node events into `nodes`.
#[derive(Debug)]
pub struct NodesProjection;

/// Columns in the order `from_row` reads and `bind` binds them, the key first.
pub(crate) const COLUMNS: &[&str] = &[
    "node_id",
    "address",
    "public_ips",
    "arch",
    "cores",
    "capacity",
    "version",
    "state",
    "registered_at_ms",
    "last_seen_ms",
    "sessions",
    "tracks",
    "bits_in_per_s",
    "bits_out_per_s",
    "cpu_percent",
    "last_seq",
];

pub(crate) fn from_row(r: &sqlx::any::AnyRow) -> Result<NodeRow, sqlx::Error> {
    Ok(NodeRow {
        node_id: r.try_get(0)?,
        address: r.try_get(1)?,
        public_ips: r.try_get(2)?,
        arch: r.try_get(3)?,
        cores: r.try_get(4)?,
        capacity: r.try_get(5)?,
        version: r.try_get(6)?,
        state: r.try_get(7)?,
        registered_at_ms: r.try_get(8)?,
        last_seen_ms: r.try_get(9)?,
        sessions: r.try_get(10)?,
        tracks: r.try_get(11)?,
        bits_in_per_s: r.try_get(12)?,
        bits_out_per_s: r.try_get(13)?,
        cpu_percent: r.try_get(14)?,
        last_seq: r.try_get(15)?,
    })
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Projection for NodesProjection {
    const NAME: &'static str = "nodes";
    const TABLE: &'static str = "nodes";
    const COLUMNS: &'static [&'static str] = COLUMNS;
    type Row = NodeRow;

    fn bind<'q>(query: AnyQuery<'q>, row: &'q NodeRow) -> AnyQuery<'q> {
        query
            .bind(row.node_id.as_str())
            .bind(row.address.as_str())
            .bind(row.public_ips.as_str())
            .bind(row.arch.as_str())
            .bind(row.cores)
            .bind(row.capacity)
            .bind(row.version.as_str())
            .bind(row.state.as_str())
            .bind(row.registered_at_ms)
            .bind(row.last_seen_ms)
            .bind(row.sessions)
            .bind(row.tracks)
            .bind(row.bits_in_per_s)
            .bind(row.bits_out_per_s)
            .bind(row.cpu_percent)
            .bind(row.last_seq)
    }

    fn from_row(row: &sqlx::any::AnyRow) -> Result<NodeRow, sqlx::Error> {
        from_row(row)
    }

    fn key(event: &Envelope) -> Option<String> {
        // A node's reports of its media change nothing here.
        matches!(&event.event, Event::Node(e) if !e.is_report()).then(|| event.aggregate.id().to_owned())
    }

    fn fold(row: Option<NodeRow>, e: &Envelope) -> Option<NodeRow> {
        let Event::Node(event) = &e.event else {
            return row;
        };
        let at = e.occurred_at.timestamp_millis();
        let seq = e.seq as i64;
        match (event, row) {
            (NodeEvent::Registered(r), _) => Some(NodeRow {
                node_id: e.aggregate.id().to_owned(),
                address: r.address.clone(),
                public_ips: serde_json::to_string(&r.public_ips).unwrap_or_else(|_| "[]".into()),
                arch: r.arch.clone(),
                cores: i64::from(r.cores),
                capacity: i64::from(r.capacity),
                version: r.version.clone(),
                state: "up".into(),
                registered_at_ms: at,
                last_seen_ms: at,
                sessions: 0,
                tracks: 0,
                bits_in_per_s: 0,
                bits_out_per_s: 0,
                cpu_percent: 0.0,
                last_seq: seq,
            }),
            (_, None) => None,
            (
                NodeEvent::TrackPublished(_)
                | NodeEvent::TrackUnpublished(_)
                | NodeEvent::SubscriptionStarted(_)
                | NodeEvent::SubscriptionEnded(_)
                | NodeEvent::SessionEnded(_),
                n,
            ) => n,
            (NodeEvent::Heartbeat(h), Some(mut n)) => {
                n.last_seen_ms = at;
                n.sessions = i64::from(h.load.sessions);
                n.tracks = i64::from(h.load.tracks);
                n.bits_in_per_s = clamp(h.load.bits_in_per_s);
                n.bits_out_per_s = clamp(h.load.bits_out_per_s);
                n.cpu_percent = f64::from(h.load.cpu_percent);
                n.last_seq = seq;
                Some(n)
            }
            (NodeEvent::Draining(_), Some(mut n)) => {
                n.state = "draining".into();
                n.last_seq = seq;
                Some(n)
            }
            (NodeEvent::Undrained(_), Some(mut n)) => {
                n.state = "up".into();
                n.last_seq = seq;
                Some(n)
            }
            (NodeEvent::Lost(_), Some(mut n)) => {
                n.state = "lost".into();
                n.last_seq = seq;
                Some(n)
            }
            (NodeEvent::Deregistered(_), Some(mut n)) => {
                n.state = "deregistered".into();
                n.sessions = 0;
                n.tracks = 0;
                n.last_seq = seq;
                Some(n)
            }
        }
    }
}
