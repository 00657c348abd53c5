//! The transactional outbox's relay: records a service wrote together with its state are
//! published in append order (so in order per Kafka key), and each is removed from the outbox
//! only after the broker acknowledged it. After a crash whatever is left is sent again;
//! consumers drop duplicates by event id and version.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::finalizer::AckFinalizer;
use crate::producer::{EventProducer, OutgoingEvent, PublishError};

/// Records read from the outbox per round trip.
const BATCH: usize = 1024;

/// What the relay publishes; kept in the outbox until the broker acknowledged it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboxRecord {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub event_id: String,
    #[prost(string, tag = "4")]
    pub event_type: String,
    #[prost(bytes = "vec", tag = "5")]
    pub envelope: Vec<u8>,
}

/// Where a service keeps its outbox.
pub trait Outbox: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// About `max` records, oldest first, each with the key it is stored under. An outbox that
    /// stores records in groups may end with a whole group past `max`.
    fn pending(&self, max: usize) -> Result<Vec<(Vec<u8>, OutboxRecord)>, Self::Error>;

    /// Removes published records. A removal lost in a crash only means the record is sent
    /// again.
    fn remove(&self, keys: &[Vec<u8>]) -> Result<(), Self::Error>;

    /// Notified whenever records are appended.
    fn appended(&self) -> Arc<Notify>;

    /// Records waiting.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a relay pass stopped early; the records stay in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum RelayError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(E),
}

/// Moves outbox records to Kafka.
pub struct OutboxRelay<O> {
    outbox: O,
    producer: Arc<EventProducer>,
}

impl<O: Clone> Clone for OutboxRelay<O> {
    fn clone(&self) -> Self {
        Self {
            outbox: self.outbox.clone(),
            producer: self.producer.clone(),
        }
    }
}

impl<O: Outbox> OutboxRelay<O> {
    pub fn new(outbox: O, producer: Arc<EventProducer>) -> Self {
        Self { outbox, producer }
    }

    /// Publishes until the outbox is empty; returns how many records were published.
    pub async fn publish_pending(&self) -> Result<usize, RelayError<O::Error>> {
        let mut total = 0;
        loop {
            let batch = self.outbox.pending(BATCH).map_err(RelayError::Store)?;
            if batch.is_empty() {
                return Ok(total);
            }
            let mut finalizer = AckFinalizer::with_capacity(batch.len());
            for (key, record) in &batch {
                let event = OutgoingEvent {
                    topic: &record.topic,
                    key: &record.key,
                    value: &record.envelope,
                    event_id: &record.event_id,
                    event_type: &record.event_type,
                };
                if !finalizer.push(&self.producer, event, key.clone()).await {
                    break;
                }
            }
            // Remove the acknowledged prefix only: a record after a failed one is kept and sent
            // again, so the order per key survives a retry.
            let (acknowledged, refusal) = finalizer.settle().await.prefix();
            let keys: Vec<Vec<u8>> = acknowledged.into_iter().map(|(key, _)| key).collect();
            self.outbox.remove(&keys).map_err(RelayError::Store)?;
            total += keys.len();
            if let Some(error) = refusal {
                return Err(error.into());
            }
        }
    }

    /// Runs until `shutdown` turns true, then drains what is left (bounded by `drain_timeout`).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
        let appended = self.outbox.appended();
        let mut backoff = Duration::from_millis(100);
        loop {
            let notified = appended.notified();
            // Interruptible: records of an interrupted pass stay in the outbox for the drain.
            let pass = tokio::select! {
                r = self.publish_pending() => r,
                _ = shutdown.changed() => break,
            };
            let wait = match pass {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    Duration::from_secs(1)
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "outbox relay could not publish; records stay in the outbox");
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
                changed = shutdown.changed() => if changed.is_err() { break },
            }
            if *shutdown.borrow() {
                break;
            }
        }
        match tokio::time::timeout(drain_timeout, self.publish_pending()).await {
            Ok(Ok(n)) => tracing::info!(published = n, "outbox drained"),
            Ok(Err(error)) => {
                tracing::warn!(%error, left = self.outbox.len(), "outbox not drained; it is resent at the next start")
            }
            Err(_) => tracing::warn!(
                left = self.outbox.len(),
                "outbox drain timed out; it is resent at the next start"
            ),
        }
    }
}
