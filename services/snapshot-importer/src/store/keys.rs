//! Keys of the importer's tree (keys of `recoup_keys`).

use chrono::NaiveDate;
use recoup_keys::{Key, KeyReader};

/// Prefix of the snapshot keys (and of the store entries of versions without blocks).
pub(super) const SNAPSHOT_PREFIX: u8 = b'f';
/// Prefix of the blocks of fingerprints.
pub(super) const BLOCK_PREFIX: u8 = b'g';
/// Set by a clean shutdown once everything published was projected (embedded mode).
pub(super) const CLEAN_MARKER: &[u8] = b"m-clean";

/// The store key of one `(tenant, account_uid, snapshot_date)`.
pub type SnapshotKey = Vec<u8>;

/// The key of `(account_uid, snapshot_date)` of a tenant. The tenant is part of the key
/// although `account_uid` starts with it: `a` + origin `b_c` and `a_b` + origin `c` give the
/// same `account_uid`, and tenants must never see each other's rows. (Hashing the key would make
/// it shorter, but sled then writes all over the tree: an import of sorted accounts became three
/// times slower.)
pub fn snapshot_key(tenant: &str, account_uid: &str, date: NaiveDate) -> SnapshotKey {
    Key::new(SNAPSHOT_PREFIX)
        .str(tenant)
        .str(account_uid)
        .day(date)
        .into_vec()
}

/// The parts of a snapshot key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotParts {
    pub tenant: String,
    pub account_uid: String,
    pub date: NaiveDate,
}

/// The parts of a key made by [`snapshot_key`].
pub fn parse_snapshot_key(key: &[u8]) -> Option<SnapshotParts> {
    let mut r = KeyReader::new(key, SNAPSHOT_PREFIX)?;
    let parts = SnapshotParts {
        tenant: r.str()?.to_owned(),
        account_uid: r.str()?.to_owned(),
        date: r.day()?,
    };
    r.is_done().then_some(parts)
}

/// The block prefix (`g`, tenant, date) of a snapshot key, and its account_uid. A block key is
/// that prefix and the block's first account_uid as the key's last part.
pub(super) fn block_of(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut r = KeyReader::new(key, SNAPSHOT_PREFIX)?;
    let tenant = r.str_bytes()?;
    let uid = r.str_bytes()?;
    let day = r.i32()?;
    if !r.is_done() {
        return None;
    }
    let prefix = Key::new(BLOCK_PREFIX).bytes(tenant).i32(day).into_vec();
    Some((prefix, uid))
}

/// How long the prefix (`g`, tenant, date) of a block key is.
pub(super) fn block_prefix_len(block_key: &[u8]) -> Option<usize> {
    let mut r = KeyReader::new(block_key, BLOCK_PREFIX)?;
    r.str_bytes()?;
    r.i32()?;
    Some(block_key.len() - r.rest().len())
}

/// The snapshot key of one entry of a block with prefix `prefix`, into `key`.
pub(super) fn snapshot_key_of_block(prefix: &[u8], uid: &[u8], key: &mut Vec<u8>) {
    key.clear();
    let mut r = KeyReader::tail(prefix.get(1..).unwrap_or_default());
    if let (Some(tenant), Some(day)) = (r.str_bytes(), r.i32()) {
        let parts = Key::new(SNAPSHOT_PREFIX).bytes(tenant).bytes(uid).i32(day);
        key.extend_from_slice(parts.as_bytes());
    }
}

pub(super) fn report_key(tenant: &str, import_id: &str) -> Vec<u8> {
    Key::new(b'r').str(tenant).last_str(import_id).into_vec()
}

/// The (tenant, import id) of a report key.
pub(super) fn parse_report_key(key: &[u8]) -> Option<(String, String)> {
    let mut r = KeyReader::new(key, b'r')?;
    Some((r.str()?.to_owned(), r.last_str()?.to_owned()))
}

pub(super) fn errors_prefix(tenant: &str, import_id: &str) -> Key {
    Key::new(b'e').str(tenant).str(import_id)
}

pub(super) fn error_key(tenant: &str, import_id: &str, sequence: u64) -> Vec<u8> {
    errors_prefix(tenant, import_id).u64(sequence).into_vec()
}

/// Prefix of the list of a tenant's imports, oldest first.
pub(super) const LIST_PREFIX: u8 = b'l';
/// Set once every report is in the list (stores of earlier versions have reports only).
pub(super) const LISTED_MARKER: &[u8] = b"m-listed";

/// The list entry of an import that finished at `finished_micros` (microseconds since the
/// epoch).
pub(super) fn list_key(tenant: &str, finished_micros: u64, import_id: &str) -> Vec<u8> {
    Key::new(LIST_PREFIX)
        .str(tenant)
        .u64(finished_micros)
        .last_str(import_id)
        .into_vec()
}

/// The prefix of a tenant's list entries.
pub(super) fn list_prefix(tenant: &str) -> Key {
    Key::new(LIST_PREFIX).str(tenant)
}

/// The (finished micros, import id) of a list entry of `tenant`.
pub(super) fn parse_list_key<'a>(key: &'a [u8], tenant: &str) -> Option<(u64, &'a str)> {
    let mut r = KeyReader::new(key, LIST_PREFIX)?;
    if r.str()? != tenant {
        return None;
    }
    Some((r.u64()?, r.last_str()?))
}
