//! Batches staged but not yet written, while a rebuild pipelines them
//! ([`crate::kernel::apply_recorded_batches`]): the next batch is staged while the one before
//! is written on another thread, so what that batch reads of the tree (cases, totals, parked
//! events) it reads here first, newest batch first.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use debt_cases::DebtCase;

use super::Totals;

/// A case, by tenant and id.
pub(super) type CaseId = (String, String);

/// What one batch writes of what a later batch reads.
#[derive(Default)]
pub(super) struct Batch {
    /// Every case the batch changed: as it is after it (`None`: deleted) and its version.
    pub cases: HashMap<CaseId, (Option<DebtCase>, u64)>,
    /// Totals after it, by key (zero: removed).
    pub totals: HashMap<Vec<u8>, Totals>,
    /// Parked events it writes (`Some`) or removes (`None`), by key.
    pub parked: HashMap<Vec<u8>, Option<Vec<u8>>>,
}

/// The batches in flight, oldest first.
#[derive(Clone, Default)]
pub(super) struct InFlight {
    on: Arc<AtomicBool>,
    batches: Arc<Mutex<VecDeque<Arc<Batch>>>>,
}

/// The batches in flight when a batch began staging, newest first: those written since are in
/// the tree and read the same here.
pub(super) type Snapshot = Vec<Arc<Batch>>;

impl InFlight {
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
        if !on {
            self.lock().clear();
        }
    }

    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::SeqCst)
    }

    /// A batch handed to the writer.
    pub fn push(&self, batch: Batch) {
        self.lock().push_back(Arc::new(batch));
    }

    /// The oldest batch was written.
    pub fn written(&self) {
        self.lock().pop_front();
    }

    pub fn snapshot(&self) -> Snapshot {
        if !self.is_on() {
            return Vec::new();
        }
        self.lock().iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Batch>>> {
        self.batches.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The newest answer a batch in flight has for a key, if any has one.
pub(super) fn newest<'a, K, V>(
    snapshot: &'a Snapshot,
    map: impl Fn(&'a Batch) -> &'a HashMap<K, V>,
    key: &K,
) -> Option<&'a V>
where
    K: std::hash::Hash + Eq + 'a,
    V: 'a,
{
    snapshot.iter().find_map(|batch| map(batch).get(key))
}
