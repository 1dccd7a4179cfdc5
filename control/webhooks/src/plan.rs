//! The pure part of the planner: which events become deliveries, to which
//! URLs, with which body and id, and how outcome events change a delivery.
//!
//! Nothing here does I/O or reads the clock: [`fold`] works on [`Tables`],
//! an in-memory view of the planner's rows that the runner
//! ([`crate::planner`]) fills from the database before each event
//! ([`needs`] says which rows) and writes back after the batch.

use std::collections::{BTreeSet, HashMap};

use arc_eventlog::Position;
use arc_events::{AggregateKind, AppEvent, Envelope, Event, RecordingEvent, RoomEvent, TrackEvent, WebhookEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting for its next attempt (or for earlier deliveries of its order key).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed; waits for an operator's redelivery.
    Dead,
}

impl State {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Dead => "dead",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Dead].into_iter().find(|x| x.as_str() == s)
    }
}

/// One row of `webhook_deliveries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryRow {
    pub(crate) delivery_id: String,
    pub(crate) app_id: String,
    pub(crate) url: String,
    /// `url + "\n" + room_id`: deliveries with the same key go out in `position` order.
    pub(crate) order_key: String,
    /// Log position of the source event.
    pub(crate) position: i64,
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    /// The JSON the receiver gets, fixed at planning time.
    pub(crate) body: String,
    pub(crate) state: State,
    pub(crate) attempts: i64,
    pub(crate) next_attempt_ms: i64,
    pub(crate) last_status: Option<i64>,
    pub(crate) last_error: Option<String>,
    pub(crate) created_at_ms: i64,
    pub(crate) updated_at_ms: i64,
    /// Seq of the last event of this delivery's `webhook` aggregate (0 = none):
    /// the sender appends outcomes with `Expected::Exact(seq)`.
    pub(crate) seq: i64,
    /// The source event's trace context: the delivery's span is its child.
    pub(crate) traceparent: Option<String>,
}

/// The planner's rows touched by one batch. `None` = known not to exist.
/// A key that is absent has not been loaded; [`fold`] treats it as absent
/// from the database too, so the runner loads everything [`needs`] names first.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    /// app id → endpoint URLs.
    pub(crate) endpoints: HashMap<String, Option<Vec<String>>>,
    /// room id → app id.
    pub(crate) rooms: HashMap<String, Option<String>>,
    /// track id → room id.
    pub(crate) tracks: HashMap<String, Option<String>>,
    /// recording id → room id.
    pub(crate) recordings: HashMap<String, Option<String>>,
    pub(crate) deliveries: HashMap<String, Option<DeliveryRow>>,
    /// Rows to write back.
    pub(crate) dirty: BTreeSet<(Table, String)>,
}

/// The planner's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Table {
    Endpoints,
    Rooms,
    Tracks,
    Recordings,
    Deliveries,
}

/// How a source event names its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RoomRef {
    /// The event carries the room id.
    Direct(String),
    /// Through `webhook_tracks`.
    ViaTrack(String),
    /// Through `webhook_recordings`.
    ViaRecording(String),
}

/// A source event: one that is delivered to the app's endpoints.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    pub(crate) room: RoomRef,
    /// The app, when the event names it (`room.created`).
    pub(crate) app_id: Option<String>,
    pub(crate) track_id: Option<String>,
    pub(crate) recording_id: Option<String>,
    /// The event's `data`, as the receiver gets it.
    pub(crate) data: serde_json::Value,
}

fn data<T: serde::Serialize>(payload: &T) -> serde_json::Value {
    // Payloads are plain structs: serialising them cannot fail.
    serde_json::to_value(payload).unwrap_or(serde_json::Value::Null)
}

/// The source event `env` is, if it is one.
pub(crate) fn source(env: &Envelope) -> Option<Source> {
    let id = env.aggregate.id().to_owned();
    let direct =
        |data| Source { room: RoomRef::Direct(id.clone()), app_id: None, track_id: None, recording_id: None, data };
    let track = |room, data| Source { room, app_id: None, track_id: Some(id.clone()), recording_id: None, data };
    let recording = |room, data| Source { room, app_id: None, track_id: None, recording_id: Some(id.clone()), data };
    Some(match &env.event {
        Event::Room(RoomEvent::Created(p)) => Source { app_id: Some(p.app_id.as_str().to_owned()), ..direct(data(p)) },
        Event::Room(RoomEvent::ParticipantJoined(p)) => direct(data(p)),
        Event::Room(RoomEvent::ParticipantLeft(p)) => direct(data(p)),
        Event::Room(RoomEvent::Closed(p)) => direct(data(p)),
        Event::Track(TrackEvent::Published(p)) => track(RoomRef::Direct(p.room_id.as_str().to_owned()), data(p)),
        Event::Track(TrackEvent::Unpublished(p)) => track(RoomRef::ViaTrack(id.clone()), data(p)),
        Event::Recording(RecordingEvent::Started(p)) => {
            recording(RoomRef::Direct(p.room_id.as_str().to_owned()), data(p))
        }
        Event::Recording(RecordingEvent::Finished(p)) => recording(RoomRef::ViaRecording(id.clone()), data(p)),
        Event::Recording(RecordingEvent::Failed(p)) => recording(RoomRef::ViaRecording(id.clone()), data(p)),
        _ => return None,
    })
}

/// The rows [`fold`] reads for `env`, in dependency order: the runner loads
/// each (from the batch's staged rows or the database) before folding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    Track(String),
    Recording(String),
    /// The room of the track/recording named before, once that is loaded.
    RoomOfPrevious,
    Room(String),
    /// The endpoints of the app found so far (named or via the room).
    EndpointsOfApp,
    Delivery(String),
}

/// What [`fold`] will read for `env`.
pub(crate) fn needs(env: &Envelope) -> Vec<Need> {
    if let Event::Webhook(_) = env.event {
        return vec![Need::Delivery(env.aggregate.id().to_owned())];
    }
    let Some(src) = source(env) else { return Vec::new() };
    let mut out = Vec::new();
    if src.app_id.is_none() {
        match src.room {
            RoomRef::Direct(room) => out.push(Need::Room(room)),
            RoomRef::ViaTrack(t) => out.extend([Need::Track(t), Need::RoomOfPrevious]),
            RoomRef::ViaRecording(r) => out.extend([Need::Recording(r), Need::RoomOfPrevious]),
        }
    }
    out.push(Need::EndpointsOfApp);
    out
}

/// `wd_` + the first 32 hex digits of `sha256(event_id + "\n" + url)`: the
/// same source event to the same URL always gets the same id, so a rebuild
/// reproduces every row and every outcome event still finds its delivery.
pub(crate) fn delivery_id(event_id: &str, url: &str) -> String {
    let digest =
        Sha256::new().chain_update(event_id.as_bytes()).chain_update(b"\n").chain_update(url.as_bytes()).finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("wd_{hex}")
}

/// Deliveries with the same key are sent one at a time, in log order.
pub(crate) fn order_key(url: &str, room_id: &str) -> String {
    format!("{url}\n{room_id}")
}

pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map(rfc3339).unwrap_or_default()
}

/// The JSON document a receiver gets for `env`.
pub(crate) fn body(env: &Envelope, src: &Source, app_id: &str, room_id: &str) -> String {
    let mut doc = serde_json::Map::new();
    doc.insert("id".into(), env.id.to_string().into());
    doc.insert("type".into(), env.event.type_name().into());
    doc.insert("app_id".into(), app_id.into());
    doc.insert("room_id".into(), room_id.into());
    if let Some(t) = &src.track_id {
        doc.insert("track_id".into(), t.as_str().into());
    }
    if let Some(r) = &src.recording_id {
        doc.insert("recording_id".into(), r.as_str().into());
    }
    doc.insert("occurred_at".into(), rfc3339(env.occurred_at).into());
    doc.insert("data".into(), src.data.clone());
    serde_json::Value::Object(doc).to_string()
}

fn lookup<'a>(map: &'a HashMap<String, Option<String>>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(|v| v.as_deref())
}

impl Tables {
    /// The room a source event belongs to, as far as the rows know.
    pub(crate) fn room_of(&self, src: &Source) -> Option<String> {
        match &src.room {
            RoomRef::Direct(r) => Some(r.clone()),
            RoomRef::ViaTrack(t) => lookup(&self.tracks, t).map(str::to_owned),
            RoomRef::ViaRecording(r) => lookup(&self.recordings, r).map(str::to_owned),
        }
    }

    /// The app a source event belongs to, as far as the rows know.
    pub(crate) fn app_of(&self, src: &Source) -> Option<String> {
        if let Some(app) = &src.app_id {
            return Some(app.clone());
        }
        let room = self.room_of(src)?;
        lookup(&self.rooms, &room).map(str::to_owned)
    }

    fn set<V>(
        map: &mut HashMap<String, Option<V>>,
        dirty: &mut BTreeSet<(Table, String)>,
        t: Table,
        k: &str,
        v: Option<V>,
    ) {
        map.insert(k.to_owned(), v);
        dirty.insert((t, k.to_owned()));
    }
}

/// Folds one event at `position` into the rows. Pure: the runner has loaded
/// every row [`needs`] names.
pub(crate) fn fold(t: &mut Tables, env: &Envelope, position: Position) {
    let id = env.aggregate.id();
    match &env.event {
        Event::App(AppEvent::WebhooksSet(p)) => {
            let mut urls: Vec<String> = Vec::with_capacity(p.urls.len());
            for url in &p.urls {
                if !urls.contains(url) {
                    urls.push(url.clone());
                }
            }
            Tables::set(&mut t.endpoints, &mut t.dirty, Table::Endpoints, id, Some(urls));
        }
        Event::App(AppEvent::Deleted(_)) => Tables::set(&mut t.endpoints, &mut t.dirty, Table::Endpoints, id, None),
        Event::Room(RoomEvent::Created(p)) => {
            Tables::set(&mut t.rooms, &mut t.dirty, Table::Rooms, id, Some(p.app_id.as_str().to_owned()));
        }
        Event::Track(TrackEvent::Published(p)) => {
            Tables::set(&mut t.tracks, &mut t.dirty, Table::Tracks, id, Some(p.room_id.as_str().to_owned()));
        }
        Event::Recording(RecordingEvent::Started(p)) => {
            Tables::set(&mut t.recordings, &mut t.dirty, Table::Recordings, id, Some(p.room_id.as_str().to_owned()));
        }
        Event::Webhook(w) => {
            fold_outcome(t, env, w);
            return;
        }
        _ => {}
    }
    if let Some(src) = source(env) {
        plan(t, env, &src, position);
    }
}

/// Adds one pending delivery per endpoint URL of the event's app.
fn plan(t: &mut Tables, env: &Envelope, src: &Source, position: Position) {
    let (Some(room_id), Some(app_id)) = (t.room_of(src), t.app_of(src)) else {
        tracing::debug!(event = %env.id, event_type = env.event.type_name(), "no room or app known; nothing to deliver");
        return;
    };
    let Some(Some(urls)) = t.endpoints.get(&app_id).cloned() else { return };
    if urls.is_empty() {
        return;
    }
    let event_id = env.id.to_string();
    let body = body(env, src, &app_id, &room_id);
    let at = env.occurred_at.timestamp_millis();
    for url in urls {
        let delivery_id = delivery_id(&event_id, &url);
        let row = DeliveryRow {
            delivery_id: delivery_id.clone(),
            app_id: app_id.clone(),
            order_key: order_key(&url, &room_id),
            url,
            position: position.0 as i64,
            event_id: event_id.clone(),
            event_type: env.event.type_name().to_owned(),
            body: body.clone(),
            state: State::Pending,
            attempts: 0,
            next_attempt_ms: at,
            last_status: None,
            last_error: None,
            created_at_ms: at,
            updated_at_ms: at,
            seq: 0,
            traceparent: env.traceparent.clone(),
        };
        Tables::set(&mut t.deliveries, &mut t.dirty, Table::Deliveries, &delivery_id, Some(row));
    }
}

/// Applies an outcome to its delivery. Outcomes only move a delivery along
/// `pending → delivered | dead` and `dead → pending` (redelivery); one that
/// does not fit the row's state (a racing duplicate) only advances its seq.
fn fold_outcome(t: &mut Tables, env: &Envelope, event: &WebhookEvent) {
    let id = env.aggregate.id();
    if env.aggregate.kind() != AggregateKind::Webhook {
        return;
    }
    let Some(Some(row)) = t.deliveries.get_mut(id) else {
        tracing::debug!(delivery = id, "outcome for an unknown delivery; ignored");
        return;
    };
    let at = env.occurred_at.timestamp_millis();
    row.seq = env.seq as i64;
    match (event, row.state) {
        (WebhookEvent::Delivered(p), State::Pending) => {
            row.state = State::Delivered;
            row.attempts = i64::from(p.attempt);
            row.last_status = Some(i64::from(p.status));
            row.last_error = None;
            row.updated_at_ms = at;
        }
        (WebhookEvent::AttemptFailed(p), State::Pending) => {
            row.attempts = i64::from(p.attempt);
            row.next_attempt_ms = p.retry_at.timestamp_millis();
            row.last_status = p.status.map(i64::from);
            row.last_error = Some(p.error.clone());
            row.updated_at_ms = at;
        }
        (WebhookEvent::DeadLettered(p), State::Pending) => {
            row.state = State::Dead;
            row.attempts = i64::from(p.attempts);
            row.last_status = p.status.map(i64::from);
            row.last_error = Some(p.error.clone());
            row.updated_at_ms = at;
        }
        (WebhookEvent::RedeliveryRequested(_), State::Dead) => {
            row.state = State::Pending;
            row.attempts = 0;
            row.next_attempt_ms = at;
            row.updated_at_ms = at;
        }
        (_, state) => {
            tracing::debug!(
                delivery = id,
                event_type = event.type_name(),
                state = state.as_str(),
                "outcome does not fit the delivery's state; ignored"
            );
        }
    }
    t.dirty.insert((Table::Deliveries, id.to_owned()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_events::app::AppWebhooksSet;
    use arc_events::room::{CloseReason, RoomClosed, RoomCreated};
    use arc_events::track::{MediaKind, TrackPublished, TrackSource, TrackUnpublished};
    use arc_events::webhook::{
        WebhookAttemptFailed, WebhookDeadLettered, WebhookDelivered, WebhookRedeliveryRequested,
    };
    use arc_events::{Actor, AggregateRef, AppId, CommandMeta, EventId, RawEvent};

    fn env(kind: AggregateKind, id: &str, seq: u64, event: Event, at_ms: i64) -> Envelope {
        let meta =
            CommandMeta::new(Actor::system("test"), DateTime::<Utc>::from_timestamp_millis(at_ms).expect("test data"));
        let agg = AggregateRef::new(kind, id).expect("test data");
        let raw = RawEvent::encode(&agg, seq, &event, &meta).expect("test data");
        match raw.decode().expect("test data") {
            arc_events::Decoded::Known(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    fn webhooks_set(app: &str, urls: &[&str]) -> Envelope {
        let p = AppWebhooksSet { urls: urls.iter().map(|u| u.to_string()).collect() };
        env(AggregateKind::App, app, 3, Event::App(AppEvent::WebhooksSet(p)), 1_000)
    }

    fn room_created(room: &str, app: &str) -> Envelope {
        let p = RoomCreated {
            app_id: AppId::parse(app).expect("test data"),
            name: "demo".into(),
            max_participants: None,
            empty_timeout_s: 60,
            metadata: None,
        };
        env(AggregateKind::Room, room, 1, Event::Room(RoomEvent::Created(p)), 2_000)
    }

    fn room_closed(room: &str) -> Envelope {
        let p = RoomClosed { reason: CloseReason::Requested };
        env(AggregateKind::Room, room, 2, Event::Room(RoomEvent::Closed(p)), 3_000)
    }

    fn outcome(delivery: &str, seq: u64, event: WebhookEvent, at_ms: i64) -> Envelope {
        env(AggregateKind::Webhook, delivery, seq, Event::Webhook(event), at_ms)
    }

    #[test]
    fn delivery_ids_are_deterministic_tokens() {
        let a = delivery_id("0193c1d2-e3f4-7a8b-9c0d-1e2f3a4b5c6d", "http://example.com/hook");
        assert_eq!(a, delivery_id("0193c1d2-e3f4-7a8b-9c0d-1e2f3a4b5c6d", "http://example.com/hook"));
        assert_ne!(a, delivery_id("0193c1d2-e3f4-7a8b-9c0d-1e2f3a4b5c6d", "http://example.com/other"));
        assert_eq!(a.len(), 3 + 32);
        assert!(a.starts_with("wd_"));
        arc_events::DeliveryId::parse(&a).expect("test data");
        // sha256("e\nu") = known vector
        assert_eq!(delivery_id("e", "u"), format!("wd_{}", &hex_sha256(b"e\nu")[..32]));
    }

    fn hex_sha256(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn needs_follow_the_routing_chain() {
        let created = room_created("rm_1", "app_1");
        assert_eq!(needs(&created), vec![Need::EndpointsOfApp]);
        assert_eq!(needs(&room_closed("rm_1")), vec![Need::Room("rm_1".into()), Need::EndpointsOfApp]);
        let unpub = env(
            AggregateKind::Track,
            "tr_1",
            2,
            Event::Track(TrackEvent::Unpublished(TrackUnpublished { reason: "client".into() })),
            5,
        );
        assert_eq!(needs(&unpub), vec![Need::Track("tr_1".into()), Need::RoomOfPrevious, Need::EndpointsOfApp]);
        assert!(needs(&webhooks_set("app_1", &["http://a"])).is_empty());
        let o = outcome("wd_x", 1, WebhookEvent::RedeliveryRequested(redelivery()), 5);
        assert_eq!(needs(&o), vec![Need::Delivery("wd_x".into())]);
    }

    fn redelivery() -> WebhookRedeliveryRequested {
        WebhookRedeliveryRequested {
            app_id: AppId::parse("app_1").expect("test data"),
            event_id: EventId::new(),
            url: "http://a".into(),
        }
    }

    #[test]
    fn source_events_become_one_delivery_per_url() {
        let mut t = Tables::default();
        fold(&mut t, &webhooks_set("app_1", &["http://a/x", "http://b/y", "http://a/x"]), Position(1));
        assert_eq!(t.endpoints["app_1"], Some(vec!["http://a/x".to_owned(), "http://b/y".to_owned()]));
        let created = room_created("rm_1", "app_1");
        fold(&mut t, &created, Position(2));
        assert_eq!(t.rooms["rm_1"].as_deref(), Some("app_1"));
        let rows: Vec<&DeliveryRow> = t.deliveries.values().flatten().collect();
        assert_eq!(rows.len(), 2);
        let a = &t.deliveries[&delivery_id(&created.id.to_string(), "http://a/x")];
        let a = a.as_ref().expect("test data");
        assert_eq!(a.order_key, "http://a/x\nrm_1");
        assert_eq!(a.position, 2);
        assert_eq!(a.state, State::Pending);
        assert_eq!(a.next_attempt_ms, 2_000);
        assert_eq!(a.event_type, "room.created");
        let body: serde_json::Value = serde_json::from_str(&a.body).expect("test data");
        assert_eq!(body["id"], created.id.to_string());
        assert_eq!(body["type"], "room.created");
        assert_eq!(body["app_id"], "app_1");
        assert_eq!(body["room_id"], "rm_1");
        assert_eq!(body["occurred_at"], "1970-01-01T00:00:02.000Z");
        assert_eq!(body["data"]["name"], "demo");
        assert!(body.get("track_id").is_none());

        // Later room events are routed through webhook_rooms.
        let closed = room_closed("rm_1");
        fold(&mut t, &closed, Position(3));
        assert_eq!(t.deliveries.len(), 4);
        // A track names its room; its unpublish is routed through webhook_tracks.
        let published = TrackPublished {
            room_id: arc_events::RoomId::parse("rm_1").expect("test data"),
            identity: arc_events::ParticipantIdentity::parse("alice").expect("test data"),
            sid: arc_events::ParticipantSid::parse("pa_1").expect("test data"),
            kind: MediaKind::Audio,
            source: TrackSource::Microphone,
            codec: "audio/opus".into(),
            simulcast: false,
        };
        fold(
            &mut t,
            &env(AggregateKind::Track, "tr_1", 1, Event::Track(TrackEvent::Published(published)), 4),
            Position(4),
        );
        let unpub = env(
            AggregateKind::Track,
            "tr_1",
            2,
            Event::Track(TrackEvent::Unpublished(TrackUnpublished { reason: "client".into() })),
            5,
        );
        fold(&mut t, &unpub, Position(5));
        let row = t.deliveries[&delivery_id(&unpub.id.to_string(), "http://b/y")].clone().expect("test data");
        let body: serde_json::Value = serde_json::from_str(&row.body).expect("test data");
        assert_eq!(body["track_id"], "tr_1");
        assert_eq!(body["room_id"], "rm_1");
        assert_eq!(body["data"]["reason"], "client");
        assert_eq!(row.order_key, "http://b/y\nrm_1");
    }

    #[test]
    fn unknown_rooms_and_apps_without_endpoints_plan_nothing() {
        let mut t = Tables::default();
        fold(&mut t, &room_closed("rm_unknown"), Position(1));
        fold(&mut t, &room_created("rm_1", "app_1"), Position(2));
        assert!(t.deliveries.is_empty());
        fold(&mut t, &webhooks_set("app_1", &["http://a"]), Position(3));
        let deleted =
            env(AggregateKind::App, "app_1", 4, Event::App(AppEvent::Deleted(arc_events::app::AppDeleted {})), 5);
        fold(&mut t, &deleted, Position(4));
        fold(&mut t, &room_closed("rm_1"), Position(5));
        assert!(t.deliveries.is_empty());
    }

    #[test]
    fn outcomes_move_the_delivery_through_its_states() {
        let mut t = Tables::default();
        fold(&mut t, &webhooks_set("app_1", &["http://a"]), Position(1));
        let created = room_created("rm_1", "app_1");
        fold(&mut t, &created, Position(2));
        let id = delivery_id(&created.id.to_string(), "http://a");
        let app = AppId::parse("app_1").expect("test data");
        let failed = WebhookAttemptFailed {
            app_id: app.clone(),
            event_id: created.id,
            url: "http://a".into(),
            attempt: 1,
            status: Some(500),
            error: "status 500".into(),
            retry_at: DateTime::<Utc>::from_timestamp_millis(9_000).expect("test data"),
        };
        fold(&mut t, &outcome(&id, 1, WebhookEvent::AttemptFailed(failed), 8_000), Position(3));
        let row = t.deliveries[&id].clone().expect("test data");
        assert_eq!(
            (row.state, row.attempts, row.next_attempt_ms, row.last_status, row.seq),
            (State::Pending, 1, 9_000, Some(500), 1)
        );
        assert_eq!(row.last_error.as_deref(), Some("status 500"));

        let dead = WebhookDeadLettered {
            app_id: app.clone(),
            event_id: created.id,
            url: "http://a".into(),
            attempts: 2,
            status: None,
            error: "timeout".into(),
        };
        fold(&mut t, &outcome(&id, 2, WebhookEvent::DeadLettered(dead), 10_000), Position(4));
        let row = t.deliveries[&id].clone().expect("test data");
        assert_eq!((row.state, row.attempts, row.last_status, row.updated_at_ms), (State::Dead, 2, None, 10_000));

        // A late duplicate outcome does not revive or change a dead delivery.
        let late = WebhookDelivered {
            app_id: app.clone(),
            event_id: created.id,
            url: "http://a".into(),
            attempt: 2,
            status: 200,
            duration_ms: 3,
        };
        fold(&mut t, &outcome(&id, 3, WebhookEvent::Delivered(late.clone()), 10_500), Position(5));
        let row = t.deliveries[&id].clone().expect("test data");
        assert_eq!((row.state, row.seq), (State::Dead, 3));

        fold(&mut t, &outcome(&id, 4, WebhookEvent::RedeliveryRequested(redelivery()), 11_000), Position(6));
        let row = t.deliveries[&id].clone().expect("test data");
        assert_eq!((row.state, row.attempts, row.next_attempt_ms), (State::Pending, 0, 11_000));

        fold(
            &mut t,
            &outcome(&id, 5, WebhookEvent::Delivered(WebhookDelivered { attempt: 1, ..late }), 12_000),
            Position(7),
        );
        let row = t.deliveries[&id].clone().expect("test data");
        assert_eq!((row.state, row.attempts, row.last_status, row.last_error), (State::Delivered, 1, Some(200), None));

        // Outcomes of deliveries the planner never made are ignored.
        let before = t.deliveries.len();
        fold(&mut t, &outcome("wd_unknown", 1, WebhookEvent::RedeliveryRequested(redelivery()), 1), Position(8));
        assert_eq!(t.deliveries.len(), before);
    }

    #[test]
    fn states_round_trip() {
        for s in [State::Pending, State::Delivered, State::Dead] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("queued"), None);
    }
}
