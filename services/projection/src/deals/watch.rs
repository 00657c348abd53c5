//! The do-not-contact list of a tenant and its live change feed: changes are published to
//! watchers after the batch that made them is written and flushed. Applying (through
//! publishing) and subscribing (with reading the list) take the same lock, so a watcher's
//! snapshot plus the changes it receives are exactly the list.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use recoup_keys::KeyReader;
use tokio::sync::broadcast;

use super::keys::tenant_prefix;
use super::{DealReadModel, corrupt};
use crate::kernel::ReadModelError;

/// Whether a borrower joined or left the do-not-contact list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListChange {
    Added,
    Removed,
}

/// One change of a tenant's do-not-contact list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoNotContactChange {
    pub tenant: String,
    /// The borrower.
    pub public_id: String,
    pub change: ListChange,
    /// Consecutive per tenant, from 1.
    pub sequence: u64,
    /// The `occurred_at` (the row's updated_at) of the event that made the change.
    pub changed_at: DateTime<Utc>,
}

/// A tenant's do-not-contact list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoNotContactList {
    /// Borrowers (public_id) with at least one flagged deal, in byte order.
    pub borrowers: Vec<String>,
    /// The sequence of the last change the list includes (0: none yet).
    pub sequence: u64,
}

/// Why a watcher cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Changes were dropped before this watcher took them, or the read model was rebuilt and
    /// switched: take a fresh snapshot.
    #[error("the watcher fell behind; take a fresh snapshot")]
    Lagged,
    /// The read model is gone.
    #[error("the read model is closed")]
    Closed,
}

pub(super) type ChangeBatch = Arc<[DoNotContactChange]>;

/// The changes of one tenant's do-not-contact list after a snapshot, in sequence order.
#[derive(Debug)]
pub struct DoNotContactWatch {
    tenant: String,
    receiver: broadcast::Receiver<ChangeBatch>,
    pending: VecDeque<DoNotContactChange>,
}

impl DoNotContactWatch {
    /// The next change (cancel-safe).
    pub async fn next(&mut self) -> Result<DoNotContactChange, WatchError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            match self.receiver.recv().await {
                Ok(batch) if batch.is_empty() => return Err(WatchError::Lagged),
                Ok(batch) => self.take(&batch),
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(WatchError::Lagged),
                Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }

    /// The next change if one was published already.
    pub fn try_next(&mut self) -> Result<Option<DoNotContactChange>, WatchError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(change));
            }
            match self.receiver.try_recv() {
                Ok(batch) if batch.is_empty() => return Err(WatchError::Lagged),
                Ok(batch) => self.take(&batch),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(_)) => return Err(WatchError::Lagged),
                Err(broadcast::error::TryRecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }

    fn take(&mut self, batch: &[DoNotContactChange]) {
        self.pending
            .extend(batch.iter().filter(|c| c.tenant == self.tenant).cloned());
    }
}

/// The change feed shared by every clone of one read model.
pub(super) struct Feed {
    /// Held by `apply_batch` from its first read through publishing, and by a subscription
    /// while it reads the list.
    pub turn: Mutex<()>,
    /// An empty batch means the generation was replaced ([`DealReadModel::retire`]).
    pub sender: broadcast::Sender<ChangeBatch>,
    pub capacity: usize,
}

impl DealReadModel {
    /// The tenant's do-not-contact list.
    pub fn do_not_contact_list(&self, tenant: &str) -> Result<DoNotContactList, ReadModelError> {
        let prefix = tenant_prefix(b'b', tenant);
        let mut borrowers = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let public_id = KeyReader::tail(&key[prefix.len()..])
                .str_bytes()
                .ok_or_else(|| corrupt(&key, "borrower key"))?;
            borrowers.push(String::from_utf8_lossy(public_id).into_owned());
        }
        borrowers.sort_unstable();
        Ok(DoNotContactList {
            borrowers,
            sequence: self.sequence(tenant)?,
        })
    }

    /// The tenant's do-not-contact list and the changes after it: no change between the two
    /// is missed or received twice. Blocks while a batch is being applied.
    pub fn watch_do_not_contact(
        &self,
        tenant: &str,
    ) -> Result<(DoNotContactList, DoNotContactWatch), ReadModelError> {
        let _turn = self.turn();
        let receiver = self.feed.sender.subscribe();
        let list = self.do_not_contact_list(tenant)?;
        Ok((
            list,
            DoNotContactWatch {
                tenant: tenant.to_owned(),
                receiver,
                pending: VecDeque::new(),
            },
        ))
    }

    /// Watchers subscribed now (every [`DoNotContactWatch`] not yet dropped).
    pub fn watcher_count(&self) -> usize {
        self.feed.sender.receiver_count()
    }
}
