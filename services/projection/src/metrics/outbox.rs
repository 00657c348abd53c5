//! The stage's outbox. A batch appends a small [`Pointer`] per result to publish (`P`, in append
//! order); the relay (`event_backbone::outbox::OutboxRelay` over [`MetricsStage`]) builds each
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
//! Records of the stage's first layout (`O`: whole `OutboxRecord`s) are published first.

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
const RECORDS: &[u8] = b"O";
/// Pointers.
const POINTERS: &[u8] = b"P";

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
    /// The encoded pointer to the result `revision` of one account-day.
    pub(super) fn of(
        trigger: &Trigger,
        (tenant, account_uid): &(String, String),
        date: NaiveDate,
        (snapshot_revision, revision): (u64, u64),
        calculated: &Result<Vec<u8>, String>,
    ) -> Vec<u8> {
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
        .encode_to_vec()
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
            schema_version: 1,
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

impl Outbox for MetricsStage {
    type Error = ReadModelError;

    /// Up to `max` records in append order; pointers whose result was replaced since are
    /// removed on the way.
    fn pending(&self, max: usize) -> Result<Vec<(Vec<u8>, OutboxRecord)>, ReadModelError> {
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in self.tree.scan_prefix(RECORDS).take(max) {
            let (key, value) = entry?;
            let record =
                OutboxRecord::decode(value.as_ref()).map_err(|e| corrupt(&key, &e.to_string()))?;
            out.push((key.to_vec(), record));
        }
        let mut superseded = sled::Batch::default();
        for entry in self.tree.scan_prefix(POINTERS).take(max - out.len()) {
            let (key, value) = entry?;
            let pointer =
                Pointer::decode(value.as_ref()).map_err(|e| corrupt(&key, &e.to_string()))?;
            let date = NaiveDate::from_num_days_from_ce_opt(pointer.day)
                .ok_or_else(|| corrupt(&key, "pointer day"))?;
            match self.result(&result_key(&pointer.tenant, &pointer.account_uid, date))? {
                Some(shown) if shown.revision == pointer.revision => {
                    out.push((key.to_vec(), pointer.record(date, shown.calculated)));
                }
                _ => superseded.remove(key),
            }
        }
        self.tree.apply_batch(superseded)?;
        Ok(out)
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<(), ReadModelError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key.as_slice());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    fn len(&self) -> usize {
        self.tree.scan_prefix(RECORDS).count() + self.tree.scan_prefix(POINTERS).count()
    }
}
