//! The case read model, in one sled tree, so that the read-model changes of a batch of messages
//! and the consumer offsets after it are written by one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | tenant, case id | encoded `recoup.v1.DebtCase` |
//! | `s` | tenant, state (u8), case id | empty: cases by state |
//! | `t` | tenant, state (u8), currency | count, amount, collected (3 × i64 BE) |
//! | `v` | tenant, case id | last applied version (u64 BE) of a deleted case (a held case carries its own) |
//! | `p` | tenant, case id, version (u64) | envelope that arrived before its predecessor |
//! | `y` | tenant, case id, version (u64) | a parked event that could not be applied when its turn came, with the reason |
//! | `h` | tenant, case id, version (u64) | encoded `recoup.v1.CaseHistoryEntry`: the audit trail, kept after a deletion |
//!
//! and the offsets and rejects of [`crate::kernel`]. Keys are of `recoup_keys`; a tree written
//! before that codec (layout 1, tree `read_model`) is copied into this one when opened.

mod keys;
mod queries;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use debt_cases::DebtCase;
use event_backbone::envelope::{decode_envelope, occurred_at};
use prost::Message;
use recoup_keys::store::StoreOptions;
use recoup_proto::contract::aggregate::DEBT_CASE as DEBT_CASE_AGGREGATE;
use recoup_proto::convert::{case_to_proto, event_from_payload};
use recoup_proto::v1;

use self::keys::{
    case_key, history_key, parked_rejected_key, pending_key, state_key, stats_key, upgraded,
    version_key,
};
use crate::kernel::{Counters, Projection, ReadModelError, Step, envelope_of, reason_and};

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

impl Totals {
    fn add(&mut self, case: &DebtCase, sign: i64) {
        let sign = i128::from(sign);
        self.add_counters([
            sign,
            sign * i128::from(case.amount_minor),
            sign * i128::from(case.collected_minor),
        ]);
    }
}

/// The case read model.
#[derive(Clone)]
pub struct CaseReadModel {
    db: sled::Db,
    tree: sled::Tree,
    /// Events parked under `p`; while zero, no lookup for a parked successor is needed.
    parked: Arc<AtomicUsize>,
}

/// Changes of one batch, before they are written.
#[derive(Default)]
pub struct Staged {
    cases: HashMap<(String, String), Option<DebtCase>>,
    versions: HashMap<(String, String), u64>,
    stats: BTreeMap<Vec<u8>, Totals>,
    /// Events parked by this batch (also in `batch`), so a later message of it can follow them.
    pending: HashMap<Vec<u8>, Vec<u8>>,
    /// Cases written by this batch: true when held, false when deleted.
    written: HashMap<(String, String), bool>,
    /// Events parked minus events unparked by this batch.
    parked_delta: isize,
    batch: sled::Batch,
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
        })
    }

    /// The database, for read models kept beside this one.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Applies one in-order event; `Err(reason)` when it cannot be applied.
    fn apply_envelope(
        &self,
        envelope: &v1::EventEnvelope,
        id: &(String, String),
        staged: &mut Staged,
    ) -> Result<Result<(), String>, ReadModelError> {
        let Some(at) = occurred_at(envelope) else {
            return Ok(Err("occurred_at is missing".into()));
        };
        let event =
            match event_from_payload(&envelope.event_type, &envelope.payload, &id.1, &id.0, at) {
                Ok(e) => e,
                Err(e) => return Ok(Err(e.to_string())),
            };
        let before = self.take_case_staged(id, staged)?;
        let after = match (&before, DebtCase::from_created(&event)) {
            (None, Some(created)) => Ok(created),
            (None, None) => Err(format!(
                "{} for a case the read model does not hold",
                envelope.event_type
            )),
            (Some(_), Some(_)) => Err("second creation of the same case".into()),
            (Some(case), None) => {
                let mut case = case.clone();
                case.apply(&event);
                Ok(case)
            }
        }
        .and_then(|after| {
            if after.version == envelope.aggregate_version {
                Ok(after)
            } else {
                Err(format!(
                    "event says version {}, applying it gives {}",
                    envelope.aggregate_version, after.version
                ))
            }
        });
        let after = match after {
            Ok(after) => after,
            Err(reason) => {
                // Put back what was taken, a staged deletion (`None`) included: dropping it
                // would leave the deleted case's entry in the tree and its version unrecorded.
                staged.cases.insert(id.clone(), before);
                return Ok(Err(reason));
            }
        };
        let deleted = after.deleted_on.is_some();
        // The state index changes only when the state does.
        let old_state = before.as_ref().map(|b| b.state);
        let new_state = (!deleted).then_some(after.state);
        if let Some(b) = &before {
            self.stage_stats(staged, b, -1)?;
        }
        if old_state != new_state {
            if let Some(state) = old_state {
                staged
                    .batch
                    .remove(state_key(&id.0, state, &id.1).into_vec());
            }
            if let Some(state) = new_state {
                staged
                    .batch
                    .insert(state_key(&id.0, state, &id.1).into_vec(), &[] as &[u8]);
            }
        }
        staged.batch.insert(
            history_key(&id.0, &id.1, after.version).into_vec(),
            history_entry(envelope).encode_to_vec(),
        );
        staged.versions.insert(id.clone(), after.version);
        if deleted {
            staged.cases.insert(id.clone(), None);
        } else {
            self.stage_stats(staged, &after, 1)?;
            staged.cases.insert(id.clone(), Some(after));
        }
        Ok(Ok(()))
    }

    fn stage_stats(
        &self,
        staged: &mut Staged,
        case: &DebtCase,
        sign: i64,
    ) -> Result<(), ReadModelError> {
        let k = stats_key(&case.tenant, case.state, &case.currency).into_vec();
        let totals = match staged.stats.get_mut(&k) {
            Some(t) => t,
            None => {
                let stored = self
                    .tree
                    .get(&k)?
                    .map(|v| Totals::decode(&v))
                    .unwrap_or_default();
                staged.stats.entry(k).or_insert(stored)
            }
        };
        totals.add(case, sign);
        Ok(())
    }

    /// Moves the batch's changes into its `sled::Batch`.
    fn stage_cases(&self, staged: &mut Staged) -> Result<(), ReadModelError> {
        for ((tenant, case_id), case) in staged.cases.drain() {
            let k = case_key(&tenant, &case_id).into_vec();
            staged
                .written
                .insert((tenant.clone(), case_id.clone()), case.is_some());
            match &case {
                Some(c) => staged.batch.insert(k, case_to_proto(c).encode_to_vec()),
                None => staged.batch.remove(k),
            }
        }
        // A held case carries its version; the version index keeps only deleted cases'.
        for ((tenant, case_id), version) in staged.versions.drain() {
            if matches!(
                staged.written.get(&(tenant.clone(), case_id.clone())),
                Some(false)
            ) {
                staged.batch.insert(
                    version_key(&tenant, &case_id).into_vec(),
                    &version.to_be_bytes(),
                );
            }
        }
        for (k, totals) in std::mem::take(&mut staged.stats) {
            if totals == Totals::default() {
                staged.batch.remove(k);
            } else {
                staged.batch.insert(k, totals.encode());
            }
        }
        Ok(())
    }

    fn applied_version_staged(
        &self,
        id: &(String, String),
        staged: &mut Staged,
    ) -> Result<u64, ReadModelError> {
        if let Some(v) = staged.versions.get(id) {
            return Ok(*v);
        }
        // A case still held carries its version; only unknown or deleted ones need the index.
        if let Some(case) = self.case(&id.0, &id.1)? {
            let version = case.version;
            staged.cases.insert(id.clone(), Some(case));
            return Ok(version);
        }
        self.deleted_version(&id.0, &id.1)
    }

    fn deleted_version(&self, tenant: &str, case_id: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(version_key(tenant, case_id))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
    }

    /// The case as this batch sees it, taken out of the staged changes (put back by the caller).
    fn take_case_staged(
        &self,
        id: &(String, String),
        staged: &mut Staged,
    ) -> Result<Option<DebtCase>, ReadModelError> {
        if let Some(c) = staged.cases.remove(id) {
            return Ok(c);
        }
        self.case(&id.0, &id.1)
    }
}

/// The audit trail's entry of an applied event.
fn history_entry(envelope: &v1::EventEnvelope) -> v1::CaseHistoryEntry {
    v1::CaseHistoryEntry {
        version: envelope.aggregate_version,
        event_type: envelope.event_type.clone(),
        occurred_at: envelope.occurred_at,
        actor: envelope.actor.clone(),
        correlation_id: envelope.correlation_id.clone(),
        event_id: envelope.event_id.clone(),
    }
}

impl Projection for CaseReadModel {
    type Staged = Staged;
    /// Events parked minus events unparked by the batch.
    type Written = isize;

    fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    fn apply(&self, bytes: &[u8], staged: &mut Staged) -> Result<Step, ReadModelError> {
        let envelope = match envelope_of(bytes, DEBT_CASE_AGGREGATE) {
            Ok(e) => e,
            Err(reason) => return Ok(Step::Rejected(reason)),
        };
        let id = (envelope.tenant.clone(), envelope.aggregate_id.clone());
        let applied = self.applied_version_staged(&id, staged)?;
        let version = envelope.aggregate_version;
        if version <= applied {
            return Ok(Step::Duplicate);
        }
        if version > applied + 1 {
            let k = pending_key(&id.0, &id.1, version).into_vec();
            // The same early event may come twice; count it once.
            if !staged.pending.contains_key(&k) && !self.tree.contains_key(&k)? {
                staged.parked_delta += 1;
            }
            staged.pending.insert(k.clone(), bytes.to_vec());
            staged.batch.insert(k, bytes);
            return Ok(Step::Parked);
        }
        let mut count = 0;
        let mut next: Option<Vec<u8>> = None;
        let mut current = envelope;
        loop {
            if let Err(reason) = self.apply_envelope(&current, &id, staged)? {
                if count == 0 {
                    return Ok(Step::Rejected(reason));
                }
                // A parked event that cannot be applied either: keep it among the rejects.
                if let Some(k) = next.take() {
                    tracing::error!(tenant = %id.0, case_id = %id.1, %reason, "parked event cannot be applied; kept in the read model's rejects");
                    let value = reason_and(reason, &current.encode_to_vec());
                    staged.pending.remove(&k);
                    staged.batch.remove(k);
                    staged.parked_delta -= 1;
                    staged.batch.insert(
                        parked_rejected_key(&id.0, &id.1, current.aggregate_version).into_vec(),
                        value,
                    );
                }
                return Ok(Step::Applied(count));
            }
            count += 1;
            if let Some(k) = next.take() {
                staged.pending.remove(&k);
                staged.batch.remove(k);
                staged.parked_delta -= 1;
            }
            if staged.pending.is_empty() && self.parked.load(Ordering::Relaxed) == 0 {
                break;
            }
            // An event parked earlier may now follow.
            let k = pending_key(&id.0, &id.1, current.aggregate_version + 1).into_vec();
            let parked = match staged.pending.get(&k) {
                Some(bytes) => Some(bytes.clone()),
                None => self.tree.get(&k)?.map(|v| v.to_vec()),
            };
            match parked {
                Some(bytes) => match decode_envelope(&bytes) {
                    Ok(e) => {
                        current = e;
                        next = Some(k);
                    }
                    Err(_) => break,
                },
                None => break,
            }
        }
        Ok(Step::Applied(count))
    }

    fn batch(staged: &mut Staged) -> &mut sled::Batch {
        &mut staged.batch
    }

    fn stage_writes(&self, mut staged: Staged) -> Result<(sled::Batch, isize), ReadModelError> {
        self.stage_cases(&mut staged)?;
        Ok((staged.batch, staged.parked_delta))
    }

    fn written(&self, parked_delta: isize) -> Result<(), ReadModelError> {
        if parked_delta >= 0 {
            self.parked
                .fetch_add(parked_delta as usize, Ordering::Relaxed);
        } else {
            self.parked
                .fetch_sub(parked_delta.unsigned_abs(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Messages kept because they could not be applied, on arrival or when they were parked
    /// and their turn came.
    fn rejected_count(&self) -> usize {
        self.tree.scan_prefix(b"x").count() + self.tree.scan_prefix(b"y").count()
    }
}
