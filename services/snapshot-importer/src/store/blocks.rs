//! Blocks of fingerprints: up to [`BLOCK_ENTRIES`] `(account_uid, Stored)` of one tenant and
//! day in account order, read and rewritten whole.

use super::{STORED_BYTES, Stored};

/// Most fingerprints in one block: a read-modify-write of a block stays a few KiB.
pub const BLOCK_ENTRIES: usize = 64;

/// The entries of an encoded block, in account order; stops at bytes that do not decode.
pub(super) fn block_entries(block: &[u8]) -> impl Iterator<Item = (&[u8], Stored)> {
    let mut rest = block;
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let uid = rest.get(4..4 + len)?;
        let stored = Stored::from_bytes(rest.get(4 + len..4 + len + STORED_BYTES)?)?;
        rest = &rest[4 + len + STORED_BYTES..];
        Some((uid, stored))
    })
}

/// The entry of `uid` in an encoded block: compares names only, stops past it.
pub(super) fn find_in_block(block: &[u8], uid: &[u8]) -> Option<Stored> {
    let mut rest = block;
    loop {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let entry = rest.get(4..4 + len)?;
        match entry.cmp(uid) {
            std::cmp::Ordering::Less => rest = rest.get(4 + len + STORED_BYTES..)?,
            std::cmp::Ordering::Equal => {
                return Stored::from_bytes(rest.get(4 + len..4 + len + STORED_BYTES)?);
            }
            std::cmp::Ordering::Greater => return None,
        }
    }
}

fn encode_block(entries: &[(Vec<u8>, Stored)]) -> Vec<u8> {
    let size = entries
        .iter()
        .map(|(uid, _)| 4 + uid.len() + STORED_BYTES)
        .sum();
    let mut out = Vec::with_capacity(size);
    for (uid, stored) in entries {
        out.extend_from_slice(&(uid.len() as u32).to_be_bytes());
        out.extend_from_slice(uid);
        out.extend_from_slice(&stored.to_bytes());
    }
    out
}

/// A block read for rewriting: it holds the accounts from its key's up to `upper`'s.
pub(super) struct OpenBlock {
    pub key: Vec<u8>,
    pub prefix_len: usize,
    pub entries: Vec<(Vec<u8>, Stored)>,
    /// The key of the next block of the same tenant and day, if there is one.
    pub upper: Option<Vec<u8>>,
}

impl OpenBlock {
    pub(super) fn covers(&self, prefix: &[u8], full: &[u8]) -> bool {
        self.key[..self.prefix_len] == *prefix
            && self.key.as_slice() <= full
            && self.upper.as_deref().is_none_or(|upper| full < upper)
    }

    pub(super) fn put(&mut self, uid: &[u8], stored: Stored) {
        match self
            .entries
            .binary_search_by(|(entry, _)| entry.as_slice().cmp(uid))
        {
            Ok(i) => self.entries[i].1 = stored,
            Err(i) => self.entries.insert(i, (uid.to_vec(), stored)),
        }
    }

    /// Into `batch`; a block grown past [`BLOCK_ENTRIES`] is split: in halves when it holds
    /// up to twice as many and is not the day's last block, else in full blocks (rows arriving
    /// in account order append to the last block and fill blocks).
    pub(super) fn write(self, batch: &mut sled::Batch) {
        let len = self.entries.len();
        if len <= BLOCK_ENTRIES {
            batch.insert(self.key, encode_block(&self.entries));
            return;
        }
        let size = if len <= 2 * BLOCK_ENTRIES && self.upper.is_some() {
            len.div_ceil(2)
        } else {
            BLOCK_ENTRIES
        };
        let prefix = &self.key[..self.prefix_len];
        for (i, part) in self.entries.chunks(size).enumerate() {
            let key = match i {
                // The first part keeps the block's key: nothing below it moved.
                0 => self.key.clone(),
                _ => [prefix, part[0].0.as_slice()].concat(),
            };
            batch.insert(key, encode_block(part));
        }
    }
}
