//! A stream's system of record: the events a service published, kept in its own sled tree so
//! that a read model lost or wrong can be built again from them.
//!
//! A [`Record`] is read in the order it was written, from a position on. Two kinds exist: a
//! [`PrefixRecord`] is every entry under a key prefix of a tree a service already keeps (the
//! case event store's streams), a [`RecordLog`] appends each published event under the next
//! sequence number, in the batch that remembers the event as published.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Key, KeyReader};

/// One recorded event: its position in the record and the message as it was published.
pub type Recorded = (sled::IVec, sled::IVec);

/// Events kept to be read again, in the order of their positions.
pub trait Record: Send + Sync + 'static {
    /// Up to `max` events after position `after` (`None`: from the first).
    fn read_after(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Recorded>, sled::Error>;
}

/// Every entry under `prefix` in a tree, in key order.
#[derive(Clone)]
pub struct PrefixRecord {
    tree: sled::Tree,
    prefix: Vec<u8>,
}

impl PrefixRecord {
    pub fn new(tree: sled::Tree, prefix: &[u8]) -> Self {
        Self {
            tree,
            prefix: prefix.to_vec(),
        }
    }
}

impl Record for PrefixRecord {
    fn read_after(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Recorded>, sled::Error> {
        let start = match after {
            Some(position) => Bound::Excluded(position.to_vec()),
            None => Bound::Included(self.prefix.clone()),
        };
        self.tree
            .range::<Vec<u8>, _>((start, Bound::Unbounded))
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(&self.prefix))
            })
            .take(max)
            .collect()
    }
}

/// An append-only log of published events under a one-byte prefix: key prefix + sequence (u64),
/// value the message.
#[derive(Clone)]
pub struct RecordLog {
    record: PrefixRecord,
    prefix: u8,
    next: Arc<AtomicU64>,
}

impl RecordLog {
    /// The log under `prefix` in `tree`; appends continue after its last entry.
    pub fn open(tree: &sled::Tree, prefix: u8) -> Result<Self, sled::Error> {
        let next = match tree.scan_prefix([prefix]).next_back() {
            Some(entry) => {
                let (key, _) = entry?;
                KeyReader::new(&key, prefix)
                    .and_then(|mut r| r.u64())
                    .map_or(0, |last| last + 1)
            }
            None => 0,
        };
        Ok(Self {
            record: PrefixRecord::new(tree.clone(), &[prefix]),
            prefix,
            next: Arc::new(AtomicU64::new(next)),
        })
    }

    /// Adds `message` to `batch` as the next entry of the log. Entries of batches applied out of
    /// their order of staging are still each under a sequence of their own.
    pub fn append(&self, batch: &mut sled::Batch, message: &[u8]) {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        batch.insert(Key::new(self.prefix).u64(sequence).into_vec(), message);
    }

    /// Entries appended since the log was opened, plus those before: the next sequence.
    pub fn next_sequence(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }
}

impl Record for RecordLog {
    fn read_after(&self, after: Option<&[u8]>, max: usize) -> Result<Vec<Recorded>, sled::Error> {
        self.record.read_after(after, max)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn messages(record: &dyn Record, page: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut after: Option<sled::IVec> = None;
        loop {
            let read = record.read_after(after.as_deref(), page).unwrap();
            let Some((last, _)) = read.last() else {
                return out;
            };
            after = Some(last.clone());
            out.extend(read.into_iter().map(|(_, m)| m.to_vec()));
        }
    }

    #[test]
    fn a_log_reads_back_in_order_across_pages_and_reopening() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert(b"a-before", &b"x"[..]).unwrap();
        tree.insert(b"w-after", &b"y"[..]).unwrap();
        let log = RecordLog::open(&tree, b'v').unwrap();
        let mut batch = sled::Batch::default();
        for i in 0..300u32 {
            log.append(&mut batch, &i.to_be_bytes());
        }
        tree.apply_batch(batch).unwrap();
        let reopened = RecordLog::open(&tree, b'v').unwrap();
        assert_eq!(reopened.next_sequence(), 300);
        let mut batch = sled::Batch::default();
        reopened.append(&mut batch, &300u32.to_be_bytes());
        tree.apply_batch(batch).unwrap();
        let expected: Vec<Vec<u8>> = (0..=300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        assert_eq!(messages(&reopened, 7), expected);
        assert_eq!(messages(&reopened, 1000), expected);
    }

    #[test]
    fn a_prefix_record_stops_at_its_prefix() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for key in ["d1", "e1", "e2", "e3", "f1"] {
            tree.insert(key, key.as_bytes()).unwrap();
        }
        let record = PrefixRecord::new(tree, b"e");
        assert_eq!(
            messages(&record, 2),
            vec![b"e1".to_vec(), b"e2".to_vec(), b"e3".to_vec()]
        );
    }
}
