//! The stage's outbox. A batch appends one entry (`P`, in append order) holding a small
//! [`Pointer`] per result to publish; the relay (`event_backbone::outbox::OutboxRelay` over [`MetricsStage`]) builds each
//! `AccountMetricsCalculated` event from the pointer and the account-day's result (`R`), so the
//! calculated fields are written once per account-day, and the encoding runs on the relay's
//! task rather than the projection's.
//!
//! A pointer whose result was replaced since (a later revision of the same account-day) is
//! dropped unpublished: the newer one follows it. Consumers keep the highest revision of each
//! account-day, so skipping one in between changes nothing for them, and a revision once
//! published always carries the same content and event id (derived from tenant, account, day,
//! revision and model version), also when a crash makes the relay send it again.
//!
//! The relay sees each pointer as a record of its own, under the entry's key followed by the
//! pointer's index; when it removes what Kafka acknowledged (a prefix, in order), an entry goes
//! once its last pointer is done, and is otherwise written again with the pointers left.
//!
//! Records of the stage's first layouts (`O`: whole `OutboxRecord`s) are published first.

use std::sync::Arc;

use chrono::NaiveDate;
use event_backbone::outbox::{Outbox, OutboxRecord};
use paygo_snapshots::credit::MODEL_VERSION;
use prost::Message;
use recoup_keys::Key;
use recoup_proto::contract::{actor, aggregate, event_type, topic};
use recoup_proto::metrics::encode_calculated;
use recoup_proto::snapshots::format_date;
use recoup_proto::v1;
use tokio::sync::Notify;

use super::results::result_key;
use super::{MetricsStage, corrupt};
use crate::kernel::ReadModelError;

/// Outbox records of the first layout.
pub(super) const RECORDS: &[u8] = b"O";
/// Pointers.
pub(super) const POINTERS: &[u8] = b"P";

pub(super) fn outbox_key(sequence: u64) -> Vec<u8> {
    Key::new(POINTERS[0]).u64(sequence).into_vec()
}

/// What a published result takes from the snapshot event that caused it.
#[derive(Debug, Clone)]
pub(super) struct Trigger {
    event_id: String,
    correlation_id: String,
    occurred_at: Option<prost_types::Timestamp>,
    recorded_at: Option<prost_types::Timestamp>,
}

impl Trigger {
    pub(super) fn of(envelope: &v1::EventEnvelope) -> Self {
        Self {
            event_id: envelope.event_id.clone(),
            correlation_id: envelope.correlation_id.clone(),
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
        }
    }
}

/// The results one batch publishes; `first` is the index of the first pointer left.
#[derive(Clone, PartialEq, Message)]
pub(super) struct Pointers {
    #[prost(uint32, tag = "1")]
    pub(super) first: u32,
    #[prost(message, repeated, tag = "2")]
    pub(super) pointers: Vec<Pointer>,
}

/// The key the relay knows one pointer by: its entry's key, then its index.
fn pointer_key(entry: &[u8], index: u32) -> Vec<u8> {
    let mut key = entry.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// One result to publish: which account-day and revision, and what its event carries besides
/// the calculated fields.
#[derive(Clone, PartialEq, Message)]
pub(super) struct Pointer {
    #[prost(string, tag = "1")]
    tenant: String,
    #[prost(string, tag = "2")]
    account_uid: String,
    /// Days since CE.
    #[prost(int32, tag = "3")]
    day: i32,
    #[prost(uint64, tag = "4")]
    revision: u64,
    /// The revision of the snapshot the result was computed from.
    #[prost(uint64, tag = "5")]
    snapshot_revision: u64,
    /// Why the day has no calculated fields (empty when it has).
    #[prost(string, tag = "6")]
    not_calculated: String,
    #[prost(string, tag = "7")]
    causation_id: String,
    #[prost(string, tag = "8")]
    correlation_id: String,
    #[prost(message, optional, tag = "9")]
    occurred_at: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "10")]
    recorded_at: Option<prost_types::Timestamp>,
}

impl Pointer {
    /// The pointer to the result `revision` of one account-day.
    pub(super) fn of(
        trigger: &Trigger,
        (tenant, account_uid): &(String, String),
        date: NaiveDate,
        (snapshot_revision, revision): (u64, u64),
        calculated: &Result<Vec<u8>, String>,
    ) -> Self {
        use chrono::Datelike as _;
        Pointer {
            tenant: tenant.clone(),
            account_uid: account_uid.clone(),
            day: date.num_days_from_ce(),
            revision,
            snapshot_revision,
            not_calculated: calculated.as_ref().err().cloned().unwrap_or_default(),
            causation_id: trigger.event_id.clone(),
            correlation_id: trigger.correlation_id.clone(),
            occurred_at: trigger.occurred_at,
            recorded_at: trigger.recorded_at,
        }
    }

    /// The record to publish, given the calculated fields of the result it points at.
    fn record(&self, date: NaiveDate, calculated: Option<Vec<u8>>) -> OutboxRecord {
        let calculated = calculated.ok_or_else(|| self.not_calculated.clone());
        let payload = encode_calculated(
            &self.account_uid,
            date,
            self.snapshot_revision,
            self.revision,
            &calculated,
        );
        let day = format_date(date);
        let event_id = event_id(&self.tenant, &self.account_uid, &day, self.revision);
        let envelope = v1::EventEnvelope {
            event_id: event_id.clone(),
            tenant: self.tenant.clone(),
            aggregate_type: aggregate::PAYGO_ACCOUNT_METRICS.to_owned(),
            aggregate_id: format!("{}@{day}", self.account_uid),
            aggregate_version: self.revision,
            // The snapshot event's times: a result computed again carries the same ones.
            occurred_at: self.occurred_at,
            recorded_at: self.recorded_at,
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            event_type: event_type::ACCOUNT_METRICS_CALCULATED.to_owned(),
            schema_version: recoup_proto::schema::current(event_type::ACCOUNT_METRICS_CALCULATED),
            payload,
            actor: actor::PAYGO_METRICS.to_owned(),
        };
        OutboxRecord {
            topic: topic::PAYGO_METRICS.to_owned(),
            key: self.account_uid.clone(),
            event_id,
            event_type: event_type::ACCOUNT_METRICS_CALCULATED.to_owned(),
            envelope: envelope.encode_to_vec(),
        }
    }
}

/// The event id of one result: the same for the same tenant, account, day, revision and model
/// version, whenever it is sent.
fn event_id(tenant: &str, account_uid: &str, day: &str, revision: u64) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for part in [tenant.as_bytes(), account_uid.as_bytes(), day.as_bytes()] {
        hasher.update(&(part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(&revision.to_be_bytes());
    hasher.update(&MODEL_VERSION.to_be_bytes());
    uuid::Uuid::from_u128(hasher.digest128()).to_string()
}

fn decode_entry(key: &[u8], value: &[u8]) -> Result<Pointers, ReadModelError> {
    Pointers::decode(value).map_err(|e| corrupt(key, &e.to_string()))
}

impl MetricsStage {
    /// The records of one entry's pointers, from `first` on; whether the entry holds none that
    /// is still to be published.
    fn entry_records(
        &self,
        key: &[u8],
        entry: Pointers,
        out: &mut Vec<(Vec<u8>, OutboxRecord)>,
    ) -> Result<bool, ReadModelError> {
        let mut live = false;
        for (index, pointer) in (entry.first..).zip(entry.pointers) {
            let date = NaiveDate::from_num_days_from_ce_opt(pointer.day)
                .ok_or_else(|| corrupt(key, "pointer day"))?;
            let result = result_key(&pointer.tenant, &pointer.account_uid, date);
            if let Some(shown) = self.result(&result)?
                && shown.revision == pointer.revision
            {
                live = true;
                out.push((
                    pointer_key(key, index),
                    pointer.record(date, shown.calculated),
                ));
            }
        }
        Ok(!live)
    }
}

impl Outbox for MetricsStage {
    type Error = ReadModelError;

    /// Records in append order, whole entries (a batch's results) until `max` is reached;
    /// entries whose results were all replaced since are removed on the way.
    fn pending(&self, max: usize) -> Result<Vec<(Vec<u8>, OutboxRecord)>, ReadModelError> {
        let mut out = Vec::with_capacity(max.min(4096));
        for entry in self.tree.scan_prefix(RECORDS).take(max) {
            let (key, value) = entry?;
            let record =
                OutboxRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, &e.to_string()))?;
            out.push((key.to_vec(), record));
        }
        let mut spent = sled::Batch::default();
        for entry in self.tree.scan_prefix(POINTERS) {
            if out.len() >= max {
                break;
            }
            let (key, value) = entry?;
            let pointers = decode_entry(&key, &value)?;
            if self.entry_records(&key, pointers, &mut out)? {
                spent.remove(key);
            }
        }
        self.tree.apply_batch(spent)?;
        Ok(out)
    }

    /// Removes what Kafka acknowledged: records, and pointers up to the last acknowledged of
    /// each entry (those before it that `pending` skipped were replaced).
    fn remove(&self, keys: &[Vec<u8>]) -> Result<(), ReadModelError> {
        let mut batch = sled::Batch::default();
        let mut done: std::collections::BTreeMap<&[u8], u32> = std::collections::BTreeMap::new();
        for key in keys {
            if key.first() == POINTERS.first() {
                let (entry, index) = key.split_at(key.len().saturating_sub(4));
                let index = u32::from_be_bytes(index.try_into().unwrap_or_default());
                let last = done.entry(entry).or_insert(index);
                *last = (*last).max(index);
            } else {
                batch.remove(key.as_slice());
            }
        }
        for (entry, last) in done {
            let Some(value) = self.tree.get(entry)? else {
                continue;
            };
            let mut pointers = decode_entry(entry, &value)?;
            let spent = (last + 1).saturating_sub(pointers.first) as usize;
            if spent >= pointers.pointers.len() {
                batch.remove(entry);
            } else {
                pointers.pointers.drain(..spent);
                pointers.first = last + 1;
                batch.insert(entry, pointers.encode_to_vec());
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    fn len(&self) -> usize {
        let pointers: usize = self
            .tree
            .scan_prefix(POINTERS)
            .filter_map(Result::ok)
            .filter_map(|(_, value)| Pointers::decode(value.as_ref()).ok())
            .map(|p| p.pointers.len())
            .sum();
        self.tree.scan_prefix(RECORDS).count() + pointers
    }
}
