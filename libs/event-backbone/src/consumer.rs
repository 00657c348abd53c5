//! Consuming events with offsets the caller keeps (in its own store, beside what it derived).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::flow::FlowGate;

/// One message as received.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    /// An encoded `EventEnvelope`, or whatever a foreign producer wrote.
    pub value: Vec<u8>,
}

/// A consumer of one topic with manually assigned partitions and caller-kept offsets.
pub struct EventConsumer {
    consumer: StreamConsumer,
    topic: String,
    gate: Option<Arc<FlowGate>>,
}

impl EventConsumer {
    /// Connects a consumer for `topic`; `gate` is released as messages arrive (embedded mode).
    pub fn new(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        gate: Option<Arc<FlowGate>>,
    ) -> Result<Self, KafkaError> {
        let mut config = kafka.client_config();
        config
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false");
        if kafka.embedded {
            // The mock broker answers a fetch only when fetch.wait.max.ms (500 ms) ran out, even
            // if data arrived meanwhile; with flow control holding producers to a small budget,
            // that wait would bound the whole pipeline.
            config.set("fetch.wait.max.ms", "5");
        }
        let consumer: StreamConsumer = config.create()?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            gate,
        })
    }

    /// The topic's partition ids, from the broker's metadata.
    pub fn partitions(&self, timeout: Duration) -> Result<Vec<i32>, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .ok_or(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))?;
        if let Some(error) = topic.error() {
            return Err(KafkaError::MetadataFetch(error.into()));
        }
        let mut ids: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// The first offset the broker still holds and the next it will write, of one partition.
    pub fn watermarks(&self, partition: i32, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, timeout)
    }

    /// The cluster's id as the broker reports it.
    pub fn cluster_id(&self, timeout: Duration) -> Option<String> {
        self.consumer.client().fetch_cluster_id(timeout)
    }

    /// Starts reading each partition at the given next offset (`None`: from the beginning).
    pub fn assign(&self, start: &[(i32, Option<i64>)]) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        for (partition, next) in start {
            let offset = match next {
                Some(o) => Offset::Offset(*o),
                None => Offset::Beginning,
            };
            list.add_partition_offset(&self.topic, *partition, offset)?;
        }
        self.consumer.assign(&list)
    }

    /// Waits for the next message, then takes whatever else is already there, up to `max`.
    pub async fn recv_batch(&self, max: usize) -> Result<Vec<ReceivedEvent>, KafkaError> {
        let mut batch = Vec::new();
        let first = self.consumer.recv().await?;
        batch.push(self.take(&first));
        while batch.len() < max {
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(self.take(&message)),
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka consumer error while draining a batch");
                    break;
                }
                None => break,
            }
        }
        Ok(batch)
    }

    fn take(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> ReceivedEvent {
        let key = message.key().unwrap_or_default().to_vec();
        let value = message.payload().unwrap_or_default().to_vec();
        if let Some(gate) = &self.gate {
            gate.release(FlowGate::cost(key.len(), value.len()));
        }
        ReceivedEvent {
            partition: message.partition(),
            offset: message.offset(),
            key,
            value,
        }
    }
}
