//! Databases opened as the process is configured: compressed or not when created, and as they
//! were created ever after.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use recoup_keys::store::{StoreOptions, created_compressed, open};

const COMPRESSED: StoreOptions = StoreOptions {
    cache_bytes: 1024 * 1024,
    compression: true,
};
const PLAIN: StoreOptions = StoreOptions {
    cache_bytes: 1024 * 1024,
    compression: false,
};

/// 20,000 records like an account's: repetitive text, as recoup's protobuf values are.
fn fill(db: &sled::Db) {
    let tree = db.open_tree("accounts").unwrap();
    for n in 0..20_000u32 {
        let key = format!("tenant-a/account-{n:08}");
        let value = format!(
            "{{\"snapshot_date\":\"2024-03-01\",\"account\":\"A{n}\",\"region\":\"West\",\
             \"outstanding_minor\":{},\"days_in_arrears\":{}}}",
            n * 7,
            n % 90
        );
        tree.insert(key, value.as_bytes()).unwrap();
    }
    db.flush().unwrap();
}

fn check(db: &sled::Db) {
    let tree = db.open_tree("accounts").unwrap();
    assert_eq!(tree.len(), 20_000);
    let value = tree.get("tenant-a/account-00000123").unwrap().unwrap();
    assert!(
        std::str::from_utf8(&value)
            .unwrap()
            .contains("\"account\":\"A123\"")
    );
}

fn disk_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                disk_bytes(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[test]
fn a_new_database_is_compressed_when_asked_and_takes_less_disk() {
    let (plain, compressed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(created_compressed(plain.path()).unwrap(), None);
    for (dir, options) in [(&plain, PLAIN), (&compressed, COMPRESSED)] {
        let db = open(dir.path(), options).unwrap();
        fill(&db);
        check(&db);
    }
    assert_eq!(created_compressed(plain.path()).unwrap(), Some(false));
    assert_eq!(created_compressed(compressed.path()).unwrap(), Some(true));
    let (plain_bytes, compressed_bytes) = (disk_bytes(plain.path()), disk_bytes(compressed.path()));
    assert!(
        compressed_bytes * 4 < plain_bytes * 3,
        "compressed {compressed_bytes} B, plain {plain_bytes} B"
    );
}

#[test]
fn a_database_keeps_the_compression_it_was_created_with() {
    for (created, asked) in [(PLAIN, COMPRESSED), (COMPRESSED, PLAIN)] {
        let dir = tempfile::tempdir().unwrap();
        fill(&open(dir.path(), created).unwrap());
        // sled itself refuses to open it with the other choice...
        let other = sled::Config::new()
            .path(dir.path())
            .use_compression(asked.compression)
            .open();
        assert!(
            other.is_err(),
            "sled opened a database with a changed compression"
        );
        // ...this opens it as it was made, its data whole.
        let db = open(dir.path(), asked).unwrap();
        check(&db);
        drop(db);
        assert_eq!(
            created_compressed(dir.path()).unwrap(),
            Some(created.compression)
        );
    }
}

#[test]
fn an_unreadable_parameter_file_is_an_error_not_a_guess() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("conf"), "segment_size: 524288\n").unwrap();
    let error = open(dir.path(), PLAIN).unwrap_err();
    assert!(error.to_string().contains("use_compression"), "{error}");
}
