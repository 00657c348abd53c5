//! What the importer remembers, in one sled tree:
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `g` | tenant (length-prefixed), snapshot_date (days, BE, sign flipped), first account_uid of the block | a block: up to [`BLOCK_ENTRIES`] `(account_uid, `[`Stored`]`)` in account order |
//! | `r` | tenant (length-prefixed), import id | encoded `recoup.v1.ImportReport` without its errors |
//! | `e` | tenant (length-prefixed), import id, error sequence (u64 BE) | encoded `recoup.v1.RowError` |
//! | `l` | tenant (length-prefixed), finished at (µs since the epoch, u64 BE), import id | empty: the tenant's imports in the order they finished |
//! | `v` | sequence (u64 BE) | a published `AccountSnapshotRecorded` envelope: the record of the snapshot stream, kept when the store keeps it ([`ImportStore::keep_record`]) |
//!
//! A fingerprint is written only after the broker acknowledged the snapshot's event, so a stored
//! fingerprint always means "this content was published".
//!
//! Fingerprints are kept in blocks rather than one sled entry each: sled splits its leaves every
//! 16 entries, and an import writing one entry per row spent half of its time in sled. A block
//! covers the accounts of one tenant and day from its first account_uid up to the next block's;
//! a batch of acknowledged rows reads and rewrites each block it touches once. A row is still
//! named by its [`SnapshotKey`] (the layout of the `f` entries of earlier versions, which
//! [`ImportStore::open`] moves into blocks).

use std::path::Path;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use prost::Message;
use recoup_keys::record::RecordLog;
use recoup_keys::store::StoreOptions;
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

/// Size of an encoded [`Stored`].
const STORED_BYTES: usize = 48;

impl Stored {
    fn to_bytes(self) -> [u8; STORED_BYTES] {
        let mut out = [0u8; STORED_BYTES];
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
    /// Held while blocks are read and rewritten: two writers must not rewrite one block from
    /// the same old content.
    block_writes: Arc<std::sync::Mutex<()>>,
    /// The events published, when this store is the snapshot stream's record.
    record: Option<RecordLog>,
}

/// The prefix of the record's entries.
const RECORD_PREFIX: u8 = b'v';

mod blocks;
mod keys;
mod reports;

pub use self::blocks::BLOCK_ENTRIES;
use self::blocks::{OpenBlock, block_entries, find_in_block};
use self::keys::{
    BLOCK_PREFIX, CLEAN_MARKER, SNAPSHOT_PREFIX, block_of, block_prefix_len, error_key, list_key,
    parse_report_key, snapshot_key_of_block,
};
pub use self::keys::{SnapshotKey, SnapshotParts, parse_snapshot_key, snapshot_key};
pub use self::reports::ListPosition;
use self::reports::finished_micros;

/// A key filter with room for at least `capacity` keys, holding every snapshot key of `tree`.
fn filter_of(tree: &sled::Tree, capacity: u64) -> Result<KeyFilter, StoreError> {
    let mut hashes = Vec::new();
    let mut key = Vec::new();
    for block in tree.scan_prefix([BLOCK_PREFIX]) {
        let (block_key, value) = block?;
        let Some(prefix_len) = block_prefix_len(&block_key) else {
            continue;
        };
        for (uid, _) in block_entries(&value) {
            snapshot_key_of_block(&block_key[..prefix_len], uid, &mut key);
            hashes.push(key_hash(&key));
        }
    }
    let filter = KeyFilter::with_capacity(capacity.max(hashes.len() as u64 * 2));
    for hash in hashes {
        filter.insert(hash);
    }
    Ok(filter)
}

/// Writes of one acknowledged batch, applied atomically.
#[derive(Default)]
pub struct StoreBatch {
    batch: sled::Batch,
    snapshots: Vec<(SnapshotKey, Stored)>,
    /// Hashes of the snapshot keys written, for the key filter.
    hashes: Vec<u128>,
    /// The envelopes published, for the record.
    events: Vec<Vec<u8>>,
}

impl StoreBatch {
    /// Records the content now published for a snapshot key.
    pub fn snapshot(&mut self, key: &[u8], stored: Stored) {
        self.snapshots.push((key.to_vec(), stored));
        self.hashes.push(key_hash(key));
    }

    /// Records the envelope Kafka acknowledged, for the stream's record.
    pub fn published(&mut self, envelope: Vec<u8>) {
        self.events.push(envelope);
    }

    /// Records one error of an import under its sequence number.
    pub fn error(&mut self, tenant: &str, import_id: &str, sequence: u64, error: &v1::RowError) {
        self.batch.insert(
            error_key(tenant, import_id, sequence),
            error.encode_to_vec(),
        );
    }
}

/// The import store's page cache at most. Imports stream through and look keys up nearly in
/// order (new days not at all, see the key filter): a small cache keeps the memory of a big
/// import flat.
pub const CACHE_BYTES: u64 = 4 * 1024 * 1024;

impl ImportStore {
    /// Opens (or creates) the store in `dir`, its database as by default.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`: compressed as `options` say, with a page cache of
    /// at most [`CACHE_BYTES`].
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let options = StoreOptions {
            cache_bytes: options.cache_bytes.min(CACHE_BYTES),
            ..options
        };
        let db = recoup_keys::store::open(dir, options)?;
        let tree = db.open_tree("imports")?;
        let filter = Arc::new(RwLock::new(KeyFilter::with_capacity(0)));
        let store = Self {
            db,
            tree,
            filter,
            block_writes: Arc::default(),
            record: None,
        };
        store.move_entries_into_blocks()?;
        store.list_earlier_reports()?;
        *store
            .filter
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = filter_of(&store.tree, 0)?;
        Ok(store)
    }

    /// Keeps every event published from now on in the store (`v`): the store becomes the
    /// system of record of the snapshot stream, which [`ImportStore::record`] reads.
    pub fn keep_record(mut self) -> Result<Self, StoreError> {
        self.record = Some(RecordLog::open(&self.tree, RECORD_PREFIX)?);
        Ok(self)
    }

    /// The record of the snapshot stream, when this store keeps it.
    pub fn record(&self) -> Option<RecordLog> {
        self.record.clone()
    }

    /// Moves the one-entry-per-snapshot fingerprints of earlier versions into blocks.
    fn move_entries_into_blocks(&self) -> Result<(), StoreError> {
        let (mut moved, mut unreadable) = (0u64, 0u64);
        loop {
            let mut entries = Vec::new();
            let mut batch = sled::Batch::default();
            let mut scanned = 0;
            for entry in self.tree.scan_prefix([SNAPSHOT_PREFIX]).take(10_000) {
                let (key, value) = entry?;
                scanned += 1;
                match Stored::from_bytes(&value).filter(|_| block_of(&key).is_some()) {
                    Some(stored) => entries.push((key.to_vec(), stored)),
                    None => unreadable += 1,
                }
                batch.remove(key);
            }
            if scanned == 0 {
                break;
            }
            moved += entries.len() as u64;
            let _writing = self.writing_blocks();
            self.write_blocks(entries, &mut batch)?;
            self.tree.apply_batch(batch)?;
        }
        if moved + unreadable > 0 {
            self.db.flush()?;
            tracing::info!(
                moved,
                unreadable,
                "importer store: fingerprints moved into blocks (a store of this layout cannot \
                 be opened by earlier versions)"
            );
        }
        Ok(())
    }

    /// The turn to read and rewrite blocks, held until the rewritten blocks are applied.
    fn writing_blocks(&self) -> std::sync::MutexGuard<'_, ()> {
        self.block_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `entries` into the blocks they belong to: each block touched is read once and
    /// written into `batch`. The caller holds `block_writes` until `batch` is applied.
    fn write_blocks(
        &self,
        entries: Vec<(SnapshotKey, Stored)>,
        batch: &mut sled::Batch,
    ) -> Result<(), StoreError> {
        let mut rows: Vec<(Vec<u8>, &[u8], Stored)> = entries
            .iter()
            .filter_map(|(key, stored)| block_of(key).map(|(prefix, uid)| (prefix, uid, *stored)))
            .collect();
        // Stable: of one key written twice, the later content wins.
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut open: Option<OpenBlock> = None;
        let mut full = Vec::new();
        for (prefix, uid, stored) in rows {
            full.clear();
            full.extend_from_slice(&prefix);
            full.extend_from_slice(uid);
            let block = match open.take() {
                Some(block) if block.covers(&prefix, &full) => block,
                other => {
                    if let Some(done) = other {
                        done.write(batch);
                    }
                    self.open_block(&prefix, &full)?
                }
            };
            open.insert(block).put(uid, stored);
        }
        if let Some(done) = open {
            done.write(batch);
        }
        Ok(())
    }

    /// The block that holds (or would hold) the account of `full` (block prefix + account_uid).
    fn open_block(&self, prefix: &[u8], full: &[u8]) -> Result<OpenBlock, StoreError> {
        use std::ops::Bound;
        let next_after = |from: Bound<&[u8]>| -> Result<Option<Vec<u8>>, StoreError> {
            match self.tree.range::<&[u8], _>((from, Bound::Unbounded)).next() {
                Some(Ok((key, _))) if key.starts_with(prefix) => Ok(Some(key.to_vec())),
                Some(Err(e)) => Err(e.into()),
                _ => Ok(None),
            }
        };
        match self.tree.range(prefix..=full).next_back().transpose()? {
            Some((key, value)) => Ok(OpenBlock {
                entries: block_entries(&value)
                    .map(|(uid, stored)| (uid.to_vec(), stored))
                    .collect(),
                upper: next_after(Bound::Excluded(&key))?,
                key: key.to_vec(),
                prefix_len: prefix.len(),
            }),
            // Below the first block of the day (or the day's first row): a new block.
            None => Ok(OpenBlock {
                key: full.to_vec(),
                prefix_len: prefix.len(),
                entries: Vec::new(),
                upper: next_after(Bound::Included(full))?,
            }),
        }
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
        let Some((mut full, uid)) = block_of(key) else {
            return Ok(None);
        };
        let prefix_len = full.len();
        full.extend_from_slice(uid);
        // The block with the greatest first account at or below this one (of this tenant and
        // day: every key between the prefix and `full` starts with the prefix).
        let found = self
            .tree
            .range(&full[..prefix_len]..=&full[..])
            .next_back()
            .transpose()?;
        Ok(found.and_then(|(_, block)| find_in_block(&block, uid)))
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
            let StoreBatch {
                mut batch,
                snapshots,
                events,
                ..
            } = batch;
            // In the batch that remembers them as published: a fingerprint stored means its
            // event is in the record.
            if let Some(record) = &self.record {
                for event in &events {
                    record.append(&mut batch, event);
                }
            }
            let _writing = self.writing_blocks();
            self.write_blocks(snapshots, &mut batch)?;
            self.tree.apply_batch(batch)?;
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

    /// Every stored snapshot with its key's parts, for the check at start in embedded mode.
    pub fn snapshots(&self) -> impl Iterator<Item = Result<(SnapshotParts, Stored), StoreError>> {
        self.tree.scan_prefix([BLOCK_PREFIX]).flat_map(
            |block| -> Vec<Result<(SnapshotParts, Stored), StoreError>> {
                let (block_key, value) = match block {
                    Ok(block) => block,
                    Err(e) => return vec![Err(e.into())],
                };
                let Some(prefix_len) = block_prefix_len(&block_key) else {
                    return Vec::new();
                };
                let mut key = Vec::new();
                block_entries(&value)
                    .filter_map(|(uid, stored)| {
                        snapshot_key_of_block(&block_key[..prefix_len], uid, &mut key);
                        Some(Ok((parse_snapshot_key(&key)?, stored)))
                    })
                    .collect()
            },
        )
    }

    /// Forgets the content of snapshots whose events never reached the read models (keeping
    /// their revisions), and the reports of the imports that published them, so that sending
    /// those uploads again publishes them again, with a higher revision.
    /// Returns the ids of the forgotten imports.
    pub fn forget(&self, stale: &[(SnapshotParts, Stored)]) -> Result<Vec<String>, StoreError> {
        let mut batch = sled::Batch::default();
        let mut imports = std::collections::HashSet::new();
        let mut entries = Vec::with_capacity(stale.len());
        for (parts, stored) in stale {
            // Not removed: the revision must go on counting up, or the next import would send
            // revision 1 again, which a read model holding a later one skips. An unknown
            // fingerprint matches no content, so the row is published again.
            let unknown = Stored {
                fingerprint: UNKNOWN_CONTENT,
                ..*stored
            };
            entries.push((
                snapshot_key(&parts.tenant, &parts.account_uid, parts.date),
                unknown,
            ));
            imports.insert((parts.tenant.clone(), stored.import));
        }
        let _writing = self.writing_blocks();
        self.write_blocks(entries, &mut batch)?;
        let mut forgotten = Vec::new();
        for entry in self.tree.scan_prefix(b"r") {
            let (key, value) = entry?;
            let Some((tenant, import_id)) = parse_report_key(&key) else {
                continue;
            };
            if imports.contains(&(tenant.clone(), import_tag(&import_id))) {
                if let Ok(report) = v1::ImportReport::decode(value.as_ref()) {
                    batch.remove(list_key(&tenant, finished_micros(&report), &import_id));
                }
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
        let mut entries = Vec::with_capacity(ahead.len());
        for (parts, stored, revision) in ahead {
            // Which content the read model holds is not known here: publish it again next time.
            let raised = Stored {
                revision: *revision,
                fingerprint: UNKNOWN_CONTENT,
                ..*stored
            };
            entries.push((
                snapshot_key(&parts.tenant, &parts.account_uid, parts.date),
                raised,
            ));
        }
        let _writing = self.writing_blocks();
        self.write_blocks(entries, &mut batch)?;
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
