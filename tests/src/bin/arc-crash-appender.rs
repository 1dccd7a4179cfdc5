//! Appends to an event log forever, for `tests/tests/crash.rs`, which kills it
//! with SIGKILL at a random moment and then checks the log.
//!
//! ```text
//! arc-crash-appender sqlite <path>
//! arc-crash-appender jetstream <url> <stream> <subject_prefix>
//! ```
//!
//! Several tasks append concurrently (so the SQLite writer group-commits),
//! each to its own share of [`AGGREGATES`] room aggregates, with
//! `Expected::Exact` of the seq it tracks per aggregate. At start every
//! aggregate's last seq is read back from the log, so each run continues
//! where the previous (killed) one left the log.
//!
//! Protocol on stdout, one line each, flushed at once:
//! - `READY` once the log is open and every aggregate's seq is known;
//! - `TRY <aggregate_id> <expected> <event_id>...` before each append;
//! - `ACK <aggregate_id> <last_seq> <event_id>...` after each acknowledged append.
//!
//! Any error other than a transient `Unavailable` ends the process with
//! status 3 and a `FATAL` line on stderr.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::sqlite::SqliteLog;
use arc_eventlog::{AppendRequest, EventLog, Expected, LogError};
use arc_events::{AggregateRef, RawEvent};
use rand::{Rng as _, SeedableRng as _};

/// Room aggregates written to (`crash-0` … `crash-49`).
const AGGREGATES: usize = 50;
/// Concurrent appending tasks.
const TASKS: usize = 4;
/// Largest batch.
const BATCH_MAX: usize = 20;
/// Attempts of one append while the log is unavailable.
const UNAVAILABLE_RETRIES_MAX: u32 = 100;

fn fatal(message: &str) -> ! {
    eprintln!("FATAL {message}");
    std::process::exit(3);
}

fn usage() -> ! {
    fatal("usage: arc-crash-appender sqlite <path> | jetstream <url> <stream> <subject_prefix>");
}

/// Writes one protocol line and flushes it (stdout is a pipe).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        // The reader went away: nobody is listening any more.
        std::process::exit(0);
    }
}

fn ids(events: &[RawEvent]) -> String {
    events.iter().map(|e| e.id.to_string()).collect::<Vec<_>>().join(" ")
}

async fn open(args: &[String]) -> Arc<dyn EventLog> {
    match args {
        [kind, path] if kind == "sqlite" => {
            let path = PathBuf::from(path);
            // The previous run was killed; its lock is released when it is reaped.
            let mut attempts = 0;
            loop {
                match SqliteLog::open(&path).await {
                    Ok(log) => return Arc::new(log),
                    Err(e) if attempts < 50 => {
                        eprintln!("opening {}: {e}; retrying", path.display());
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => fatal(&format!("opening {}: {e}", path.display())),
                }
            }
        }
        [kind, url, stream, prefix] if kind == "jetstream" => {
            let mut config = JetStreamConfig::new(url);
            config.stream.clone_from(stream);
            config.subject_prefix.clone_from(prefix);
            match JetStreamLog::connect(&config).await {
                Ok(log) => Arc::new(log),
                Err(e) => fatal(&format!("connecting to {url}: {e}")),
            }
        }
        _ => usage(),
    }
}

/// The aggregate's last seq as stored, checking the history is gapless.
async fn last_seq(log: &dyn EventLog, aggregate: &AggregateRef) -> u64 {
    let history =
        log.read_aggregate(aggregate, 0).await.unwrap_or_else(|e| fatal(&format!("reading {aggregate}: {e}")));
    for (i, e) in history.iter().enumerate() {
        if e.raw.seq != i as u64 + 1 {
            fatal(&format!("{aggregate}: event #{} has seq {} (history is not gapless)", i + 1, e.raw.seq));
        }
    }
    history.len() as u64
}

async fn append(log: &dyn EventLog, request: AppendRequest) {
    let expected = match request.expected {
        Expected::Exact(n) => n,
        Expected::Any => fatal("only Exact appends are made"),
    };
    let id = request.aggregate.id().to_owned();
    let event_ids = ids(&request.events);
    let n = request.events.len() as u64;
    say(&format!("TRY {id} {expected} {event_ids}"));
    let mut attempts = 0;
    loop {
        match log.append(request.clone()).await {
            Ok(appended) => {
                if appended.last_seq != expected + n {
                    fatal(&format!(
                        "{id}: appended {n} events after {expected} but last_seq is {} ({appended:?})",
                        appended.last_seq
                    ));
                }
                if appended.duplicate && attempts == 0 {
                    fatal(&format!("{id}: a fresh batch was reported as a duplicate ({appended:?})"));
                }
                say(&format!("ACK {id} {} {event_ids}", appended.last_seq));
                return;
            }
            Err(LogError::Unavailable(e)) if attempts < UNAVAILABLE_RETRIES_MAX => {
                eprintln!("{id}: unavailable ({e}); retrying the same batch");
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => fatal(&format!("{id}: append after {expected}: {e}")),
        }
    }
}

/// Appends forever to its share of the aggregates.
async fn run(log: Arc<dyn EventLog>, mut seqs: Vec<(AggregateRef, u64)>) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    loop {
        let k = rng.random_range(0..seqs.len());
        let n = if rng.random_bool(0.5) { 1 } else { rng.random_range(2..=BATCH_MAX) };
        let (aggregate, seq) = &mut seqs[k];
        let request = AppendRequest {
            aggregate: aggregate.clone(),
            expected: Expected::Exact(*seq),
            events: arc_tests::room_events(aggregate, n, "crash-appender"),
        };
        append(&*log, request).await;
        *seq += n as u64;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let log = open(&args).await;
    let mut shares: Vec<Vec<(AggregateRef, u64)>> = vec![Vec::new(); TASKS];
    for i in 0..AGGREGATES {
        let aggregate = arc_tests::room(&format!("crash-{i}"));
        let seq = last_seq(&*log, &aggregate).await;
        shares[i % TASKS].push((aggregate, seq));
    }
    say("READY");
    let tasks: Vec<_> = shares.into_iter().map(|seqs| tokio::spawn(run(log.clone(), seqs))).collect();
    for t in tasks {
        if let Err(e) = t.await {
            fatal(&format!("appender task failed: {e}"));
        }
    }
}
