//! Crash safety of both event log backends: a separate process
//! (`arc-crash-appender`) appends to the log as fast as it can and is killed
//! with SIGKILL at a random moment, five times in a row; every run continues
//! from where the log stands. Afterwards every append it saw acknowledged must
//! be in the log exactly once, every batch it tried must be there entirely or
//! not at all, and the log must be consistent (gapless seqs, increasing
//! positions, decodable records; for SQLite, `PRAGMA integrity_check`).
//!
//! The JetStream variant needs a nats-server with JetStream:
//! `ARC_TEST_NATS_URL` (set by `scripts/test`).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arc_eventlog::EventLog;
use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::sqlite::SqliteLog;
use arc_events::EventId;
use arc_tests::{Audit, read_everything};

const APPENDER: &str = env!("CARGO_BIN_EXE_arc-crash-appender");
/// Runs of the appender, each ended by SIGKILL.
const ROUNDS: usize = 5;
/// How long the appender may take to open the log, read where it stands and
/// get its first append acknowledged.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One batch the appender announced (`TRY`) before appending it.
#[derive(Debug)]
struct Tried {
    round: usize,
    aggregate_id: String,
    expected: u64,
    ids: Vec<EventId>,
}

/// One append the appender saw acknowledged (`ACK`).
#[derive(Debug)]
struct Acked {
    round: usize,
    aggregate_id: String,
    last_seq: u64,
    ids: Vec<EventId>,
}

#[derive(Debug, Default)]
struct Seen {
    tried: Vec<Tried>,
    acked: Vec<Acked>,
}

fn parse_ids(words: &[&str], line: &str) -> Vec<EventId> {
    words.iter().map(|w| EventId(w.parse().unwrap_or_else(|e| panic!("bad event id {w:?} in {line:?}: {e}")))).collect()
}

impl Seen {
    fn parse(&mut self, round: usize, line: &str) {
        let words: Vec<&str> = line.split(' ').collect();
        let number = |w: &str| -> u64 { w.parse().unwrap_or_else(|e| panic!("bad number {w:?} in {line:?}: {e}")) };
        match words.as_slice() {
            ["TRY", aggregate, expected, ids @ ..] if !ids.is_empty() => {
                self.tried.push(Tried {
                    round,
                    aggregate_id: (*aggregate).to_owned(),
                    expected: number(expected),
                    ids: parse_ids(ids, line),
                });
            }
            ["ACK", aggregate, last_seq, ids @ ..] if !ids.is_empty() => {
                self.acked.push(Acked {
                    round,
                    aggregate_id: (*aggregate).to_owned(),
                    last_seq: number(last_seq),
                    ids: parse_ids(ids, line),
                });
            }
            _ => panic!("unexpected line from the appender: {line:?}"),
        }
    }
}

/// Kills the child if the test panics before it does.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stderr_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Runs the appender once, kills it with SIGKILL a random 200–1500 ms after
/// its first acknowledged append, and records what it printed.
fn run_round(round: usize, args: &[String], scratch: &Path, seen: &mut Seen) {
    let stderr_path = scratch.join(format!("appender-{round}.stderr"));
    let stderr = File::create(&stderr_path).expect("create the appender's stderr file");
    let child = Command::new(APPENDER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {APPENDER}: {e}"));
    let mut child = Reaper(child);
    let stdout = child.0.stdout.take().expect("the child's stdout is piped");

    // Read continuously, or the child blocks on a full pipe.
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut torn = 0;
        loop {
            let mut line = String::new();
            match stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return torn,
                // A complete line: the child flushed it whole.
                Ok(_) if line.ends_with('\n') => {
                    line.pop();
                    if tx.send(line).is_err() {
                        return torn;
                    }
                }
                // Cut short by the kill.
                Ok(_) => torn += 1,
            }
        }
    });

    // Wait for READY, then for the first acknowledgement (the first SQLite
    // commit after a crash has been seen to take over 200 ms), so that the
    // random time before the kill is all spent appending.
    let mut early = Vec::new();
    let started = Instant::now();
    let mut ready_after = None;
    let first_ack_after = loop {
        let timeout = READY_TIMEOUT.saturating_sub(started.elapsed());
        match rx.recv_timeout(timeout) {
            Ok(line) if line == "READY" && ready_after.is_none() => {
                ready_after = Some(started.elapsed());
            }
            Ok(line) if ready_after.is_some() => {
                let ack = line.starts_with("ACK ");
                early.push(line);
                if ack {
                    break started.elapsed();
                }
            }
            Ok(line) => panic!("round {round}: the appender said {line:?} before READY"),
            Err(_) => {
                let status = child.0.try_wait().ok().flatten();
                panic!(
                    "round {round}: the appender was not ready and appending within {READY_TIMEOUT:?} (ready after {ready_after:?}, exit status {status:?}); its stderr:\n{}",
                    stderr_of(&stderr_path)
                );
            }
        }
    };
    let ready_after = ready_after.unwrap_or_default();
    let run_for = Duration::from_millis(rand::random_range(200..=1500));
    std::thread::sleep(run_for);
    if let Ok(Some(status)) = child.0.try_wait() {
        panic!("round {round}: the appender exited by itself ({status}); its stderr:\n{}", stderr_of(&stderr_path));
    }
    child.0.kill().expect("SIGKILL the appender");
    let status = child.0.wait().expect("reap the appender");
    let torn = reader.join().expect("the stdout reader thread");
    let acked_before = seen.acked.len();
    let acked_events_before: usize = seen.acked.iter().map(|a| a.ids.len()).sum();
    for line in early.into_iter().chain(rx.try_iter()) {
        seen.parse(round, &line);
    }
    let batches = seen.acked.len() - acked_before;
    let events = seen.acked.iter().map(|a| a.ids.len()).sum::<usize>() - acked_events_before;
    println!(
        "{} round {round}: ready after {ready_after:?}, first ack after {first_ack_after:?}, killed {run_for:?} later ({status}): {events} events in {batches} appends acknowledged{}",
        args[0],
        if torn > 0 { ", last line torn" } else { "" }
    );
    let stderr = stderr_of(&stderr_path);
    if !stderr.trim().is_empty() {
        println!("{} round {round}: appender stderr:\n{stderr}", args[0]);
    }
    assert!(batches > 0, "round {round}: nothing was acknowledged");
}

/// Checks the log against what the appender saw.
fn verify(backend: &str, all: &[arc_eventlog::RecordedEvent], seen: &Seen) {
    let audit = Audit::check(all);

    for a in &seen.acked {
        let n = a.ids.len() as u64;
        for (i, id) in a.ids.iter().enumerate() {
            let stored = audit.by_id.get(id).unwrap_or_else(|| {
                panic!(
                    "round {}: acknowledged event {id} ({} up to seq {}) is not in the log",
                    a.round, a.aggregate_id, a.last_seq
                )
            });
            assert_eq!(
                (stored.aggregate_id.as_str(), stored.seq),
                (a.aggregate_id.as_str(), a.last_seq - n + 1 + i as u64),
                "round {}: acknowledged event {id} is stored elsewhere",
                a.round
            );
        }
    }

    let mut tried_ids = HashSet::new();
    let mut stored_unacked = vec![0usize; ROUNDS];
    let acked_ids: HashSet<EventId> = seen.acked.iter().flat_map(|a| a.ids.iter().copied()).collect();
    for t in &seen.tried {
        let present: Vec<bool> = t.ids.iter().map(|id| audit.by_id.contains_key(id)).collect();
        assert!(
            present.iter().all(|p| *p) || present.iter().all(|p| !*p),
            "round {}: batch of {} after seq {} is stored partially: {present:?}",
            t.round,
            t.aggregate_id,
            t.expected
        );
        if present[0] {
            for (i, id) in t.ids.iter().enumerate() {
                let stored = &audit.by_id[id];
                assert_eq!(
                    (stored.aggregate_id.as_str(), stored.seq),
                    (t.aggregate_id.as_str(), t.expected + 1 + i as u64),
                    "round {}: event {id} is stored elsewhere than its batch asked for",
                    t.round
                );
            }
            if !acked_ids.contains(&t.ids[0]) {
                stored_unacked[t.round] += t.ids.len();
            }
        }
        tried_ids.extend(t.ids.iter().copied());
    }
    for e in all {
        assert!(
            tried_ids.contains(&e.raw.id),
            "event {} at {} was never appended by the appender",
            e.raw.id,
            e.position
        );
    }
    let acked_events: usize = seen.acked.iter().map(|a| a.ids.len()).sum();
    println!(
        "{backend} log: {} events in {} aggregates; {acked_events} acknowledged; stored without an acknowledgement (killed in between), per round: {stored_unacked:?}",
        audit.len(),
        audit.per_aggregate.len()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime")
}

async fn integrity_check(path: &Path) -> Vec<String> {
    use sqlx::Connection as _;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("open {} read-only: {e}", path.display()));
    let result = sqlx::query_scalar::<_, String>("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await
        .expect("PRAGMA integrity_check");
    conn.close().await.expect("close the checking connection");
    result
}

#[test]
fn sqlite_log_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.db");
    let args = vec!["sqlite".to_owned(), path.display().to_string()];
    let mut seen = Seen::default();
    let started = Instant::now();
    for round in 0..ROUNDS {
        run_round(round, &args, dir.path(), &mut seen);
    }

    runtime().block_on(async {
        // Straight after the last kill, before anything reopens the log.
        assert_eq!(integrity_check(&path).await, vec!["ok".to_owned()]);
        let mut attempts = 0;
        let log = loop {
            match SqliteLog::open(&path).await {
                Ok(log) => break log,
                Err(e) if attempts < 50 => {
                    println!("reopening the log: {e}");
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("reopen {}: {e}", path.display()),
            }
        };
        let all = read_everything(&log).await;
        verify("sqlite", &all, &seen);
        assert_eq!(
            log.head().await.expect("head"),
            all.last().expect("some events").position,
            "head after the crashes"
        );
        log.close().await;
        assert_eq!(integrity_check(&path).await, vec!["ok".to_owned()]);
    });
    println!("sqlite crash test took {:?}", started.elapsed());
}

#[test]
fn jetstream_log_survives_sigkill() {
    let url = std::env::var("ARC_TEST_NATS_URL")
        .expect("ARC_TEST_NATS_URL is not set: run the tests with scripts/test, which starts nats-server");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("CRASH_{tag}");
    let prefix = format!("crash{tag}.evt");
    let dir = tempfile::tempdir().expect("tempdir");
    let args = vec!["jetstream".to_owned(), url.clone(), stream.clone(), prefix.clone()];
    let mut seen = Seen::default();
    let started = Instant::now();
    for round in 0..ROUNDS {
        run_round(round, &args, dir.path(), &mut seen);
    }

    runtime().block_on(async {
        let mut config = JetStreamConfig::new(&url);
        config.stream.clone_from(&stream);
        config.subject_prefix.clone_from(&prefix);
        let log = JetStreamLog::connect(&config).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        let all = read_everything(&log).await;
        verify("jetstream", &all, &seen);
        assert_eq!(
            log.head().await.expect("head"),
            all.last().expect("some events").position,
            "head after the crashes"
        );
        // Passed: do not leave the stream behind on a shared server.
        let client = async_nats::connect(url.as_str()).await.expect("connect to delete the test stream");
        let js = async_nats::jetstream::new(client);
        let info = js.get_stream(&stream).await.expect("the test stream").get_info().await.expect("stream info");
        println!(
            "stream {stream}: {} messages, {} consumers left on the server after reading back",
            info.state.messages, info.state.consumer_count
        );
        js.delete_stream(&stream).await.unwrap_or_else(|e| panic!("delete stream {stream}: {e}"));
    });
    println!("jetstream crash test took {:?}", started.elapsed());
}
