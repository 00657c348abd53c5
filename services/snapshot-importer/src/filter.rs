//! A Bloom filter over the snapshot keys in the store, so that a row of a day never imported
//! before (every row of a daily file) is classified without a sled lookup: such a lookup merges
//! the page the writer is appending to and costs more than the rest of the classification.
//!
//! False positives only cost the lookup they would have saved; keys are never missing, because
//! the store adds every key it writes before the write is visible to lookups that consult this
//! filter (see `ImportStore::apply`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Bits per expected key: 10 bits and 7 hashes give about 1 % false positives.
const BITS_PER_KEY: u64 = 10;
const HASHES: u64 = 7;
/// The smallest filter: 2^20 bits (128 KiB), room for about 100,000 keys.
const MIN_BITS: u64 = 1 << 20;

/// A fixed-size Bloom filter of 128-bit key hashes, shared by threads.
#[derive(Debug)]
pub struct KeyFilter {
    words: Vec<AtomicU64>,
    /// Number of bits minus one (a power of two minus one).
    mask: u64,
    inserted: AtomicU64,
}

impl KeyFilter {
    /// A filter for about `keys` keys (at least ~100,000).
    pub fn with_capacity(keys: u64) -> Self {
        let bits = (keys.saturating_mul(BITS_PER_KEY))
            .max(MIN_BITS)
            .next_power_of_two();
        Self {
            words: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits - 1,
            inserted: AtomicU64::new(0),
        }
    }

    /// How many keys it was built for.
    pub fn capacity(&self) -> u64 {
        (self.mask + 1) / BITS_PER_KEY
    }

    /// How many keys were added.
    pub fn len(&self) -> u64 {
        self.inserted.load(Ordering::Relaxed)
    }

    /// Whether no key was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn positions(&self, hash: u128) -> impl Iterator<Item = u64> + '_ {
        // Double hashing: h1 + i·h2 (Kirsch–Mitzenmacher).
        let h1 = hash as u64;
        let h2 = ((hash >> 64) as u64) | 1;
        (0..HASHES).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) & self.mask)
    }

    /// Adds a key by its hash ([`key_hash`]). A key already there (a changed row of a stored
    /// day) sets no new bit and is not counted again, so the count tracks distinct keys.
    pub fn insert(&self, hash: u128) {
        let mut new = false;
        for bit in self.positions(hash) {
            let mask = 1 << (bit % 64);
            let before = self.words[(bit / 64) as usize].fetch_or(mask, Ordering::Relaxed);
            new |= before & mask == 0;
        }
        if new {
            self.inserted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// False when the key was certainly never added.
    pub fn may_contain(&self, hash: u128) -> bool {
        self.positions(hash).all(|bit| {
            self.words[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }
}

/// The hash a key is filtered by.
pub fn key_hash(key: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_keys_are_always_found_and_others_mostly_not() {
        let filter = KeyFilter::with_capacity(100_000);
        for i in 0..100_000u32 {
            filter.insert(key_hash(&i.to_be_bytes()));
        }
        assert!((0..100_000u32).all(|i| filter.may_contain(key_hash(&i.to_be_bytes()))));
        let false_positives = (100_000..200_000u32)
            .filter(|i| filter.may_contain(key_hash(&i.to_be_bytes())))
            .count();
        assert!(
            false_positives < 3_000,
            "{false_positives} false positives in 100,000"
        );
        // A few keys set only bits others had set: they count as known already.
        assert!(
            filter.len() > 99_000 && filter.len() <= 100_000,
            "{}",
            filter.len()
        );
        // The same keys again add nothing.
        let before = filter.len();
        for i in 0..100_000u32 {
            filter.insert(key_hash(&i.to_be_bytes()));
        }
        assert_eq!(filter.len(), before);
    }

    #[test]
    fn an_empty_filter_contains_nothing() {
        let filter = KeyFilter::with_capacity(0);
        assert!(filter.is_empty());
        assert!(!filter.may_contain(key_hash(b"anything")));
        assert!(filter.capacity() >= 100_000);
    }
}
