//! The case read model in one sled tree, so that the read-model changes of a batch of messages
//! and the consumer offsets after it are written by one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | tenant, case id | encoded `recoup.v1.DebtCase` |
//! | `s` | tenant, state (u8), case id | empty: cases by state |
//! | `t` | tenant, state (u8), currency | count, amount, collected (3 × i64 BE) |
//! | `v` | tenant, case id | last applied version (u64 BE) of a deleted case (a held case carries its own) |
//! | `p` | tenant, case id, version (u64 BE) | envelope that arrived before its predecessor |
//! | `o` | cluster id, topic, partition (i32 BE) | next offset to read (i64 BE) |
//! | `x` | cluster id, topic, partition, offset | a message that could not be applied, with the reason |
//! | `y` | tenant, case id, version (u64 BE) | a parked event that could not be applied when its turn came, with the reason |

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use debt_cases::{CaseState, DebtCase};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{decode_envelope, occurred_at};
use prost::Message;
use recoup_proto::convert::{case_from_proto, case_to_proto, event_from_payload, state_to_proto};
use recoup_proto::v1;

use recoup_proto::contract::aggregate::DEBT_CASE as DEBT_CASE_AGGREGATE;

const SEP: u8 = 0;

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    k.push(prefix);
    for part in parts {
        k.push(SEP);
        k.extend_from_slice(part);
    }
    k
}

fn state_code(state: CaseState) -> u8 {
    state_to_proto(state) as i32 as u8
}

fn case_key(tenant: &str, case_id: &str) -> Vec<u8> {
    key(b'c', &[tenant.as_bytes(), case_id.as_bytes()])
}

fn state_key(tenant: &str, state: CaseState, case_id: &str) -> Vec<u8> {
    key(
        b's',
        &[tenant.as_bytes(), &[state_code(state)], case_id.as_bytes()],
    )
}

fn stats_key(tenant: &str, state: CaseState, currency: &str) -> Vec<u8> {
    key(
        b't',
        &[tenant.as_bytes(), &[state_code(state)], currency.as_bytes()],
    )
}

fn version_key(tenant: &str, case_id: &str) -> Vec<u8> {
    key(b'v', &[tenant.as_bytes(), case_id.as_bytes()])
}

fn pending_key(tenant: &str, case_id: &str, version: u64) -> Vec<u8> {
    key(
        b'p',
        &[
            tenant.as_bytes(),
            case_id.as_bytes(),
            &version.to_be_bytes(),
        ],
    )
}

fn offset_key(cluster: &str, topic: &str, partition: i32) -> Vec<u8> {
    key(
        b'o',
        &[
            cluster.as_bytes(),
            topic.as_bytes(),
            &partition.to_be_bytes(),
        ],
    )
}

fn rejected_key(cluster: &str, topic: &str, partition: i32, offset: i64) -> Vec<u8> {
    key(
        b'x',
        &[
            cluster.as_bytes(),
            topic.as_bytes(),
            &partition.to_be_bytes(),
            &offset.to_be_bytes(),
        ],
    )
}

/// The next offset to read per partition of `topic` on `cluster`, as kept in `tree` under `o`
/// (`None`: from the beginning). Every read model tree keeps its offsets this way.
/// What one message came to in a read model that keeps one entry per key and revision.
pub(crate) enum KeyedStep {
    Applied,
    Duplicate,
    /// Well-formed, but not for this read model.
    Ignored,
    Rejected(String),
}

/// Applies every message in order with `apply`, counts the outcomes, stages each reject in the
/// batch `batch_of` finds in the staged changes; returns the outcome and the next offset to read
/// per partition.
pub(crate) fn apply_each<S>(
    cluster: &str,
    topic: &str,
    messages: &[ReceivedEvent],
    staged: &mut S,
    batch_of: impl Fn(&mut S) -> &mut sled::Batch,
    mut apply: impl FnMut(&[u8], &mut S) -> Result<KeyedStep, ReadModelError>,
) -> Result<(BatchOutcome, BTreeMap<i32, i64>), ReadModelError> {
    let mut outcome = BatchOutcome::default();
    let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
    for message in messages {
        next_offsets.insert(message.partition, message.offset + 1);
        match apply(&message.value, staged)? {
            KeyedStep::Applied => outcome.applied += 1,
            KeyedStep::Duplicate => outcome.duplicates += 1,
            KeyedStep::Ignored => outcome.ignored += 1,
            KeyedStep::Rejected(reason) => {
                outcome.rejected += 1;
                stage_reject(batch_of(staged), cluster, topic, message, reason);
            }
        }
    }
    Ok((outcome, next_offsets))
}

/// Two counters (i64 BE each) in one value: the totals kept by the read models (deals and their
/// amount, accounts and their outstanding). Missing bytes read as 0.
pub(crate) fn decode_pair(bytes: &[u8]) -> (i64, i64) {
    let n = |i: usize| {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_be_bytes)
    };
    (n(0), n(1))
}

pub(crate) fn encode_pair(first: i64, second: i64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&first.to_be_bytes());
    v[8..].copy_from_slice(&second.to_be_bytes());
    v
}

pub(crate) fn stored_offsets(
    tree: &sled::Tree,
    cluster: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<Vec<(i32, Option<i64>)>, ReadModelError> {
    partitions
        .iter()
        .map(|p| {
            let next = tree
                .get(offset_key(cluster, topic, *p))?
                .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes));
            Ok((*p, next))
        })
        .collect()
}

/// Adds the offsets after a batch to its sled batch.
pub(crate) fn stage_offsets(
    batch: &mut sled::Batch,
    cluster: &str,
    topic: &str,
    next_offsets: BTreeMap<i32, i64>,
) {
    for (partition, next) in next_offsets {
        batch.insert(offset_key(cluster, topic, partition), &next.to_be_bytes());
    }
}

/// Keeps a message that cannot be applied under `x`, with the reason, and logs it.
pub(crate) fn stage_reject(
    batch: &mut sled::Batch,
    cluster: &str,
    topic: &str,
    message: &ReceivedEvent,
    reason: String,
) {
    tracing::error!(
        topic, partition = message.partition, offset = message.offset, %reason,
        "event cannot be applied; kept in the read model's rejects"
    );
    let mut value = reason.into_bytes();
    value.push(SEP);
    value.extend_from_slice(&message.value);
    batch.insert(
        rejected_key(cluster, topic, message.partition, message.offset),
        value,
    );
}

fn parked_rejected_key(tenant: &str, case_id: &str, version: u64) -> Vec<u8> {
    key(
        b'y',
        &[
            tenant.as_bytes(),
            case_id.as_bytes(),
            &version.to_be_bytes(),
        ],
    )
}

/// A technical failure of the read model.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error("read model I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("read model entry {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Per-state totals of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub count: i64,
    /// Minor units.
    pub amount_minor: i64,
    /// Minor units.
    pub collected_minor: i64,
}

impl Totals {
    fn decode(bytes: &[u8]) -> Totals {
        let n = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i64::from_be_bytes)
        };
        Totals {
            count: n(0),
            amount_minor: n(1),
            collected_minor: n(2),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.amount_minor.to_be_bytes());
        v.extend_from_slice(&self.collected_minor.to_be_bytes());
        v
    }

    fn add(&mut self, case: &DebtCase, sign: i64) {
        self.count += sign;
        self.amount_minor += sign * case.amount_minor;
        self.collected_minor += sign * case.collected_minor;
    }
}

/// What applying one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    pub applied: usize,
    /// Already applied (a redelivery or a resend from the outbox).
    pub duplicates: usize,
    /// Arrived before an earlier version of the same case; parked until it comes.
    pub parked: usize,
    /// Could not be decoded or applied; kept under `x` with the reason.
    pub rejected: usize,
    /// Well-formed events this read model does not keep (deals of datasets other than D16).
    pub ignored: usize,
}

/// The case read model.
#[derive(Clone)]
pub struct ReadModel {
    db: sled::Db,
    tree: sled::Tree,
    /// Events parked under `p`; while zero, no lookup for a parked successor is needed.
    parked: Arc<AtomicUsize>,
}

/// Changes of one batch, before they are written.
#[derive(Default)]
struct Staged {
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

impl ReadModel {
    /// Opens (or creates) the read model in `dir`.
    pub fn open(dir: &Path) -> Result<Self, ReadModelError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(128 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("read_model")?;
        let parked = tree.scan_prefix(b"p").count();
        Ok(Self {
            db,
            tree,
            parked: Arc::new(AtomicUsize::new(parked)),
        })
    }

    /// The next offset to read per partition of `topic` on cluster `cluster` (`None`: from the
    /// beginning).
    pub fn offsets(
        &self,
        cluster: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, ReadModelError> {
        stored_offsets(&self.tree, cluster, topic, partitions)
    }

    /// Applies a batch of messages of `topic` and records the offsets after them, atomically.
    pub fn apply_batch(
        &self,
        cluster: &str,
        topic: &str,
        messages: &[ReceivedEvent],
    ) -> Result<BatchOutcome, ReadModelError> {
        let mut staged = Staged::default();
        let mut outcome = BatchOutcome::default();
        let mut next_offsets: BTreeMap<i32, i64> = BTreeMap::new();
        for message in messages {
            next_offsets.insert(message.partition, message.offset + 1);
            match self.apply_message(&message.value, &mut staged)? {
                Step::Applied(n) => outcome.applied += n,
                Step::Duplicate => outcome.duplicates += 1,
                Step::Parked => outcome.parked += 1,
                Step::Rejected(reason) => {
                    outcome.rejected += 1;
                    stage_reject(&mut staged.batch, cluster, topic, message, reason);
                }
            }
        }
        self.stage_writes(&mut staged)?;
        let parked_delta = staged.parked_delta;
        stage_offsets(&mut staged.batch, cluster, topic, next_offsets);
        self.tree.apply_batch(staged.batch)?;
        if parked_delta >= 0 {
            self.parked
                .fetch_add(parked_delta as usize, Ordering::Relaxed);
        } else {
            self.parked
                .fetch_sub(parked_delta.unsigned_abs(), Ordering::Relaxed);
        }
        Ok(outcome)
    }

    fn apply_message(&self, bytes: &[u8], staged: &mut Staged) -> Result<Step, ReadModelError> {
        let envelope = match decode_envelope(bytes) {
            Ok(e) => e,
            Err(e) => return Ok(Step::Rejected(e.to_string())),
        };
        if envelope.aggregate_type != DEBT_CASE_AGGREGATE {
            return Ok(Step::Rejected(format!(
                "aggregate type {:?} does not belong on this topic",
                envelope.aggregate_type
            )));
        }
        let id = (envelope.tenant.clone(), envelope.aggregate_id.clone());
        let applied = self.applied_version_staged(&id, staged)?;
        let version = envelope.aggregate_version;
        if version <= applied {
            return Ok(Step::Duplicate);
        }
        if version > applied + 1 {
            let k = pending_key(&id.0, &id.1, version);
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
                    let mut value = reason.into_bytes();
                    value.push(SEP);
                    value.extend_from_slice(&current.encode_to_vec());
                    staged.pending.remove(&k);
                    staged.batch.remove(k);
                    staged.parked_delta -= 1;
                    staged.batch.insert(
                        parked_rejected_key(&id.0, &id.1, current.aggregate_version),
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
            let k = pending_key(&id.0, &id.1, current.aggregate_version + 1);
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
                staged.batch.remove(state_key(&id.0, state, &id.1));
            }
            if let Some(state) = new_state {
                staged
                    .batch
                    .insert(state_key(&id.0, state, &id.1), &[] as &[u8]);
            }
        }
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
        let k = stats_key(&case.tenant, case.state, &case.currency);
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
    fn stage_writes(&self, staged: &mut Staged) -> Result<(), ReadModelError> {
        for ((tenant, case_id), case) in staged.cases.drain() {
            let k = case_key(&tenant, &case_id);
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
                staged
                    .batch
                    .insert(version_key(&tenant, &case_id), &version.to_be_bytes());
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

    /// The last version of a case this read model applied (0: none).
    pub fn applied_version(&self, tenant: &str, case_id: &str) -> Result<u64, ReadModelError> {
        if let Some(case) = self.case(tenant, case_id)? {
            return Ok(case.version);
        }
        self.deleted_version(tenant, case_id)
    }

    /// A case as the read model holds it; `None` when unknown or deleted.
    pub fn case(&self, tenant: &str, case_id: &str) -> Result<Option<DebtCase>, ReadModelError> {
        let Some(bytes) = self.tree.get(case_key(tenant, case_id))? else {
            return Ok(None);
        };
        let corrupt = |reason: String| ReadModelError::Corrupt {
            key: format!("case {tenant}/{case_id}"),
            reason,
        };
        let proto = v1::DebtCase::decode(bytes.as_ref()).map_err(|e| corrupt(e.to_string()))?;
        case_from_proto(proto)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Cases of a tenant ordered by id, optionally of one state, starting after `after`.
    pub fn list_cases(
        &self,
        tenant: &str,
        state: Option<CaseState>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DebtCase>, ReadModelError> {
        let mut out = Vec::with_capacity(limit.min(1024));
        match state {
            Some(state) => {
                let prefix = key(b's', &[tenant.as_bytes(), &[state_code(state)]]);
                let mut prefix = prefix;
                prefix.push(SEP);
                let start = match after {
                    Some(a) => {
                        let mut s = state_key(tenant, state, a);
                        s.push(0);
                        s
                    }
                    None => prefix.clone(),
                };
                for entry in self.tree.range(start..) {
                    let (k, _) = entry?;
                    if !k.starts_with(&prefix) || out.len() >= limit {
                        break;
                    }
                    let case_id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    if let Some(c) = self.case(tenant, &case_id)? {
                        out.push(c);
                    }
                }
            }
            None => {
                let mut prefix = key(b'c', &[tenant.as_bytes()]);
                prefix.push(SEP);
                let start = match after {
                    Some(a) => {
                        let mut s = case_key(tenant, a);
                        s.push(0);
                        s
                    }
                    None => prefix.clone(),
                };
                for entry in self.tree.range(start..) {
                    let (k, v) = entry?;
                    if !k.starts_with(&prefix) || out.len() >= limit {
                        break;
                    }
                    let proto =
                        v1::DebtCase::decode(v.as_ref()).map_err(|e| ReadModelError::Corrupt {
                            key: String::from_utf8_lossy(&k).into_owned(),
                            reason: e.to_string(),
                        })?;
                    let case = case_from_proto(proto).map_err(|e| ReadModelError::Corrupt {
                        key: String::from_utf8_lossy(&k).into_owned(),
                        reason: e.to_string(),
                    })?;
                    out.push(case);
                }
            }
        }
        Ok(out)
    }

    /// Count and totals per state and currency of a tenant.
    pub fn stats(&self, tenant: &str) -> Result<Vec<(CaseState, String, Totals)>, ReadModelError> {
        let mut prefix = key(b't', &[tenant.as_bytes()]);
        prefix.push(SEP);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (k, v) = entry?;
            let rest = &k[prefix.len()..];
            let Some((&code, rest)) = rest.split_first() else {
                continue;
            };
            let Some(state) = recoup_proto::convert::state_from_proto(i32::from(code)) else {
                continue;
            };
            let currency = String::from_utf8_lossy(rest.strip_prefix(&[SEP]).unwrap_or(rest));
            out.push((state, currency.into_owned(), Totals::decode(&v)));
        }
        Ok(out)
    }

    /// Number of messages kept because they could not be applied (on arrival, or when they
    /// were parked and their turn came).
    pub fn rejected_count(&self) -> usize {
        self.tree.scan_prefix(b"x").count() + self.tree.scan_prefix(b"y").count()
    }

    /// Every (tenant, case id, applied version) this read model knows: held cases and deleted
    /// ones.
    pub fn applied_versions(&self) -> Result<Vec<(String, String, u64)>, ReadModelError> {
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(b"c") {
            let (k, v) = entry?;
            let Some((tenant, case_id)) = split_pair(&k[1..]) else {
                continue;
            };
            let version = v1::DebtCase::decode(v.as_ref())
                .map_err(|e| ReadModelError::Corrupt {
                    key: format!("case {tenant}/{case_id}"),
                    reason: e.to_string(),
                })?
                .version;
            out.push((tenant, case_id, version));
        }
        for entry in self.tree.scan_prefix(b"v") {
            let (k, v) = entry?;
            let (Some((tenant, case_id)), Ok(version)) =
                (split_pair(&k[1..]), <[u8; 8]>::try_from(v.as_ref()))
            else {
                continue;
            };
            out.push((tenant, case_id, u64::from_be_bytes(version)));
        }
        Ok(out)
    }

    /// The database, for read models kept beside this one.
    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Flushes to disk.
    pub fn flush(&self) -> Result<(), ReadModelError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Splits `\0tenant\0case` into its two parts.
fn split_pair(k: &[u8]) -> Option<(String, String)> {
    let rest = k.strip_prefix(&[SEP])?;
    let sep = rest.iter().position(|b| *b == SEP)?;
    Some((
        String::from_utf8_lossy(&rest[..sep]).into_owned(),
        String::from_utf8_lossy(&rest[sep + 1..]).into_owned(),
    ))
}

/// What became of one message.
enum Step {
    Applied(usize),
    Duplicate,
    Parked,
    Rejected(String),
}
