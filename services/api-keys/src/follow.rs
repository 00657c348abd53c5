//! The access topic into a registry: read to its end at start, then followed as long as the
//! process runs. Every process that serves requests does this, which is how a key made or
//! revoked through one process reaches all of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use event_backbone::{EventConsumer, ReceivedEvent};
use rdkafka::error::KafkaError;
use recoup_runtime::shutdown::until_stopped;
use tokio::sync::watch;

use crate::registry::{Registry, record_of};

/// Most messages taken per batch.
const BATCH: usize = 256;

/// Assigns every partition of the consumer's topic from its start and takes what it holds,
/// up to the end each partition had when called, or until `timeout` ran out (then the
/// follower takes the rest). Returns how many records changed the registry.
pub async fn catch_up(
    registry: &Registry,
    consumer: Arc<EventConsumer>,
    timeout: Duration,
) -> Result<usize, KafkaError> {
    let asked = consumer.clone();
    let ends = tokio::task::spawn_blocking(move || {
        asked
            .partitions(timeout)?
            .into_iter()
            .map(|p| {
                asked
                    .watermarks(p, timeout)
                    .map(|(low, high)| (p, low, high))
            })
            .collect::<Result<Vec<_>, KafkaError>>()
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    let from_start: Vec<(i32, Option<i64>)> = ends.iter().map(|(p, _, _)| (*p, None)).collect();
    consumer.assign(&from_start)?;
    // The last offset to read in each partition that holds anything.
    let mut remaining: BTreeMap<i32, i64> = ends
        .into_iter()
        .filter(|(_, low, high)| high > low)
        .map(|(p, _, high)| (p, high - 1))
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changed = 0;
    while !remaining.is_empty() {
        let batch = match tokio::time::timeout_at(deadline, consumer.recv_batch(BATCH)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(error)) => {
                tracing::warn!(%error, "reading the access topic");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    partitions = ?remaining.keys().collect::<Vec<_>>(),
                    "the access topic was not read to its end in {timeout:?}; the rest follows"
                );
                break;
            }
        };
        for event in &batch {
            if let Some(kept) = take(registry, event) {
                tracing::debug!(key_id = %kept.id, "API key record taken");
                changed += 1;
            }
            if remaining
                .get(&event.partition)
                .is_some_and(|last| event.offset >= *last)
            {
                remaining.remove(&event.partition);
            }
        }
    }
    Ok(changed)
}

/// Takes what arrives on the topic until the process stops.
pub async fn follow(
    registry: Arc<Registry>,
    consumer: Arc<EventConsumer>,
    stop: watch::Receiver<bool>,
) {
    loop {
        match until_stopped(&stop, consumer.recv_batch(BATCH)).await {
            None => return,
            Some(Ok(batch)) => {
                for event in &batch {
                    if let Some(kept) = take(&registry, event) {
                        tracing::info!(
                            key_id = %kept.id,
                            revoked = kept.revoked_at.is_some(),
                            "API key record taken"
                        );
                    }
                }
            }
            Some(Err(error)) => {
                tracing::warn!(%error, "following the access topic");
                if until_stopped(&stop, tokio::time::sleep(Duration::from_secs(1)))
                    .await
                    .is_none()
                {
                    return;
                }
            }
        }
    }
}

/// Takes one message; the record kept when it changed the registry. A message that is no key
/// record is logged and skipped: the topic is written only by recoup, so it means a foreign
/// writer.
fn take(registry: &Registry, event: &ReceivedEvent) -> Option<recoup_proto::v1::ApiKey> {
    let record = match record_of(&event.key, &event.value) {
        Ok(record) => record,
        Err(why) => {
            tracing::warn!(
                partition = event.partition,
                offset = event.offset,
                %why,
                "skipped a message of the access topic"
            );
            return None;
        }
    };
    let id = record.id.clone();
    registry.take(record).unwrap_or_else(|error| {
        // The ring has it: requests are checked against it. Only the copy on disk lags, and
        // the topic brings it again at the next start.
        tracing::error!(%error, key_id = %id, "an API key record was not kept on disk");
        None
    })
}
