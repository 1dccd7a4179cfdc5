//! The registry of event types: one enum per aggregate kind, one [`Event`] over all.
//!
//! Each payload struct implements [`EventData`], which names its `type` and
//! schema `version`. The [`aggregate_events!`] macro builds the per-aggregate
//! enum and its encode/decode/schema tables from one list, so adding an event
//! type is one line here plus its struct.
//!
//! Versioning: a payload's `VERSION` is the version new events are written in.
//! When a payload changes shape, keep the old struct (renamed `…V1`), bump
//! `VERSION`, and add an arm to [`crate::upcast`] that rewrites old `data` into
//! the new shape; folds only ever see the current version.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::envelope::AggregateKind;
use crate::error::DecodeError;
use crate::{app, call, node, operator, participant, recording, room, track, webhook};

/// A payload type: the fields of one event type in one version.
pub trait EventData: Serialize + DeserializeOwned + JsonSchema {
    /// Stable type name, `<aggregate>.<past-tense verb>`.
    const TYPE: &'static str;
    /// Version of the shape new events are written in.
    const VERSION: u16;
    /// The aggregate kind whose subject carries this event.
    const AGGREGATE: AggregateKind;
}

/// Describes one event type for schema generation.
#[derive(Debug, Clone)]
pub struct EventType {
    pub type_name: &'static str,
    pub version: u16,
    pub aggregate: AggregateKind,
    pub schema: fn() -> schemars::Schema,
}

impl EventType {
    fn of<T: EventData>() -> Self {
        Self { type_name: T::TYPE, version: T::VERSION, aggregate: T::AGGREGATE, schema: || schemars::schema_for!(T) }
    }
}

macro_rules! aggregate_events {
    ($(#[$doc:meta])* $enum:ident { $($variant:ident($payload:ty)),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $enum {
            $($variant($payload)),+
        }

        impl $enum {
            /// The event's type name.
            pub fn type_name(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$payload as EventData>::TYPE),+ }
            }

            /// The schema version the event is written in.
            pub fn version(&self) -> u16 {
                match self { $(Self::$variant(_) => <$payload as EventData>::VERSION),+ }
            }

            fn to_data(&self) -> Result<serde_json::Value, serde_json::Error> {
                match self { $(Self::$variant(p) => serde_json::to_value(p)),+ }
            }

            /// `None` when `type_name` is not one of this aggregate's types.
            fn decode(type_name: &str, version: u16, data: &serde_json::Value) -> Option<Result<Self, DecodeError>> {
                $(
                    if type_name == <$payload as EventData>::TYPE {
                        return Some(decode_payload::<$payload>(version, data).map(Self::$variant));
                    }
                )+
                None
            }

            fn types(out: &mut Vec<EventType>) {
                $( out.push(EventType::of::<$payload>()); )+
            }
        }

        $(
            impl From<$payload> for $enum {
                fn from(p: $payload) -> Self {
                    Self::$variant(p)
                }
            }
        )+
    };
}

fn decode_payload<T: EventData>(version: u16, data: &serde_json::Value) -> Result<T, DecodeError> {
    if version > T::VERSION {
        return Err(DecodeError::NewerVersion { event_type: T::TYPE.to_owned(), version, known: T::VERSION });
    }
    let data = crate::upcast::upcast(T::TYPE, version, data);
    // Deserialise from a borrowed value: no copy of the data on the hot path.
    T::deserialize(data.as_ref()).map_err(|source| DecodeError::BadData {
        event_type: T::TYPE.to_owned(),
        version,
        source,
    })
}

aggregate_events!(
    /// Events of an application (tenant).
    AppEvent {
        Created(app::AppCreated),
        Disabled(app::AppDisabled),
        Enabled(app::AppEnabled),
        Deleted(app::AppDeleted),
        SecretRotated(app::AppSecretRotated),
        QuotasSet(app::AppQuotasSet),
        WebhooksSet(app::AppWebhooksSet),
        TokenRevoked(app::AppTokenRevoked),
    }
);

aggregate_events!(
    /// Events of a room, including who joins and leaves it (the room's
    /// invariants — capacity, closing when empty — depend on its membership).
    RoomEvent {
        Created(room::RoomCreated),
        ParticipantJoined(room::ParticipantJoined),
        ParticipantLeft(room::ParticipantLeft),
        Closed(room::RoomClosed),
        MetadataUpdated(room::RoomMetadataUpdated),
    }
);

aggregate_events!(
    /// Events of one participant session (its permissions and attributes).
    ParticipantEvent {
        PermissionsUpdated(participant::PermissionsUpdated),
        MetadataUpdated(participant::MetadataUpdated),
    }
);

aggregate_events!(
    /// Events of a published track.
    TrackEvent {
        Published(track::TrackPublished),
        Muted(track::TrackMuted),
        Unmuted(track::TrackUnmuted),
        Unpublished(track::TrackUnpublished),
        SubscriptionStarted(track::SubscriptionStarted),
        SubscriptionEnded(track::SubscriptionEnded),
    }
);

aggregate_events!(
    /// Events of a server-side recording.
    RecordingEvent {
        Started(recording::RecordingStarted),
        Finished(recording::RecordingFinished),
        Failed(recording::RecordingFailed),
    }
);

aggregate_events!(
    /// Events of a SIP call.
    CallEvent {
        Started(call::CallStarted),
        Answered(call::CallAnswered),
        Ended(call::CallEnded),
    }
);

aggregate_events!(
    /// Events of a media node: registration, liveness and draining, and
    /// what it reports of the media it carries (facts the control plane
    /// checks and turns into room and track events).
    NodeEvent {
        Registered(node::NodeRegistered),
        Heartbeat(node::NodeHeartbeat),
        Draining(node::NodeDraining),
        Undrained(node::NodeUndrained),
        Lost(node::NodeLost),
        Deregistered(node::NodeDeregistered),
        TrackPublished(node::NodeTrackPublished),
        TrackUnpublished(node::NodeTrackUnpublished),
        SubscriptionStarted(node::NodeSubscriptionStarted),
        SubscriptionEnded(node::NodeSubscriptionEnded),
        SessionEnded(node::NodeSessionEnded),
    }
);

impl NodeEvent {
    /// Whether this is a node's report of its media (which the control plane
    /// turns into room and track events) rather than its own lifecycle.
    pub fn is_report(&self) -> bool {
        matches!(
            self,
            Self::TrackPublished(_)
                | Self::TrackUnpublished(_)
                | Self::SubscriptionStarted(_)
                | Self::SubscriptionEnded(_)
                | Self::SessionEnded(_)
        )
    }
}

aggregate_events!(
    /// Events of one webhook delivery (one event to one endpoint).
    WebhookEvent {
        Delivered(webhook::WebhookDelivered),
        AttemptFailed(webhook::WebhookAttemptFailed),
        DeadLettered(webhook::WebhookDeadLettered),
        RedeliveryRequested(webhook::WebhookRedeliveryRequested),
    }
);

aggregate_events!(
    /// What an admin key did that is no other aggregate's event.
    OperatorEvent {
        ProjectionRebuildRequested(operator::ProjectionRebuildRequested),
        TokenMinted(operator::TokenMinted),
    }
);

/// Any event of any aggregate.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    App(AppEvent),
    Room(RoomEvent),
    Participant(ParticipantEvent),
    Track(TrackEvent),
    Recording(RecordingEvent),
    Call(CallEvent),
    Node(NodeEvent),
    Webhook(WebhookEvent),
    Operator(OperatorEvent),
}

macro_rules! each_kind {
    ($self:ident, $e:ident => $body:expr) => {
        match $self {
            Event::App($e) => $body,
            Event::Room($e) => $body,
            Event::Participant($e) => $body,
            Event::Track($e) => $body,
            Event::Recording($e) => $body,
            Event::Call($e) => $body,
            Event::Node($e) => $body,
            Event::Webhook($e) => $body,
            Event::Operator($e) => $body,
        }
    };
}

impl Event {
    /// The event's type name, e.g. `room.created`.
    pub fn type_name(&self) -> &'static str {
        each_kind!(self, e => e.type_name())
    }

    /// The schema version the event is written in.
    pub fn version(&self) -> u16 {
        each_kind!(self, e => e.version())
    }

    /// The aggregate kind this event belongs to.
    pub fn aggregate_kind(&self) -> AggregateKind {
        match self {
            Self::App(_) => AggregateKind::App,
            Self::Room(_) => AggregateKind::Room,
            Self::Participant(_) => AggregateKind::Participant,
            Self::Track(_) => AggregateKind::Track,
            Self::Recording(_) => AggregateKind::Recording,
            Self::Call(_) => AggregateKind::Call,
            Self::Node(_) => AggregateKind::Node,
            Self::Webhook(_) => AggregateKind::Webhook,
            Self::Operator(_) => AggregateKind::Operator,
        }
    }

    pub(crate) fn to_data(&self) -> Result<serde_json::Value, serde_json::Error> {
        each_kind!(self, e => e.to_data())
    }

    /// Decodes `data` of the given type and version; `Ok(None)` for unknown types.
    pub fn decode(type_name: &str, version: u16, data: &serde_json::Value) -> Result<Option<Self>, DecodeError> {
        let (kind, _) = type_name.split_once('.').unwrap_or((type_name, ""));
        let found = match AggregateKind::parse(kind) {
            Some(AggregateKind::App) => AppEvent::decode(type_name, version, data).map(|r| r.map(Self::App)),
            Some(AggregateKind::Room) => RoomEvent::decode(type_name, version, data).map(|r| r.map(Self::Room)),
            Some(AggregateKind::Participant) => {
                ParticipantEvent::decode(type_name, version, data).map(|r| r.map(Self::Participant))
            }
            Some(AggregateKind::Track) => TrackEvent::decode(type_name, version, data).map(|r| r.map(Self::Track)),
            Some(AggregateKind::Recording) => {
                RecordingEvent::decode(type_name, version, data).map(|r| r.map(Self::Recording))
            }
            Some(AggregateKind::Call) => CallEvent::decode(type_name, version, data).map(|r| r.map(Self::Call)),
            Some(AggregateKind::Node) => NodeEvent::decode(type_name, version, data).map(|r| r.map(Self::Node)),
            Some(AggregateKind::Webhook) => {
                WebhookEvent::decode(type_name, version, data).map(|r| r.map(Self::Webhook))
            }
            Some(AggregateKind::Operator) => {
                OperatorEvent::decode(type_name, version, data).map(|r| r.map(Self::Operator))
            }
            None => None,
        };
        found.transpose()
    }

    /// Every event type this build knows, for schema generation and docs.
    pub fn types() -> Vec<EventType> {
        let mut out = Vec::new();
        AppEvent::types(&mut out);
        RoomEvent::types(&mut out);
        ParticipantEvent::types(&mut out);
        TrackEvent::types(&mut out);
        RecordingEvent::types(&mut out);
        CallEvent::types(&mut out);
        NodeEvent::types(&mut out);
        WebhookEvent::types(&mut out);
        OperatorEvent::types(&mut out);
        out
    }
}

macro_rules! into_event {
    ($($inner:ident => $variant:ident),+) => {
        $(
            impl From<$inner> for Event {
                fn from(e: $inner) -> Self {
                    Self::$variant(e)
                }
            }
        )+
    };
}

into_event!(
    AppEvent => App,
    RoomEvent => Room,
    ParticipantEvent => Participant,
    TrackEvent => Track,
    RecordingEvent => Recording,
    CallEvent => Call,
    NodeEvent => Node,
    WebhookEvent => Webhook,
    OperatorEvent => Operator
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_unique_and_prefixed_by_their_aggregate() {
        let types = Event::types();
        let mut names: Vec<_> = types.iter().map(|t| t.type_name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), types.len(), "duplicate event type name");
        for t in &types {
            assert_eq!(t.type_name.split_once('.').map(|(k, _)| k), Some(t.aggregate.as_str()), "{}", t.type_name);
            assert!(t.version >= 1);
        }
    }

    #[test]
    fn unknown_types_decode_to_none_and_newer_versions_are_errors() {
        assert!(matches!(Event::decode("room.teleported", 1, &serde_json::json!({})), Ok(None)));
        assert!(matches!(Event::decode("spaceship.launched", 1, &serde_json::json!({})), Ok(None)));
        assert!(matches!(Event::decode("nodot", 1, &serde_json::json!({})), Ok(None)));
        assert!(matches!(
            Event::decode("app.deleted", 99, &serde_json::json!({})),
            Err(DecodeError::NewerVersion { .. })
        ));
        assert!(matches!(
            Event::decode("app.created", 1, &serde_json::json!({"name": 5})),
            Err(DecodeError::BadData { .. })
        ));
    }
}
