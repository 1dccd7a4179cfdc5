//! The checked-in JSON Schemas in `schemas/events/` must equal the generated ones.

use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/events")
}

#[test]
fn checked_in_schemas_match_the_rust_types() {
    let generated = arc_events::schema::generate();
    if std::env::var_os("ARC_UPDATE_SCHEMAS").is_some() {
        arc_events::schema::write_dir(&dir(), &generated).expect("write schemas/events");
        return;
    }
    if let Err(e) = arc_events::schema::diff_dir(&dir(), &generated) {
        panic!("{e}; regenerate with: ARC_UPDATE_SCHEMAS=1 cargo test -p arc-events --test schemas");
    }
}

#[test]
fn every_event_round_trips_through_its_raw_form_and_old_readers_skip_unknown_types() {
    use arc_events::{Actor, AggregateKind, AggregateRef, CommandMeta, Decoded, RawEvent};
    let room = AggregateRef::new(AggregateKind::Room, "rm_1").expect("valid");
    let meta = CommandMeta::new(Actor::Admin { name: None }, chrono::Utc::now());
    let event =
        arc_events::RoomEvent::from(arc_events::room::RoomClosed { reason: arc_events::room::CloseReason::Requested });
    let raw = RawEvent::encode(&room, 3, &event.clone().into(), &meta).expect("encode");
    let json = serde_json::to_string(&raw).expect("json");
    let back: RawEvent = serde_json::from_str(&json).expect("parse");
    match back.decode().expect("decode") {
        Decoded::Known(env) => {
            assert_eq!(env.event, event.into());
            assert_eq!(env.seq, 3);
        }
        Decoded::Unknown { .. } => panic!("known type decoded as unknown"),
    }
    // A newer writer's type, version, actor and aggregate kind.
    let mut future = serde_json::to_value(&back).expect("value");
    future["type"] = "room.teleported".into();
    future["actor"] = serde_json::json!({"kind": "robot", "serial": 7});
    let future: RawEvent = serde_json::from_value(future).expect("future record still parses");
    assert_eq!(future.actor, Actor::Unknown);
    assert!(matches!(future.decode(), Ok(Decoded::Unknown { .. })));
    let mut newer = back.clone();
    newer.version = 9;
    assert!(matches!(newer.decode(), Ok(Decoded::Unknown { .. })));
    let mut other_kind = back;
    other_kind.aggregate_type = "spaceship".into();
    assert!(matches!(other_kind.decode(), Ok(Decoded::Unknown { .. })));
}
