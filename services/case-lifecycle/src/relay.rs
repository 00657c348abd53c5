//! The case store's outbox, published by the backbone's relay
//! ([`event_backbone::outbox::OutboxRelay`]): stored events go to Kafka in append order (so in
//! order per case), each removed from the outbox only after the broker acknowledged it.

use std::sync::Arc;

use event_backbone::outbox::{Outbox, OutboxRecord};
use tokio::sync::Notify;

use crate::store::{EventStore, StoreError};

/// The relay of the case store's outbox.
pub type OutboxRelay = event_backbone::outbox::OutboxRelay<EventStore>;
/// Why a relay pass stopped early.
pub type RelayError = event_backbone::outbox::RelayError<StoreError>;

impl Outbox for EventStore {
    type Error = StoreError;

    fn pending(&self, max: usize) -> Result<Vec<(Vec<u8>, OutboxRecord)>, StoreError> {
        Ok(self
            .outbox_batch(max)?
            .into_iter()
            .map(|(key, record)| (key.to_vec(), record))
            .collect())
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let keys: Vec<sled::IVec> = keys
            .iter()
            .map(|k| sled::IVec::from(k.as_slice()))
            .collect();
        self.remove_from_outbox(&keys)
    }

    fn appended(&self) -> Arc<Notify> {
        EventStore::appended(self)
    }

    fn len(&self) -> usize {
        self.outbox_len()
    }
}
