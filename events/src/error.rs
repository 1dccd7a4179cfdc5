//! Errors of the events crate.

use thiserror::Error;

/// An identifier that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("id is empty")]
    Empty,
    /// The id is longer than allowed.
    #[error("id is {len} bytes long, at most {max} allowed")]
    TooLong { len: usize, max: usize },
    /// The id holds a character outside `[A-Za-z0-9_-]`.
    #[error("id holds {c:?}; only ASCII letters, digits, '_' and '-' are allowed")]
    BadChar { c: char },
}

/// A stored event that could not be turned into a typed event.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// The record is not valid JSON of the envelope's shape.
    #[error("malformed event record: {0}")]
    Malformed(#[source] serde_json::Error),
    /// The event type is known but its data does not match the schema.
    #[error("event {event_type} v{version} has malformed data: {source}")]
    BadData {
        event_type: String,
        version: u16,
        #[source]
        source: serde_json::Error,
    },
    /// The event type is known but written in a version newer than this reader.
    #[error("event {event_type} v{version} is newer than this reader understands (v{known})")]
    NewerVersion { event_type: String, version: u16, known: u16 },
    /// The aggregate named by the record is not a valid id.
    #[error("event names an invalid aggregate id: {0}")]
    BadAggregateId(#[from] IdError),
}

/// An event that cannot be encoded (a bug: our own types always serialize).
#[derive(Debug, Error)]
#[error("could not encode event {event_type}: {source}")]
pub struct EncodeError {
    pub event_type: &'static str,
    #[source]
    pub source: serde_json::Error,
}
