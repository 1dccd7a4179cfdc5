//! Event-log and projection benchmark. Prints a table and writes
//! `BENCHMARKS.md` (or `target/BENCHMARKS.quick.md` with `--quick`).
//!
//! Run it with `scripts/bench` (starts nats-server and PostgreSQL), or by hand:
//! `ARC_TEST_NATS_URL=… ARC_TEST_PG_ADMIN_URL=… cargo bench -p arc-control --bench eventlog [-- --quick]`.
//!
//! Figures are medians of several runs (machines are noisy); latencies are
//! p50/p99 over every append of the run that gave the median throughput.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_control::projection::{self, nodes::NodesProjection, rooms::RoomsProjection};
use arc_control::readdb::ReadDb;
use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::sqlite::SqliteLog;
use arc_eventlog::{AppendRequest, EventLog, Expected};
use arc_events::room::{LeaveReason, ParticipantJoined, ParticipantLeft, RoomClosed, RoomCreated};
use arc_events::{
    Actor, AggregateKind, AggregateRef, AppId, CommandMeta, Event, ParticipantIdentity, ParticipantSid, RawEvent,
    RoomEvent, RoomId,
};

struct Scale {
    runs: usize,
    single: usize,
    concurrent_tasks: usize,
    concurrent_per_task: usize,
    batch_size: usize,
    batches_per_task: usize,
    rebuild_rooms: usize,
    /// Events in the long-lived node aggregate whose load is timed.
    aggregate_events: usize,
}

const FULL: Scale = Scale {
    runs: 5,
    single: 2000,
    concurrent_tasks: 64,
    concurrent_per_task: 300,
    batch_size: 100,
    batches_per_task: 30,
    rebuild_rooms: 40_000,
    aggregate_events: 100_000,
};
const QUICK: Scale = Scale {
    runs: 1,
    single: 200,
    concurrent_tasks: 16,
    concurrent_per_task: 50,
    batch_size: 50,
    batches_per_task: 4,
    rebuild_rooms: 2_000,
    aggregate_events: 10_000,
};

#[derive(Clone, Copy)]
struct Figure {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::system("bench"), chrono::Utc::now())
}

fn closed_events(aggregate: &AggregateRef, n: usize) -> Vec<RawEvent> {
    let e: Event = RoomEvent::from(RoomClosed { reason: arc_events::room::CloseReason::Requested }).into();
    let m = meta();
    (0..n).map(|_| RawEvent::encode(aggregate, 0, &e, &m).expect("encode")).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// `tasks` appenders, each doing `per_task` appends of `batch` events to its own aggregates.
async fn append_run(log: Arc<dyn EventLog>, tag: &str, tasks: usize, per_task: usize, batch: usize) -> Figure {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let log = log.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                let agg = AggregateRef::from(&RoomId::parse(&format!("{tag}-{t}")).expect("id"));
                let mut seq = 0;
                for _ in 0..per_task {
                    let events = closed_events(&agg, batch);
                    let t0 = Instant::now();
                    let done = log
                        .append(AppendRequest { aggregate: agg.clone(), expected: Expected::Exact(seq), events })
                        .await
                        .expect("append");
                    lat.push(t0.elapsed());
                    seq = done.last_seq;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Figure {
        events_per_s: (tasks * per_task * batch) as f64 / secs,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    }
}

async fn median_of(runs: usize, mut f: impl AsyncFnMut(usize) -> Figure) -> Figure {
    let mut figures = Vec::new();
    for r in 0..runs {
        figures.push(f(r).await);
    }
    figures.sort_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s));
    figures[figures.len() / 2]
}

async fn bench_log(name: &str, tag: &str, log: Arc<dyn EventLog>, s: &Scale, rows: &mut Vec<String>) -> [Figure; 3] {
    let single =
        median_of(s.runs, async |r| append_run(log.clone(), &format!("{tag}-s{r}"), 1, s.single, 1).await).await;
    let concurrent = median_of(s.runs, async |r| {
        append_run(log.clone(), &format!("{tag}-c{r}"), s.concurrent_tasks, s.concurrent_per_task, 1).await
    })
    .await;
    let batched = median_of(s.runs, async |r| {
        append_run(log.clone(), &format!("{tag}-b{r}"), s.concurrent_tasks, s.batches_per_task, s.batch_size).await
    })
    .await;
    for (what, f) in [
        ("single appends, 1 appender".to_string(), single),
        (format!("single appends, {} concurrent appenders", s.concurrent_tasks), concurrent),
        (format!("batches of {}, {} concurrent appenders", s.batch_size, s.concurrent_tasks), batched),
    ] {
        let row = format!("| {name} | {what} | {:.0} | {:.2} | {:.2} |", f.events_per_s, f.p50_ms, f.p99_ms);
        println!("{row}");
        rows.push(row);
    }
    [single, concurrent, batched]
}

/// A realistic history: each room is created, joined by 3, left by 3, closed (8 events).
async fn fill(log: &Arc<dyn EventLog>, rooms: usize) -> usize {
    let app = AppId::parse("bench").expect("id");
    let mut total = 0;
    let chunk = 64;
    for base in (0..rooms).step_by(chunk) {
        let mut handles = Vec::new();
        for r in base..(base + chunk).min(rooms) {
            let log = log.clone();
            let app = app.clone();
            handles.push(tokio::spawn(async move {
                let id = RoomId::parse(&format!("fill-{r}")).expect("id");
                let agg = AggregateRef::from(&id);
                let m = meta();
                let mut events: Vec<Event> = vec![
                    RoomEvent::from(RoomCreated {
                        app_id: app,
                        name: id.to_string(),
                        max_participants: None,
                        empty_timeout_s: 300,
                        metadata: None,
                    })
                    .into(),
                ];
                let people: Vec<(ParticipantIdentity, ParticipantSid)> = (0..3)
                    .map(|p| (ParticipantIdentity::parse(&format!("u{p}")).expect("id"), ParticipantSid::generate()))
                    .collect();
                for (who, sid) in &people {
                    events.push(
                        RoomEvent::from(ParticipantJoined {
                            identity: who.clone(),
                            sid: sid.clone(),
                            name: None,
                            node_id: None,
                            jti: None,
                            permissions: None,
                            metadata: None,
                        })
                        .into(),
                    );
                }
                for (who, sid) in &people {
                    events.push(
                        RoomEvent::from(ParticipantLeft {
                            identity: who.clone(),
                            sid: sid.clone(),
                            reason: LeaveReason::ClientLeft,
                        })
                        .into(),
                    );
                }
                events.push(RoomEvent::from(RoomClosed { reason: arc_events::room::CloseReason::EmptyTimeout }).into());
                let n = events.len();
                // One append per event, as commands would produce them.
                for (i, e) in events.iter().enumerate() {
                    let raw = RawEvent::encode(&agg, 0, e, &m).expect("encode");
                    log.append(AppendRequest {
                        aggregate: agg.clone(),
                        expected: Expected::Exact(i as u64),
                        events: vec![raw],
                    })
                    .await
                    .expect("append");
                }
                n
            }));
        }
        for h in handles {
            total += h.await.expect("task");
        }
    }
    total
}

async fn fresh_pg(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("arc_bench_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.expect("create db");
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin);
    format!("{base}/{name}")
}

async fn rebuild_rate(log: Arc<dyn EventLog>, url: &str) -> (f64, u64) {
    let db = ReadDb::connect(url).await.expect("read db");
    let t = Instant::now();
    let rooms = projection::rebuild::<RoomsProjection>(&db, log.clone()).await.expect("rebuild rooms");
    let secs = t.elapsed().as_secs_f64();
    let _ = projection::rebuild::<NodesProjection>(&db, log).await.expect("rebuild nodes");
    (rooms as f64 / secs, rooms)
}

/// A node aggregate with `events` events (registered, then drain/undrain),
/// loaded cold: (ms for the whole history read and folded, ms through a
/// fresh repository from its snapshot), medians of `runs`.
async fn aggregate_load(log: Arc<dyn EventLog>, events: usize, runs: usize) -> (f64, f64) {
    use arc_eventlog::Repository;
    use arc_events::aggregate::node::Node;
    use arc_events::node::{NodeDraining, NodeRegistered, NodeUndrained};
    use arc_events::{Aggregate, Decoded, NodeEvent};
    let node = AggregateRef::new(AggregateKind::Node, &format!("nd_{}", uuid::Uuid::now_v7().simple())).expect("id");
    let registered: Event = NodeEvent::from(NodeRegistered {
        address: "10.0.0.1:7881".into(),
        public_ips: vec![],
        arch: "x86_64".into(),
        cores: 8,
        capacity: 100,
        version: "0.1.0".into(),
    })
    .into();
    let mut seq = 0u64;
    while (seq as usize) < events {
        let n = (events - seq as usize).min(1000);
        let batch: Vec<RawEvent> = (1..=n as u64)
            .map(|i| {
                let s = seq + i;
                let event: Event = match s {
                    1 => registered.clone(),
                    s if s % 2 == 0 => NodeEvent::from(NodeDraining { reason: "bench".into() }).into(),
                    _ => NodeEvent::from(NodeUndrained {}).into(),
                };
                RawEvent::encode(&node, s, &event, &meta()).expect("encode")
            })
            .collect();
        log.append(AppendRequest { aggregate: node.clone(), expected: Expected::Exact(seq), events: batch })
            .await
            .expect("append");
        seq += n as u64;
    }
    let mut full = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        let mut state = Node::default();
        for e in log.read_aggregate(&node, 0).await.expect("read") {
            if let Ok(Decoded::Known(env)) = e.raw.decode()
                && let Some(ev) = Node::narrow(env.event)
            {
                state = state.evolve(&ev, env.occurred_at);
            }
        }
        std::hint::black_box(state);
        full.push(t.elapsed().as_secs_f64() * 1e3);
    }
    // The first cold load reads everything and takes the snapshot.
    Repository::<Node>::new(log.clone()).load(&node).await.expect("load");
    let mut snap = Vec::new();
    for _ in 0..runs.max(3) {
        let repo = Repository::<Node>::new(log.clone());
        let t = Instant::now();
        repo.load(&node).await.expect("load");
        snap.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(repo.events_folded() <= 1, "loaded from the snapshot");
    }
    full.sort_by(f64::total_cmp);
    snap.sort_by(f64::total_cmp);
    (full[full.len() / 2], snap[snap.len() / 2])
}

fn sh(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let s = if quick { &QUICK } else { &FULL };
    let nats = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL not set: run scripts/bench");
    let pg = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/bench");
    let dir = tempfile::tempdir().expect("tempdir");

    println!("| log | workload | events/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    let mut rows = Vec::new();
    let sqlite: Arc<dyn EventLog> = Arc::new(SqliteLog::open(&dir.path().join("events.db")).await.expect("sqlite log"));
    let embedded = bench_log("embedded (SQLite)", "sq", sqlite, s, &mut rows).await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut config = JetStreamConfig::new(&nats);
    config.stream = format!("BENCH_{tag}");
    config.subject_prefix = format!("b{tag}.evt");
    let js: Arc<dyn EventLog> = Arc::new(JetStreamLog::connect(&config).await.expect("jetstream"));
    let jetstream = bench_log("JetStream (1 server, file storage)", "js", js.clone(), s, &mut rows).await;

    // Rebuild: the same 8-event room histories from each log into each database.
    let source_dir = tempfile::tempdir().expect("tempdir");
    let source: Arc<dyn EventLog> =
        Arc::new(SqliteLog::open(&source_dir.path().join("events.db")).await.expect("sqlite log"));
    let filled = fill(&source, s.rebuild_rooms).await;
    let mut rebuild_rows = Vec::new();
    let mut rebuild_rates = Vec::new();
    for (from, log) in [("embedded log", source.clone())] {
        for (into, url) in [
            (
                "SQLite",
                format!("sqlite://{}", dir.path().join(format!("read-{}.db", uuid::Uuid::now_v7().simple())).display()),
            ),
            ("PostgreSQL", fresh_pg(&pg).await),
        ] {
            let mut rates = Vec::new();
            for _ in 0..s.runs {
                rates.push(rebuild_rate(log.clone(), &url).await.0);
            }
            rates.sort_by(f64::total_cmp);
            rebuild_rates.push((format!("{from} → {into}"), rates[rates.len() / 2]));
            let row = format!("| {from} → {into} | {filled} | {:.0} |", rates[rates.len() / 2]);
            rebuild_rows.push(row);
        }
    }
    let js_fill_rooms = (s.rebuild_rooms / 4).max(1);
    let mut jsc = JetStreamConfig::new(&nats);
    jsc.stream = format!("BENCHR_{tag}");
    jsc.subject_prefix = format!("r{tag}.evt");
    let js_source: Arc<dyn EventLog> = Arc::new(JetStreamLog::connect(&jsc).await.expect("jetstream"));
    let js_filled = fill(&js_source, js_fill_rooms).await;
    let (rate, _) = rebuild_rate(js_source, &fresh_pg(&pg).await).await;
    rebuild_rows.push(format!("| JetStream log → PostgreSQL | {js_filled} | {rate:.0} |"));
    rebuild_rates.push(("JetStream log → PostgreSQL".into(), rate));
    // A long-lived aggregate's cold load, whole history vs snapshot.
    let mut load_rows = Vec::new();
    let mut load_figures = Vec::new();
    let sq_dir = tempfile::tempdir().expect("tempdir");
    let sq_log: Arc<dyn EventLog> =
        Arc::new(SqliteLog::open(&sq_dir.path().join("events.db")).await.expect("sqlite log"));
    for (name, log) in [("embedded (SQLite)", sq_log), ("JetStream", js.clone())] {
        let (full, snap) = aggregate_load(log, s.aggregate_events, s.runs).await;
        let row =
            format!("| {name} | {} | {full:.1} | {snap:.2} | {:.0}× |", s.aggregate_events, full / snap.max(1e-6));
        println!("{row}");
        load_rows.push(row);
        load_figures.push((name, snap));
    }
    let met = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut targets = vec![
        format!(
            "| JetStream ≥ 20,000 acknowledged events/s, concurrent/batched | {:.0} concurrent singles, {:.0} batched | {} |",
            jetstream[1].events_per_s,
            jetstream[2].events_per_s,
            met(jetstream[1].events_per_s.max(jetstream[2].events_per_s) >= 20_000.0)
        ),
        format!(
            "| JetStream p99 single-append latency ≤ 5 ms (loopback) | {:.2} ms | {} |",
            jetstream[0].p99_ms,
            met(jetstream[0].p99_ms <= 5.0)
        ),
        format!(
            "| embedded log ≥ 100,000 events/s with group commit | {:.0} batched, {:.0} concurrent singles | {} |",
            embedded[2].events_per_s,
            embedded[1].events_per_s,
            met(embedded[2].events_per_s.max(embedded[1].events_per_s) >= 100_000.0)
        ),
    ];
    for (name, snap) in &load_figures {
        targets.push(format!(
            "| a node aggregate with {} events loads in < 50 ms ({name}, from its snapshot) | {snap:.2} ms | {} |",
            s.aggregate_events,
            met(*snap < 50.0)
        ));
    }
    for (what, rate) in &rebuild_rates {
        targets.push(format!("| rebuild ≥ 100,000 events/s ({what}) | {rate:.0} | {} |", met(*rate >= 100_000.0)));
    }
    println!("\n| rebuild (rooms projection) | events | events/s |\n|---|---|---|");
    for r in &rebuild_rows {
        println!("{r}");
    }

    let cpu = sh("sh", &["-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]);
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Measured by `control/benches/eventlog.rs`. Rerun with `scripts/bench` (starts nats-server and PostgreSQL, \
         then `cargo bench -p arc-control --bench eventlog`); `scripts/bench --quick` is the short form CI runs.\n"
    );
    let _ = writeln!(
        md,
        "Machine: {} cores, {cpu}; {}; {}; PostgreSQL {}. Date: {}. Scale: {} ({} runs each, the median run is shown).\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        sh("uname", &["-sr"]),
        sh(&std::env::var("ARC_NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into()), &["--version"]),
        sh("sh", &["-c", "psql --version | awk '{print $3}'"]),
        chrono::Utc::now().format("%Y-%m-%d"),
        if quick { "quick" } else { "full" },
        s.runs,
    );
    let _ = writeln!(md, "## Targets (issue 3)\n");
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    for t in &targets {
        let _ = writeln!(md, "{t}");
    }
    let _ = writeln!(md, "\n## Event log appends\n");
    let _ = writeln!(
        md,
        "Acknowledged = durable: SQLite with WAL and `synchronous=FULL` (fsync per group commit); JetStream file storage, acknowledged by the server.\n"
    );
    let _ = writeln!(md, "| log | workload | events/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    for r in &rows {
        let _ = writeln!(md, "{r}");
    }
    let _ = writeln!(md, "\n## Loading a long-lived aggregate (issue 13)\n");
    let _ = writeln!(
        md,
        "A node aggregate with many events (registered, then drain/undrain), appended in batches of 1,000 (on JetStream: 100 messages; a history written one event per command, one message each, takes one direct get per event and far longer to read whole), loaded cold: its whole history read and folded, vs a fresh `Repository` from its snapshot (the snapshot's own event, checked, and the tail). Medians.\n"
    );
    let _ = writeln!(md, "| log | events | whole history ms | from snapshot ms | ratio |\n|---|---|---|---|---|");
    for r in &load_rows {
        let _ = writeln!(md, "{r}");
    }
    let _ = writeln!(md, "\n## Projection rebuild\n");
    let _ = writeln!(
        md,
        "Rooms with 8 events each (created, 3 joined, 3 left, closed), replayed from the start into fresh tables; rows and checkpoint written per batch in one transaction.\n"
    );
    let _ = writeln!(md, "| rebuild (rooms projection) | events | events/s |\n|---|---|---|");
    for r in &rebuild_rows {
        let _ = writeln!(md, "{r}");
    }
    let path = if quick {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/BENCHMARKS.quick.md")
    } else {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md")
    };
    // Hand-written analysis below the notes heading survives regeneration.
    let notes_heading = "## Notes";
    if let Some(notes) =
        std::fs::read_to_string(&path).ok().and_then(|old| old.find(notes_heading).map(|i| old[i..].to_string()))
    {
        let _ = write!(md, "\n{notes}");
    }
    std::fs::write(&path, md).expect("write benchmarks");
    println!("\nwrote {}", path.display());
}
