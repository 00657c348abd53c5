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
use std::sync::{Arc, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use prost::Message;
use recoup_proto::v1;

use crate::filter::{KeyFilter, key_hash};

/// What is stored per `(account_uid, snapshot_date)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Hash of the snapshot's content (`encode_snapshot_content`).
    pub fingerprint: u128,
    /// When the snapshot was first recorded.
    pub created_at_micros: i64,
    /// 1 for the first content, +1 per change.
    pub revision: u64,
    /// The import that published this content ([`import_tag`]).
    pub import: u128,
}

/// The fingerprint of a snapshot whose content is not known to be published: no row's content
/// hashes to it (xxh3-128 gives 0 with probability 2^-128).
pub const UNKNOWN_CONTENT: u128 = 0;

/// An import id as 128 bits: the id itself when it is 32 hex digits (as import ids are),
/// otherwise its hash.
pub fn import_tag(import_id: &str) -> u128 {
    match u128::from_str_radix(import_id, 16) {
        Ok(tag) if import_id.len() == 32 => tag,
        _ => xxhash_rust::xxh3::xxh3_128(import_id.as_bytes()),
    }
}

impl Stored {
    fn to_bytes(self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out[..16].copy_from_slice(&self.fingerprint.to_be_bytes());
        out[16..24].copy_from_slice(&self.created_at_micros.to_be_bytes());
        out[24..32].copy_from_slice(&self.revision.to_be_bytes());
        out[32..].copy_from_slice(&self.import.to_be_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            fingerprint: u128::from_be_bytes(bytes.get(..16)?.try_into().ok()?),
            created_at_micros: i64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?),
            revision: u64::from_be_bytes(bytes.get(24..32)?.try_into().ok()?),
            import: u128::from_be_bytes(bytes.get(32..48)?.try_into().ok()?),
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
    /// Every snapshot key in the tree (and, rarely, one that was removed); replaced by a larger
    /// one when it fills up.
    filter: Arc<RwLock<KeyFilter>>,
}

fn push_str(key: &mut Vec<u8>, part: &str) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

/// The store key of one `(tenant, account_uid, snapshot_date)`.
pub type SnapshotKey = Vec<u8>;

/// The key of `(account_uid, snapshot_date)` of a tenant. The tenant is part of the key
/// although `account_uid` starts with it: `a` + origin `b_c` and `a_b` + origin `c` give the
/// same `account_uid`, and tenants must never see each other's rows. (Hashing the key would make
/// it shorter, but sled then writes all over the tree: an import of sorted accounts became three
/// times slower.)
pub fn snapshot_key(tenant: &str, account_uid: &str, date: NaiveDate) -> SnapshotKey {
    let mut key = Vec::with_capacity(1 + 8 + tenant.len() + account_uid.len() + 4);
    key.push(b'f');
    push_str(&mut key, tenant);
    push_str(&mut key, account_uid);
    key.extend_from_slice(&date_bytes(date));
    key
}

/// The parts of a snapshot key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParts {
    pub tenant: String,
    pub account_uid: String,
    pub date: NaiveDate,
}

fn take_str(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let text = std::str::from_utf8(bytes.get(4..4 + len)?).ok()?;
    Some((text.to_owned(), &bytes[4 + len..]))
}

/// The parts of a key made by [`snapshot_key`].
pub fn parse_snapshot_key(key: &[u8]) -> Option<SnapshotParts> {
    let rest = key.strip_prefix(b"f")?;
    let (tenant, rest) = take_str(rest)?;
    let (account_uid, rest) = take_str(rest)?;
    let days = u32::from_be_bytes(rest.try_into().ok()?) ^ 0x8000_0000;
    let date = NaiveDate::from_num_days_from_ce_opt(days as i32)?;
    Some(SnapshotParts {
        tenant,
        account_uid,
        date,
    })
}

/// A key filter with room for at least `capacity` keys, holding every snapshot key of `tree`.
fn filter_of(tree: &sled::Tree, capacity: u64) -> Result<KeyFilter, StoreError> {
    let keys = tree.scan_prefix(b"f").keys();
    let mut hashes = Vec::new();
    for key in keys {
        hashes.push(key_hash(&key?));
    }
    let filter = KeyFilter::with_capacity(capacity.max(hashes.len() as u64 * 2));
    for hash in hashes {
        filter.insert(hash);
    }
    Ok(filter)
}

/// Set by a clean shutdown once everything published was projected (embedded mode).
const CLEAN_MARKER: &[u8] = b"m-clean";

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
    /// Hashes of the snapshot keys written, for the key filter.
    hashes: Vec<u128>,
}

impl StoreBatch {
    /// Records the content now published for a snapshot key.
    pub fn snapshot(&mut self, key: &[u8], stored: Stored) {
        self.batch.insert(key, stored.to_bytes().as_slice());
        self.hashes.push(key_hash(key));
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
        // Imports stream through and look keys up nearly in order (new days not at all, see the
        // key filter): a small cache keeps the memory of a big import flat. sled holds several
        // times its nominal cache.
        Self::open_with_cache(dir, 4 * 1024 * 1024)
    }

    /// Opens the store with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let tree = db.open_tree("imports")?;
        let filter = Arc::new(RwLock::new(filter_of(&tree, 0)?));
        Ok(Self { db, tree, filter })
    }

    /// What is stored for a snapshot key.
    pub fn snapshot(&self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let known = self
            .filter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .may_contain(key_hash(key));
        if !known {
            return Ok(None);
        }
        Ok(self
            .tree
            .get(key)?
            .and_then(|bytes| Stored::from_bytes(&bytes)))
    }

    /// Applies the writes of one batch atomically (not yet flushed).
    pub fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        let full = {
            // Keys enter the filter before the tree, so a lookup never misses a written key;
            // the read guard is held over the write, so a filter being rebuilt from the tree
            // (under the write lock) sees either all of this batch or none of it.
            let filter = self
                .filter
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for hash in &batch.hashes {
                filter.insert(*hash);
            }
            self.tree.apply_batch(batch.batch)?;
            filter.len() > filter.capacity()
        };
        if full {
            self.grow_filter()?;
        }
        Ok(())
    }

    /// How many keys the key filter is built for now.
    pub fn key_filter_capacity(&self) -> u64 {
        self.filter
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .capacity()
    }

    /// Replaces a full key filter with one twice the size, built from the tree.
    fn grow_filter(&self) -> Result<(), StoreError> {
        let mut filter = self
            .filter
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if filter.len() <= filter.capacity() {
            // Another writer grew it meanwhile.
            return Ok(());
        }
        // No write is between filter and tree now (they hold the read guard): the tree holds
        // every key.
        let wanted = filter.capacity().saturating_mul(2);
        *filter = filter_of(&self.tree, wanted)?;
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

    /// Every stored snapshot with its key's parts, for the check at start in embedded mode.
    pub fn snapshots(&self) -> impl Iterator<Item = Result<(SnapshotParts, Stored), StoreError>> {
        self.tree.scan_prefix(b"f").filter_map(|entry| match entry {
            Err(e) => Some(Err(StoreError::Sled(e))),
            Ok((key, value)) => Some(Ok((parse_snapshot_key(&key)?, Stored::from_bytes(&value)?))),
        })
    }

    /// Forgets the content of snapshots whose events never reached the read models (keeping
    /// their revisions), and the reports of the imports that published them, so that sending
    /// those uploads again publishes them again, with a higher revision.
    /// Returns the ids of the forgotten imports.
    pub fn forget(&self, stale: &[(SnapshotParts, Stored)]) -> Result<Vec<String>, StoreError> {
        let mut batch = sled::Batch::default();
        let mut imports = std::collections::HashSet::new();
        for (parts, stored) in stale {
            // Not removed: the revision must go on counting up, or the next import would send
            // revision 1 again, which a read model holding a later one skips. An unknown
            // fingerprint matches no content, so the row is published again.
            let unknown = Stored {
                fingerprint: UNKNOWN_CONTENT,
                ..*stored
            };
            batch.insert(
                snapshot_key(&parts.tenant, &parts.account_uid, parts.date),
                unknown.to_bytes().as_slice(),
            );
            imports.insert((parts.tenant.clone(), stored.import));
        }
        let mut forgotten = Vec::new();
        for entry in self.tree.scan_prefix(b"r") {
            let (key, _) = entry?;
            let Some((tenant, rest)) = take_str(&key[1..]) else {
                continue;
            };
            let import_id = String::from_utf8_lossy(rest).into_owned();
            if imports.contains(&(tenant, import_tag(&import_id))) {
                batch.remove(key);
                forgotten.push(import_id);
            }
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(forgotten)
    }

    /// Raises the revisions of snapshots whose read model holds a later one than the store
    /// remembers (fingerprint writes lost with a crash), so the next change counts on above it,
    /// and forgets their content, so the next import of them publishes what it says.
    pub fn raise_revisions(
        &self,
        ahead: &[(SnapshotParts, Stored, u64)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (parts, stored, revision) in ahead {
            // Which content the read model holds is not known here: publish it again next time.
            let raised = Stored {
                revision: *revision,
                fingerprint: UNKNOWN_CONTENT,
                ..*stored
            };
            batch.insert(
                snapshot_key(&parts.tenant, &parts.account_uid, parts.date),
                raised.to_bytes().as_slice(),
            );
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Records that everything published was projected (a clean shutdown in embedded mode).
    pub fn mark_clean(&self) -> Result<(), StoreError> {
        self.tree.insert(CLEAN_MARKER, &[1u8])?;
        self.db.flush()?;
        Ok(())
    }

    /// Whether the last run ended cleanly; clears the mark for this run.
    pub fn take_clean_mark(&self) -> Result<bool, StoreError> {
        Ok(self.tree.remove(CLEAN_MARKER)?.is_some())
    }

    /// Makes every write durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}
