//! The event envelope: identity, ordering and tracing facts every event carries.

use chrono::{DateTime, Utc};
use prost::Message;
use recoup_proto::v1::EventEnvelope;
use recoup_proto::{from_timestamp, to_timestamp};
use uuid::Uuid;

/// Kafka header carrying the envelope's `event_id`.
pub const HEADER_EVENT_ID: &str = "recoup-event-id";
/// Kafka header carrying the envelope's `event_type`.
pub const HEADER_EVENT_TYPE: &str = "recoup-event-type";

/// A new event id: a UUIDv7, unique and ordered by creation time.
pub fn new_event_id() -> String {
    Uuid::now_v7().to_string()
}

/// Who caused an event, for tracing one request through every service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMetadata {
    pub correlation_id: String,
    pub causation_id: String,
}

/// Everything of an envelope but the ids it gets when recorded.
#[derive(Debug, Clone)]
pub struct NewEnvelope<'a> {
    pub tenant: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub aggregate_version: u64,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub payload: Vec<u8>,
    pub metadata: &'a EventMetadata,
}

impl NewEnvelope<'_> {
    /// The envelope with a fresh event id.
    pub fn build(self) -> EventEnvelope {
        EventEnvelope {
            event_id: new_event_id(),
            tenant: self.tenant.to_owned(),
            aggregate_type: self.aggregate_type.to_owned(),
            aggregate_id: self.aggregate_id.to_owned(),
            aggregate_version: self.aggregate_version,
            occurred_at: Some(to_timestamp(self.occurred_at)),
            recorded_at: Some(to_timestamp(self.recorded_at)),
            correlation_id: self.metadata.correlation_id.clone(),
            causation_id: self.metadata.causation_id.clone(),
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            payload: self.payload,
        }
    }
}

/// An envelope that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("event envelope does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("event envelope {event_id:?} lacks {field}")]
    Missing {
        event_id: String,
        field: &'static str,
    },
}

/// Decodes an envelope and checks the fields every consumer relies on.
pub fn decode_envelope(bytes: &[u8]) -> Result<EventEnvelope, EnvelopeError> {
    let envelope = EventEnvelope::decode(bytes)?;
    let missing = |field| EnvelopeError::Missing {
        event_id: envelope.event_id.clone(),
        field,
    };
    if envelope.event_id.is_empty() {
        return Err(missing("event_id"));
    }
    if envelope.tenant.is_empty() {
        return Err(missing("tenant"));
    }
    if envelope.aggregate_id.is_empty() {
        return Err(missing("aggregate_id"));
    }
    if envelope.aggregate_version == 0 {
        return Err(missing("aggregate_version"));
    }
    if occurred_at(&envelope).is_none() {
        return Err(missing("occurred_at"));
    }
    Ok(envelope)
}

/// The envelope's `occurred_at` as a UTC instant.
pub fn occurred_at(envelope: &EventEnvelope) -> Option<DateTime<Utc>> {
    envelope.occurred_at.as_ref().and_then(from_timestamp)
}
