//! Strict app quotas: 50 concurrent room creates against `max_rooms = 10`,
//! and 50 concurrent joins against `max_participants = 10`, give exactly 10
//! successes and 40 `429 quota_exceeded` — in embedded mode, and across two
//! `serve` instances on one NATS and one PostgreSQL — and the app's usage
//! returns to zero when the rooms close.

mod common;

use common::{
    ADMIN_KEY, Mode, Server, create_app_with, create_pg_database, list_rooms, mint_token, start, wait_caught_up,
};
use serde_json::{Value, json};

const TRIES: usize = 50;
const LIMIT: u64 = 10;

/// The app's usage as `base` reports it, once its read models caught up.
async fn usage(http: &reqwest::Client, base: &str, app_key: &str) -> Value {
    wait_caught_up(base).await;
    let app: Value = http
        .get(format!("{base}/v1/apps/{app_key}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("get app")
        .json()
        .await
        .expect("json");
    app["usage"].clone()
}

/// Counts the answers: (2xx, 429 quota_exceeded naming `limit`); any other answer fails the test.
async fn tally(answers: Vec<(u16, Value)>, limit: &str) -> (u64, u64) {
    let (mut ok, mut refused) = (0, 0);
    for (status, body) in answers {
        match status {
            200..=299 => ok += 1,
            429 => {
                assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
                assert_eq!(body["error"]["limit"], limit, "{body}");
                refused += 1;
            }
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    (ok, refused)
}

async fn run(servers: &[Server]) {
    let http = reqwest::Client::new();
    let bases: Vec<String> = servers.iter().map(|s| s.base.clone()).collect();
    let first = bases[0].clone();

    // Rooms: 50 creates at once, spread over the instances.
    let app = create_app_with(&first, ADMIN_KEY, json!({"name": "strict-rooms", "quotas": {"max_rooms": LIMIT}})).await;
    for b in &bases {
        wait_caught_up(b).await;
    }
    let creates = (0..TRIES).map(|i| {
        let (http, base, app) = (http.clone(), bases[i % bases.len()].clone(), app.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/rooms"))
                .basic_auth(&app.0, Some(&app.1))
                .json(&json!({"name": format!("room-{i}")}))
                .send()
                .await
                .expect("create");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    let answers = futures::future::join_all(creates).await;
    let created: Vec<String> = answers
        .iter()
        .filter(|(s, _)| (200..300).contains(s))
        .filter_map(|(_, b)| b["room_id"].as_str().map(str::to_owned))
        .collect();
    let (ok, refused) = tally(answers, "max_rooms").await;
    assert_eq!((ok, refused), (LIMIT, TRIES as u64 - LIMIT), "exactly {LIMIT} rooms opened");
    assert_eq!(created.len() as u64, LIMIT, "every opened room answered with its id");
    for b in &bases {
        assert_eq!(usage(&http, b, &app.0).await["rooms_open"], LIMIT, "usage on {b}");
    }
    for room in &created {
        let r = http.post(format!("{first}/v1/rooms/{room}/close")).bearer_auth(ADMIN_KEY).send().await.expect("close");
        assert!(r.status().is_success(), "close {room}: {}", r.status());
    }
    for b in &bases {
        assert_eq!(usage(&http, b, &app.0).await["rooms_open"], 0, "usage back to zero on {b}");
    }

    // Participants: 50 joins at once (five rooms, opened by the joins), spread over the instances.
    let app = create_app_with(
        &first,
        ADMIN_KEY,
        json!({"name": "strict-participants", "quotas": {"max_participants": LIMIT}}),
    )
    .await;
    for b in &bases {
        wait_caught_up(b).await;
    }
    let mut tokens = Vec::with_capacity(TRIES);
    for i in 0..TRIES {
        tokens.push(
            mint_token(&first, &app, &format!("user-{i}"), &format!("call-{}", i % 5), json!({"join": true})).await,
        );
    }
    let joins = tokens.into_iter().enumerate().map(|(i, token)| {
        let (http, base) = (http.clone(), bases[i % bases.len()].clone());
        async move {
            let r = http.post(format!("{base}/v1/join")).bearer_auth(token).send().await.expect("join");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    let answers = futures::future::join_all(joins).await;
    let rooms: std::collections::BTreeSet<String> = answers
        .iter()
        .filter(|(s, _)| (200..300).contains(s))
        .filter_map(|(_, b)| b["room_id"].as_str().map(str::to_owned))
        .collect();
    let (ok, refused) = tally(answers, "max_participants").await;
    assert_eq!((ok, refused), (LIMIT, TRIES as u64 - LIMIT), "exactly {LIMIT} participants joined");
    for b in &bases {
        assert_eq!(usage(&http, b, &app.0).await["participants"], LIMIT, "usage on {b}");
    }
    assert!(!rooms.is_empty());
    // Every room the joins opened (a refused join may have opened its room too).
    wait_caught_up(&first).await;
    let listed = list_rooms(&first, &app, "state=open").await;
    let open: Vec<String> = listed["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["room_id"].as_str().map(str::to_owned))
        .collect();
    assert!(rooms.iter().all(|r| open.contains(r)), "{rooms:?} in {open:?}");
    for room in &open {
        let r = http.post(format!("{first}/v1/rooms/{room}/close")).bearer_auth(ADMIN_KEY).send().await.expect("close");
        assert!(r.status().is_success(), "close {room}: {}", r.status());
    }
    for b in &bases {
        let u = usage(&http, b, &app.0).await;
        assert_eq!((u["participants"].as_u64(), u["rooms_open"].as_u64()), (Some(0), Some(0)), "usage on {b}: {u}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_under_concurrency_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&Mode::Embedded { data_dir: dir.path().to_path_buf() });
    run(&[server]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_under_concurrency_across_two_instances() {
    let nats = std::env::var("ARC_TEST_NATS_URL").expect("ARC_TEST_NATS_URL not set: run scripts/test");
    let pg = std::env::var("ARC_TEST_PG_ADMIN_URL").expect("ARC_TEST_PG_ADMIN_URL not set: run scripts/test");
    let database = create_pg_database(&pg).await;
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let servers: Vec<Server> = dirs
        .iter()
        .map(|d| {
            start(&Mode::Cluster {
                nats: nats.clone(),
                stream: format!("QUO_{tag}"),
                prefix: format!("q{tag}.evt"),
                database: database.clone(),
                data_dir: d.path().to_path_buf(),
            })
        })
        .collect();
    run(&servers).await;
}
