//! The keys of one process: its ring (what requests are checked against), its durable copy,
//! and the producer that tells every other process of a change.
//!
//! A change (a new key, a revocation) is published to the access topic first and taken here
//! only once Kafka acknowledged it: when Kafka refuses, nothing changed anywhere. Records that
//! arrive from the topic are taken through the ring's rule (a revocation is final), so a record
//! published twice, or late, changes nothing.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_backbone::envelope::NewEnvelope;
use event_backbone::producer::{EventProducer, ProducerSettings};
use event_backbone::{EventMetadata, KafkaConfig, OutgoingEvent, PublishError};
use prost::Message;
use rdkafka::error::KafkaError;
use recoup_access::api_key::{issue, revoked};
use recoup_access::store::StoreError;
use recoup_access::{IssuedKey, KeyRing, KeySpec, KeyStore};
use recoup_proto::contract::{aggregate, event_type, topic};
use recoup_proto::v1;

/// How long a change may wait for Kafka before it counts as refused (and changes nothing).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(String),
    #[error("no API key {0}")]
    NotFound(String),
    #[error("Kafka did not take the change, so nothing changed: {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The API keys a process knows.
pub struct Registry {
    ring: Arc<KeyRing>,
    /// `None` for a process that only writes to the topic (`recoup keys --kafka-brokers`).
    store: Option<KeyStore>,
    producer: EventProducer,
}

impl Registry {
    /// A registry publishing to `kafka`, starting from what `store` kept.
    pub fn new(kafka: &KafkaConfig, store: Option<KeyStore>) -> Result<Self, RegistryError> {
        let ring = Arc::new(KeyRing::new());
        if let Some(store) = &store {
            for record in store.list()? {
                ring.upsert(record);
            }
        }
        let settings = ProducerSettings {
            linger: Duration::ZERO,
            message_timeout: PUBLISH_TIMEOUT,
        };
        let producer = EventProducer::new(kafka, &settings, None).map_err(kafka_error)?;
        Ok(Self {
            ring,
            store,
            producer,
        })
    }

    /// The ring requests are checked against; it changes as the registry does.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.clone()
    }

    /// Takes a record read from the topic; keeps it when it changed something, and returns it.
    pub fn take(&self, record: v1::ApiKey) -> Result<Option<v1::ApiKey>, StoreError> {
        let Some(kept) = self.ring.upsert(record) else {
            return Ok(None);
        };
        if let Some(store) = &self.store {
            store.put(&kept)?;
        }
        Ok(Some(kept))
    }

    /// Makes a key for `spec`, and returns it once every process can learn of it.
    pub async fn create(
        &self,
        spec: &KeySpec,
        now: DateTime<Utc>,
    ) -> Result<IssuedKey, RegistryError> {
        let issued = issue(spec, now).map_err(RegistryError::Invalid)?;
        self.put(issued.record.clone(), now).await?;
        Ok(issued)
    }

    /// Revokes key `id` at `now` for `by`; a revoked key keeps its first revocation.
    pub async fn revoke(
        &self,
        id: &str,
        now: DateTime<Utc>,
        by: &str,
    ) -> Result<v1::ApiKey, RegistryError> {
        let known = self
            .ring
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))?;
        if known.revoked_at.is_some() {
            return Ok(known);
        }
        self.put(revoked(known, now, by), now).await?;
        self.ring
            .get(id)
            .ok_or_else(|| RegistryError::NotFound(id.to_owned()))
    }

    /// Every key's latest record, in id order.
    pub fn list(&self) -> Vec<v1::ApiKey> {
        self.ring.records()
    }

    /// Publishes every key this process knows again: in embedded mode, where the broker
    /// started empty and this process's store is the record.
    pub async fn republish(&self, now: DateTime<Utc>) -> Result<usize, PublishError> {
        let records = self.ring.records();
        for record in &records {
            publish(&self.producer, record, now).await?;
        }
        Ok(records.len())
    }

    /// The latest record of key `id`.
    pub fn get(&self, id: &str) -> Option<v1::ApiKey> {
        self.ring.get(id)
    }

    /// Publishes `record` and, once Kafka acknowledged it, takes it.
    pub async fn put(&self, record: v1::ApiKey, now: DateTime<Utc>) -> Result<(), RegistryError> {
        publish(&self.producer, &record, now).await?;
        self.take(record)?;
        Ok(())
    }
}

/// Publishes `record` to the access topic and waits for the acknowledgement.
async fn publish(
    producer: &EventProducer,
    record: &v1::ApiKey,
    now: DateTime<Utc>,
) -> Result<(), PublishError> {
    let envelope = envelope_of(record, now);
    producer
        .publish(OutgoingEvent {
            topic: topic::ACCESS,
            key: &record.id,
            value: &envelope.encode_to_vec(),
            event_id: &envelope.event_id,
            event_type: &envelope.event_type,
        })
        .await?;
    Ok(())
}

/// The envelope of a key's record: aggregate `api_key`, version 1 when made, 2 once revoked.
pub fn envelope_of(record: &v1::ApiKey, now: DateTime<Utc>) -> v1::EventEnvelope {
    NewEnvelope {
        tenant: record.tenants.first().map_or("", String::as_str),
        aggregate_type: aggregate::API_KEY,
        aggregate_id: &record.id,
        aggregate_version: if record.revoked_at.is_some() { 2 } else { 1 },
        occurred_at: now,
        recorded_at: now,
        event_type: event_type::API_KEY_RECORDED,
        schema_version: recoup_proto::schema::current(event_type::API_KEY_RECORDED),
        payload: record.encode_to_vec(),
        metadata: &EventMetadata {
            // Who made the change this record is.
            actor: match record.revoked_at {
                Some(_) => record.revoked_by.clone(),
                None => record.created_by.clone(),
            },
            ..EventMetadata::default()
        },
    }
    .build()
}

/// The key record of a message of the access topic, or why it is none.
pub fn record_of(key: &[u8], value: &[u8]) -> Result<v1::ApiKey, String> {
    let mut envelope =
        v1::EventEnvelope::decode(value).map_err(|e| format!("not an EventEnvelope: {e}"))?;
    if envelope.event_type != event_type::API_KEY_RECORDED {
        return Err(format!("event type {:?}", envelope.event_type));
    }
    recoup_proto::schema::upcast(&mut envelope).map_err(|e| e.to_string())?;
    let record = v1::ApiKey::decode(envelope.payload.as_slice())
        .map_err(|e| format!("not an ApiKey: {e}"))?;
    if record.id.as_bytes() != key {
        return Err(format!(
            "the record of key {:?} came under message key {:?}",
            record.id,
            String::from_utf8_lossy(key)
        ));
    }
    Ok(record)
}

/// The error of a Kafka client that could not be made.
fn kafka_error(error: KafkaError) -> RegistryError {
    RegistryError::Publish(PublishError::Kafka(error))
}
