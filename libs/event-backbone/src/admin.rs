//! Topic provisioning on real clusters through the admin API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::topics::TopicSpec;

/// What happened to one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicOutcome {
    Created,
    AlreadyExisted,
}

/// Creates every topic that does not exist yet; existing topics are left as they are.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &[TopicSpec],
    replication: i32,
    timeout: Duration,
) -> Result<Vec<(&'static str, TopicOutcome)>, KafkaError> {
    // An unreachable cluster fails here within the timeout, not after the admin request's own.
    let reachable = kafka.clone();
    tokio::task::spawn_blocking(move || describe_topics(&reachable, &[], timeout))
        .await
        .map_err(|_| KafkaError::AdminOp(RDKafkaErrorCode::Fail))??;
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().create()?;
    let retention: Vec<String> = topics.iter().map(|t| t.retention_ms.to_string()).collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&retention)
        .map(|(t, retention)| {
            NewTopic::new(t.name, t.partitions, TopicReplication::Fixed(replication))
                .set(
                    "cleanup.policy",
                    if t.compacted { "compact" } else { "delete" },
                )
                .set("retention.ms", retention)
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin.create_topics(&new_topics, &options).await?;
    let mut outcomes = Vec::new();
    for (spec, result) in topics.iter().zip(results) {
        match result {
            Ok(_) => outcomes.push((spec.name, TopicOutcome::Created)),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                outcomes.push((spec.name, TopicOutcome::AlreadyExisted))
            }
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(outcomes)
}

/// A topic as the cluster has it, next to what recoup creates it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub name: &'static str,
    /// `None`: the cluster does not have the topic.
    pub partitions: Option<i32>,
    /// What recoup creates it with.
    pub wanted_partitions: i32,
}

/// Asks the cluster which of `topics` it has, and with how many partitions.
pub fn describe_topics(
    kafka: &KafkaConfig,
    topics: &[TopicSpec],
    timeout: Duration,
) -> Result<Vec<TopicState>, KafkaError> {
    let client: BaseConsumer = kafka.client_config().create()?;
    let metadata = client.fetch_metadata(None, timeout).inspect_err(|_| {
        // Why the connections failed (a TLS handshake refused, a wrong SASL password) waits in
        // the client's queue: serving it puts the reason in the log, next to this error.
        for _ in 0..5 {
            let _ = client.poll(Duration::from_millis(20));
        }
    })?;
    Ok(topics
        .iter()
        .map(|spec| {
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == spec.name && t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .filter(|n| *n > 0);
            TopicState {
                name: spec.name,
                partitions,
                wanted_partitions: spec.partitions,
            }
        })
        .collect())
}

/// Why a service cannot start on a cluster.
#[derive(Debug, thiserror::Error)]
pub enum TopicCheckError {
    #[error("cannot read the topics of the Kafka cluster at {brokers}: {source}")]
    Kafka {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error(
        "the Kafka cluster at {brokers} lacks {}: {}; create them with `recoup topics ensure --kafka-brokers {brokers}` (`recoup topics list` shows their settings)",
        if missing.len() == 1 { "a topic recoup needs" } else { "topics recoup needs" },
        missing.join(", ")
    )]
    Missing {
        brokers: String,
        missing: Vec<&'static str>,
    },
}

/// Checks that the cluster has every topic in `topics`; the error names the missing ones.
pub fn check_topics(
    kafka: &KafkaConfig,
    topics: &[TopicSpec],
    timeout: Duration,
) -> Result<(), TopicCheckError> {
    let states =
        describe_topics(kafka, topics, timeout).map_err(|source| TopicCheckError::Kafka {
            brokers: kafka.brokers.clone(),
            source,
        })?;
    let missing: Vec<&'static str> = states
        .iter()
        .filter(|s| s.partitions.is_none())
        .map(|s| s.name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TopicCheckError::Missing {
            brokers: kafka.brokers.clone(),
            missing,
        })
    }
}
