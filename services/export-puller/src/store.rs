//! What the puller remembers, in one sled tree, per stream (a tenant's dataset):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `c` | stream | [`Checkpoint`] (JSON): the committed `since`, the chain in flight, narrowing in force |
//! | `g` | stream, segment sequence (u64 BE) | a segment of the fingerprint log: per row key of one commit, its [`Fingerprint`] or its removal |
//! | `r` | stream, hash of the raw row (16 bytes BE) | nothing: this rejected row was published |
//! | `m` | cluster id, stream | [`Marks`] (JSON): per partition, where a read-back of the deals topic starts |
//! | `k` | | `clean`: the last process ended cleanly |
//! | `v` | sequence (u64 BE) | a published `CollectionsDealObserved` envelope: the record of the deal stream, kept when the store keeps it ([`PullStore::keep_record`]) |
//!
//! Keys are of `recoup_keys`; a stream is its tenant and dataset path. Everything one page
//! changes is written in one `sled::Batch` ([`PullStore::commit`]), and only after Kafka
//! acknowledged the page's events: a stored fingerprint always means "this content was
//! published", a stored cursor "every row before it was published".
//!
//! Row keys arrive in no useful order (`public_id` is a UUID), so fingerprints are not kept one
//! sled entry each (every page would write all over the tree, and sled splits its leaves every
//! 16 entries): a commit appends one segment holding all of its page's fingerprints, and the
//! latest fingerprint per row key is kept in memory, by the 128-bit hash of the row key, loaded
//! from the log the first time a stream is used. A log grown to more than twice its live
//! entries is rewritten then. Memory: about 60 bytes per row key.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use recoup_keys::record::RecordLog;
use recoup_keys::store::StoreOptions;
use recoup_keys::{Key, KeyReader};
use serde::{Deserialize, Serialize};

/// A tenant's dataset: what one checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub tenant: String,
    /// `S3/D16`.
    pub dataset: String,
}

impl StreamId {
    pub fn new(tenant: &str, dataset: &str) -> Self {
        Self {
            tenant: tenant.to_owned(),
            dataset: dataset.to_owned(),
        }
    }

    fn key(&self, prefix: u8) -> Vec<u8> {
        self.parts(Key::new(prefix)).into_vec()
    }

    fn parts(&self, key: Key) -> Key {
        key.str(&self.tenant).str(&self.dataset)
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.tenant, self.dataset)
    }
}

/// A cursor chain in flight: the filter it began with and the cursor of its next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The `nextCursor` of the last committed page.
    pub cursor: String,
    /// Pages committed in this chain.
    pub pages: u64,
}

/// Where a stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The committed high-water mark: the largest cursor value of every committed row. The next
    /// chain begins here (inclusive, so its boundary rows come again and are found unchanged).
    pub since: Option<DateTime<Utc>>,
    /// The chain in flight, resumed by the next cycle; `None` between chains.
    pub chain: Option<Chain>,
    /// The page size in force after a gateway timeout narrowed it; `None`: as configured.
    pub limit: Option<u32>,
    /// The window (`until - since`, seconds) in force after a gateway timeout narrowed it;
    /// `None`: open-ended.
    pub window_secs: Option<i64>,
    /// Rejected rows published so far (their envelopes' versions).
    pub rejects: u64,
    /// Cycles completed (their last chain reached `nextCursor: null`).
    pub cycles: u64,
}

/// What is kept of the last published content of one row key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    /// `normalise::fingerprint` of the published deal.
    pub hash: u128,
    /// 1 for the first content, +1 per change.
    pub revision: u64,
    /// The row's cursor value (`updated_at`), microseconds since the epoch, UTC.
    pub cursor_micros: i64,
}

impl Fingerprint {
    const BYTES: usize = 32;

    fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        out[..16].copy_from_slice(&self.hash.to_be_bytes());
        out[16..24].copy_from_slice(&self.revision.to_be_bytes());
        out[24..].copy_from_slice(&self.cursor_micros.to_be_bytes());
        out
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            hash: u128::from_be_bytes(bytes.get(..16)?.try_into().ok()?),
            revision: u64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?),
            cursor_micros: i64::from_be_bytes(bytes.get(24..32)?.try_into().ok()?),
        })
    }

    /// The cursor value as an instant.
    pub fn cursor(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.cursor_micros)
    }
}

/// The hash of a content not known (no row's content hashes to it but with probability
/// 2^-128): the next content seen is published, whatever it is.
pub const UNKNOWN_CONTENT: u128 = 0;

/// Per partition of the deals topic, the offset from which a read-back after a crash must look
/// for this stream's events: every event it published at or after this offset may be unknown to
/// the store.
pub type Marks = BTreeMap<i32, i64>;

/// Everything one page changes.
#[derive(Debug, Default)]
pub struct PageCommit<'a> {
    /// Row key → its published content.
    pub fingerprints: Vec<(&'a str, Fingerprint)>,
    /// Hashes of rejected rows published.
    pub rejects: Vec<u128>,
    /// The stream's checkpoint after the page; `None` leaves it as it is (a page whose events
    /// were only partly acknowledged).
    pub checkpoint: Option<&'a Checkpoint>,
    /// The read-back marks after the page, for this cluster.
    pub marks: Option<(&'a str, &'a Marks)>,
    /// The envelopes of the deals Kafka acknowledged, for the stream's record.
    pub published: Vec<&'a [u8]>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("puller store: {0}")]
    Sled(#[from] sled::Error),
    #[error("puller store: entry {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
}

fn corrupt(key: &[u8], reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}

const CLEAN_KEY: &[u8] = b"k";

/// The latest fingerprint per row key of one stream, by the hash of the row key.
#[derive(Debug, Default)]
struct StreamIndex {
    fingerprints: HashMap<u128, Fingerprint>,
    /// Entries in the log (puts and removals), to tell when to rewrite it.
    logged: usize,
    /// The sequence of the next segment.
    next_segment: u64,
    /// Read from the log (an index is made empty, then filled under its write lock).
    loaded: bool,
}

/// The 128-bit hash a row key is kept under.
pub fn row_key_hash(row_key: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(row_key.as_bytes())
}

/// One entry of a log segment: a row key's fingerprint, or its removal.
const OP_PUT: u8 = 0;
const OP_REMOVE: u8 = 1;

fn push_entry(segment: &mut Vec<u8>, row_key: &str, fingerprint: Option<Fingerprint>) {
    let key = row_key.as_bytes();
    let len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    segment.push(if fingerprint.is_some() {
        OP_PUT
    } else {
        OP_REMOVE
    });
    segment.extend_from_slice(&len.to_be_bytes());
    segment.extend_from_slice(&key[..usize::from(len)]);
    if let Some(fingerprint) = fingerprint {
        segment.extend_from_slice(&fingerprint.to_bytes());
    }
}

/// The entries of a segment, in order.
fn segment_entries(segment: &[u8]) -> Option<Vec<(&str, Option<Fingerprint>)>> {
    let mut entries = Vec::new();
    let mut rest = segment;
    while let Some((&op, tail)) = rest.split_first() {
        let len = usize::from(u16::from_be_bytes(tail.get(..2)?.try_into().ok()?));
        let key = std::str::from_utf8(tail.get(2..2 + len)?).ok()?;
        rest = &tail[2 + len..];
        match op {
            OP_PUT => {
                let fingerprint = Fingerprint::from_bytes(rest.get(..Fingerprint::BYTES)?)?;
                rest = &rest[Fingerprint::BYTES..];
                entries.push((key, Some(fingerprint)));
            }
            OP_REMOVE => entries.push((key, None)),
            _ => return None,
        }
    }
    Some(entries)
}

/// The puller's sled database.
#[derive(Clone)]
pub struct PullStore {
    db: sled::Db,
    tree: sled::Tree,
    indexes: Arc<Mutex<HashMap<StreamId, Arc<RwLock<StreamIndex>>>>>,
    /// The events published, when this store is the deal stream's record.
    record: Option<RecordLog>,
}

impl PullStore {
    /// Opens (or creates) the store in `dir`, its database as by default.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`, its database as `options` say.
    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = recoup_keys::store::open(dir, options)?;
        let tree = db.open_tree("pull")?;
        Ok(Self {
            db,
            tree,
            indexes: Arc::default(),
            record: None,
        })
    }

    /// Keeps every deal event published from now on in the store (`v`): the store becomes the
    /// system of record of the deal stream, which [`PullStore::record`] reads.
    pub fn keep_record(mut self) -> Result<Self, StoreError> {
        self.record = Some(RecordLog::open(&self.tree, b'v')?);
        Ok(self)
    }

    /// The record of the deal stream, when this store keeps it.
    pub fn record(&self) -> Option<RecordLog> {
        self.record.clone()
    }

    /// The stream's checkpoint (the default for a stream never pulled).
    pub fn checkpoint(&self, stream: &StreamId) -> Result<Checkpoint, StoreError> {
        let key = stream.key(b'c');
        match self.tree.get(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e)),
            None => Ok(Checkpoint::default()),
        }
    }

    /// Replaces the stream's checkpoint on its own (no page involved).
    pub fn set_checkpoint(
        &self,
        stream: &StreamId,
        checkpoint: &Checkpoint,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(checkpoint).map_err(|e| corrupt(b"c", e))?;
        self.tree.insert(stream.key(b'c'), value)?;
        Ok(())
    }

    fn segment_key(stream: &StreamId, sequence: u64) -> Vec<u8> {
        stream.parts(Key::new(b'g')).u64(sequence).into_vec()
    }

    /// The stream's index, read from its log the first time (and the log rewritten if it grew
    /// to more than twice its live entries). The log is read without holding other streams up.
    fn index(&self, stream: &StreamId) -> Result<Arc<RwLock<StreamIndex>>, StoreError> {
        let index = {
            let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
            indexes
                .entry(stream.clone())
                .or_insert_with(|| Arc::new(RwLock::new(StreamIndex::default())))
                .clone()
        };
        if index.read().unwrap_or_else(|e| e.into_inner()).loaded {
            return Ok(index);
        }
        let shared = index.clone();
        let mut loading = shared.write().unwrap_or_else(|e| e.into_inner());
        if loading.loaded {
            return Ok(index);
        }
        let mut latest: HashMap<u128, Fingerprint> = HashMap::new();
        let mut logged = 0;
        let mut next_segment = 0;
        for entry in self.tree.scan_prefix(stream.key(b'g')) {
            let (key, segment) = entry?;
            let entries = segment_entries(&segment).ok_or_else(|| corrupt(&key, "log segment"))?;
            for (row_key, fingerprint) in entries {
                logged += 1;
                match fingerprint {
                    Some(f) => latest.insert(row_key_hash(row_key), f),
                    None => latest.remove(&row_key_hash(row_key)),
                };
            }
            let sequence = key
                .len()
                .checked_sub(8)
                .and_then(|at| key.get(at..))
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(&key, "segment key"))?;
            next_segment = sequence + 1;
        }
        loading.fingerprints = latest;
        loading.logged = logged;
        loading.next_segment = next_segment;
        loading.loaded = true;
        self.compact_if_grown(stream, &mut loading)?;
        drop(loading);
        Ok(index)
    }

    /// Rewrites the stream's log once it holds more than twice its live entries (plus 10,000).
    fn compact_if_grown(
        &self,
        stream: &StreamId,
        index: &mut StreamIndex,
    ) -> Result<(), StoreError> {
        if index.logged > 2 * index.fingerprints.len() + 10_000 {
            self.rewrite_log(stream, index)?;
        }
        Ok(())
    }

    /// Replaces the stream's log by segments of its live entries only.
    fn rewrite_log(&self, stream: &StreamId, index: &mut StreamIndex) -> Result<(), StoreError> {
        let live = self.fingerprints(stream)?;
        let mut batch = sled::Batch::default();
        for key in self.tree.scan_prefix(stream.key(b'g')).keys() {
            batch.remove(key?);
        }
        let mut sequence = index.next_segment;
        for chunk in live.chunks(4096) {
            let mut segment = Vec::with_capacity(chunk.len() * 100);
            for (row_key, fingerprint) in chunk {
                push_entry(&mut segment, row_key, Some(*fingerprint));
            }
            batch.insert(Self::segment_key(stream, sequence), segment);
            sequence += 1;
        }
        self.tree.apply_batch(batch)?;
        tracing::info!(stream = %stream, entries = index.logged, live = live.len(), "fingerprint log rewritten");
        index.logged = live.len();
        index.next_segment = sequence;
        Ok(())
    }

    /// The last published content of a row key.
    pub fn fingerprint(
        &self,
        stream: &StreamId,
        row_key: &str,
    ) -> Result<Option<Fingerprint>, StoreError> {
        let index = self.index(stream)?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        Ok(index.fingerprints.get(&row_key_hash(row_key)).copied())
    }

    /// How many row keys of the stream have a fingerprint.
    pub fn fingerprint_count(&self, stream: &StreamId) -> Result<usize, StoreError> {
        let index = self.index(stream)?;
        let index = index.read().unwrap_or_else(|e| e.into_inner());
        Ok(index.fingerprints.len())
    }

    /// Every row key of the stream with its fingerprint, in key order (read from the log).
    pub fn fingerprints(
        &self,
        stream: &StreamId,
    ) -> Result<Vec<(String, Fingerprint)>, StoreError> {
        let mut latest: BTreeMap<String, Fingerprint> = BTreeMap::new();
        for entry in self.tree.scan_prefix(stream.key(b'g')) {
            let (key, segment) = entry?;
            let entries = segment_entries(&segment).ok_or_else(|| corrupt(&key, "log segment"))?;
            for (row_key, fingerprint) in entries {
                match fingerprint {
                    Some(f) => latest.insert(row_key.to_owned(), f),
                    None => latest.remove(row_key),
                };
            }
        }
        Ok(latest.into_iter().collect())
    }

    /// Appends `entries` to the stream's log in `batch`, applies it, and updates the index.
    fn apply_with_log(
        &self,
        stream: &StreamId,
        mut batch: sled::Batch,
        entries: &[(&str, Option<Fingerprint>)],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            self.tree.apply_batch(batch)?;
            return Ok(());
        }
        let index = self.index(stream)?;
        // Held through the write, so that segments are appended in sequence order.
        let mut index = index.write().unwrap_or_else(|e| e.into_inner());
        let mut segment = Vec::with_capacity(entries.len() * 100);
        for (row_key, fingerprint) in entries {
            push_entry(&mut segment, row_key, *fingerprint);
        }
        batch.insert(Self::segment_key(stream, index.next_segment), segment);
        self.tree.apply_batch(batch)?;
        index.next_segment += 1;
        index.logged += entries.len();
        for (row_key, fingerprint) in entries {
            match fingerprint {
                Some(f) => index.fingerprints.insert(row_key_hash(row_key), *f),
                None => index.fingerprints.remove(&row_key_hash(row_key)),
            };
        }
        self.compact_if_grown(stream, &mut index)
    }

    fn reject_key(stream: &StreamId, hash: u128) -> Vec<u8> {
        stream.parts(Key::new(b'r')).u128(hash).into_vec()
    }

    /// Whether this rejected row (by the hash of its raw JSON) was already published.
    pub fn reject_published(&self, stream: &StreamId, hash: u128) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(Self::reject_key(stream, hash))?)
    }

    fn marks_key(cluster: &str, stream: &StreamId) -> Vec<u8> {
        stream.parts(Key::new(b'm').str(cluster)).into_vec()
    }

    /// The read-back marks of a stream on a cluster (`None`: it never published there).
    pub fn marks(&self, cluster: &str, stream: &StreamId) -> Result<Option<Marks>, StoreError> {
        let key = Self::marks_key(cluster, stream);
        match self.tree.get(&key)? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))?,
            )),
            None => Ok(None),
        }
    }

    /// Writes what one page changed, atomically.
    pub fn commit(&self, stream: &StreamId, page: &PageCommit<'_>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for hash in &page.rejects {
            batch.insert(Self::reject_key(stream, *hash), &[]);
        }
        if let Some(checkpoint) = page.checkpoint {
            let value = serde_json::to_vec(checkpoint).map_err(|e| corrupt(b"c", e))?;
            batch.insert(stream.key(b'c'), value);
        }
        if let Some((cluster, marks)) = page.marks {
            let value = serde_json::to_vec(marks).map_err(|e| corrupt(b"m", e))?;
            batch.insert(Self::marks_key(cluster, stream), value);
        }
        // In the batch that remembers them as published: a fingerprint stored means its event
        // is in the record.
        if let Some(record) = &self.record {
            for envelope in &page.published {
                record.append(&mut batch, envelope);
            }
        }
        let entries: Vec<(&str, Option<Fingerprint>)> = page
            .fingerprints
            .iter()
            .map(|(key, f)| (*key, Some(*f)))
            .collect();
        self.apply_with_log(stream, batch, &entries)
    }

    /// Puts the stream back for contents its consumers never received: the row keys in
    /// `forget` are forgotten (their content is published again when next seen), those in
    /// `raise` keep counting from the given revision (a consumer has it) with their content
    /// unknown, and the committed `since` moves back to `since` if that is earlier, dropping
    /// the chain in flight.
    pub fn rewind(
        &self,
        stream: &StreamId,
        forget: &[String],
        raise: &[(String, u64)],
        since: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let mut checkpoint = self.checkpoint(stream)?;
        // `None` is "from the beginning", earlier than any instant.
        checkpoint.since = match (checkpoint.since, since) {
            (Some(current), Some(back)) => Some(current.min(back)),
            _ => None,
        };
        checkpoint.chain = None;
        let mut batch = sled::Batch::default();
        let value = serde_json::to_vec(&checkpoint).map_err(|e| corrupt(b"c", e))?;
        batch.insert(stream.key(b'c'), value);
        let mut entries: Vec<(&str, Option<Fingerprint>)> =
            forget.iter().map(|key| (key.as_str(), None)).collect();
        entries.extend(raise.iter().map(|(key, revision)| {
            let unknown = Fingerprint {
                hash: UNKNOWN_CONTENT,
                revision: *revision,
                cursor_micros: 0,
            };
            (key.as_str(), Some(unknown))
        }));
        self.apply_with_log(stream, batch, &entries)
    }

    /// Every stream with a checkpoint.
    pub fn streams(&self) -> impl Iterator<Item = Result<StreamId, StoreError>> + '_ {
        self.tree.scan_prefix(b"c").keys().map(|key| {
            let key = key?;
            parse_stream(&key).ok_or_else(|| corrupt(&key, "stream key"))
        })
    }

    /// Records that this process ends cleanly (everything published reached its consumers).
    pub fn mark_clean(&self) -> Result<(), StoreError> {
        self.tree.insert(CLEAN_KEY, b"clean")?;
        self.tree.flush()?;
        Ok(())
    }

    /// Whether the last process ended cleanly; the mark is removed, so a crash of this one is
    /// noticed by the next.
    pub fn take_clean_mark(&self) -> Result<bool, StoreError> {
        let was_clean = self.tree.remove(CLEAN_KEY)?.is_some();
        self.tree.flush()?;
        Ok(was_clean)
    }

    /// Makes everything durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// The stream of a checkpoint key.
fn parse_stream(key: &[u8]) -> Option<StreamId> {
    let mut r = KeyReader::new(key, b'c')?;
    let stream = StreamId::new(r.str()?, r.str()?);
    r.is_done().then_some(stream)
}
