//! Applying a batch of case events: every event folds into the case it concerns, held in memory
//! for the whole batch, and only when the batch is written are the changes derived from where
//! each case started and where it ended: one case entry, one state-index change, one history
//! chunk per case, and the totals once per state and currency. A batch that carries several
//! events of one case (a rebuild reads each case's events together) writes that case once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use debt_cases::{CaseState, DebtCase};
use event_backbone::envelope::{decode_envelope, occurred_at};
use prost::Message;
use recoup_proto::convert::{case_to_proto, event_from_payload};
use recoup_proto::v1;

use super::history;
use super::in_flight::{self, CaseId, Snapshot, newest};
use super::keys::{
    case_key, history_key, parked_rejected_key, pending_key, state_key, stats_key, version_key,
};
use super::{CaseReadModel, Totals};
use crate::kernel::{Counters, ReadModelError, Step, envelope_of, reason_and};

/// Changes of one batch, before they are written.
#[derive(Default)]
pub struct Staged {
    cases: HashMap<CaseId, Touched>,
    /// Events parked by this batch (also in `batch`), so a later message of it can follow them.
    pending: HashMap<Vec<u8>, Vec<u8>>,
    /// Events this batch parks that were not parked before.
    parked: usize,
    /// Keys of events parked before this batch that it applies or rejects.
    unparked: Vec<Vec<u8>>,
    batch: sled::Batch,
    /// The batches in flight when this one began (see [`in_flight`]).
    in_flight: Option<Snapshot>,
}

/// Writes of single keys, in the order made: a value, or a removal.
pub(super) type Loose = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What the case read model does once a batch is written.
pub struct Written {
    /// Parked events the batch applied or rejected.
    unparked: usize,
    /// Whether the batch was in flight.
    pub(super) in_flight: bool,
    /// The batch's changes of cases, indexes, history and totals, when it was in flight: they
    /// are written key by key, beside the `sled::Batch`, not atomically with it.
    pub(super) loose: Loose,
}

impl Written {
    pub(super) fn unparked(&self) -> usize {
        self.unparked
    }
}

/// Where `stage_cases` writes: the batch, or loose writes while pipelined.
struct Sink {
    batch: sled::Batch,
    loose: Option<Loose>,
}

impl Sink {
    fn insert(&mut self, k: Vec<u8>, v: Vec<u8>) {
        match &mut self.loose {
            Some(loose) => loose.push((k, Some(v))),
            None => self.batch.insert(k, v),
        }
    }

    fn remove(&mut self, k: Vec<u8>) {
        match &mut self.loose {
            Some(loose) => loose.push((k, None)),
            None => self.batch.remove(k),
        }
    }
}

impl Staged {
    pub(super) fn batch(&mut self) -> &mut sled::Batch {
        &mut self.batch
    }
}

/// A case this batch looked at: where it stood before the batch and where it is now.
struct Touched {
    /// What the stored case counted in the state index and the totals (`None`: not held).
    before: Option<Footprint>,
    /// The case now (`None`: unknown, or deleted).
    now: Option<DebtCase>,
    /// The last version applied.
    version: u64,
    /// Deleted by this batch.
    deleted: bool,
    /// The audit trail's entries this batch adds (see [`history`]).
    history: Vec<u8>,
}

/// What a held case counts in the state index and the totals.
struct Footprint {
    state: CaseState,
    currency: String,
    amount_minor: i64,
    collected_minor: i64,
}

impl Footprint {
    fn of(case: &DebtCase) -> Self {
        Footprint {
            state: case.state,
            currency: case.currency.clone(),
            amount_minor: case.amount_minor,
            collected_minor: case.collected_minor,
        }
    }

    fn counters(&self, sign: i128) -> [i128; 3] {
        [
            sign,
            sign * i128::from(self.amount_minor),
            sign * i128::from(self.collected_minor),
        ]
    }
}

impl CaseReadModel {
    /// One message into the staged changes.
    pub(super) fn apply_message(
        &self,
        bytes: &[u8],
        staged: &mut Staged,
    ) -> Result<Step, ReadModelError> {
        let envelope = match envelope_of(bytes, super::DEBT_CASE_AGGREGATE) {
            Ok(e) => e,
            Err(reason) => return Ok(Step::Rejected(reason)),
        };
        let Staged {
            cases,
            pending,
            parked,
            unparked,
            batch,
            in_flight,
        } = staged;
        let in_flight = in_flight.get_or_insert_with(|| self.in_flight.snapshot());
        let id = (envelope.tenant.clone(), envelope.aggregate_id.clone());
        let touched = match cases.get_mut(&id) {
            Some(t) => t,
            None => {
                let loaded = self.load(&id, in_flight)?;
                cases.entry(id.clone()).or_insert(loaded)
            }
        };
        let version = envelope.aggregate_version;
        if version <= touched.version {
            return Ok(Step::Duplicate);
        }
        if version > touched.version + 1 {
            let k = pending_key(&id.0, &id.1, version).into_vec();
            // The same early event may come twice; count it once.
            *parked += usize::from(
                !pending.contains_key(&k) && self.parked_event(&k, in_flight)?.is_none(),
            );
            pending.insert(k.clone(), bytes.to_vec());
            batch.insert(k, bytes);
            return Ok(Step::Parked);
        }
        let mut count = 0;
        let mut next: Option<Vec<u8>> = None;
        let mut current = envelope;
        loop {
            if let Err(reason) = apply_envelope(&current, &id, touched) {
                if count == 0 {
                    return Ok(Step::Rejected(reason));
                }
                // A parked event that cannot be applied either: keep it among the rejects.
                if let Some(k) = next.take() {
                    tracing::error!(tenant = %id.0, case_id = %id.1, %reason, "parked event cannot be applied; kept in the read model's rejects");
                    let value = reason_and(reason, &current.encode_to_vec());
                    self.unpark(k, in_flight, pending, parked, unparked, batch)?;
                    batch.insert(
                        parked_rejected_key(&id.0, &id.1, current.aggregate_version).into_vec(),
                        value,
                    );
                }
                return Ok(Step::Applied(count));
            }
            count += 1;
            if let Some(k) = next.take() {
                self.unpark(k, in_flight, pending, parked, unparked, batch)?;
            }
            if pending.is_empty() && self.parked.load(Ordering::Relaxed) == 0 {
                break;
            }
            // An event parked earlier may now follow.
            let k = pending_key(&id.0, &id.1, current.aggregate_version + 1).into_vec();
            let successor = match pending.get(&k) {
                Some(bytes) => Some(bytes.clone()),
                None => self.parked_event(&k, in_flight)?,
            };
            let Some(Ok(e)) = successor.map(|bytes| decode_envelope(&bytes)) else {
                break;
            };
            current = e;
            next = Some(k);
        }
        Ok(Step::Applied(count))
    }

    /// A case as the batch first sees it: as the batches in flight left it, else as stored.
    fn load(&self, id: &CaseId, in_flight: &Snapshot) -> Result<Touched, ReadModelError> {
        let (now, version) = match newest(in_flight, |b| &b.cases, id) {
            Some((now, version)) => (now.clone(), *version),
            None => match self.case(&id.0, &id.1)? {
                Some(case) => {
                    let version = case.version;
                    (Some(case), version)
                }
                // Only unknown or deleted cases need the version index.
                None => (None, self.deleted_version(&id.0, &id.1)?),
            },
        };
        Ok(Touched {
            before: now.as_ref().map(Footprint::of),
            now,
            version,
            deleted: false,
            history: Vec::new(),
        })
    }

    /// The totals the batch changed, once per state and currency.
    fn stage_totals(
        &self,
        totals: BTreeMap<Vec<u8>, [i128; 3]>,
        in_flight: &Snapshot,
        batch: &mut Sink,
        mut flight: Option<&mut in_flight::Batch>,
    ) -> Result<(), ReadModelError> {
        for (k, delta) in totals {
            if delta == [0; 3] {
                continue;
            }
            let mut sum = match newest(in_flight, |b| &b.totals, &k) {
                Some(sum) => *sum,
                None => self
                    .tree
                    .get(&k)?
                    .map(|v| Totals::decode(&v))
                    .unwrap_or_default(),
            };
            sum.add_counters(delta);
            if sum == Totals::default() {
                batch.remove(k.clone());
            } else {
                batch.insert(k.clone(), sum.encode());
            }
            if let Some(flight) = flight.as_deref_mut() {
                flight.totals.insert(k, sum);
            }
        }
        Ok(())
    }

    /// A parked event applied (or rejected) by this batch: no longer parked.
    fn unpark(
        &self,
        k: Vec<u8>,
        in_flight: &Snapshot,
        pending: &mut HashMap<Vec<u8>, Vec<u8>>,
        parked: &mut usize,
        unparked: &mut Vec<Vec<u8>>,
        batch: &mut sled::Batch,
    ) -> Result<(), ReadModelError> {
        let stored = self.parked_event(&k, in_flight)?.is_some();
        // One parked by this batch alone was counted when it was parked.
        if pending.remove(&k).is_some() && !stored {
            *parked = parked.saturating_sub(1);
        }
        if stored {
            unparked.push(k.clone());
        }
        batch.remove(k);
        Ok(())
    }

    /// A parked event, as the batches in flight left it, else as stored.
    fn parked_event(
        &self,
        k: &Vec<u8>,
        in_flight: &Snapshot,
    ) -> Result<Option<Vec<u8>>, ReadModelError> {
        if let Some(parked) = newest(in_flight, |b| &b.parked, k) {
            return Ok(parked.clone());
        }
        Ok(self.tree.get(k)?.map(|v| v.to_vec()))
    }

    /// The batch's changes as one `sled::Batch`, and what to do once it is written. While
    /// batches are pipelined, what it writes of what later batches read goes in flight.
    pub(super) fn stage_cases(
        &self,
        staged: Staged,
    ) -> Result<(sled::Batch, Written), ReadModelError> {
        let Staged {
            cases,
            pending,
            parked,
            unparked,
            batch,
            in_flight,
        } = staged;
        let in_flight = in_flight.unwrap_or_default();
        let mut flight = self.in_flight.is_on().then(in_flight::Batch::default);
        let mut batch = Sink {
            batch,
            loose: flight.as_ref().map(|_| Vec::with_capacity(cases.len() * 3)),
        };
        let mut totals: BTreeMap<Vec<u8>, [i128; 3]> = BTreeMap::new();
        let mut count = |tenant: &str, footprint: &Footprint, sign: i128| {
            let k = stats_key(tenant, footprint.state, &footprint.currency).into_vec();
            let delta = footprint.counters(sign);
            let sum = totals.entry(k).or_default();
            for (s, d) in sum.iter_mut().zip(delta) {
                *s += d;
            }
        };
        for ((tenant, case_id), touched) in cases {
            if touched.history.is_empty() {
                // Looked at (a duplicate, a parked event), not changed.
                continue;
            }
            let after = touched.now.as_ref().map(Footprint::of);
            if let Some(before) = &touched.before {
                count(&tenant, before, -1);
            }
            if let Some(after) = &after {
                count(&tenant, after, 1);
            }
            stage_case(&tenant, &case_id, &touched, after.as_ref(), &mut batch);
            if let Some(flight) = &mut flight {
                flight
                    .cases
                    .insert((tenant, case_id), (touched.now, touched.version));
            }
        }
        self.stage_totals(totals, &in_flight, &mut batch, flight.as_mut())?;
        // Counted now, so that a batch staged before this one is written looks for them.
        self.parked.fetch_add(parked, Ordering::Relaxed);
        let Sink { batch, loose } = batch;
        let written = Written {
            unparked: unparked.len(),
            in_flight: flight.is_some(),
            loose: loose.unwrap_or_default(),
        };
        if let Some(mut flight) = flight {
            flight.parked = unparked.into_iter().map(|k| (k, None)).collect();
            flight
                .parked
                .extend(pending.into_iter().map(|(k, v)| (k, Some(v))));
            self.in_flight.push(flight);
        }
        Ok((batch, written))
    }
}

/// A changed case's entries: its state index (when the state changed), its entry, the version
/// of a deleted case, and the batch's history chunk.
fn stage_case(
    tenant: &str,
    case_id: &str,
    touched: &Touched,
    after: Option<&Footprint>,
    batch: &mut Sink,
) {
    let (old_state, new_state) = (
        touched.before.as_ref().map(|f| f.state),
        after.map(|f| f.state),
    );
    if old_state != new_state {
        if let Some(state) = old_state {
            batch.remove(state_key(tenant, state, case_id).into_vec());
        }
        if let Some(state) = new_state {
            batch.insert(state_key(tenant, state, case_id).into_vec(), Vec::new());
        }
    }
    let k = case_key(tenant, case_id).into_vec();
    match &touched.now {
        Some(case) => batch.insert(k, case_to_proto(case).encode_to_vec()),
        None => batch.remove(k),
    }
    // A held case carries its version; the version index keeps only deleted cases'.
    if touched.deleted {
        batch.insert(
            version_key(tenant, case_id).into_vec(),
            touched.version.to_be_bytes().to_vec(),
        );
    }
    batch.insert(
        history_key(tenant, case_id, touched.version).into_vec(),
        history::chunk(&touched.history),
    );
}

/// Folds one in-order event into the case; `Err(reason)` when it cannot be applied (the case
/// is then as it was).
fn apply_envelope(
    envelope: &v1::EventEnvelope,
    id: &CaseId,
    touched: &mut Touched,
) -> Result<(), String> {
    let at = occurred_at(envelope).ok_or("occurred_at is missing")?;
    let event = event_from_payload(&envelope.event_type, &envelope.payload, &id.1, &id.0, at)
        .map_err(|e| e.to_string())?;
    let version = envelope.aggregate_version;
    match (&mut touched.now, DebtCase::from_created(&event)) {
        (None, Some(created)) => {
            if created.version != version {
                return Err(format!(
                    "event says version {version}, applying it gives {}",
                    created.version
                ));
            }
            touched.now = Some(created);
        }
        (None, None) => {
            return Err(format!(
                "{} for a case the read model does not hold",
                envelope.event_type
            ));
        }
        (Some(_), Some(_)) => return Err("second creation of the same case".into()),
        (Some(case), None) => {
            // Applying an event adds one to the version: check before changing the case.
            if case.version + 1 != version {
                return Err(format!(
                    "event says version {version}, applying it gives {}",
                    case.version + 1
                ));
            }
            case.apply(&event);
        }
    }
    if touched.now.as_ref().is_some_and(|c| c.deleted_on.is_some()) {
        touched.now = None;
        touched.deleted = true;
    }
    touched.version = version;
    history::append(&mut touched.history, envelope);
    Ok(())
}
