//! The JetStream log on a real three-node nats-server cluster (R3 stream)
//! loses one server mid-way: appends must carry on once the cluster has
//! re-formed, and no acknowledged append may be lost or stored twice.
//!
//! Needs the nats-server binary: `ARC_NATS_SERVER_BIN`, else `nats-server` on
//! the PATH (see `arc_tests::nats`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::{AppendRequest, EventLog, Expected, LogError, RecordedEvent};
use arc_events::EventId;
use arc_tests::nats::NatsServers;
use arc_tests::{Audit, read_everything_patiently, room, room_events};

/// Concurrent appenders, each with its own aggregates.
const APPENDERS: usize = 4;
/// Aggregates per appender.
const AGGREGATES_PER_APPENDER: usize = 3;
/// When one server is killed, after the appends started.
const KILL_AFTER: Duration = Duration::from_millis(1500);
/// How long appenders start new appends (unless too few came after the kill).
const APPEND_FOR: Duration = Duration::from_secs(6);
/// How long appends go on once they flow again after the kill.
const APPEND_AFTER_RECOVERY: Duration = Duration::from_secs(1);
/// Appends acknowledged after the kill, at least, across all appenders.
const ACKS_AFTER_KILL_MIN: usize = 20;
/// Appenders give up starting new appends this long after they started, even
/// if too few were acknowledged after the kill (the test then fails).
const APPEND_AT_MOST: Duration = Duration::from_secs(25);
/// An unanswered append is retried until then; after that its fate is unknown.
const RETRY_UNTIL: Duration = Duration::from_secs(32);
/// The room [`check_reappend`] writes to.
const REAPPEND_ROOM: &str = "reappend";
/// How long reading the log back may be retried while the cluster recovers.
const READ_PATIENCE: Duration = Duration::from_secs(25);
/// How long the cluster may take to elect its meta leader and create the stream.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);
/// A follower of the log (as a projection follows it) reaches the log's head
/// this soon after the appends end (the cluster has answered for at least
/// [`APPEND_AFTER_RECOVERY`] by then). The failure this guards against (an
/// ordered consumer recreated from the start) took 65 s; 2 s failed once on
/// a loaded 2-core CI run with browser tests beside it, halfway through a
/// catch-up that was moving.
const FOLLOWER_CATCH_UP_MAX: Duration = Duration::from_secs(10);
/// The whole test, once the servers are started.
const TEST_WITHIN: Duration = Duration::from_secs(58);

/// One append acknowledged to an appender.
#[derive(Debug)]
struct Ack {
    id: EventId,
    aggregate_id: String,
    seq: u64,
    /// Since the appends started.
    at: Duration,
    /// Acknowledged as a duplicate of an earlier, unanswered attempt.
    duplicate: bool,
    /// Found stored by reading the aggregate after a conflict.
    found_after_conflict: bool,
}

#[derive(Debug, Default)]
struct Report {
    acks: Vec<Ack>,
    /// Appends still unanswered when the appender gave up: stored or not.
    unknown: Vec<EventId>,
    /// Every event id the appender sent.
    sent: Vec<EventId>,
    /// Attempts that failed and were retried, by error.
    retries: Vec<String>,
    /// Conflicts although the expected seq was right (nothing else writes).
    spurious_conflicts: Vec<String>,
}

struct Shared {
    log: JetStreamLog,
    started: Instant,
    killed_at: OnceLock<Duration>,
    first_ack_after_kill: OnceLock<Duration>,
    acks_after_kill: AtomicUsize,
}

impl Shared {
    /// For [`APPEND_FOR`], and in any case until appends have been flowing
    /// again for [`APPEND_AFTER_RECOVERY`] and [`ACKS_AFTER_KILL_MIN`] were
    /// acknowledged after the kill, but never past [`APPEND_AT_MOST`].
    fn keep_appending(&self) -> bool {
        let now = self.started.elapsed();
        let recovered = self.first_ack_after_kill.get().is_some_and(|t| now > *t + APPEND_AFTER_RECOVERY)
            && self.acks_after_kill.load(Ordering::Relaxed) >= ACKS_AFTER_KILL_MIN;
        now < APPEND_FOR || (now < APPEND_AT_MOST && !recovered)
    }
}

/// Appends single events to its aggregates, round robin, with
/// `Expected::Exact`, retrying each append (same event ids) until answered.
async fn appender(shared: Arc<Shared>, index: usize) -> Report {
    let mut report = Report::default();
    let mut aggregates: Vec<(_, u64)> =
        (0..AGGREGATES_PER_APPENDER).map(|k| (room(&format!("a{index}-{k}")), 0)).collect();
    let mut turn = 0;
    'appends: while shared.keep_appending() {
        let (aggregate, last) = &mut aggregates[turn % AGGREGATES_PER_APPENDER];
        turn += 1;
        let request = AppendRequest {
            aggregate: aggregate.clone(),
            expected: Expected::Exact(*last),
            events: room_events(aggregate, 1, "nats-cluster-test"),
        };
        let id = request.events[0].id;
        report.sent.push(id);
        let mut attempts = 0;
        loop {
            if shared.started.elapsed() > RETRY_UNTIL {
                report.unknown.push(id);
                break 'appends;
            }
            if attempts > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            attempts += 1;
            let outcome = tokio::time::timeout(Duration::from_secs(5), shared.log.append(request.clone()))
                .await
                .unwrap_or_else(|_| Err(LogError::Unavailable("no answer within 5 s".into())));
            let (seq, duplicate, found_after_conflict) = match outcome {
                Ok(appended) => (appended.last_seq, appended.duplicate, false),
                Err(LogError::Conflict { actual, .. }) => {
                    // An earlier attempt may have been stored without an answer;
                    // the re-send should have come back as a duplicate, but look.
                    match shared.log.read_aggregate(aggregate, *last).await {
                        Ok(events) if events.first().is_some_and(|e| e.raw.id == id) => (events[0].raw.seq, true, true),
                        Ok(events) => {
                            assert!(
                                actual == *last && events.is_empty(),
                                "{aggregate}: conflict (actual {actual}, expected {last}) but only this appender writes it; stored after {last}: {:?}",
                                events.iter().map(|e| (e.raw.seq, e.raw.id)).collect::<Vec<_>>()
                            );
                            report.spurious_conflicts.push(format!(
                                "{aggregate}: expected {last} (right), attempt {attempts}, told actual {actual}"
                            ));
                            continue;
                        }
                        Err(e) => {
                            report.retries.push(format!("read after conflict: {e}"));
                            continue;
                        }
                    }
                }
                Err(e @ (LogError::Invalid(_) | LogError::TooLarge { .. })) => {
                    panic!("{aggregate}: append refused: {e}")
                }
                Err(e) => {
                    report.retries.push(e.to_string());
                    continue;
                }
            };
            assert_eq!(seq, *last + 1, "{aggregate}: one event appended after {last}, acknowledged as seq {seq}");
            assert!(!(duplicate && attempts == 1), "{aggregate}: a fresh event {id} was acknowledged as a duplicate");
            *last = seq;
            let at = shared.started.elapsed();
            if shared.killed_at.get().is_some_and(|k| at > *k) {
                shared.acks_after_kill.fetch_add(1, Ordering::Relaxed);
                let _ = shared.first_ack_after_kill.set(at);
            }
            report.acks.push(Ack {
                id,
                aggregate_id: aggregate.id().to_owned(),
                seq,
                at,
                duplicate,
                found_after_conflict,
            });
            break;
        }
    }
    report
}

/// Connects with every server's URL, comma-separated, retrying while the
/// cluster elects its meta leader and places the R3 stream.
async fn connect(urls: &[String], stream: &str, prefix: &str) -> JetStreamLog {
    let mut config = JetStreamConfig::new(&urls.join(","));
    config.stream = stream.to_owned();
    config.subject_prefix = prefix.to_owned();
    config.replicas = 3;
    config.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    loop {
        match JetStreamLog::connect(&config).await {
            Ok(log) => {
                println!("connected to {} after {:?}", config.url, started.elapsed());
                return log;
            }
            Err(e @ arc_eventlog::LogError::Invalid(_)) => panic!("the URL list was refused: {e}"),
            Err(e) if started.elapsed() < CONNECT_WITHIN => {
                println!("connecting: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the cluster did not take the R3 stream within {CONNECT_WITHIN:?}: {e}"),
        }
    }
}

/// The name of the server leading the stream's RAFT group, if it can be told.
async fn stream_leader(urls: &[String], stream: &str) -> Option<String> {
    let ask = async {
        let client = async_nats::connect(urls).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(stream).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    };
    tokio::time::timeout(Duration::from_secs(3), ask).await.ok().flatten()
}

/// Prints what the appenders went through.
fn summarise(reports: &[Report], killed_at: Duration, audit: &Audit) -> (usize, usize) {
    let acks: Vec<&Ack> = reports.iter().flat_map(|r| &r.acks).collect();
    let before = acks.iter().filter(|a| a.at <= killed_at).count();
    let after = acks.len() - before;
    let first_after = acks.iter().filter(|a| a.at > killed_at).map(|a| a.at - killed_at).min();
    let mut times: Vec<Duration> = acks.iter().map(|a| a.at).collect();
    times.sort();
    let longest_pause = times.windows(2).map(|w| w[1] - w[0]).max();
    let duplicates = acks.iter().filter(|a| a.duplicate).count();
    let found = acks.iter().filter(|a| a.found_after_conflict).count();
    if found > 0 {
        println!(
            "BUG: {found} re-sent batches that were stored (their first attempt went unanswered) \
             were refused with Conflict instead of being answered duplicate: true"
        );
    }
    let unknown: Vec<EventId> = reports.iter().flat_map(|r| r.unknown.iter().copied()).collect();
    let unknown_stored = unknown.iter().filter(|id| audit.by_id.contains_key(id)).count();
    println!(
        "acknowledged: {before} before the kill, {after} after (first {first_after:?} after it; longest pause between acks {longest_pause:?})"
    );
    println!(
        "acknowledged as duplicates of unanswered attempts: {duplicates}; found stored after a conflict: {found}; \
         unanswered at the end: {} ({unknown_stored} of them stored)",
        unknown.len()
    );
    println!("log: {} events in {} aggregates", audit.len(), audit.per_aggregate.len());

    let retries: Vec<&String> = reports.iter().flat_map(|r| &r.retries).collect();
    println!("retried attempts: {}", retries.len());
    let mut kinds: Vec<(String, usize)> = Vec::new();
    for r in retries {
        let kind: String = r.chars().take(120).collect();
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    for (kind, n) in &kinds {
        println!("  {n} × {kind}");
    }
    let spurious: Vec<&String> = reports.iter().flat_map(|r| &r.spurious_conflicts).collect();
    if !spurious.is_empty() {
        println!("conflicts although the expected seq was right: {}", spurious.len());
        for s in spurious.iter().take(10) {
            println!("  {s}");
        }
    }
    (before, after)
}

/// Checks the log against what the appenders saw: every acknowledged event
/// stored once, where it was acknowledged; nothing stored that was not sent.
fn verify(all: &[RecordedEvent], reports: &[Report]) -> Audit {
    let audit = Audit::check(all);
    let sent: HashSet<EventId> = reports.iter().flat_map(|r| r.sent.iter().copied()).collect();
    for e in all.iter().filter(|e| e.raw.aggregate_id != REAPPEND_ROOM) {
        assert!(sent.contains(&e.raw.id), "event {} at {} was never sent", e.raw.id, e.position);
    }
    for ack in reports.iter().flat_map(|r| &r.acks) {
        let stored = audit.by_id.get(&ack.id).unwrap_or_else(|| {
            panic!(
                "acknowledged event {} ({} seq {}, at {:?}) is not in the log",
                ack.id, ack.aggregate_id, ack.seq, ack.at
            )
        });
        assert_eq!(
            (stored.aggregate_id.as_str(), stored.seq),
            (ack.aggregate_id.as_str(), ack.seq),
            "acknowledged event {} is stored elsewhere",
            ack.id
        );
    }
    audit
}

/// Re-appending a stored batch must answer `duplicate: true` with the
/// original positions (what makes retrying an unanswered append safe), right
/// after it was stored and after the aggregate moved on. Returns what went
/// wrong, if anything.
async fn check_reappend(log: &JetStreamLog) -> Option<String> {
    let aggregate = room(REAPPEND_ROOM);
    let request = AppendRequest {
        aggregate: aggregate.clone(),
        expected: Expected::Exact(0),
        events: room_events(&aggregate, 2, "nats-cluster-test"),
    };
    let first = log.append(request.clone()).await.expect("append a batch");
    let mut problems = Vec::new();
    match log.append(request.clone()).await {
        Ok(again) if again.duplicate && again.first == first.first => {}
        other => problems.push(format!("re-appending at once: {other:?}")),
    }
    let next = AppendRequest {
        aggregate: aggregate.clone(),
        expected: Expected::Exact(2),
        events: room_events(&aggregate, 1, "nats-cluster-test"),
    };
    log.append(next).await.expect("append after the batch");
    match log.append(request).await {
        Ok(late) if late.duplicate && late.first == first.first => {}
        other => problems.push(format!("re-appending after the aggregate moved on: {other:?}")),
    }
    let stored = log.read_aggregate(&aggregate, 0).await.map(|e| e.len());
    if !matches!(stored, Ok(3)) {
        problems.push(format!("the aggregate should hold 3 events: {stored:?}"));
    }
    (!problems.is_empty()).then(|| {
        let found = format!(
            "re-appending a stored batch (same event ids, Expected::Exact(0)) to an R3 stream is not answered as a duplicate: {}",
            problems.join("; ")
        );
        println!("BUG: {found}");
        found
    })
}

/// Follows the log from the start as a projection runner does: resubscribes
/// after every failure (at once on a reconnect, else after 50 ms) from the
/// last position it saw, which it publishes in `seen`.
async fn follower(log: JetStreamLog, seen: Arc<std::sync::atomic::AtomicU64>) {
    use futures::StreamExt;
    let mut reconnects = log.reconnects();
    loop {
        let after = arc_eventlog::Position(seen.load(Ordering::Relaxed));
        if let Some(r) = reconnects.as_mut() {
            r.mark_unchanged();
        }
        match log.subscribe(after).await {
            Ok(mut sub) => {
                while let Some(next) = sub.next().await {
                    match next {
                        Ok(e) => seen.store(e.position.0, Ordering::Relaxed),
                        Err(e) => {
                            println!("follower: {e}; resubscribing");
                            break;
                        }
                    }
                }
            }
            Err(e) => println!("follower: subscribe failed: {e}"),
        }
        match reconnects.as_mut() {
            Some(r) => {
                let _ = tokio::time::timeout(Duration::from_millis(50), r.changed()).await;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn scenario(cluster: &mut NatsServers) {
    let urls = cluster.urls();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("CLUSTER_{tag}");
    let log = connect(&urls, &stream, &format!("cluster{tag}.evt")).await;
    let reappend_bug = check_reappend(&log).await;
    let shared = Arc::new(Shared {
        log,
        started: Instant::now(),
        killed_at: OnceLock::new(),
        first_ack_after_kill: OnceLock::new(),
        acks_after_kill: AtomicUsize::new(0),
    });
    let tasks: Vec<_> = (0..APPENDERS).map(|i| tokio::spawn(appender(shared.clone(), i))).collect();
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let follow = tokio::spawn(follower(shared.log.clone(), seen.clone()));

    tokio::time::sleep(KILL_AFTER).await;
    cluster.check_running();
    let leader = stream_leader(&urls, &stream).await;
    let victim = leader.clone().unwrap_or_else(|| "n3".to_owned());
    cluster.kill(&victim);
    let killed_at = shared.started.elapsed();
    let _ = shared.killed_at.set(killed_at);
    println!("killed {victim} (stream leader: {leader:?}) at {killed_at:?}");

    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.expect("an appender task"));
    }
    println!("appends ended at {:?}", shared.started.elapsed());
    // The follower, which lived through the kill, reaches the head promptly.
    let ended = Instant::now();
    let head = loop {
        match shared.log.head().await {
            Ok(h) => break h,
            Err(e) if ended.elapsed() < READ_PATIENCE => println!("head: {e}; retrying"),
            Err(e) => panic!("the log's head: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    while seen.load(Ordering::Relaxed) < head.0 {
        assert!(
            ended.elapsed() < FOLLOWER_CATCH_UP_MAX,
            "a follower of the log reached its head within {FOLLOWER_CATCH_UP_MAX:?} of the appends ending ({} < {head})",
            seen.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("the follower reached the head {:?} after the appends ended", ended.elapsed());
    follow.abort();
    cluster.check_running();
    println!("stream leader now: {:?}", stream_leader(&urls, &stream).await);

    let read_started = Instant::now();
    let (all, read_retries) = read_everything_patiently(&shared.log, READ_PATIENCE).await;
    println!(
        "read back {} events in {:?}, after {} retried pages{}",
        all.len(),
        read_started.elapsed(),
        read_retries.len(),
        read_retries.first().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    let audit = verify(&all, &reports);
    let (_, after) = summarise(&reports, killed_at, &audit);
    cluster.print_leader_changes();

    assert!(
        after >= ACKS_AFTER_KILL_MIN,
        "only {after} appends were acknowledged after the kill (at least {ACKS_AFTER_KILL_MIN} expected)"
    );
    for (i, r) in reports.iter().enumerate() {
        assert!(r.acks.iter().any(|a| a.at > killed_at), "appender {i} got nothing acknowledged after the kill");
    }
    // Last, so that the failover above is tested all the same.
    let found_after_conflict = reports.iter().flat_map(|r| &r.acks).filter(|a| a.found_after_conflict).count();
    let conflict_bug = (found_after_conflict > 0)
        .then(|| format!("{found_after_conflict} re-sent stored batches were answered Conflict instead of duplicate"));
    let bugs: Vec<String> = reappend_bug.into_iter().chain(conflict_bug).collect();
    assert!(bugs.is_empty(), "{}", bugs.join("\n"));
}

#[test]
fn jetstream_log_survives_losing_a_server() {
    let started = Instant::now();
    // Declared first so it is dropped last: the servers die even on a panic.
    let mut cluster = NatsServers::cluster();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    runtime.block_on(async {
        tokio::time::timeout(TEST_WITHIN, scenario(&mut cluster))
            .await
            .unwrap_or_else(|_| panic!("the test did not finish within {TEST_WITHIN:?}"));
    });
    drop(runtime);
    drop(cluster);
    println!("cluster test took {:?}", started.elapsed());
}
