//! Trees of layout 1 upgraded to the codec's layout: copied whole (a copy cut short starts
//! again) or rewritten in place.

#![allow(clippy::unwrap_used)]

use recoup_keys::Key;
use recoup_keys::layout::{CODEC_LAYOUT, layout, open_upgraded, separated, upgrade_in_place};

/// `k` 0 tenant 0 name → `k` tenant name.
fn upgrade(key: &[u8]) -> Option<Vec<u8>> {
    let (&prefix, tail) = key.split_first()?;
    let (parts, _) = separated(tail, 2, 0)?;
    Some(Key::new(prefix).str(parts[0]).last_str(parts[1]).into_vec())
}

fn old_key(tenant: &str, name: &str) -> Vec<u8> {
    format!("k\0{tenant}\0{name}").into_bytes()
}

fn entries(tree: &sled::Tree) -> Vec<(Vec<u8>, Vec<u8>)> {
    tree.iter()
        .map(|e| e.unwrap())
        .filter(|(k, _)| !k.starts_with(b"~"))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

#[test]
fn a_tree_of_layout_one_is_copied_and_a_cut_short_copy_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let old = db.open_tree("old").unwrap();
    for i in 0..25_000u32 {
        old.insert(old_key("acme", &format!("n{i:05}")), &i.to_be_bytes())
            .unwrap();
    }
    // A copy cut short: entries in the new tree, no layout mark.
    db.open_tree("new").unwrap().insert(b"junk", b"").unwrap();

    let (tree, upgraded) = open_upgraded(&db, "new", "old", upgrade).unwrap();
    assert_eq!(upgraded.entries, 25_000);
    assert_eq!(layout(&tree).unwrap(), CODEC_LAYOUT);
    let copied = entries(&tree);
    assert_eq!(copied.len(), 25_000);
    assert_eq!(
        copied[7],
        (
            Key::new(b'k').str("acme").last_str("n00007").into_vec(),
            7u32.to_be_bytes().to_vec()
        )
    );
    assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"old"));

    // Opened again: nothing changes.
    let (tree, upgraded) = open_upgraded(&db, "new", "old", upgrade).unwrap();
    assert_eq!(upgraded.entries, 0);
    assert_eq!(entries(&tree), copied);
}

#[test]
fn a_key_of_no_known_layout_refuses_the_copy_and_keeps_the_old_tree() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let old = db.open_tree("old").unwrap();
    for i in 0..30_000u32 {
        old.insert(old_key("acme", &format!("n{i:05}")), &i.to_be_bytes())
            .unwrap();
    }
    old.insert(b"k\0no-second-part", b"?").unwrap();

    let error = open_upgraded(&db, "new", "old", upgrade).unwrap_err();
    assert!(
        error.to_string().contains("no known layout"),
        "the refusal says why: {error}"
    );
    assert_eq!(old.len(), 30_001, "the old tree is untouched");
    assert_eq!(
        layout(&db.open_tree("new").unwrap()).unwrap(),
        1,
        "not marked"
    );

    // Once the odd key is gone, the next open copies everything.
    old.remove(b"k\0no-second-part").unwrap();
    let (tree, upgraded) = open_upgraded(&db, "new", "old", upgrade).unwrap();
    assert_eq!(upgraded.entries, 30_000);
    assert_eq!(entries(&tree).len(), 30_000);
}

#[test]
fn a_key_of_no_known_layout_leaves_a_tree_upgraded_in_place_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("t").unwrap();
    tree.insert(old_key("acme", "a"), b"1").unwrap();
    tree.insert(b"k\0odd", b"2").unwrap();
    let before = entries(&tree);
    let error = upgrade_in_place(&tree, b"k", upgrade).unwrap_err();
    assert!(error.to_string().contains("tree t: key"), "{error}");
    assert_eq!(entries(&tree), before);
    assert_eq!(layout(&tree).unwrap(), 1);
}

#[test]
fn a_new_tree_is_marked_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let (tree, upgraded) = open_upgraded(&db, "new", "old", upgrade).unwrap();
    assert_eq!(upgraded.entries, 0);
    assert_eq!(layout(&tree).unwrap(), CODEC_LAYOUT);
    assert!(entries(&tree).is_empty());
}

#[test]
fn keys_under_some_prefixes_are_rewritten_in_place_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("t").unwrap();
    tree.insert(old_key("acme", "a"), b"1").unwrap();
    let kept = Key::new(b'z').str("acme").into_vec();
    tree.insert(&kept, b"2").unwrap();
    let upgraded = upgrade_in_place(&tree, b"k", upgrade).unwrap();
    assert_eq!(upgraded.entries, 1);
    assert_eq!(
        entries(&tree),
        vec![
            (
                Key::new(b'k').str("acme").last_str("a").into_vec(),
                b"1".to_vec()
            ),
            (kept.clone(), b"2".to_vec()),
        ]
    );
    // Marked: a key under `k` written now is of the codec and left alone.
    tree.insert(b"k\0new\0b", b"3").unwrap();
    assert_eq!(upgrade_in_place(&tree, b"k", upgrade).unwrap().entries, 0);
    assert!(tree.get(b"k\0new\0b").unwrap().is_some());
}

#[test]
fn separated_parts_are_texts_then_fixed_bytes() {
    let (parts, fixed) = separated(b"\0acme\0case-1\0\x00\x00\x00\x09", 2, 4).unwrap();
    assert_eq!(parts, ["acme", "case-1"]);
    assert_eq!(fixed, [0, 0, 0, 9]);
    assert_eq!(separated(b"\0acme", 2, 0), None);
    assert_eq!(separated(b"acme\0x", 2, 0), None, "no leading separator");
}
