//! Publishing events: idempotent, acks=all, in order per key.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use crate::config::KafkaConfig;
use crate::envelope::{HEADER_EVENT_ID, HEADER_EVENT_TYPE};
use crate::flow::FlowGate;

/// One event to publish: `value` is an encoded `EventEnvelope`.
#[derive(Debug, Clone, Copy)]
pub struct OutgoingEvent<'a> {
    pub topic: &'a str,
    /// The aggregate id: every event of one aggregate lands in one partition, in order.
    pub key: &'a str,
    pub value: &'a [u8],
    pub event_id: &'a str,
    pub event_type: &'a str,
}

/// The broker did not take an event; the caller keeps it and tries again later.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka refused the event: {0}")]
    Kafka(#[from] KafkaError),
    #[error("the producer was shut down before the broker answered")]
    Canceled,
}

/// Where the broker put an acknowledged event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acknowledged {
    pub partition: i32,
    pub offset: i64,
}

/// An event handed to the producer, not yet acknowledged.
#[must_use = "an event counts as published only once its delivery is awaited"]
pub struct PendingDelivery {
    future: DeliveryFuture,
    gate: Option<(Arc<FlowGate>, u64)>,
    counters: recoup_metrics::TopicCounters,
}

impl PendingDelivery {
    /// Waits for the broker's acknowledgement.
    pub async fn acknowledged(self) -> Result<Acknowledged, PublishError> {
        let result = match self.future.await {
            Ok(Ok(delivery)) => Ok(Acknowledged {
                partition: delivery.partition,
                offset: delivery.offset,
            }),
            Ok(Err((error, _))) => Err(PublishError::Kafka(error)),
            Err(_) => Err(PublishError::Canceled),
        };
        match &result {
            Ok(_) => self.counters.published.inc(),
            Err(_) => self.counters.failed.inc(),
        };
        if result.is_err()
            && let Some((gate, cost)) = self.gate
        {
            // The consumer will never see it: give its room back.
            gate.release(cost);
        }
        result
    }
}

/// Settings of the event producer.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// How long the producer waits to fill a batch (`linger.ms`); small for command latency.
    pub linger: Duration,
    /// How long librdkafka keeps retrying one message before reporting it failed.
    pub message_timeout: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(2),
            message_timeout: Duration::from_secs(30),
        }
    }
}

impl ProducerSettings {
    /// For publishers of batches (imports, pages): a little more lingering (5 ms) fills Kafka
    /// batches better.
    pub fn bulk() -> Self {
        Self {
            linger: Duration::from_millis(5),
            ..Self::default()
        }
    }
}

/// An idempotent Kafka producer (acks=all, per-partition order kept across retries), with
/// optional flow control for the embedded cluster.
/// What a producer queues at most, in KiB, unless the operator says otherwise.
pub const PRODUCER_QUEUE_KIB: &str = "16384";

pub struct EventProducer {
    producer: FutureProducer,
    gate: Option<Arc<FlowGate>>,
}

impl EventProducer {
    /// Connects a producer; `gate` holds it back in embedded mode.
    pub fn new(
        kafka: &KafkaConfig,
        settings: &ProducerSettings,
        gate: Option<Arc<FlowGate>>,
    ) -> Result<Self, KafkaError> {
        let mut config = kafka.client_config();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", settings.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                settings.message_timeout.as_millis().to_string(),
            );
        // librdkafka queues up to 1 GiB per producer by default (while a broker is away, say);
        // a full queue makes `enqueue` wait, which bounds the process's memory.
        if !kafka.given("queue.buffering.max.kbytes") {
            config.set("queue.buffering.max.kbytes", PRODUCER_QUEUE_KIB);
        }
        let producer = config.create()?;
        Ok(Self { producer, gate })
    }

    /// The same producer without flow control, for topics no in-process consumer reads (in
    /// embedded mode their oldest messages may fall out of the mock broker's retention).
    pub fn unmetered(&self) -> EventProducer {
        EventProducer {
            producer: self.producer.clone(),
            gate: None,
        }
    }

    /// Hands one event to the producer, waiting for room in the flow-control budget and in the
    /// local queue. Events enqueued one after another keep their order per key.
    pub async fn enqueue(&self, event: OutgoingEvent<'_>) -> Result<PendingDelivery, PublishError> {
        let gate = match &self.gate {
            Some(gate) => {
                let cost = FlowGate::cost(event.key.len(), event.value.len());
                gate.acquire(cost).await;
                Some((gate.clone(), cost))
            }
            None => None,
        };
        let headers = OwnedHeaders::new_with_capacity(2)
            .insert(Header {
                key: HEADER_EVENT_ID,
                value: Some(event.event_id),
            })
            .insert(Header {
                key: HEADER_EVENT_TYPE,
                value: Some(event.event_type),
            });
        let mut record = FutureRecord::to(event.topic)
            .key(event.key)
            .payload(event.value)
            .headers(headers);
        loop {
            match self.producer.send_result(record) {
                Ok(future) => {
                    return Ok(PendingDelivery {
                        future,
                        gate,
                        counters: recoup_metrics::topic_counters(event.topic),
                    });
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Nothing after this event was enqueued yet, so waiting keeps the order.
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((error, _)) => {
                    recoup_metrics::topic_counters(event.topic).failed.inc();
                    if let Some((gate, cost)) = gate {
                        gate.release(cost);
                    }
                    return Err(PublishError::Kafka(error));
                }
            }
        }
    }

    /// Publishes one event and waits for the broker's acknowledgement.
    pub async fn publish(&self, event: OutgoingEvent<'_>) -> Result<Acknowledged, PublishError> {
        self.enqueue(event).await?.acknowledged().await
    }

    /// Waits up to `timeout` for every enqueued event to be acknowledged or failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
