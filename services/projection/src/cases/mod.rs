//! The case read model, in one sled tree, so that the read-model changes of a batch of messages
//! and the consumer offsets after it are written by one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | tenant, case id | encoded `recoup.v1.DebtCase` |
//! | `s` | tenant, state (u8), case id | empty: cases by state |
//! | `t` | tenant, state (u8), currency | count, amount, collected (3 × i128 BE) |
//! | `v` | tenant, case id | last applied version (u64 BE) of a deleted case (a held case carries its own) |
//! | `p` | tenant, case id, version (u64) | envelope that arrived before its predecessor |
//! | `y` | tenant, case id, version (u64) | a parked event that could not be applied when its turn came, with the reason |
//! | `h` | tenant, case id, version (u64) | the audit trail's entries one batch applied to the case, up to this version (`history`); kept after a deletion |
//!
//! and the offsets and rejects of [`crate::kernel`]. Keys are of `recoup_keys`; a tree written
//! before that codec (layout 1, tree `read_model`) is copied into this one when opened.

mod apply;
mod history;
mod in_flight;
mod keys;
mod queries;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use recoup_keys::store::StoreOptions;
use recoup_proto::contract::aggregate::DEBT_CASE as DEBT_CASE_AGGREGATE;

pub use self::apply::{Staged, Written};
pub use self::history::entries_by_version as history_by_version;
use self::in_flight::InFlight;
use self::keys::{upgraded, version_key};
use crate::kernel::{Counters, Projection, ReadModelError, Step};

/// The tree of the case read model.
const TREE: &str = "cases";
/// Its tree before the key codec.
const OLD_TREE: &str = "read_model";

/// Per-state totals of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub count: i128,
    /// Minor units, exact (see [`Counters`]).
    pub amount_minor: i128,
    /// Minor units, exact.
    pub collected_minor: i128,
}

impl Counters<3> for Totals {
    fn from_counters([count, amount_minor, collected_minor]: [i128; 3]) -> Self {
        Totals {
            count,
            amount_minor,
            collected_minor,
        }
    }

    fn counters(&self) -> [i128; 3] {
        [self.count, self.amount_minor, self.collected_minor]
    }
}

/// The case read model.
#[derive(Clone)]
pub struct CaseReadModel {
    db: sled::Db,
    tree: sled::Tree,
    /// Events parked under `p`, or more (a batch's parked events count from when it is staged,
    /// its unparked ones once it is written); while zero, no lookup for a parked successor is
    /// needed.
    parked: Arc<AtomicUsize>,
    /// Batches staged and not yet written, while batches are pipelined.
    in_flight: InFlight,
}

impl CaseReadModel {
    /// Opens (or creates) the read model in `dir`, its database as by default.
    pub fn open(dir: &Path) -> Result<Self, ReadModelError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the read model in `dir`, its database as `options` say.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, ReadModelError> {
        let db = recoup_keys::store::open(dir, options)?;
        Self::open_in(&db, TREE)
    }

    /// The read model in tree `tree` of `db` (a generation, see [`crate::generations`]).
    pub fn open_in(db: &sled::Db, tree: &str) -> Result<Self, ReadModelError> {
        let tree = if tree == TREE {
            // A tree of layout 1 is copied into the codec's first.
            recoup_keys::layout::open_upgraded(db, TREE, OLD_TREE, upgraded)?.0
        } else {
            let tree = db.open_tree(tree)?;
            // A generation built now is of the codec's layout from its first entry.
            if tree.is_empty() {
                let mut batch = sled::Batch::default();
                recoup_keys::layout::mark_codec_layout(&mut batch);
                tree.apply_batch(batch)?;
            }
            tree
        };
        let parked = tree.scan_prefix(b"p").count();
        Ok(Self {
            db: db.clone(),
            tree,
            parked: Arc::new(AtomicUsize::new(parked)),
            in_flight: InFlight::default(),
        })
    }

    /// The database, for read models kept beside this one.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    fn deleted_version(&self, tenant: &str, case_id: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(version_key(tenant, case_id))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }
}

impl Projection for CaseReadModel {
    type Staged = Staged;
    type Written = Written;

    fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    fn apply(&self, bytes: &[u8], staged: &mut Staged) -> Result<Step, ReadModelError> {
        self.apply_message(bytes, staged)
    }

    fn batch(staged: &mut Staged) -> &mut sled::Batch {
        staged.batch()
    }

    fn stage_writes(&self, staged: Staged) -> Result<(sled::Batch, Written), ReadModelError> {
        self.stage_cases(staged)
    }

    /// A batch in flight writes its parked events and rejects atomically, then the rest key by
    /// key, in key order (see [`Projection::pipelines`]).
    fn write_staged(&self, batch: sled::Batch, mut written: Written) -> Result<(), ReadModelError> {
        self.tree.apply_batch(batch)?;
        let mut loose = std::mem::take(&mut written.loose);
        // Stable: of two writes of one key, the later stays later.
        loose.sort_by(|a, b| a.0.cmp(&b.0));
        for (k, v) in loose {
            match v {
                Some(v) => self.tree.insert(k, v)?,
                None => self.tree.remove(k)?,
            };
        }
        self.written(written)
    }

    fn written(&self, written: Written) -> Result<(), ReadModelError> {
        let unparked = written.unparked();
        // Never below zero, whatever a count at opening missed.
        let _ = self
            .parked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(unparked))
            });
        if written.in_flight {
            self.in_flight.written();
        }
        Ok(())
    }

    fn pipelines(&self) -> bool {
        true
    }

    fn set_pipelined(&self, on: bool) {
        self.in_flight.set_on(on);
    }

    /// Messages kept because they could not be applied, on arrival or when they were parked
    /// and their turn came.
    fn rejected_count(&self) -> usize {
        self.tree.scan_prefix(b"x").count() + self.tree.scan_prefix(b"y").count()
    }
}
