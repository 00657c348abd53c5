//! Topic provisioning on real clusters through the admin API.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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
    let options = AdminOptions::new().operation_timeout(Some(timeout));
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
