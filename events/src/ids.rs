//! Typed identifiers. Every id that names an aggregate is a validated token
//! (`[A-Za-z0-9_-]`, 1..=64 chars) so it can stand in a NATS subject, a URL
//! path segment and a file name without escaping.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::error::IdError;

pub use crate::limits::ID_BYTES_MAX as ID_LEN_MAX;

/// The JSON Schema pattern of a token id.
pub const TOKEN_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// Checks that `s` is a token usable as an aggregate id.
pub fn validate_token(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > ID_LEN_MAX {
        return Err(IdError::TooLong { len: s.len(), max: ID_LEN_MAX });
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-')) {
        return Err(IdError::BadChar { c });
    }
    Ok(())
}

/// A random token with a readable prefix, e.g. `rm_0193c1d2e3f4...`.
pub fn generate_token(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": TOKEN_PATTERN,
                    "examples": [concat!($prefix, "_0193c1d2e3f47a8b9c0d1e2f3a4b5c6d")]
                })
            }
        }

        impl $name {
            /// Parses and validates an id coming from outside.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                validate_token(s)?;
                Ok(Self(s.to_owned()))
            }

            /// A fresh random id with this type's prefix.
            pub fn generate() -> Self {
                Self(generate_token($prefix))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

token_id!(
    /// An application (tenant) registered in the portal.
    AppId,
    "app"
);
token_id!(
    /// A room: the unit of media forwarding and placement.
    RoomId,
    "rm"
);
token_id!(
    /// A participant's identity inside a room (the token's `sub`).
    ParticipantIdentity,
    "user"
);
token_id!(
    /// One session of a participant in a room (new on every join).
    ParticipantSid,
    "pa"
);
token_id!(
    /// A published track.
    TrackId,
    "tr"
);
token_id!(
    /// A server-side recording.
    RecordingId,
    "rec"
);
token_id!(
    /// One webhook delivery: one event to one endpoint URL.
    DeliveryId,
    "wd"
);
token_id!(
    /// A SIP call into or out of a room.
    CallId,
    "call"
);
token_id!(
    /// A media node (data-plane appliance).
    NodeId,
    "node"
);
token_id!(
    /// One media session on a node (a WHIP or WHEP resource; a participant
    /// session may hold several over time).
    MediaSessionId,
    "se"
);

/// The id of one event: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct EventId(pub Uuid);

impl EventId {
    /// A fresh UUIDv7.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventId({})", self.0)
    }
}

/// Ties together every event caused by one external request.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CorrelationId(pub Uuid);

impl CorrelationId {
    /// A fresh UUIDv7.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for CorrelationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({})", self.0)
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_validated() {
        assert!(RoomId::parse("room-1_A").is_ok());
        assert_eq!(RoomId::parse(""), Err(IdError::Empty));
        assert_eq!(RoomId::parse("a.b"), Err(IdError::BadChar { c: '.' }));
        assert_eq!(RoomId::parse("a b"), Err(IdError::BadChar { c: ' ' }));
        assert_eq!(RoomId::parse("a>"), Err(IdError::BadChar { c: '>' }));
        assert!(matches!(RoomId::parse(&"x".repeat(65)), Err(IdError::TooLong { .. })));
        assert!(serde_json::from_str::<NodeId>("\"n*\"").is_err());
        let id = NodeId::generate();
        assert!(id.as_str().starts_with("node_"));
        assert_eq!(NodeId::parse(id.as_str()).ok(), Some(id));
    }
}
