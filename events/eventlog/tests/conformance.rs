//! One conformance suite, run unchanged against both backends: the embedded
//! SQLite log and NATS JetStream (a real nats-server; `scripts/test` starts one
//! and exports `ARC_TEST_NATS_URL`).

use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::sqlite::SqliteLog;
use arc_eventlog::{AppendRequest, EventLog, Expected, LogError, Position, RecordedEvent};
use arc_events::room::{CloseReason, RoomClosed};
use arc_events::{Actor, AggregateKind, AggregateRef, CommandMeta, Event, RawEvent, RoomEvent};
use futures::StreamExt;

/// Where a backend keeps its data, so a test can open it again "after a restart".
enum Backend {
    Sqlite(tempfile::TempDir),
    JetStream { url: String, stream: String, prefix: String },
}

impl Backend {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().expect("tempdir"))
    }

    fn jetstream() -> Self {
        let url = std::env::var("ARC_TEST_NATS_URL")
            .expect("ARC_TEST_NATS_URL is not set: run the tests with scripts/test, which starts nats-server");
        let tag = uuid::Uuid::now_v7().simple().to_string();
        Self::JetStream { url, stream: format!("T_{tag}"), prefix: format!("t{tag}.evt") }
    }

    async fn open(&self) -> Arc<dyn EventLog> {
        match self {
            Self::Sqlite(dir) => {
                let path = dir.path().join("events.db");
                // A dropped log releases its lock at once, but be patient anyway.
                for _ in 0..50 {
                    if let Ok(log) = SqliteLog::open(&path).await {
                        return Arc::new(log);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("could not reopen {}", path.display());
            }
            Self::JetStream { url, stream, prefix } => {
                let mut config = JetStreamConfig::new(url);
                config.stream = stream.clone();
                config.subject_prefix = prefix.clone();
                Arc::new(JetStreamLog::connect(&config).await.expect("connect to nats-server"))
            }
        }
    }
}

fn room(id: &str) -> AggregateRef {
    AggregateRef::new(AggregateKind::Room, id).expect("valid id")
}

fn events(aggregate: &AggregateRef, n: usize) -> Vec<RawEvent> {
    let meta = CommandMeta::new(Actor::system("conformance"), chrono::Utc::now());
    let event: Event = RoomEvent::from(RoomClosed { reason: CloseReason::Requested }).into();
    (0..n).map(|_| RawEvent::encode(aggregate, 0, &event, &meta).expect("encode")).collect()
}

fn request(aggregate: &AggregateRef, expected: Expected, n: usize) -> AppendRequest {
    AppendRequest { aggregate: aggregate.clone(), expected, events: events(aggregate, n) }
}

async fn read_everything(log: &dyn EventLog) -> Vec<RecordedEvent> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    loop {
        let after = out.last().map(|e| e.position).unwrap_or(Position::START);
        let page = log.read_all(after, 100).await.expect("read_all");
        assert!(page.len() <= 100, "read_all returned more than its limit");
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

async fn appends_and_reads_back(b: Backend) {
    let log = b.open().await;
    assert_eq!(log.head().await.expect("head"), Position::START);
    let a = room("a");
    let first = log.append(request(&a, Expected::Exact(0), 3)).await.expect("append");
    assert_eq!(first.last_seq, 3);
    assert!(!first.duplicate);
    assert!(first.first < first.last);
    let second = log.append(request(&a, Expected::Exact(3), 2)).await.expect("append");
    assert_eq!(second.last_seq, 5);
    assert!(second.first > first.last);
    assert_eq!(log.head().await.expect("head"), second.last);

    let history = log.read_aggregate(&a, 0).await.expect("read");
    assert_eq!(history.iter().map(|e| e.raw.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert!(history.iter().all(|e| e.raw.aggregate_id == "a" && e.raw.aggregate_type == "room"));
    let later = log.read_aggregate(&a, 3).await.expect("read");
    assert_eq!(later.iter().map(|e| e.raw.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert!(log.read_aggregate(&room("nobody"), 0).await.expect("read").is_empty());

    let all = read_everything(&*log).await;
    assert_eq!(all, history);
    let tail = log.read_all(first.last, 10).await.expect("read");
    assert_eq!(tail.iter().map(|e| e.raw.seq).collect::<Vec<_>>(), vec![4, 5]);
}

async fn refuses_stale_expectations(b: Backend) {
    let log = b.open().await;
    let a = room("a");
    log.append(request(&a, Expected::Exact(0), 2)).await.expect("append");
    // Two creators: the second must lose, not both win.
    match log.append(request(&a, Expected::Exact(0), 1)).await {
        Err(LogError::Conflict { expected: 0, actual: 2, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match log.append(request(&a, Expected::Exact(7), 1)).await {
        Err(LogError::Conflict { expected: 7, actual: 2, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match log.append(request(&a, Expected::Exact(1), 1)).await {
        Err(LogError::Conflict { expected: 1, actual: 2, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(log.read_aggregate(&a, 0).await.expect("read").len(), 2);
}

async fn one_winner_among_concurrent_creators(b: Backend) {
    let log = b.open().await;
    let a = room("contended");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            let req = request(&a, Expected::Exact(0), 1);
            tokio::spawn(async move { log.append(req).await })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => wins += 1,
            Err(LogError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(log.read_aggregate(&a, 0).await.expect("read").len(), 1);
}

async fn reappending_a_batch_is_idempotent(b: Backend) {
    let log = b.open().await;
    let a = room("a");
    let req = request(&a, Expected::Exact(0), 3);
    let first = log.append(req.clone()).await.expect("append");
    let again = log.append(req.clone()).await.expect("re-append");
    assert!(again.duplicate);
    assert_eq!((again.first, again.last, again.last_seq), (first.first, first.last, first.last_seq));
    log.append(request(&a, Expected::Exact(3), 1)).await.expect("append");
    // Still recognised after the aggregate moved on.
    let late = log.append(req).await.expect("late re-append");
    assert!(late.duplicate);
    assert_eq!(late.first, first.first);
    assert_eq!(log.read_aggregate(&a, 0).await.expect("read").len(), 4);
}

async fn any_appends_are_gapless_under_concurrency(b: Backend) {
    let log = b.open().await;
    let a = room("busy");
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            let a = a.clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    log.append(request(&a, Expected::Any, 1)).await.expect("append any");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let seqs: Vec<u64> = log.read_aggregate(&a, 0).await.expect("read").iter().map(|e| e.raw.seq).collect();
    assert_eq!(seqs, (1..=60).collect::<Vec<u64>>());
}

async fn many_subjects_keep_global_and_per_aggregate_order(b: Backend) {
    let log = b.open().await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                let a = room(&format!("r{i}"));
                for seq in 0..5 {
                    log.append(request(&a, Expected::Exact(seq), 1)).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let all = read_everything(&*log).await;
    assert_eq!(all.len(), 100);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position), "positions strictly increase");
    for i in 0..20 {
        let id = format!("r{i}");
        let seqs: Vec<u64> = all.iter().filter(|e| e.raw.aggregate_id == id).map(|e| e.raw.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5], "{id}");
    }
}

async fn next(s: &mut arc_eventlog::Subscription) -> RecordedEvent {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("event within 10 s")
        .expect("stream open")
        .expect("event")
}

async fn subscriptions_catch_up_then_follow_live(b: Backend) {
    let log = b.open().await;
    let a = room("a");
    let first = log.append(request(&a, Expected::Exact(0), 2)).await.expect("append");
    let mut sub = log.subscribe(Position::START).await.expect("subscribe");
    let mut from_middle = log.subscribe(first.first).await.expect("subscribe");
    assert_eq!(next(&mut sub).await.raw.seq, 1);
    assert_eq!(next(&mut sub).await.raw.seq, 2);
    assert_eq!(next(&mut from_middle).await.raw.seq, 2);
    // Live: appended after the subscription caught up.
    let b_room = room("b");
    log.append(request(&b_room, Expected::Exact(0), 1)).await.expect("append");
    log.append(request(&a, Expected::Exact(2), 1)).await.expect("append");
    let live = next(&mut sub).await;
    assert_eq!((live.raw.aggregate_id.as_str(), live.raw.seq), ("b", 1));
    let live = next(&mut sub).await;
    assert_eq!((live.raw.aggregate_id.as_str(), live.raw.seq), ("a", 3));
    assert_eq!(next(&mut from_middle).await.raw.aggregate_id, "b");
}

async fn resumes_after_restart(b: Backend) {
    let log = b.open().await;
    let a = room("a");
    log.append(request(&a, Expected::Exact(0), 3)).await.expect("append");
    let head = log.head().await.expect("head");
    let before = read_everything(&*log).await;
    drop(log);

    let log = b.open().await;
    assert_eq!(log.head().await.expect("head"), head);
    assert_eq!(read_everything(&*log).await, before);
    // A new writer knows where the aggregate stands.
    match log.append(request(&a, Expected::Exact(0), 1)).await {
        Err(LogError::Conflict { actual: 3, .. }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let next = log.append(request(&a, Expected::Exact(3), 1)).await.expect("append");
    assert!(next.first > head);
    // A subscriber resuming from a stored position sees only what follows it.
    let mut sub = log.subscribe(head).await.expect("subscribe");
    let e =
        tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("in time").expect("open").expect("ok");
    assert_eq!(e.raw.seq, 4);
}

async fn refuses_malformed_appends(b: Backend) {
    let log = b.open().await;
    let a = room("a");
    let empty = AppendRequest { aggregate: a.clone(), expected: Expected::Exact(0), events: vec![] };
    assert!(matches!(log.append(empty).await, Err(LogError::Invalid(_))));
    let wrong = AppendRequest { aggregate: a.clone(), expected: Expected::Exact(0), events: events(&room("other"), 1) };
    assert!(matches!(log.append(wrong).await, Err(LogError::Invalid(_))));
    let mut repeated = request(&a, Expected::Exact(0), 2);
    repeated.events[1].id = repeated.events[0].id;
    assert!(matches!(log.append(repeated).await, Err(LogError::Invalid(_))));
    let huge = request(&a, Expected::Exact(0), arc_eventlog::APPEND_EVENTS_MAX + 1);
    assert!(matches!(log.append(huge).await, Err(LogError::TooLarge { .. })));
    let mut fat = request(&a, Expected::Exact(0), 1);
    fat.events[0].data = serde_json::json!({ "blob": "x".repeat(arc_eventlog::APPEND_BYTES_MAX) });
    assert!(matches!(log.append(fat).await, Err(LogError::TooLarge { .. })));
    assert_eq!(log.head().await.expect("head"), Position::START);
    // The log still works after refusing all that.
    log.append(request(&a, Expected::Exact(0), 1)).await.expect("append");
}

/// Two processes with their own repositories over one log (the control plane
/// and a media node's reporter): a command that decides "nothing to do" on a
/// cached state must first see what the other one appended. The rejoin ghost:
/// the reporter's cached room had the first session's leave but not the
/// second session's join, so the second leave was judged stale and dropped.
async fn decisions_on_cached_state_see_other_writers(b: Backend) {
    use arc_eventlog::Repository;
    use arc_events::aggregate::room::{Room, RoomCommand};
    use arc_events::room::{LeaveReason, ParticipantJoined};
    use arc_events::{AppId, ParticipantIdentity, ParticipantSid};
    let log = b.open().await;
    let control = Repository::<Room>::new(log.clone());
    let reporter = Repository::<Room>::new(log.clone());
    let r = room(&format!("rm_{}", uuid::Uuid::now_v7().simple()));
    let meta = || CommandMeta::new(Actor::system("conformance"), chrono::Utc::now());
    let who = ParticipantIdentity::parse("pub").expect("identity");
    let join = |sid: &ParticipantSid| RoomCommand::Join {
        joined: ParticipantJoined {
            identity: who.clone(),
            sid: sid.clone(),
            name: None,
            node_id: None,
            jti: None,
            permissions: None,
            metadata: None,
        },
        cap: None,
    };
    let leave = |sid: &ParticipantSid| RoomCommand::Leave {
        identity: who.clone(),
        sid: sid.clone(),
        reason: LeaveReason::ClientLeft,
    };
    let create = RoomCommand::Create {
        app_id: AppId::parse("app1").expect("app"),
        name: "r".into(),
        max_participants: None,
        empty_timeout_s: None,
        metadata: None,
    };
    control.execute(&r, &create, &meta()).await.expect("create");
    for round in 0..3 {
        let sid = ParticipantSid::generate();
        control.execute(&r, &join(&sid), &meta()).await.expect("join");
        // The reporter's cache holds the room as of its last command.
        let done = reporter.execute(&r, &leave(&sid), &meta()).await.expect("leave");
        assert_eq!(done.events.len(), 1, "round {round}: the leave of the current session is recorded");
        assert!(done.state.participants.is_empty(), "round {round}: nobody is left in the room");
    }
    // A refusal decided on a stale cache is checked as well: the control
    // plane closes the room, the reporter's cache still has it open.
    control.execute(&r, &RoomCommand::Close, &meta()).await.expect("close");
    let reopened = RoomCommand::Create {
        app_id: AppId::parse("app1").expect("app"),
        name: "r".into(),
        max_participants: None,
        empty_timeout_s: None,
        metadata: None,
    };
    reporter.execute(&r, &reopened, &meta()).await.expect("a closed room opens again, even from a stale cache");
}

/// A long-lived aggregate loads from its snapshot plus the events after it,
/// and only when the log still holds the event the snapshot was taken at.
async fn long_histories_load_from_a_snapshot(b: Backend) {
    use arc_eventlog::Repository;
    use arc_eventlog::executor::SNAPSHOT_EVERY;
    use arc_events::aggregate::node::{Node, NodeCommand, NodeStatus};
    use arc_events::node::{NodeDraining, NodeRegistered, NodeUndrained};
    let log = b.open().await;
    let node = AggregateRef::new(AggregateKind::Node, &format!("nd_{}", uuid::Uuid::now_v7().simple())).expect("id");
    let meta = || CommandMeta::new(Actor::system("conformance"), chrono::Utc::now());
    let registered = NodeRegistered {
        address: "10.0.0.1:7881".into(),
        public_ips: vec![],
        arch: "x86_64".into(),
        cores: 8,
        capacity: 100,
        version: "0.1.0".into(),
    };
    let repo = Repository::<Node>::new(log.clone());
    repo.execute(&node, &NodeCommand::Register(registered), &meta()).await.expect("register");
    // 2,500 drain/undrain events, appended in batches (as many commands would).
    let mut seq = 1u64;
    let mut append = |n: usize| {
        let batch: Vec<RawEvent> = (0..n)
            .map(|i| {
                let event: Event = if (seq + 1 + i as u64).is_multiple_of(2) {
                    arc_events::NodeEvent::from(NodeDraining { reason: "test".into() }).into()
                } else {
                    arc_events::NodeEvent::from(NodeUndrained {}).into()
                };
                RawEvent::encode(&node, seq + 1 + i as u64, &event, &meta()).expect("encode")
            })
            .collect();
        let request = AppendRequest { aggregate: node.clone(), expected: Expected::Exact(seq), events: batch };
        seq += n as u64;
        request
    };
    for _ in 0..5 {
        log.append(append(500)).await.expect("append");
    }
    // Seq 2,501 is a drain: even seqs drain.
    let cold = Repository::<Node>::new(log.clone());
    let (state, at) = cold.load(&node).await.expect("load");
    assert_eq!((state.status, at), (NodeStatus::Up, 2501), "seq 2,501 is an undrain");
    assert_eq!(cold.events_folded(), 2501, "no snapshot yet: the whole history");
    // That load took a snapshot: another instance reads one event (the
    // snapshot's own, to check it) and the tail.
    log.append(append(10)).await.expect("append");
    // (One SQLite log per process: there, the same log with an empty repository.)
    let other_log = if let Backend::JetStream { .. } = b { b.open().await } else { log.clone() };
    let other = Repository::<Node>::new(other_log);
    let (again, at_again) = other.load(&node).await.expect("load");
    assert_eq!(at_again, 2511);
    assert_eq!(other.events_folded(), 11, "the snapshot's event and the 10 after it");
    let full = Repository::<Node>::new(log.clone());
    // The same state as a full fold (this repository's snapshot is the one
    // just taken, so prove the full fold by hand).
    let mut by_hand = Node::default();
    let events = log.read_aggregate(&node, 0).await.expect("read");
    for e in &events {
        if let Ok(arc_events::Decoded::Known(env)) = e.raw.decode()
            && let Some(ev) = <Node as arc_events::Aggregate>::narrow(env.event)
        {
            by_hand = arc_events::Aggregate::evolve(by_hand, &ev, env.occurred_at);
        }
    }
    assert_eq!(again, by_hand);
    assert_eq!(full.load(&node).await.expect("load").0, by_hand);
    const { assert!(SNAPSHOT_EVERY <= 2500) };
    // A position hint past the events asked for costs time, never events.
    let last = events.last().expect("events").position;
    let from_hint = log.read_aggregate_after(&node, 5, last).await.expect("read with a wrong hint");
    let plain = log.read_aggregate(&node, 5).await.expect("read");
    assert_eq!(from_hint.len(), 2506);
    assert_eq!(from_hint, plain);
    // A snapshot whose event the log does not hold there is ignored.
    let mut forged = log.snapshots().get(&node).await.expect("get").expect("a snapshot was stored");
    forged.event_id = uuid::Uuid::now_v7().to_string();
    forged.state["status"] = serde_json::json!("Lost");
    log.snapshots().put(&node, &forged).await.expect("put");
    let wary = Repository::<Node>::new(log.clone());
    assert_eq!(wary.load(&node).await.expect("load").0, by_hand, "a forged snapshot changes nothing");
    assert_eq!(wary.events_folded(), 2511, "it was read in full");
    // So is one of another version.
    let mut old = forged;
    old.version = 0;
    log.snapshots().put(&node, &old).await.expect("put");
    let wary = Repository::<Node>::new(log.clone());
    assert_eq!(wary.load(&node).await.expect("load").0, by_hand);
}

/// Nodes' load samples sit beside the log: the latest per node, and in a
/// cluster every instance sees them (in `dev` the board is the process's own).
async fn load_board_keeps_each_nodes_latest_sample(b: Backend) {
    use arc_eventlog::LoadSample;
    use arc_events::NodeId;
    use arc_events::node::NodeLoad;
    let log = b.open().await;
    let board = log.load_board();
    assert!(board.latest().await.expect("latest").is_empty(), "a new board is empty");
    let (a, c) = (NodeId::parse("nd_a").expect("id"), NodeId::parse("nd_c").expect("id"));
    let sample = |sessions| LoadSample { at: chrono::Utc::now(), load: NodeLoad { sessions, ..NodeLoad::default() } };
    board.put(&a, &sample(1)).await.expect("put");
    board.put(&c, &sample(2)).await.expect("put");
    board.put(&a, &sample(3)).await.expect("put");
    let check = |latest: std::collections::HashMap<NodeId, LoadSample>| {
        assert_eq!(latest.len(), 2, "{latest:?}");
        assert_eq!(latest[&a].load.sessions, 3);
        assert_eq!(latest[&c].load.sessions, 2);
    };
    // A reader's copy may be up to KV_REFRESH old.
    tokio::time::sleep(arc_eventlog::load::KV_REFRESH).await;
    check(board.latest().await.expect("latest"));
    if let Backend::JetStream { .. } = b {
        // Another instance on the same cluster.
        let other = b.open().await;
        check(other.load_board().latest().await.expect("latest"));
    }
    // None of it went into the log.
    assert!(read_everything(log.as_ref()).await.is_empty());
}

/// A tail starts at `position_back`: reading after it reaches the head
/// through at least the asked number of events (all of them if fewer).
async fn tails_reach_back_far_enough(b: Backend) {
    let log = b.open().await;
    assert_eq!(log.position_back(Position::START, 5), Position::START);
    let a = room("a");
    let mut seq = 0;
    // Batches of 1, 3 and 1 events, twice: 10 events in 6 appends.
    for n in [1, 3, 1, 1, 3, 1] {
        log.append(request(&a, Expected::Exact(seq), n)).await.expect("append");
        seq += n as u64;
    }
    let head = log.head().await.expect("head");
    let all = read_everything(&*log).await;
    for n in [0u64, 1, 2, 4, 7, 10, 50] {
        let from = log.position_back(head, n);
        let tail: Vec<_> = all.iter().filter(|e| e.position > from).collect();
        assert!(tail.len() as u64 >= n.min(10), "{n} back from the head gave {} events", tail.len());
        assert_eq!(tail.last().map(|e| e.position), if n == 0 { None } else { Some(head) });
    }
    assert!(all.iter().all(|e| e.position > log.position_back(head, 10)));
    // Reading one event after each event gives the next one, even after the
    // last event of a batch.
    for pair in all.windows(2) {
        let next = log.read_all(pair[0].position, 1).await.expect("read");
        assert_eq!(next.first().map(|e| e.position), Some(pair[1].position));
    }
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::sqlite()).await;
                }
            )+
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::jetstream()).await;
                }
            )+
        }
    };
}

conformance!(
    appends_and_reads_back,
    refuses_stale_expectations,
    one_winner_among_concurrent_creators,
    reappending_a_batch_is_idempotent,
    any_appends_are_gapless_under_concurrency,
    many_subjects_keep_global_and_per_aggregate_order,
    subscriptions_catch_up_then_follow_live,
    resumes_after_restart,
    refuses_malformed_appends,
    decisions_on_cached_state_see_other_writers,
    load_board_keeps_each_nodes_latest_sample,
    long_histories_load_from_a_snapshot,
    tails_reach_back_far_enough,
);

/// JetStream only: a subscription that caught up and then lost its consumer
/// (deleted on the server, as a restart or an inactivity timeout does) ends
/// with an error; it never starts over from the log's beginning. async-nats'
/// ordered pull consumer, which Arc read the log through until ac078ab,
/// recreates a consumer that has handed out nothing yet with "deliver all"
/// (async-nats 0.51 `consumer/pull.rs`: `if sequence == 0 { DeliverPolicy::All }`),
/// so a projection subscribed at the head replayed the log from its start:
/// the double-applied event seen once in the restart test. (Tried on
/// 2026-12-01 with nats-server 2.9.10: an ordered consumer started at stream
/// sequence 4 of 3, its consumer deleted, handed out sequence 1 after 65 s,
/// once its two missed heartbeats made it recreate the consumer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_subscription_at_the_head_ends_when_its_consumer_vanishes() {
    let b = Backend::jetstream();
    let Backend::JetStream { url, stream, .. } = &b else { unreachable!("a JetStream backend") };
    let log = b.open().await;
    let a = room("a");
    let appended = log.append(request(&a, Expected::Exact(0), 3)).await.expect("append");
    let mut sub = log.subscribe(appended.last).await.expect("subscribe at the head");
    let js = async_nats::jetstream::new(async_nats::connect(url.as_str()).await.expect("connect"));
    let mut s = js.get_stream(stream).await.expect("stream");
    let names: Vec<String> = {
        let mut names = Vec::new();
        let mut list = s.consumer_names();
        while let Some(n) = list.next().await {
            names.push(n.expect("consumer name"));
        }
        names
    };
    assert_eq!(names.len(), 1, "one consumer: {names:?}");
    s.delete_consumer(&names[0]).await.expect("delete the consumer");
    let _ = s.info().await;
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await {
        Ok(Some(Err(e))) => assert!(matches!(e, LogError::Unavailable(_)), "ends as unavailable: {e}"),
        Ok(Some(Ok(e))) => panic!("handed out {} again instead of ending", e.position),
        Ok(None) => {}
        Err(_) => panic!("the subscription neither ended nor failed within 10 s"),
    }
}
