//! Read models written before the key codec (layout 1: key parts separated by 0 bytes) open in
//! the codec's layout with nothing lost: the case tree is copied entry by entry (a copy cut
//! short starts again), the offsets and rejects of the accounts and deals trees are rewritten.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::deals::{Row, instant};
use common::{CLUSTER, Case, Feed, TOPIC, reopen_read_model};
use debt_cases::CaseState;
use projection::{AccountReadModel, CaseReadModel, DealReadModel, Projection};
use recoup_keys::KeyReader;

/// A key of layout 1 with the same parts as a key of the codec's layout.
fn layout_one(key: &[u8]) -> Option<Vec<u8>> {
    let prefix = key[0];
    let mut r = KeyReader::new(key, prefix).unwrap();
    let mut old = vec![prefix];
    let mut part = |bytes: &[u8]| {
        old.push(0);
        old.extend_from_slice(bytes);
    };
    match prefix {
        b'c' | b'v' => {
            part(r.str_bytes()?);
            part(r.last_str()?.as_bytes());
        }
        b's' | b't' => {
            part(r.str_bytes()?);
            part(&[r.u8()?]);
            part(r.last_str()?.as_bytes());
        }
        b'p' | b'y' => {
            part(r.str_bytes()?);
            part(r.str_bytes()?);
            part(&r.u64()?.to_be_bytes());
        }
        b'o' | b'x' => {
            part(r.str_bytes()?);
            part(r.str_bytes()?);
            part(&r.i32()?.to_be_bytes());
            if prefix == b'x' {
                part(&r.i64()?.to_be_bytes());
            }
        }
        // The layout mark itself, and the history (`h`, younger than the codec): layout 1 had
        // neither.
        _ => return None,
    }
    assert!(r.is_done());
    Some(old)
}

/// The database in `dir`, once sled's background threads of an earlier handle let go of it.
fn open_db(dir: &Path) -> sled::Db {
    for _ in 0..500 {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(error) if error.to_string().contains("acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(error) => panic!("opening {}: {error}", dir.display()),
        }
    }
    panic!("{} stayed locked", dir.display())
}

fn entries(tree: &sled::Tree) -> BTreeMap<Vec<u8>, Vec<u8>> {
    tree.iter()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .filter(|(k, _)| !k.starts_with(b"~"))
        .collect()
}

/// Writes `tree`'s entries in layout 1 into tree `name` of the database in `dir`.
fn write_layout_one(dir: &Path, name: &str, tree: &BTreeMap<Vec<u8>, Vec<u8>>) {
    let db = open_db(dir);
    let old = db.open_tree(name).unwrap();
    for (key, value) in tree {
        if let Some(key) = layout_one(key) {
            old.insert(key, value.as_slice()).unwrap();
        }
    }
    db.flush().unwrap();
}

fn cases() -> Vec<Case> {
    vec![
        Case::new("acme", "m-10", "EUR", &[500]),
        Case::new("acme", "b", "EUR", &[100, 50]).review(),
        Case::new("acme", "k0", "CHF", &[300]).delete(),
        Case::new("other", "z", "EUR", &[700]).review().prepare(),
    ]
}

#[test]
fn a_case_read_model_of_layout_one_is_copied_into_the_codec_layout() {
    let new_dir = tempfile::tempdir().unwrap();
    let mut feed = Feed::new();
    let cases = cases();
    // One more case whose third event came before its second: parked under `p`.
    let parked = Case::new("acme", "p", "EUR", &[900]).review().prepare();
    let mut values: Vec<Vec<u8>> = cases.iter().flat_map(Case::all).collect();
    values.extend([
        parked.envelope(1),
        parked.envelope(3),
        b"not an envelope".to_vec(),
    ]);
    let messages = values.len() as i64;
    let before = {
        let rm = CaseReadModel::open(new_dir.path()).unwrap();
        let outcome = rm.apply_batch(CLUSTER, TOPIC, &feed.batch(values)).unwrap();
        assert_eq!((outcome.parked, outcome.rejected), (1, 1));
        entries(rm.tree())
    };

    let old_dir = tempfile::tempdir().unwrap();
    write_layout_one(old_dir.path(), "read_model", &before);
    // A copy cut short by a crash left part of the new tree, without its layout mark.
    {
        let db = open_db(old_dir.path());
        db.open_tree("cases")
            .unwrap()
            .insert(b"c junk", b"x")
            .unwrap();
        db.flush().unwrap();
    }
    let rm = reopen_read_model(old_dir.path());
    let before: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(k, _)| !k.starts_with(b"h"))
        .collect();
    assert_eq!(entries(rm.tree()), before);

    // It reads and applies as the original does.
    let listed: Vec<String> = rm
        .list_cases("acme", None, None, 10)
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(listed, ["b", "m-10", "p"]);
    assert_eq!(rm.applied_version("acme", "k0").unwrap(), 2);
    assert_eq!(rm.rejected_count(), 1);
    let offsets = rm.offsets(CLUSTER, TOPIC, &[0, 1]).unwrap();
    assert_eq!(offsets, [(0, Some(messages)), (1, None)]);
    let stats = rm.stats("other").unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!(
        (stats[0].0, stats[0].1.as_str()),
        (CaseState::Pending, "EUR")
    );
    let outcome = rm
        .apply_batch(CLUSTER, TOPIC, &feed.batch([parked.envelope(2)]))
        .unwrap();
    assert_eq!(outcome.applied, 2, "the parked successor follows");
    assert_eq!(rm.case("acme", "p").unwrap().unwrap(), parked.replay());
    drop(rm);

    // The old tree is gone; opening again changes nothing.
    let after = {
        let rm = reopen_read_model(old_dir.path());
        entries(rm.tree())
    };
    let rm = reopen_read_model(old_dir.path());
    assert_eq!(entries(rm.tree()), after);
    drop(rm);
    let db = open_db(old_dir.path());
    let names: Vec<_> = db.tree_names().into_iter().map(|n| n.to_vec()).collect();
    assert!(names.contains(&b"cases".to_vec()));
    assert!(!names.contains(&b"read_model".to_vec()));
}

#[test]
fn offsets_and_rejects_of_the_accounts_and_deals_trees_are_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let row = Row::new("acme", "borrower-1", instant(2026, 1, 2, 3, 4, 5, 6));
    let (accounts_before, deals_before) = {
        let cases = CaseReadModel::open(dir.path()).unwrap();
        let accounts = AccountReadModel::open(&cases).unwrap();
        let deals = DealReadModel::open(&cases).unwrap();
        let mut feed = Feed::new();
        accounts
            .apply_batch(CLUSTER, "snapshots", &feed.batch([b"junk".to_vec()]))
            .unwrap();
        let mut feed = Feed::new();
        deals
            .apply_batch(
                CLUSTER,
                "deals",
                &feed.batch([row.envelope(), b"junk".to_vec()]),
            )
            .unwrap();
        (entries(accounts.tree()), entries(deals.tree()))
    };
    // Back to layout 1: offsets and rejects as they were written then, no layout mark.
    {
        let db = open_db(dir.path());
        for (name, before) in [("accounts", &accounts_before), ("deals", &deals_before)] {
            let tree = db.open_tree(name).unwrap();
            tree.clear().unwrap();
            for (key, value) in before {
                let key = match key[0] {
                    b'o' | b'x' => layout_one(key).unwrap(),
                    _ => key.clone(),
                };
                tree.insert(key, value.as_slice()).unwrap();
            }
        }
        db.flush().unwrap();
    }
    let cases = reopen_read_model(dir.path());
    let accounts = AccountReadModel::open(&cases).unwrap();
    let deals = DealReadModel::open(&cases).unwrap();
    assert_eq!(entries(accounts.tree()), accounts_before);
    assert_eq!(entries(deals.tree()), deals_before);
    assert_eq!(accounts.rejected_count(), 1);
    assert_eq!(deals.rejected_count(), 1);
    assert_eq!(
        deals.offsets(CLUSTER, "deals", &[0]).unwrap(),
        [(0, Some(2))]
    );
    let (public_id, created_at) = row.key();
    assert_eq!(
        deals
            .applied_revision("acme", &public_id, created_at)
            .unwrap(),
        Some(1)
    );
}
