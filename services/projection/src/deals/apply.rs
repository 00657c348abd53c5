//! Applying deal events: a newer revision replaces the deal and moves every total and index
//! entry from its old content to the new one, and the borrower's do-not-contact count.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use collections::d16::DATASET as DEALS_DATASET;
use event_backbone::envelope::{decode_envelope, occurred_at};
use prost::Message;
use recoup_proto::contract::aggregate::COLLECTIONS_DEAL as DEAL_AGGREGATE;
use recoup_proto::contract::event_type::COLLECTIONS_DEAL_OBSERVED as DEAL_EVENT_TYPE;
use recoup_proto::{from_timestamp, v1};

use super::facts::Facts;
use super::keys::{borrower_key, deal_key, deal_tail, sequence_key};
use super::watch::{DoNotContactChange, ListChange};
use super::{DealReadModel, DealTotals, decode_stored, u64_value};
use crate::kernel::{Counters, Projection, ReadModelError, Step};

/// A `CollectionsDealObserved` event, checked.
struct ObservedDeal {
    tenant: String,
    deal: v1::CollectionsDealObserved,
    created_at: DateTime<Utc>,
    /// The event's `occurred_at` (the row's `updated_at`).
    changed_at: DateTime<Utc>,
    /// The encoded deal, kept as it came.
    payload: Vec<u8>,
}

impl ObservedDeal {
    /// The deal in `bytes`; `None` for a row of another dataset; why it does not belong in this
    /// read model otherwise.
    fn decode(bytes: &[u8]) -> Result<Option<Self>, String> {
        let envelope = decode_envelope(bytes).map_err(|e| e.to_string())?;
        if envelope.aggregate_type != DEAL_AGGREGATE {
            return Err(format!(
                "aggregate type {:?} does not belong on this topic",
                envelope.aggregate_type
            ));
        }
        if envelope.event_type != DEAL_EVENT_TYPE {
            return Err(format!(
                "event type {:?} is not {DEAL_EVENT_TYPE}",
                envelope.event_type
            ));
        }
        let deal = v1::CollectionsDealObserved::decode(envelope.payload.as_slice())
            .map_err(|e| format!("payload does not decode: {e}"))?;
        if deal.dataset != DEALS_DATASET {
            return Ok(None);
        }
        if deal.public_id.is_empty() {
            return Err("CollectionsDealObserved without public_id".into());
        }
        let created_at = deal
            .created_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or("CollectionsDealObserved without a valid created_at")?;
        if deal.revision != envelope.aggregate_version {
            return Err(format!(
                "payload revision {} is not the envelope's version {}",
                deal.revision, envelope.aggregate_version
            ));
        }
        let changed_at = occurred_at(&envelope).ok_or("occurred_at is missing")?;
        Ok(Some(Self {
            tenant: envelope.tenant,
            deal,
            created_at,
            changed_at,
            payload: envelope.payload,
        }))
    }
}

/// The deal a change is about.
#[derive(Clone, Copy)]
struct Change<'a> {
    tenant: &'a str,
    public_id: &'a str,
    tail: &'a [u8],
    changed_at: DateTime<Utc>,
}

pub(super) struct StagedDeal {
    pub revision: u64,
    pub facts: Facts,
    pub payload: Vec<u8>,
}

/// A borrower whose flagged deals this batch changed.
pub(super) struct Borrower {
    /// Flagged deals before the batch.
    pub before: u64,
    pub after: u64,
    pub changed_at: DateTime<Utc>,
}

/// Changes of one batch, before they are written.
#[derive(Default)]
pub struct Staged {
    pub(super) deals: HashMap<Vec<u8>, StagedDeal>,
    pub(super) totals: BTreeMap<Vec<u8>, DealTotals>,
    pub(super) borrowers: BTreeMap<(String, String), Borrower>,
    pub(super) batch: sled::Batch,
}

impl DealReadModel {
    /// Moves a deal's contributions from its old content (if any) to its new one.
    fn stage_move(
        &self,
        staged: &mut Staged,
        change: &Change<'_>,
        before: Option<&Facts>,
        after: &Facts,
    ) -> Result<(), ReadModelError> {
        let Change {
            tenant,
            public_id,
            tail,
            changed_at,
        } = *change;
        if let Some(before) = before {
            let minus = DealTotals {
                deals: -1,
                amount_minor: -i128::from(before.amount),
            };
            for key in before.totals_keys(tenant) {
                self.add_totals(staged, key, minus)?;
            }
        }
        let plus = DealTotals {
            deals: 1,
            amount_minor: after.amount.into(),
        };
        for key in after.totals_keys(tenant) {
            self.add_totals(staged, key, plus)?;
        }
        let old_index = before.map_or_else(Vec::new, |b| b.index_keys(tenant, tail));
        let new_index = after.index_keys(tenant, tail);
        for key in &old_index {
            if !new_index.contains(key) {
                staged.batch.remove(key.as_slice());
            }
        }
        for key in new_index {
            if !old_index.contains(&key) {
                staged.batch.insert(key, &[] as &[u8]);
            }
        }
        if before.is_some_and(|b| b.dnc) != after.dnc {
            let borrower = match staged
                .borrowers
                .entry((tenant.to_owned(), public_id.to_owned()))
            {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let flagged = self.flagged_deals(tenant, public_id)?;
                    e.insert(Borrower {
                        before: flagged,
                        after: flagged,
                        changed_at,
                    })
                }
            };
            borrower.after = if after.dnc {
                borrower.after.saturating_add(1)
            } else {
                borrower.after.saturating_sub(1)
            };
            borrower.changed_at = changed_at;
        }
        Ok(())
    }

    fn add_totals(
        &self,
        staged: &mut Staged,
        key: Vec<u8>,
        delta: DealTotals,
    ) -> Result<(), ReadModelError> {
        let totals = match staged.totals.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let stored = self
                    .tree
                    .get(e.key())?
                    .map(|b| DealTotals::decode(&b))
                    .unwrap_or_default();
                e.insert(stored)
            }
        };
        totals.add(delta);
        Ok(())
    }

    /// Writes the borrowers' flagged-deal counts and numbers the list changes they make.
    pub(super) fn stage_borrowers(
        &self,
        batch: &mut sled::Batch,
        borrowers: BTreeMap<(String, String), Borrower>,
    ) -> Result<Vec<DoNotContactChange>, ReadModelError> {
        let mut sequences: BTreeMap<String, u64> = BTreeMap::new();
        let mut changes = Vec::new();
        for ((tenant, public_id), borrower) in borrowers {
            let key = borrower_key(&tenant, &public_id);
            if borrower.after > 0 {
                batch.insert(key, &borrower.after.to_be_bytes());
            } else {
                batch.remove(key);
            }
            let listed = borrower.after > 0;
            if (borrower.before > 0) == listed {
                continue;
            }
            let sequence = match sequences.entry(tenant.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let stored = self.sequence(e.key())?;
                    e.insert(stored)
                }
            };
            *sequence += 1;
            changes.push(DoNotContactChange {
                tenant,
                public_id,
                change: if listed {
                    ListChange::Added
                } else {
                    ListChange::Removed
                },
                sequence: *sequence,
                changed_at: borrower.changed_at,
            });
        }
        for (tenant, sequence) in sequences {
            batch.insert(sequence_key(&tenant), &sequence.to_be_bytes());
        }
        Ok(changes)
    }

    fn flagged_deals(&self, tenant: &str, public_id: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(borrower_key(tenant, public_id))?
            .map_or(0, |v| u64_value(&v)))
    }

    pub(super) fn sequence(&self, tenant: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(sequence_key(tenant))?
            .map_or(0, |v| u64_value(&v)))
    }
}

impl Projection for DealReadModel {
    type Staged = Staged;
    /// The do-not-contact list's changes, told to watchers once written.
    type Written = Vec<DoNotContactChange>;

    fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    fn apply(&self, bytes: &[u8], staged: &mut Staged) -> Result<Step, ReadModelError> {
        let observed = match ObservedDeal::decode(bytes) {
            Ok(Some(observed)) => observed,
            // Another dataset's rows share the event type: they are not collections deals.
            Ok(None) => return Ok(Step::Ignored),
            Err(reason) => return Ok(Step::Rejected(reason)),
        };
        let ObservedDeal {
            tenant,
            deal,
            created_at,
            changed_at,
            payload,
        } = observed;
        let tail = deal_tail(&deal.public_id, created_at);
        let key = deal_key(&tenant, &tail);
        let earlier = match staged.deals.get(&key) {
            Some(d) => Some((d.revision, d.facts.clone())),
            None => match self.tree.get(&key)? {
                Some(bytes) => {
                    let (revision, stored) = decode_stored(&key, &bytes)?;
                    Some((revision, Facts::of(&stored)))
                }
                None => None,
            },
        };
        if earlier
            .as_ref()
            .is_some_and(|(revision, _)| *revision >= deal.revision)
        {
            return Ok(Step::Duplicate);
        }
        let facts = Facts::of(&deal);
        let before = earlier.map(|(_, facts)| facts);
        let change = Change {
            tenant: &tenant,
            public_id: &deal.public_id,
            tail: &tail,
            changed_at,
        };
        self.stage_move(staged, &change, before.as_ref(), &facts)?;
        staged.deals.insert(
            key,
            StagedDeal {
                revision: deal.revision,
                facts,
                payload,
            },
        );
        Ok(Step::Applied(1))
    }

    fn batch(staged: &mut Staged) -> &mut sled::Batch {
        &mut staged.batch
    }

    fn stage_writes(
        &self,
        staged: Staged,
    ) -> Result<(sled::Batch, Vec<DoNotContactChange>), ReadModelError> {
        let Staged {
            deals,
            totals,
            borrowers,
            mut batch,
        } = staged;
        for (key, deal) in deals {
            let mut value = Vec::with_capacity(8 + deal.payload.len());
            value.extend_from_slice(&deal.revision.to_be_bytes());
            value.extend_from_slice(&deal.payload);
            batch.insert(key, value);
        }
        for (key, totals) in totals {
            if totals == DealTotals::default() {
                batch.remove(key);
            } else {
                batch.insert(key, totals.encode());
            }
        }
        let changes = self.stage_borrowers(&mut batch, borrowers)?;
        Ok((batch, changes))
    }

    /// When the do-not-contact list changed: flushes, then publishes the changes to watchers.
    fn written(&self, changes: Vec<DoNotContactChange>) -> Result<(), ReadModelError> {
        if changes.is_empty() {
            return Ok(());
        }
        // Watchers act on a change (a borrower may be contacted again): it must survive a crash
        // before anyone hears of it.
        self.tree.flush()?;
        for change in &changes {
            tracing::debug!(tenant = %change.tenant, sequence = change.sequence, change = ?change.change, "do-not-contact list changed");
        }
        // No watcher is no error.
        let _ = self.feed.sender.send(changes.into());
        Ok(())
    }

    /// Applying (through publishing) and subscribing (with reading the list) take turns, so a
    /// watcher's snapshot plus the changes it receives are exactly the list.
    fn hold_turn(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        Some(self.turn())
    }
}
