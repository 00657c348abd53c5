//! What the importer remembers, in one sled tree:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `f` | tenant, account_uid (length-prefixed), snapshot_date (days, BE, sign flipped) | [`Stored`]: content fingerprint, created_at, revision |
//! | `r` | tenant (length-prefixed), import id | encoded `recoup.v1.ImportReport` without its errors |
//! | `e` | tenant (length-prefixed), import id, error sequence (u64 BE) | encoded `recoup.v1.RowError` |
//!
//! A fingerprint is written only after the broker acknowledged the snapshot's event, so a stored
//! fingerprint always means "this content was published".

use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use recoup_proto::v1;

/// What is stored per `(account_uid, snapshot_date)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Hash of the snapshot's content (`encode_snapshot_content`).
    pub fingerprint: u128,
    /// When the snapshot was first recorded.
    pub created_at_micros: i64,
    /// 1 for the first content, +1 per change.
    pub revision: u64,
}

impl Stored {
    fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[..16].copy_from_slice(&self.fingerprint.to_be_bytes());
        out[16..24].copy_from_slice(&self.created_at_micros.to_be_bytes());
        out[24..].copy_from_slice(&self.revision.to_be_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            fingerprint: u128::from_be_bytes(bytes.get(..16)?.try_into().ok()?),
            created_at_micros: i64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?),
            revision: u64::from_be_bytes(bytes.get(24..32)?.try_into().ok()?),
        })
    }

    /// `created_at` as an instant.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.created_at_micros)
    }
}

/// The store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("importer store: {0}")]
    Sled(#[from] sled::Error),
    #[error("importer store: a stored report does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The importer's sled tree.
#[derive(Clone)]
pub struct ImportStore {
    db: sled::Db,
    tree: sled::Tree,
}

fn push_str(key: &mut Vec<u8>, part: &str) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// The key of `(account_uid, snapshot_date)` of a tenant. The tenant is part of the key
/// although `account_uid` starts with it: `a` + origin `b_c` and `a_b` + origin `c` give the
/// same `account_uid`, and tenants must never see each other's rows.
pub fn snapshot_key(tenant: &str, account_uid: &str, date: NaiveDate) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 + tenant.len() + account_uid.len() + 4);
    key.push(b'f');
    push_str(&mut key, tenant);
    push_str(&mut key, account_uid);
    key.extend_from_slice(&date_bytes(date));
    key
}

/// A date as 4 bytes that sort like the dates.
pub fn date_bytes(date: NaiveDate) -> [u8; 4] {
    let days = chrono::Datelike::num_days_from_ce(&date);
    ((days as u32) ^ 0x8000_0000).to_be_bytes()
}

fn report_key(tenant: &str, import_id: &str) -> Vec<u8> {
    let mut key = vec![b'r'];
    push_str(&mut key, tenant);
    key.extend_from_slice(import_id.as_bytes());
    key
}

fn errors_prefix(tenant: &str, import_id: &str) -> Vec<u8> {
    let mut key = vec![b'e'];
    push_str(&mut key, tenant);
    push_str(&mut key, import_id);
    key
}

/// Writes of one acknowledged batch, applied atomically.
#[derive(Default)]
pub struct StoreBatch {
    batch: sled::Batch,
}

impl StoreBatch {
    /// Records the content now published for a snapshot key.
    pub fn snapshot(&mut self, key: &[u8], stored: Stored) {
        self.batch.insert(key, &stored.to_bytes());
    }

    /// Records one error of an import under its sequence number.
    pub fn error(&mut self, tenant: &str, import_id: &str, sequence: u64, error: &v1::RowError) {
        let mut key = errors_prefix(tenant, import_id);
        key.extend_from_slice(&sequence.to_be_bytes());
        self.batch.insert(key, error.encode_to_vec());
    }
}

impl ImportStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            // Imports stream through; a small cache keeps the memory of a big import flat.
            .cache_capacity(32 * 1024 * 1024)
            .open()?;
        let tree = db.open_tree("imports")?;
        Ok(Self { db, tree })
    }

    /// What is stored for a snapshot key.
    pub fn snapshot(&self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        Ok(self
            .tree
            .get(key)?
            .and_then(|bytes| Stored::from_bytes(&bytes)))
    }

    /// Applies the writes of one batch atomically (not yet flushed).
    pub fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        self.tree.apply_batch(batch.batch)?;
        Ok(())
    }

    /// The finished report of an import, without its errors.
    pub fn report(
        &self,
        tenant: &str,
        import_id: &str,
    ) -> Result<Option<v1::ImportReport>, StoreError> {
        match self.tree.get(report_key(tenant, import_id))? {
            Some(bytes) => Ok(Some(v1::ImportReport::decode(bytes.as_ref())?)),
            None => Ok(None),
        }
    }

    /// Keeps a finished report (its errors are stored separately) and makes everything durable.
    pub async fn finish(&self, tenant: &str, report: &v1::ImportReport) -> Result<(), StoreError> {
        let mut summary = report.clone();
        summary.errors.clear();
        summary.next_errors_page_token.clear();
        summary.duplicate = false;
        self.tree.insert(
            report_key(tenant, &report.import_id),
            summary.encode_to_vec(),
        )?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Up to `limit` errors of an import from sequence `from` on, and the sequence after them
    /// when more follow.
    pub fn errors(
        &self,
        tenant: &str,
        import_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<v1::RowError>, Option<u64>), StoreError> {
        let prefix = errors_prefix(tenant, import_id);
        let mut start = prefix.clone();
        start.extend_from_slice(&from.to_be_bytes());
        let mut errors = Vec::new();
        for entry in self.tree.range(start..) {
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            let sequence = key
                .get(prefix.len()..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(u64::MAX);
            if errors.len() == limit {
                return Ok((errors, Some(sequence)));
            }
            errors.push(v1::RowError::decode(value.as_ref())?);
        }
        Ok((errors, None))
    }

    /// Makes every write durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
