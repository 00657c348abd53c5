//! The outbox relay: publishes stored events to Kafka in append order (so in order per case) and
//! removes each from the outbox only after the broker acknowledged it. After a crash whatever is
//! left is sent again; consumers drop duplicates by event id and version.

use std::sync::Arc;
use std::time::Duration;

use event_backbone::finalizer::AckFinalizer;
use event_backbone::producer::{EventProducer, OutgoingEvent, PublishError};
use tokio::sync::watch;

use crate::store::{EventStore, StoreError};

/// Records read from the outbox per round trip.
const BATCH: usize = 1024;

/// Why a relay pass stopped early; the records stay in the outbox.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Moves outbox records to Kafka.
#[derive(Clone)]
pub struct OutboxRelay {
    store: EventStore,
    producer: Arc<EventProducer>,
}

impl OutboxRelay {
    pub fn new(store: EventStore, producer: Arc<EventProducer>) -> Self {
        Self { store, producer }
    }

    /// Publishes until the outbox is empty; returns how many records were published.
    pub async fn publish_pending(&self) -> Result<usize, RelayError> {
        let mut total = 0;
        loop {
            let batch = self.store.outbox_batch(BATCH)?;
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
            // again, so the order per case survives a retry.
            let (acknowledged, refusal) = finalizer.settle().await.prefix();
            let keys: Vec<sled::IVec> = acknowledged.into_iter().map(|(key, _)| key).collect();
            self.store.remove_from_outbox(&keys)?;
            total += keys.len();
            if let Some(error) = refusal {
                return Err(error.into());
            }
        }
    }

    /// Runs until `shutdown` turns true, then drains what is left (bounded by `drain_timeout`).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
        let appended = self.store.appended();
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
                tracing::warn!(%error, left = self.store.outbox_len(), "outbox not drained; it is resent at the next start")
            }
            Err(_) => tracing::warn!(
                left = self.store.outbox_len(),
                "outbox drain timed out; it is resent at the next start"
            ),
        }
    }
}
