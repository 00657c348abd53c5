//! The puller's store on real sled files: the fingerprint log (segments per commit, the latest
//! per row key in memory), its rewrite, rewinds, checkpoints and marks across reopening.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use export_puller::store::{
    Checkpoint, Fingerprint, Marks, PageCommit, PullStore, StreamId, UNKNOWN_CONTENT,
};

fn fingerprint(hash: u128, revision: u64) -> Fingerprint {
    Fingerprint {
        hash,
        revision,
        cursor_micros: 1_700_000_000_000_000 + revision as i64,
    }
}

/// Opens the store again; sled lets go of its lock a moment after the last handle is dropped.
fn reopen(dir: &Path) -> PullStore {
    for _ in 0..100 {
        if let Ok(store) = PullStore::open(dir) {
            return store;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    PullStore::open(dir).unwrap()
}

fn commit(store: &PullStore, stream: &StreamId, entries: &[(String, Fingerprint)]) {
    let page = PageCommit {
        fingerprints: entries.iter().map(|(k, f)| (k.as_str(), *f)).collect(),
        ..PageCommit::default()
    };
    store.commit(stream, &page).unwrap();
}

#[test]
fn the_latest_fingerprint_per_row_key_survives_reopening_and_the_log_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamId::new("acme", "S3/D16");
    let other = StreamId::new("acme", "S1/D02");
    let mut want: BTreeMap<String, Fingerprint> = BTreeMap::new();
    {
        let store = PullStore::open(dir.path()).unwrap();
        // 40 commits of 1,000 entries over 700 row keys: 40,000 log entries, enough for the
        // log to be rewritten on the way.
        for round in 0..40u64 {
            let entries: Vec<(String, Fingerprint)> = (0..1000u64)
                .map(|i| {
                    let key = format!("p-{}|2026-01-01T00:00:00.000000Z", (i * 7 + round) % 700);
                    (key, fingerprint(u128::from(round * 1000 + i), round + 1))
                })
                .collect();
            for (key, f) in &entries {
                want.insert(key.clone(), *f);
            }
            commit(&store, &stream, &entries);
        }
        commit(&store, &other, &[("x|y".to_owned(), fingerprint(9, 1))]);
        for (key, f) in &want {
            assert_eq!(store.fingerprint(&stream, key).unwrap(), Some(*f), "{key}");
        }
        assert_eq!(store.fingerprint_count(&stream).unwrap(), 700);
        store.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.fingerprint_count(&stream).unwrap(), 700);
    assert_eq!(
        store.fingerprints(&stream).unwrap(),
        want.clone().into_iter().collect::<Vec<_>>()
    );
    for (key, f) in &want {
        assert_eq!(store.fingerprint(&stream, key).unwrap(), Some(*f), "{key}");
    }
    assert_eq!(
        store.fingerprint(&other, "x|y").unwrap(),
        Some(fingerprint(9, 1))
    );
    assert_eq!(store.fingerprint(&stream, "x|y").unwrap(), None);

    // Later commits land after the rewritten segments, not over them.
    commit(
        &store,
        &stream,
        &[("new|key".to_owned(), fingerprint(1, 1))],
    );
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.fingerprint_count(&stream).unwrap(), 701);
    assert_eq!(
        store.fingerprint(&stream, "new|key").unwrap(),
        Some(fingerprint(1, 1))
    );
}

#[test]
fn a_rewind_forgets_raises_and_moves_since_back() {
    let dir = tempfile::tempdir().unwrap();
    let stream = StreamId::new("acme", "S3/D16");
    let since = Utc.with_ymd_and_hms(2026, 5, 10, 0, 0, 0).unwrap();
    {
        let store = PullStore::open(dir.path()).unwrap();
        let checkpoint = Checkpoint {
            since: Some(since),
            cycles: 3,
            ..Checkpoint::default()
        };
        let marks: Marks = [(0, 10), (1, 20)].into();
        let keys = [
            ("a".to_owned(), fingerprint(1, 1)),
            ("b".to_owned(), fingerprint(2, 2)),
        ];
        let page = PageCommit {
            fingerprints: keys.iter().map(|(k, f)| (k.as_str(), *f)).collect(),
            rejects: vec![77],
            checkpoint: Some(&checkpoint),
            marks: Some(("cluster-1", &marks)),
            published: Vec::new(),
        };
        store.commit(&stream, &page).unwrap();
        let back = Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 0).unwrap();
        store
            .rewind(
                &stream,
                &["a".to_owned()],
                &[("b".to_owned(), 5)],
                Some(back),
            )
            .unwrap();
        store.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.fingerprint(&stream, "a").unwrap(), None);
    let b = store.fingerprint(&stream, "b").unwrap().unwrap();
    assert_eq!((b.hash, b.revision), (UNKNOWN_CONTENT, 5));
    let checkpoint = store.checkpoint(&stream).unwrap();
    assert_eq!(
        checkpoint.since,
        Some(Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 0).unwrap())
    );
    assert_eq!(checkpoint.cycles, 3);
    assert!(store.reject_published(&stream, 77).unwrap());
    assert!(!store.reject_published(&stream, 78).unwrap());
    assert_eq!(
        store.marks("cluster-1", &stream).unwrap(),
        Some([(0, 10), (1, 20)].into())
    );
    assert_eq!(store.marks("cluster-2", &stream).unwrap(), None);
    assert_eq!(
        store.streams().collect::<Result<Vec<_>, _>>().unwrap(),
        [stream]
    );
}

#[test]
fn the_clean_mark_is_taken_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = PullStore::open(dir.path()).unwrap();
    assert!(!store.take_clean_mark().unwrap());
    store.mark_clean().unwrap();
    assert!(store.take_clean_mark().unwrap());
    assert!(
        !store.take_clean_mark().unwrap(),
        "a crash after this start is noticed"
    );
}
