//! recoup's event backbone: the envelope every event travels in, the topics, Kafka producer and
//! consumer wrappers, the embedded Kafka cluster used when no brokers are configured, and the flow
//! control that keeps producers within what the embedded broker retains.

pub mod admin;
pub mod config;
pub mod consumer;
pub mod embedded;
pub mod envelope;
pub mod finalizer;
pub mod flow;
pub mod outbox;
pub mod producer;
pub mod reachability;
pub mod topics;

pub use config::KafkaConfig;
pub use consumer::{EventConsumer, ReceivedEvent};
pub use embedded::EmbeddedKafka;
pub use envelope::{EnvelopeError, EventMetadata, HEADER_EVENT_ID, HEADER_EVENT_TYPE};
pub use finalizer::{AckFinalizer, Settlement};
pub use flow::FlowGate;
pub use producer::{EventProducer, OutgoingEvent, PublishError};
pub use topics::TopicSpec;
