//! The store writer: what Kafka acknowledged, remembered in order while the next batches are
//! published.

use tokio::sync::mpsc;

use super::pipeline::{Batch, Entry, Pending};
use crate::store::{ImportStore, SnapshotKey, StoreBatch, StoreError, Stored};
use event_backbone::producer::Acknowledged;

/// What the publisher hands to the store writer once Kafka acknowledged a batch.
pub(super) struct Remembered {
    pub writes: StoreBatch,
    /// Keys no longer pending once written.
    pub published: Vec<(SnapshotKey, Stored)>,
}

/// The store writer: applies acknowledged batches in order, then drops their keys from the
/// pending map (a later row of the upload then finds them in the store).
pub(super) fn write_batches(
    mut batches: mpsc::Receiver<Remembered>,
    store: &ImportStore,
    pending: &Pending,
) -> Result<(), StoreError> {
    while let Some(Remembered { writes, published }) = batches.blocking_recv() {
        store.apply(writes)?;
        if let Ok(mut pending) = pending.lock() {
            for (key, stored) in published {
                if pending.get(&key) == Some(&stored) {
                    pending.remove(&key);
                }
            }
        }
    }
    Ok(())
}

/// Hands the snapshots of `batch` that Kafka acknowledged to the writer.
pub(super) async fn remember_acknowledged(
    batch: Batch,
    acknowledged: Vec<(Entry, Acknowledged)>,
    remember: &mpsc::Sender<Remembered>,
) {
    let mut taken = vec![false; batch.changed.len()];
    for i in acknowledged.into_iter().filter_map(|(entry, _)| entry) {
        if let Some(taken) = taken.get_mut(i) {
            *taken = true;
        }
    }
    let mut writes = StoreBatch::default();
    let mut published = Vec::new();
    for (changed, _) in batch.changed.into_iter().zip(taken).filter(|(_, t)| *t) {
        writes.snapshot(&changed.key, changed.stored);
        writes.published(changed.envelope);
        published.push((changed.key, changed.stored));
    }
    if !published.is_empty() {
        let _ = remember.send(Remembered { writes, published }).await;
    }
}
