//! Trees written before this codec (layout 1: key parts separated by 0 bytes) and their
//! upgrade. A tree records its layout under [`LAYOUT_KEY`]; none recorded is layout 1.

/// Where a tree records the layout of its keys (u32 BE).
pub const LAYOUT_KEY: &[u8] = b"~layout";
/// Keys of this codec.
pub const CODEC_LAYOUT: u32 = 2;

/// The layout of `tree`'s keys; 1 when none is recorded.
pub fn layout(tree: &sled::Tree) -> sled::Result<u32> {
    Ok(tree
        .get(LAYOUT_KEY)?
        .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
        .unwrap_or(1))
}

/// Records in `batch` that its tree's keys are of this codec.
pub fn mark_codec_layout(batch: &mut sled::Batch) {
    batch.insert(LAYOUT_KEY, &CODEC_LAYOUT.to_be_bytes());
}

/// How an upgrade went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Upgraded {
    /// Entries whose keys were rewritten.
    pub entries: usize,
}

/// The refusal of an upgrade that met a key of no known layout: nothing is dropped, the old
/// entries stay where they were, and the tree stays unmarked.
fn unknown_layout(tree: &str, key: &[u8]) -> sled::Error {
    sled::Error::Unsupported(format!(
        "tree {tree}: key {key:?} is of no known layout; the upgrade to the key codec was \
         refused and nothing was changed (a newer version of recoup may have written this data dir)"
    ))
}

/// Tree `name` of `db`, in this codec's layout. When tree `old` (layout 1) exists, its entries
/// are first copied into `name`, each key through `upgrade`, in batches, and `old` is dropped
/// once the copy is complete and marked. A copy cut short (a crash) starts again at the next
/// open, so nothing is half-upgraded. A key `upgrade` cannot read refuses the upgrade (an
/// error; `old` is kept as it is).
pub fn open_upgraded(
    db: &sled::Db,
    name: &str,
    old: &str,
    upgrade: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> sled::Result<(sled::Tree, Upgraded)> {
    let tree = db.open_tree(name)?;
    let old_exists = db
        .tree_names()
        .iter()
        .any(|tree_name| tree_name.as_ref() == old.as_bytes());
    let mut upgraded = Upgraded::default();
    if layout(&tree)? >= CODEC_LAYOUT {
        if old_exists {
            db.drop_tree(old)?;
        }
        return Ok((tree, upgraded));
    }
    tree.clear()?;
    if old_exists {
        let mut batch = sled::Batch::default();
        for entry in db.open_tree(old)?.iter() {
            let (key, value) = entry?;
            let key = upgrade(&key).ok_or_else(|| unknown_layout(old, &key))?;
            batch.insert(key, value);
            upgraded.entries += 1;
            if upgraded.entries % 10_000 == 0 {
                tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        tree.apply_batch(batch)?;
        tracing::info!(
            from = old,
            to = name,
            entries = upgraded.entries,
            "a tree was copied into the key codec's layout"
        );
    }
    let mut batch = sled::Batch::default();
    mark_codec_layout(&mut batch);
    tree.apply_batch(batch)?;
    tree.flush()?;
    if old_exists {
        db.drop_tree(old)?;
    }
    Ok((tree, upgraded))
}

/// Rewrites, in one atomic batch, the keys under `prefixes` of a tree of layout 1 through
/// `upgrade`, and marks the tree as of this codec: for trees whose other keys were always of
/// it. Nothing happens to a tree already marked, nor to one with a key `upgrade` cannot read
/// (an error).
pub fn upgrade_in_place(
    tree: &sled::Tree,
    prefixes: &[u8],
    upgrade: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> sled::Result<Upgraded> {
    let mut upgraded = Upgraded::default();
    if layout(tree)? >= CODEC_LAYOUT {
        return Ok(upgraded);
    }
    let mut batch = sled::Batch::default();
    for prefix in prefixes {
        for entry in tree.scan_prefix([*prefix]) {
            let (key, value) = entry?;
            let new = upgrade(&key).ok_or_else(|| unknown_layout(&tree_name(tree), &key))?;
            batch.remove(key);
            batch.insert(new, value);
            upgraded.entries += 1;
        }
    }
    mark_codec_layout(&mut batch);
    tree.apply_batch(batch)?;
    Ok(upgraded)
}

fn tree_name(tree: &sled::Tree) -> String {
    String::from_utf8_lossy(&tree.name()).into_owned()
}

/// The parts of the tail of a layout-1 key that holds `strings` texts separated by 0 bytes,
/// then `fixed` bytes (after one more 0 byte when `fixed` > 0). `None` for any other shape.
pub fn separated(tail: &[u8], strings: usize, fixed: usize) -> Option<(Vec<&str>, &[u8])> {
    let tail = tail.strip_prefix(&[0])?;
    let (texts, fixed_part) = if fixed == 0 {
        (tail, &[][..])
    } else {
        let (texts, rest) = tail.split_at_checked(tail.len().checked_sub(fixed + 1)?)?;
        (texts, rest.strip_prefix(&[0])?)
    };
    let parts: Vec<&str> = texts
        .splitn(strings, |b| *b == 0)
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .ok()?;
    (parts.len() == strings).then_some((parts, fixed_part))
}
