//! Collections deal read models (D16 rows, docs/domain.md §1 and §4), in one sled tree beside the case
//! read model (same database), so that a batch's changes and the consumer offsets after it are
//! one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `d` | tenant, public_id, created_at | revision (u64 BE) + encoded `CollectionsDealObserved`: the latest |
//! | `g` | tenant, pipeline, deal_stage_id, public_id, created_at | empty: deals by pipeline and stage |
//! | `h` | tenant, deal_stage_id, public_id, created_at | empty: deals by stage |
//! | `i` | tenant, due slot, public_id, created_at | empty: deals by dpd_due_date |
//! | `k` | tenant, public_id, created_at | empty: deals with `do_not_contact = true` |
//! | `f` | tenant, pipeline, deal_stage_id | funnel: deals (i64 BE) + amount_minor (i64 BE) |
//! | `u` | tenant, due slot | deals + amount_minor per dpd_due_date |
//! | `p` | tenant, channel (u8), 0 | deals + amount_minor of broken promises |
//! | `p` | tenant, channel (u8), 1, PTP day | deals + amount_minor of promises not broken, per PTP day |
//! | `b` | tenant, public_id | flagged deals of the borrower (u64 BE); present while it is on the DNC list |
//! | `q` | tenant | sequence of the tenant's last DNC list change (u64 BE) |
//!
//! and the offsets and rejects of [`crate::kernel`]. Keys are of `recoup_keys` (strings
//! length-prefixed, so a key prefix names whole fields; instants and days sort by time). A due
//! slot is `0` (no readable dpd_due_date) or `1` + the day. Absent pipeline and stage are empty
//! strings; absent amounts count as 0.
//!
//! DPD and PTP status depend on the day asked, so nothing per deal stores them: the totals per
//! due day and per PTP day answer any as-of day with one scan over distinct days.
//!
//! A deal's revision only grows: the same revision again (at-least-once delivery) and older
//! revisions are duplicates and change nothing; a newer one replaces the deal and moves every
//! total and index entry from the old content to the new one in the same batch.
//!
//! The do-not-contact list changes are published to watchers after the batch that made them is
//! written and flushed. Applying (through publishing) and subscribing (with reading the list)
//! take the same lock, so a watcher's snapshot plus the changes it receives are exactly the list.

mod apply;
mod facts;
mod keys;
mod queries;
mod watch;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use prost::Message;
use recoup_proto::v1;
use tokio::sync::broadcast;

pub use self::apply::Staged;
use self::watch::Feed;
use crate::cases::CaseReadModel;
use crate::kernel::{Counters, ReadModelError, upgrade_offsets_and_rejects};

pub use self::facts::{dpd_days, ptp_status};
pub use self::queries::{DealFilter, DealPage, ListDealsError, ListPosition};
pub use self::watch::{
    DoNotContactChange, DoNotContactList, DoNotContactWatch, ListChange, WatchError,
};
pub use collections::{DpdBucket, PtpChannel, PtpStatus};

/// How many applied batches with DNC changes a watcher may fall behind before it must take a
/// fresh snapshot.
pub const DEFAULT_FEED_CAPACITY: usize = 1024;

/// Deals and their amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DealTotals {
    /// Deals (their latest revision).
    pub deals: i128,
    /// Sum of `amount_minor` (absent counts as 0), minor units, exact (see [`Counters`]).
    pub amount_minor: i128,
}

impl Counters<2> for DealTotals {
    fn from_counters([deals, amount_minor]: [i128; 2]) -> Self {
        Self {
            deals,
            amount_minor,
        }
    }

    fn counters(&self) -> [i128; 2] {
        [self.deals, self.amount_minor]
    }
}

impl DealTotals {
    fn add(&mut self, other: DealTotals) {
        self.add_counters(other.counters());
    }
}

/// One pipeline stage of the funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelStage {
    /// Empty: deals without a pipeline.
    pub pipeline: String,
    /// Empty: deals without a stage.
    pub deal_stage_id: String,
    pub totals: DealTotals,
}

/// The promises of one channel on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtpTotals {
    pub open: DealTotals,
    pub kept: DealTotals,
    pub broken: DealTotals,
}

/// The collections deal read models.
///
/// Open it once per database and clone it: the clones share the do-not-contact change feed
/// (a second `open` has a feed of its own, which the first one's batches never reach).
#[derive(Clone)]
pub struct DealReadModel {
    tree: sled::Tree,
    feed: Arc<Feed>,
}

fn corrupt(key: impl AsRef<[u8]>, reason: &str) -> ReadModelError {
    ReadModelError::corrupt(key, reason)
}

fn decode_stored(
    key: &[u8],
    bytes: &[u8],
) -> Result<(u64, v1::CollectionsDealObserved), ReadModelError> {
    let revision = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(key, "deal entry"))?;
    let deal = v1::CollectionsDealObserved::decode(bytes.get(8..).unwrap_or_default())
        .map_err(|e| corrupt(key, &e.to_string()))?;
    Ok((revision, deal))
}

fn u64_value(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

impl DealReadModel {
    /// Opens the deal tree in the database of `cases`.
    pub fn open(cases: &CaseReadModel) -> Result<Self, ReadModelError> {
        Self::open_with_feed_capacity(cases, DEFAULT_FEED_CAPACITY)
    }

    /// [`DealReadModel::open`] with a feed that keeps `capacity` batches of changes (1 to
    /// 65,536) for watchers that fall behind.
    pub fn open_with_feed_capacity(
        cases: &CaseReadModel,
        capacity: usize,
    ) -> Result<Self, ReadModelError> {
        Self::open_in(cases.db(), "deals", capacity)
    }

    /// The read model in tree `tree` of `db` (a generation, see [`crate::generations`]), with a
    /// do-not-contact feed of its own keeping `capacity` batches.
    pub fn open_in(db: &sled::Db, tree: &str, capacity: usize) -> Result<Self, ReadModelError> {
        let (sender, _) = broadcast::channel(capacity.clamp(1, 1 << 16));
        let tree = db.open_tree(tree)?;
        upgrade_offsets_and_rejects(&tree)?;
        Ok(Self {
            tree,
            feed: Arc::new(Feed {
                turn: Mutex::new(()),
                sender,
                capacity: capacity.clamp(1, 1 << 16),
            }),
        })
    }

    /// The feed's capacity, for a generation built beside this one.
    pub(crate) fn feed_capacity(&self) -> usize {
        self.feed.capacity
    }

    /// Tells every watcher of this generation's feed that it was replaced: each takes a fresh
    /// snapshot (from the generation now live).
    pub(crate) fn retire(&self) {
        let _turn = self.turn();
        let _ = self.feed.sender.send(Arc::from(Vec::new()));
    }

    fn turn(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data, only the order of apply and subscribe: a panic while it was
        // held leaves nothing to repair.
        self.feed
            .turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
