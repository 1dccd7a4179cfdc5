//! The envelope every event travels in, and its stored ("raw") form.
//!
//! The log stores [`RawEvent`]: metadata plus the event's `type`, `version` and
//! `data` as JSON. Readers turn it into a typed [`Envelope`] with
//! [`RawEvent::decode`]; event types they do not know are reported as
//! [`Decoded::Unknown`] so old readers skip newer events instead of failing.

use std::fmt;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{DecodeError, EncodeError};
use crate::event::Event;
use crate::ids::{AppId, CorrelationId, EventId, NodeId, ParticipantIdentity, validate_token};

/// Which kind of aggregate an event belongs to; the second token of its subject.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    App,
    Room,
    Participant,
    Track,
    Recording,
    Call,
    Node,
    Webhook,
    /// What an admin key did that is no other aggregate's event (id: the key's name).
    Operator,
}

impl AggregateKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 9] = [
        Self::App,
        Self::Room,
        Self::Participant,
        Self::Track,
        Self::Recording,
        Self::Call,
        Self::Node,
        Self::Webhook,
        Self::Operator,
    ];

    /// The kind's name as it appears in subjects and records.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::App => "app",
            Self::Room => "room",
            Self::Participant => "participant",
            Self::Track => "track",
            Self::Recording => "recording",
            Self::Call => "call",
            Self::Node => "node",
            Self::Webhook => "webhook",
            Self::Operator => "operator",
        }
    }

    /// Parses a kind name; `None` for kinds this reader does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for AggregateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one aggregate instance: its kind and its id (a validated token).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct AggregateRef {
    kind: AggregateKind,
    id: String,
}

impl AggregateRef {
    /// Names an aggregate; the id must be a valid token.
    pub fn new(kind: AggregateKind, id: &str) -> Result<Self, crate::error::IdError> {
        validate_token(id)?;
        Ok(Self { kind, id: id.to_owned() })
    }

    /// The aggregate's kind.
    pub fn kind(&self) -> AggregateKind {
        self.kind
    }

    /// The aggregate's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for AggregateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind, self.id)
    }
}

/// Who caused an event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// An operator holding an admin key: the key's name (`admin` for the
    /// unnamed key; absent in events older than named keys). The key itself
    /// is never recorded.
    Admin {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// An application's server, authenticated with its AppKey.
    App { app_id: AppId },
    /// A media node.
    Node { node_id: NodeId },
    /// A participant acting with its access token (e.g. a moderator's `admin` grant).
    Participant { app_id: AppId, identity: ParticipantIdentity },
    /// Arc itself: a timer, a janitor, a liveness check.
    System { component: String },
    /// An actor kind written by a newer version of Arc.
    #[serde(other)]
    Unknown,
}

impl Actor {
    /// A system component as the actor.
    pub fn system(component: &str) -> Self {
        Self::System { component: component.to_owned() }
    }
}

/// Metadata shared by every event of one command.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CommandMeta {
    /// When the command was decided.
    pub occurred_at: DateTime<Utc>,
    /// The request this command belongs to.
    pub correlation_id: CorrelationId,
    /// The event that caused this command, if an event did.
    pub causation_id: Option<EventId>,
    /// Who asked.
    pub actor: Actor,
    /// The W3C trace context (`traceparent`) of the span that decided the
    /// command, when a trace was being recorded: what the log's readers
    /// (projections, webhook deliveries) link their own spans to.
    pub traceparent: Option<String>,
}

impl CommandMeta {
    /// Metadata for a new request by `actor` at `now`.
    pub fn new(actor: Actor, now: DateTime<Utc>) -> Self {
        Self { occurred_at: now, correlation_id: CorrelationId::new(), causation_id: None, actor, traceparent: None }
    }
}

/// The stored form of an event: what the log keeps and what `schemas/events/envelope.json` describes.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RawEvent {
    /// Unique id (UUIDv7); appending the same id twice stores it once.
    pub id: EventId,
    /// The aggregate kind (`room`, `node`, …). Kept as text so newer kinds survive old readers.
    pub aggregate_type: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// Position of this event in its aggregate's history, from 1 without gaps.
    pub seq: u64,
    /// Event type name, e.g. `room.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data` for this type.
    pub version: u16,
    /// When it happened (UTC).
    pub occurred_at: DateTime<Utc>,
    /// The request that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who caused it.
    pub actor: Actor,
    /// The W3C trace context (`00-<trace id>-<span id>-<flags>`) of the span
    /// that appended it, when a trace was being recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The event's own fields, described by `schemas/events/<type>.v<version>.json`.
    pub data: serde_json::Value,
}

/// A typed event with its metadata.
#[derive(Clone, PartialEq, Debug)]
pub struct Envelope {
    pub id: EventId,
    pub aggregate: AggregateRef,
    pub seq: u64,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: Option<CorrelationId>,
    pub causation_id: Option<EventId>,
    pub actor: Actor,
    /// The appending span's W3C trace context, if a trace was recorded.
    pub traceparent: Option<String>,
    pub event: Event,
}

/// The outcome of decoding a stored event.
#[derive(Clone, PartialEq, Debug)]
pub enum Decoded {
    /// A type this reader knows, upcast to its current version.
    Known(Box<Envelope>),
    /// A type, aggregate kind or version newer than this reader: skip it.
    /// (Adding optional fields keeps a type's version; readers ignore fields
    /// they do not know. Changing a field's meaning or shape bumps it.)
    Unknown { event_type: String, version: u16 },
}

impl RawEvent {
    /// Builds the stored form of `event` as event number `seq` of `aggregate`.
    pub fn encode(aggregate: &AggregateRef, seq: u64, event: &Event, meta: &CommandMeta) -> Result<Self, EncodeError> {
        let data = event.to_data().map_err(|source| EncodeError { event_type: event.type_name(), source })?;
        Ok(Self {
            id: EventId::new(),
            aggregate_type: aggregate.kind().as_str().to_owned(),
            aggregate_id: aggregate.id().to_owned(),
            seq,
            event_type: event.type_name().to_owned(),
            version: event.version(),
            occurred_at: meta.occurred_at,
            correlation_id: Some(meta.correlation_id.0),
            causation_id: meta.causation_id.map(|c| c.0),
            actor: meta.actor.clone(),
            traceparent: meta.traceparent.clone(),
            data,
        })
    }

    /// Turns the stored form into a typed envelope, upcasting old versions;
    /// unknown types and aggregate kinds come back as [`Decoded::Unknown`].
    pub fn decode(&self) -> Result<Decoded, DecodeError> {
        let unknown = || Decoded::Unknown { event_type: self.event_type.clone(), version: self.version };
        let Some(kind) = AggregateKind::parse(&self.aggregate_type) else {
            return Ok(unknown());
        };
        let event = match Event::decode(&self.event_type, self.version, &self.data) {
            Ok(Some(event)) => event,
            // A type, or a version of a known type, written by a newer Arc: skip it.
            Ok(None) | Err(DecodeError::NewerVersion { .. }) => return Ok(unknown()),
            Err(e) => return Err(e),
        };
        Ok(Decoded::Known(Box::new(Envelope {
            id: self.id,
            aggregate: AggregateRef::new(kind, &self.aggregate_id)?,
            seq: self.seq,
            occurred_at: self.occurred_at,
            correlation_id: self.correlation_id.map(CorrelationId),
            causation_id: self.causation_id.map(EventId),
            actor: self.actor.clone(),
            traceparent: self.traceparent.clone(),
            event,
        })))
    }

    /// The aggregate this event belongs to, if the kind is known and the id valid.
    pub fn aggregate(&self) -> Option<AggregateRef> {
        AggregateRef::new(AggregateKind::parse(&self.aggregate_type)?, &self.aggregate_id).ok()
    }
}

macro_rules! aggregate_of {
    ($($id:ty => $kind:ident),+ $(,)?) => {
        $(
            impl From<&$id> for AggregateRef {
                fn from(id: &$id) -> Self {
                    // Typed ids are validated tokens, so no check is needed.
                    Self { kind: AggregateKind::$kind, id: id.as_str().to_owned() }
                }
            }
        )+
    };
}

aggregate_of!(
    crate::ids::AppId => App,
    crate::ids::RoomId => Room,
    crate::ids::ParticipantSid => Participant,
    crate::ids::TrackId => Track,
    crate::ids::RecordingId => Recording,
    crate::ids::CallId => Call,
    crate::ids::NodeId => Node,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_actor_carries_its_keys_name_and_older_events_without_one_still_read() {
        let named = Actor::Admin { name: Some("ops".into()) };
        let text = serde_json::to_string(&named).expect("json");
        assert_eq!(text, r#"{"kind":"admin","name":"ops"}"#);
        assert_eq!(serde_json::from_str::<Actor>(&text).expect("read back"), named);
        // Events written before keys had names.
        assert_eq!(serde_json::from_str::<Actor>(r#"{"kind":"admin"}"#).expect("old"), Actor::Admin { name: None });
        assert_eq!(serde_json::to_string(&Actor::Admin { name: None }).expect("json"), r#"{"kind":"admin"}"#);
    }
}
