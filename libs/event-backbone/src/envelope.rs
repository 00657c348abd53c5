//! The event envelope: identity, ordering and tracing facts every event carries.

use chrono::{DateTime, Utc};
use prost::Message;
use recoup_proto::v1::EventEnvelope;
use recoup_proto::{from_timestamp, to_timestamp};
use uuid::Uuid;

/// Kafka header carrying the envelope's `event_id`.
pub const HEADER_EVENT_ID: &str = recoup_proto::contract::header::EVENT_ID;
/// Kafka header carrying the envelope's `event_type`.
pub const HEADER_EVENT_TYPE: &str = recoup_proto::contract::header::EVENT_TYPE;

/// A new event id: a UUIDv7, unique and ordered by creation time.
pub fn new_event_id() -> String {
    Uuid::now_v7().to_string()
}

/// Who caused an event, for tracing one request through every service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMetadata {
    pub correlation_id: String,
    pub causation_id: String,
    /// The principal whose request caused it (`key:<id>`, `jwt:<sub>`), or one of
    /// `recoup_proto::contract::actor`.
    pub actor: String,
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
            actor: self.metadata.actor.clone(),
        }
    }

    /// The encoded envelope with the given event id, written straight from the borrowed fields:
    /// the same bytes as `build()` (with that id) then `encode_to_vec()`, without copying every
    /// string and the payload into an `EventEnvelope` first. For bulk producers (imports).
    pub fn encode(&self, event_id: &str) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, message, uint32, uint64};
        let strings = [
            (1, event_id),
            (2, self.tenant),
            (3, self.aggregate_type),
            (4, self.aggregate_id),
        ];
        let mut buf = Vec::with_capacity(self.payload.len() + 256);
        let string = |buf: &mut Vec<u8>, tag: u32, value: &str| {
            // proto3: an empty string is not written.
            if !value.is_empty() {
                encode_key(tag, WireType::LengthDelimited, buf);
                encode_varint(value.len() as u64, buf);
                buf.extend_from_slice(value.as_bytes());
            }
        };
        for (tag, value) in strings {
            string(&mut buf, tag, value);
        }
        if self.aggregate_version != 0 {
            uint64::encode(5, &self.aggregate_version, &mut buf);
        }
        message::encode(6, &to_timestamp(self.occurred_at), &mut buf);
        message::encode(7, &to_timestamp(self.recorded_at), &mut buf);
        string(&mut buf, 8, &self.metadata.correlation_id);
        string(&mut buf, 9, &self.metadata.causation_id);
        string(&mut buf, 10, self.event_type);
        if self.schema_version != 0 {
            uint32::encode(11, &self.schema_version, &mut buf);
        }
        if !self.payload.is_empty() {
            encode_key(12, WireType::LengthDelimited, &mut buf);
            encode_varint(self.payload.len() as u64, &mut buf);
            buf.extend_from_slice(&self.payload);
        }
        string(&mut buf, 13, &self.metadata.actor);
        buf
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
    #[error(transparent)]
    Schema(#[from] recoup_proto::schema::UpcastError),
}

/// Decodes an envelope, checks the fields every consumer relies on, and brings its payload to
/// the current schema version of its event type (`recoup_proto::schema::upcast`): every consumer
/// in recoup reads events through here.
pub fn decode_envelope(bytes: &[u8]) -> Result<EventEnvelope, EnvelopeError> {
    let mut envelope = EventEnvelope::decode(bytes)?;
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
    recoup_proto::schema::upcast(&mut envelope)?;
    Ok(envelope)
}

/// The envelope's `occurred_at` as a UTC instant.
pub fn occurred_at(envelope: &EventEnvelope) -> Option<DateTime<Utc>> {
    envelope.occurred_at.as_ref().and_then(from_timestamp)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn envelope<'a>(
        metadata: &'a EventMetadata,
        payload: Vec<u8>,
        version: u64,
    ) -> NewEnvelope<'a> {
        NewEnvelope {
            tenant: "acme",
            aggregate_type: recoup_proto::contract::aggregate::PAYGO_ACCOUNT_SNAPSHOT,
            aggregate_id: "acme_crm_A1@2024-05-01",
            aggregate_version: version,
            occurred_at: Utc.with_ymd_and_hms(2024, 5, 1, 6, 23, 55).unwrap(),
            recorded_at: Utc.with_ymd_and_hms(2024, 5, 1, 6, 23, 56).unwrap(),
            event_type: recoup_proto::contract::event_type::ACCOUNT_SNAPSHOT_RECORDED,
            schema_version: 1,
            payload,
            metadata,
        }
    }

    #[test]
    fn encoding_from_borrowed_fields_gives_the_bytes_of_the_built_envelope() {
        let full = EventMetadata {
            correlation_id: "import-1".into(),
            causation_id: "import-1".into(),
            actor: "key:0123456789abcdef".into(),
        };
        let empty = EventMetadata::default();
        for (metadata, payload, version) in [
            (&full, vec![1u8, 2, 3, 200], 7),
            (&empty, Vec::new(), 0),
            (&full, vec![9u8; 300], 1),
        ] {
            let new = envelope(metadata, payload.clone(), version);
            let encoded = new.encode("01890a5d-ac96-774b-bcce-b302099a8057");
            let mut built = envelope(metadata, payload, version).build();
            built.event_id = "01890a5d-ac96-774b-bcce-b302099a8057".into();
            assert_eq!(encoded, built.encode_to_vec());
        }
    }
}
