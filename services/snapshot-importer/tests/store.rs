//! The importer's store on real sled files: what is written is found again, through the key
//! filter, also after the filter grew and after a reopen.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use snapshot_importer::store::{ImportStore, StoreBatch, Stored, snapshot_key};
use tempfile::TempDir;

fn stored(i: u64) -> Stored {
    Stored {
        fingerprint: u128::from(i) * 7,
        created_at_micros: i as i64,
        revision: 1 + i % 3,
        import: 42,
    }
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()
}

#[test]
fn every_written_key_is_found_after_the_filter_grew_and_after_a_reopen() {
    // More keys than the smallest filter holds (about 104,000), in batches as imports write.
    const KEYS: u64 = 130_000;
    let dir = TempDir::new().unwrap();
    {
        let store = ImportStore::open(dir.path()).unwrap();
        let first_capacity = store.key_filter_capacity();
        assert!(first_capacity < KEYS);
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let mut batch = StoreBatch::default();
            for i in chunk {
                batch.snapshot(
                    &snapshot_key("t", &format!("t_generic_A{i}"), day()),
                    stored(*i),
                );
            }
            store.apply(batch).unwrap();
        }
        assert!(
            store.key_filter_capacity() > first_capacity,
            "the filter grew"
        );
        for i in (0..KEYS).step_by(997) {
            let key = snapshot_key("t", &format!("t_generic_A{i}"), day());
            assert_eq!(store.snapshot(&key).unwrap(), Some(stored(i)), "key {i}");
        }
        let absent = snapshot_key("t", "t_generic_A1", day().succ_opt().unwrap());
        assert_eq!(store.snapshot(&absent).unwrap(), None);
        // Another tenant's key of the same account_uid is another key.
        assert_eq!(
            store
                .snapshot(&snapshot_key("u", "t_generic_A1", day()))
                .unwrap(),
            None
        );
    }
    let store = ImportStore::open(dir.path()).unwrap();
    for i in (0..KEYS).step_by(991) {
        let key = snapshot_key("t", &format!("t_generic_A{i}"), day());
        assert_eq!(
            store.snapshot(&key).unwrap(),
            Some(stored(i)),
            "key {i} after reopen"
        );
    }
    assert_eq!(store.snapshots().count(), KEYS as usize);
}
