//! The nodes read model: one row per media node with its liveness and load.

use arc_events::{Envelope, Event, NodeEvent};
use async_trait::async_trait;
use sqlx::{AnyConnection, Row};

use super::Projection;

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

/// Columns in the order `load` selects them.
pub(crate) const COLUMNS: &str = "node_id, address, public_ips, arch, cores, capacity, version, state, \
     registered_at_ms, last_seen_ms, sessions, tracks, bits_in_per_s, bits_out_per_s, cpu_percent, last_seq";

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

#[async_trait]
impl Projection for NodesProjection {
    const NAME: &'static str = "nodes";
    type Row = NodeRow;

    fn key(event: &Envelope) -> Option<String> {
        matches!(event.event, Event::Node(_)).then(|| event.aggregate.id().to_owned())
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

    fn tables() -> &'static [&'static str] {
        &["nodes"]
    }

    async fn load(conn: &mut AnyConnection, key: &str) -> Result<Option<NodeRow>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM nodes WHERE node_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql)).bind(key).fetch_optional(conn).await?.map(|r| from_row(&r)).transpose()
    }

    async fn save(conn: &mut AnyConnection, key: &str, row: Option<&NodeRow>) -> Result<(), sqlx::Error> {
        let Some(n) = row else {
            sqlx::query("DELETE FROM nodes WHERE node_id = $1").bind(key).execute(conn).await?;
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO nodes (node_id, address, public_ips, arch, cores, capacity, version, state, \
             registered_at_ms, last_seen_ms, sessions, tracks, bits_in_per_s, bits_out_per_s, cpu_percent, last_seq) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, public_ips = excluded.public_ips, \
             arch = excluded.arch, cores = excluded.cores, capacity = excluded.capacity, version = excluded.version, \
             state = excluded.state, registered_at_ms = excluded.registered_at_ms, \
             last_seen_ms = excluded.last_seen_ms, sessions = excluded.sessions, tracks = excluded.tracks, \
             bits_in_per_s = excluded.bits_in_per_s, bits_out_per_s = excluded.bits_out_per_s, \
             cpu_percent = excluded.cpu_percent, last_seq = excluded.last_seq",
        )
        .bind(&n.node_id)
        .bind(&n.address)
        .bind(&n.public_ips)
        .bind(&n.arch)
        .bind(n.cores)
        .bind(n.capacity)
        .bind(&n.version)
        .bind(&n.state)
        .bind(n.registered_at_ms)
        .bind(n.last_seen_ms)
        .bind(n.sessions)
        .bind(n.tracks)
        .bind(n.bits_in_per_s)
        .bind(n.bits_out_per_s)
        .bind(n.cpu_percent)
        .bind(n.last_seq)
        .execute(conn)
        .await?;
        Ok(())
    }
}
