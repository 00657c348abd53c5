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
use crate::kernel::{ReadModelError, Step};

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
pub(super) struct Staged {
    pub deals: HashMap<Vec<u8>, StagedDeal>,
    pub totals: BTreeMap<Vec<u8>, DealTotals>,
    pub borrowers: BTreeMap<(String, String), Borrower>,
    pub batch: sled::Batch,
}

impl DealReadModel {
    pub(super) fn apply_message(
        &self,
        bytes: &[u8],
        staged: &mut Staged,
    ) -> Result<Step, ReadModelError> {
        let envelope = match decode_envelope(bytes) {
            Ok(e) => e,
            Err(e) => return Ok(Step::Rejected(e.to_string())),
        };
        if envelope.aggregate_type != DEAL_AGGREGATE {
            return Ok(Step::Rejected(format!(
                "aggregate type {:?} does not belong on this topic",
                envelope.aggregate_type
            )));
        }
        if envelope.event_type != DEAL_EVENT_TYPE {
            return Ok(Step::Rejected(format!(
                "event type {:?} is not {DEAL_EVENT_TYPE}",
                envelope.event_type
            )));
        }
        let deal = match v1::CollectionsDealObserved::decode(envelope.payload.as_slice()) {
            Ok(d) => d,
            Err(e) => return Ok(Step::Rejected(format!("payload does not decode: {e}"))),
        };
        if deal.dataset != DEALS_DATASET {
            // Another dataset's rows share the event type: they are not collections deals.
            return Ok(Step::Ignored);
        }
        if deal.public_id.is_empty() {
            return Ok(Step::Rejected(
                "CollectionsDealObserved without public_id".into(),
            ));
        }
        let Some(created_at) = deal.created_at.as_ref().and_then(from_timestamp) else {
            return Ok(Step::Rejected(
                "CollectionsDealObserved without a valid created_at".into(),
            ));
        };
        if deal.revision != envelope.aggregate_version {
            return Ok(Step::Rejected(format!(
                "payload revision {} is not the envelope's version {}",
                deal.revision, envelope.aggregate_version
            )));
        }
        let Some(changed_at) = occurred_at(&envelope) else {
            return Ok(Step::Rejected("occurred_at is missing".into()));
        };
        let tenant = envelope.tenant.as_str();
        let tail = deal_tail(&deal.public_id, created_at);
        let key = deal_key(tenant, &tail);
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
        self.stage_move(
            staged,
            tenant,
            &deal.public_id,
            &tail,
            before.as_ref(),
            &facts,
            changed_at,
        )?;
        staged.deals.insert(
            key,
            StagedDeal {
                revision: deal.revision,
                facts,
                payload: envelope.payload,
            },
        );
        Ok(Step::Applied(1))
    }

    /// Moves a deal's contributions from its old content (if any) to its new one.
    #[allow(clippy::too_many_arguments)]
    fn stage_move(
        &self,
        staged: &mut Staged,
        tenant: &str,
        public_id: &str,
        tail: &[u8],
        before: Option<&Facts>,
        after: &Facts,
        changed_at: DateTime<Utc>,
    ) -> Result<(), ReadModelError> {
        if let Some(before) = before {
            let minus = DealTotals {
                deals: -1,
                amount_minor: before.amount.saturating_neg(),
            };
            for key in before.totals_keys(tenant) {
                self.add_totals(staged, key, minus)?;
            }
        }
        let plus = DealTotals {
            deals: 1,
            amount_minor: after.amount,
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
