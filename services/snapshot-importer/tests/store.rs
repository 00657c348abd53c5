//! The importer's store on real sled files: what is written is found again, through the key
//! filter, also after the filter grew and after a reopen.
#![allow(clippy::unwrap_used)]

use chrono::NaiveDate;
use recoup_proto::{to_timestamp, v1};
use snapshot_importer::reports::{ImportsPage, list_imports};
use snapshot_importer::store::{
    ImportStore, SnapshotParts, StoreBatch, Stored, UNKNOWN_CONTENT, snapshot_key,
};
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
    let store = reopen(dir.path());
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

/// One write of the model test: tenant, account, day (small ranges, so keys repeat), content.
type Write = (u8, u16, u8, u64);

fn model_key((tenant, account, day_offset, _): Write) -> (String, String, NaiveDate) {
    let tenant = ["t", "tt", "u"][usize::from(tenant) % 3].to_owned();
    // Names of several lengths, so that account order differs from number order.
    let uid = format!("{tenant}_crm_A{account}");
    let date = day() + chrono::Days::new(u64::from(day_offset % 3));
    (tenant, uid, date)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Batches of writes in any order, with keys written again, against a map: every key holds
    /// its latest content, nothing else is found, the iteration lists each key once, and the
    /// same holds after a reopen. Blocks hold at most 64 entries, so this splits blocks.
    #[test]
    fn blocks_hold_what_a_map_would(
        batches in proptest::collection::vec(
            proptest::collection::vec((0u8..3, 0u16..400, 0u8..3, 0u64..1000), 0..300),
            1..8,
        )
    ) {
        let dir = TempDir::new().unwrap();
        let mut model = std::collections::BTreeMap::new();
        {
            let store = ImportStore::open(dir.path()).unwrap();
            for writes in &batches {
                let mut batch = StoreBatch::default();
                for write in writes {
                    let (tenant, uid, date) = model_key(*write);
                    batch.snapshot(&snapshot_key(&tenant, &uid, date), stored(write.3));
                    model.insert((tenant, uid, date), stored(write.3));
                }
                store.apply(batch).unwrap();
            }
            check(&store, &model);
        }
        check(&reopen(dir.path()), &model);
    }
}

/// Opens the store again once sled's background threads of the last handle let go of its lock
/// file (they do shortly after the handle is dropped).
fn reopen(path: &std::path::Path) -> ImportStore {
    let mut attempts = 0;
    loop {
        match ImportStore::open(path) {
            Ok(store) => return store,
            Err(error) if attempts < 500 && error.to_string().contains("acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("reopening the store: {error}"),
        }
    }
}

/// The database in `path` once sled's background threads of the last handle let go of it.
fn open_db(path: &std::path::Path) -> sled::Db {
    let mut attempts = 0;
    loop {
        match sled::open(path) {
            Ok(db) => return db,
            Err(error) if attempts < 500 && error.to_string().contains("acquire lock") => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(error) => panic!("opening the database: {error}"),
        }
    }
}

fn check(
    store: &ImportStore,
    model: &std::collections::BTreeMap<(String, String, NaiveDate), Stored>,
) {
    for tenant in 0..3 {
        for account in 0..400 {
            for day_offset in 0..3 {
                let (tenant, uid, date) = model_key((tenant, account, day_offset, 0));
                let found = store.snapshot(&snapshot_key(&tenant, &uid, date)).unwrap();
                assert_eq!(found, model.get(&(tenant, uid, date)).copied());
            }
        }
    }
    let mut listed: Vec<_> = store
        .snapshots()
        .map(|entry| {
            let (parts, stored) = entry.unwrap();
            ((parts.tenant, parts.account_uid, parts.date), stored)
        })
        .collect();
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<_> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
    assert_eq!(listed, expected);
}

fn legacy_value(stored: &Stored) -> Vec<u8> {
    let mut value = Vec::new();
    value.extend_from_slice(&stored.fingerprint.to_be_bytes());
    value.extend_from_slice(&stored.created_at_micros.to_be_bytes());
    value.extend_from_slice(&stored.revision.to_be_bytes());
    value.extend_from_slice(&stored.import.to_be_bytes());
    value
}

#[test]
fn fingerprints_of_the_one_entry_per_row_layout_are_moved_into_blocks() {
    let dir = TempDir::new().unwrap();
    // More than one pass of the move (10,000 entries), over two tenants and three days, whose
    // order differs between the old layout (tenant, account, day) and blocks (tenant, day, ...).
    let mut keys = Vec::new();
    for tenant in ["t", "u"] {
        for day_offset in 0..3u64 {
            for i in 0..2000u64 {
                let date = day() + chrono::Days::new(day_offset);
                let uid = format!("{tenant}_generic_A{i}");
                keys.push((snapshot_key(tenant, &uid, date), stored(i + day_offset)));
            }
        }
    }
    let written_later = (snapshot_key("t", "t_generic_B1", day()), stored(5));
    {
        // A block written by this version already, then the old layout beside it.
        let store = ImportStore::open(dir.path()).unwrap();
        let mut batch = StoreBatch::default();
        batch.snapshot(&written_later.0, written_later.1);
        store.apply(batch).unwrap();
        drop(store);
        let db = open_db(dir.path());
        let tree = db.open_tree("imports").unwrap();
        for (key, stored) in &keys {
            tree.insert(key, legacy_value(stored)).unwrap();
        }
        // A value that does not decode: left out, and the move still ends.
        tree.insert(snapshot_key("t", "t_generic_broken", day()), &[1u8, 2, 3])
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    for (key, stored) in keys.iter().chain([&written_later]) {
        assert_eq!(store.snapshot(key).unwrap(), Some(*stored));
    }
    assert_eq!(store.snapshots().count(), keys.len() + 1);
    drop(store);
    // Moved, not copied: a second open finds them once.
    let store = reopen(dir.path());
    assert_eq!(store.snapshots().count(), keys.len() + 1);
    let (key, stored) = &keys[7001];
    assert_eq!(store.snapshot(key).unwrap(), Some(*stored));
}

#[test]
fn forgetting_keeps_the_revision_and_raising_moves_it_up() {
    let dir = TempDir::new().unwrap();
    let store = ImportStore::open(dir.path()).unwrap();
    let mut batch = StoreBatch::default();
    for i in 0..200u64 {
        batch.snapshot(
            &snapshot_key("t", &format!("t_generic_A{i}"), day()),
            stored(i),
        );
    }
    store.apply(batch).unwrap();
    let parts = |i: u64| SnapshotParts {
        tenant: "t".into(),
        account_uid: format!("t_generic_A{i}"),
        date: day(),
    };
    store.forget(&[(parts(3), stored(3))]).unwrap();
    store
        .raise_revisions(&[(parts(150), stored(150), 9)])
        .unwrap();
    let found = |i: u64| {
        store
            .snapshot(&snapshot_key("t", &format!("t_generic_A{i}"), day()))
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        found(3),
        Stored {
            fingerprint: UNKNOWN_CONTENT,
            ..stored(3)
        }
    );
    assert_eq!(
        found(150),
        Stored {
            fingerprint: UNKNOWN_CONTENT,
            revision: 9,
            ..stored(150)
        }
    );
    for i in (0..200).filter(|i| ![3, 150].contains(i)) {
        assert_eq!(found(i), stored(i));
    }
    assert_eq!(store.snapshots().count(), 200);
}

#[test]
fn lookups_never_miss_a_written_key_while_blocks_split() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = TempDir::new().unwrap();
    let store = ImportStore::open(dir.path()).unwrap();
    // Keys in a scrambled order, so that batches split blocks all over the day.
    let keys: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 20_000).collect();
    let batches: Vec<&[u64]> = keys.chunks(500).collect();
    let done = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for (n, chunk) in batches.iter().enumerate() {
                let mut batch = StoreBatch::default();
                for i in *chunk {
                    batch.snapshot(
                        &snapshot_key("t", &format!("t_generic_A{i}"), day()),
                        stored(*i),
                    );
                }
                store.apply(batch).unwrap();
                done.store(n + 1, Ordering::SeqCst);
            }
        });
        let mut probe = 0usize;
        loop {
            let written = done.load(Ordering::SeqCst);
            if written > 0 {
                // A key of a batch already applied, a different one each time.
                let chunk = batches[probe % written];
                let i = chunk[(probe / written) % chunk.len()];
                let key = snapshot_key("t", &format!("t_generic_A{i}"), day());
                assert_eq!(store.snapshot(&key).unwrap(), Some(stored(i)), "key {i}");
                probe += 1;
            }
            if written == batches.len() {
                break;
            }
        }
    });
    assert_eq!(store.snapshots().count(), keys.len());
}

fn finished_report(id: u128, finished_secs: i64) -> v1::ImportReport {
    v1::ImportReport {
        import_id: format!("{id:032x}"),
        rows_read: id as u64,
        finished_at: chrono::DateTime::from_timestamp(finished_secs, 0).map(to_timestamp),
        ..Default::default()
    }
}

fn listed(store: &ImportStore, tenant: &str, size: u32) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = ImportsPage::parse(size, &token).unwrap();
        let answer = list_imports(store, tenant, &page).unwrap();
        pages.push(answer.imports.iter().map(|r| r.rows_read).collect());
        if answer.next_page_token.is_empty() {
            return pages;
        }
        token = answer.next_page_token;
    }
}

#[test]
fn imports_are_listed_most_recent_first_per_tenant_and_after_an_upgrade() {
    let dir = TempDir::new().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    {
        let store = ImportStore::open(dir.path()).unwrap();
        runtime.block_on(async {
            // Finished out of id order; one finished twice (it moves); another tenant's.
            for (id, secs) in [(1, 100), (2, 300), (3, 200), (42, 50), (5, 400)] {
                store.finish("t", &finished_report(id, secs)).await.unwrap();
            }
            store.finish("t", &finished_report(1, 500)).await.unwrap();
            store.finish("u", &finished_report(9, 999)).await.unwrap();
        });
        assert_eq!(listed(&store, "t", 2), [vec![1, 5], vec![2, 3], vec![42]]);
        assert_eq!(listed(&store, "t", 0), [vec![1, 5, 2, 3, 42]]);
        assert_eq!(listed(&store, "u", 0), [vec![9]]);
        assert_eq!(listed(&store, "nobody", 0), [Vec::<u64>::new()]);
        // A forgotten import leaves the list.
        let parts = SnapshotParts {
            tenant: "t".into(),
            account_uid: "t_generic_A".into(),
            date: day(),
        };
        store.forget(&[(parts, stored(0))]).unwrap();
        assert_eq!(listed(&store, "t", 0), [vec![1, 5, 2, 3]]);
    }
    // A store of an earlier version: reports without a list.
    {
        let db = open_db(dir.path());
        let tree = db.open_tree("imports").unwrap();
        for key in tree.iter().keys() {
            let key = key.unwrap();
            if key.starts_with(b"l") || key.as_ref() == b"m-listed" {
                tree.remove(key).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(listed(&store, "t", 3), [vec![1, 5, 2], vec![3]]);
    assert_eq!(listed(&store, "u", 0), [vec![9]]);
}
