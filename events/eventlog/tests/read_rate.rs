//! Not a test: how fast a subscription reads a JetStream stream back (the
//! rebuild's read side, without any read model). Run with
//! `cargo test -p arc-eventlog --release --test read_rate -- --ignored --nocapture`
//! (needs `ARC_TEST_NATS_URL`).

use std::sync::Arc;
use std::time::Instant;

use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::{AppendRequest, EventLog, Expected, Position};
use arc_events::room::{CloseReason, RoomClosed};
use arc_events::{Actor, AggregateKind, AggregateRef, CommandMeta, Event, RawEvent, RoomEvent};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn subscription_read_rate() {
    let url = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL");
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let mut config = JetStreamConfig::new(&url);
    config.stream = format!("RR_{tag}");
    config.subject_prefix = format!("rr{tag}.evt");
    let log: Arc<dyn EventLog> = Arc::new(JetStreamLog::connect(&config).await.expect("connect"));
    let total = 80_000usize;
    let event: Event = RoomEvent::from(RoomClosed { reason: CloseReason::Requested }).into();
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let log = log.clone();
            let event = event.clone();
            tokio::spawn(async move {
                let meta = CommandMeta::new(Actor::system("bench"), chrono::Utc::now());
                for i in 0..total / 64 {
                    let a = AggregateRef::new(AggregateKind::Room, &format!("rm_{t}_{i}")).expect("id");
                    let raw = RawEvent::encode(&a, 0, &event, &meta).expect("encode");
                    let req = AppendRequest { aggregate: a, expected: Expected::Exact(0), events: vec![raw] };
                    log.append(req).await.expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    println!("filled {total} events in {:.1} s", started.elapsed().as_secs_f64());
    for round in 0..3 {
        let started = Instant::now();
        let mut sub = log.subscribe(Position::START).await.expect("subscribe").ready_chunks(1000);
        let (mut n, mut chunks) = (0usize, 0usize);
        while n < total {
            let chunk = sub.next().await.expect("more");
            n += chunk.len();
            chunks += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "round {round}: read {n} events in {secs:.2} s: {:.0} events/s, {:.1} events per ready chunk (of up to 1000)",
            n as f64 / secs,
            n as f64 / chunks as f64
        );
    }
}
