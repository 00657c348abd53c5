//! The case read model in one sled tree, so that the read-model changes of a batch of messages
//! and the consumer offsets after it are written by one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | tenant, case id | encoded `recoup.v1.DebtCase` |
//! | `s` | tenant, state (u8), case id | empty: cases by state |
//! | `t` | tenant, state (u8), currency | count, amount, collected (3 × i64 BE) |
//! | `v` | tenant, case id | last applied version (u64 BE); kept after deletion |
//! | `p` | tenant, case id, version (u64 BE) | envelope that arrived before its predecessor |
//! | `o` | cluster id, topic, partition (i32 BE) | next offset to read (i64 BE) |
//! | `x` | cluster id, topic, partition, offset | a message that could not be applied, with the reason |

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use debt_cases::{CaseState, DebtCase};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{decode_envelope, occurred_at};
use prost::Message;
use recoup_proto::convert::{case_from_proto, case_to_proto, event_from_payload, state_to_proto};
use recoup_proto::v1;

/// The aggregate type of debt-case envelopes.
pub const DEBT_CASE_AGGREGATE: &str = "debt_case";

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
}

/// The case read model.
#[derive(Clone)]
pub struct ReadModel {
    db: sled::Db,
    tree: sled::Tree,
}

/// Changes of one batch, before they are written.
#[derive(Default)]
struct Staged {
    cases: HashMap<(String, String), Option<DebtCase>>,
    versions: HashMap<(String, String), u64>,
    stats: BTreeMap<Vec<u8>, Totals>,
    /// Events parked by this batch (also in `batch`), so a later message of it can follow them.
    pending: HashMap<Vec<u8>, Vec<u8>>,
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
        Ok(Self { db, tree })
    }

    /// The next offset to read per partition of `topic` on cluster `cluster` (`None`: from the
    /// beginning).
    pub fn offsets(
        &self,
        cluster: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, ReadModelError> {
        partitions
            .iter()
            .map(|p| {
                let next = self
                    .tree
                    .get(offset_key(cluster, topic, *p))?
                    .and_then(|v| v.as_ref().try_into().ok().map(i64::from_be_bytes));
                Ok((*p, next))
            })
            .collect()
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
                Applied::Applied(n) => outcome.applied += n,
                Applied::Duplicate => outcome.duplicates += 1,
                Applied::Parked => outcome.parked += 1,
                Applied::Rejected(reason) => {
                    outcome.rejected += 1;
                    tracing::error!(
                        topic, partition = message.partition, offset = message.offset, %reason,
                        "event cannot be applied; kept in the read model's rejects"
                    );
                    let mut value = reason.into_bytes();
                    value.push(SEP);
                    value.extend_from_slice(&message.value);
                    staged.batch.insert(
                        rejected_key(cluster, topic, message.partition, message.offset),
                        value,
                    );
                }
            }
        }
        self.stage_writes(&mut staged)?;
        for (partition, next) in next_offsets {
            staged
                .batch
                .insert(offset_key(cluster, topic, partition), &next.to_be_bytes());
        }
        self.tree.apply_batch(staged.batch)?;
        Ok(outcome)
    }

    fn apply_message(&self, bytes: &[u8], staged: &mut Staged) -> Result<Applied, ReadModelError> {
        let envelope = match decode_envelope(bytes) {
            Ok(e) => e,
            Err(e) => return Ok(Applied::Rejected(e.to_string())),
        };
        if envelope.aggregate_type != DEBT_CASE_AGGREGATE {
            return Ok(Applied::Rejected(format!(
                "aggregate type {:?} does not belong on this topic",
                envelope.aggregate_type
            )));
        }
        let id = (envelope.tenant.clone(), envelope.aggregate_id.clone());
        let applied = self.applied_version_staged(&id, staged)?;
        let version = envelope.aggregate_version;
        if version <= applied {
            return Ok(Applied::Duplicate);
        }
        if version > applied + 1 {
            let k = pending_key(&id.0, &id.1, version);
            staged.pending.insert(k.clone(), bytes.to_vec());
            staged.batch.insert(k, bytes);
            return Ok(Applied::Parked);
        }
        let mut count = 0;
        let mut next: Option<Vec<u8>> = None;
        let mut current = envelope;
        loop {
            if let Err(reason) = self.apply_envelope(&current, &id, staged)? {
                return Ok(if count == 0 {
                    Applied::Rejected(reason)
                } else {
                    Applied::Applied(count)
                });
            }
            count += 1;
            if let Some(k) = next.take() {
                staged.pending.remove(&k);
                staged.batch.remove(k);
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
        Ok(Applied::Applied(count))
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
        let before = self.case_staged(id, staged)?;
        let after = match (&before, DebtCase::from_created(&event)) {
            (None, Some(created)) => created,
            (None, None) => {
                return Ok(Err(format!(
                    "{} for a case the read model does not hold",
                    envelope.event_type
                )));
            }
            (Some(_), Some(_)) => return Ok(Err("second creation of the same case".into())),
            (Some(case), None) => {
                let mut case = case.clone();
                case.apply(&event);
                case
            }
        };
        if after.version != envelope.aggregate_version {
            return Ok(Err(format!(
                "event says version {}, applying it gives {}",
                envelope.aggregate_version, after.version
            )));
        }
        if let Some(b) = &before {
            self.stage_stats(staged, b, -1)?;
            staged.batch.remove(state_key(&id.0, b.state, &id.1));
        }
        staged.versions.insert(id.clone(), after.version);
        if after.deleted_on.is_some() {
            staged.cases.insert(id.clone(), None);
        } else {
            self.stage_stats(staged, &after, 1)?;
            staged
                .batch
                .insert(state_key(&id.0, after.state, &id.1), &[] as &[u8]);
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

    fn stage_writes(&self, staged: &mut Staged) -> Result<(), ReadModelError> {
        for ((tenant, case_id), case) in staged.cases.drain() {
            let k = case_key(&tenant, &case_id);
            match case {
                Some(c) => staged.batch.insert(k, case_to_proto(&c).encode_to_vec()),
                None => staged.batch.remove(k),
            }
        }
        for ((tenant, case_id), version) in staged.versions.drain() {
            staged
                .batch
                .insert(version_key(&tenant, &case_id), &version.to_be_bytes());
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
        staged: &Staged,
    ) -> Result<u64, ReadModelError> {
        if let Some(v) = staged.versions.get(id) {
            return Ok(*v);
        }
        self.applied_version(&id.0, &id.1)
    }

    fn case_staged(
        &self,
        id: &(String, String),
        staged: &Staged,
    ) -> Result<Option<DebtCase>, ReadModelError> {
        if let Some(c) = staged.cases.get(id) {
            return Ok(c.clone());
        }
        self.case(&id.0, &id.1)
    }

    /// The last version of a case this read model applied (0: none).
    pub fn applied_version(&self, tenant: &str, case_id: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(version_key(tenant, case_id))?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0))
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

    /// Number of messages kept because they could not be applied.
    pub fn rejected_count(&self) -> usize {
        self.tree.scan_prefix(b"x").count()
    }

    /// Every (tenant, case id, applied version) this read model knows.
    pub fn applied_versions(
        &self,
    ) -> impl Iterator<Item = Result<(String, String, u64), ReadModelError>> + '_ {
        self.tree.scan_prefix(b"v").filter_map(|entry| {
            let (k, v) = match entry {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            let rest = k.strip_prefix(b"v\0")?;
            let sep = rest.iter().position(|b| *b == SEP)?;
            let tenant = String::from_utf8_lossy(&rest[..sep]).into_owned();
            let case_id = String::from_utf8_lossy(&rest[sep + 1..]).into_owned();
            let version = u64::from_be_bytes(v.as_ref().try_into().ok()?);
            Some(Ok((tenant, case_id, version)))
        })
    }

    /// Flushes to disk.
    pub fn flush(&self) -> Result<(), ReadModelError> {
        self.db.flush()?;
        Ok(())
    }
}

enum Applied {
    Applied(usize),
    Duplicate,
    Parked,
    Rejected(String),
}
