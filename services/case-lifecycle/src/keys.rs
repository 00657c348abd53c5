//! Key layout of the event store's one sled tree (keys of `recoup_keys`). Every key but the
//! outbox's carries the tenant.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `e` | tenant, case id, version (u64) | encoded `EventEnvelope` |
//! | `x` | tenant, external id | case id |
//! | `r` | tenant, reference | case id |
//! | `t` | timeout (unix seconds, u64), tenant, case id | empty: processing timeout index |
//! | `o` | sequence (u64) | encoded outbox record |
//!
//! A store written before the key codec (layout 1, tree `events`: parts separated by 0 bytes)
//! is copied into this layout when opened ([`upgraded`]).

use recoup_keys::layout::separated;
use recoup_keys::{Key, KeyReader};

/// All events of one case, for a prefix scan.
pub fn stream_prefix(tenant: &str, case_id: &str) -> Vec<u8> {
    Key::new(b'e').str(tenant).str(case_id).into_vec()
}

/// One event of a case.
pub fn event(tenant: &str, case_id: &str, version: u64) -> Vec<u8> {
    Key::new(b'e')
        .str(tenant)
        .str(case_id)
        .u64(version)
        .into_vec()
}

/// The (tenant, case id, version) of an event key.
pub fn parse_event(key: &[u8]) -> Option<(String, String, u64)> {
    let mut r = KeyReader::new(key, b'e')?;
    Some((r.str()?.to_owned(), r.str()?.to_owned(), r.u64()?))
}

/// The external-id index entry.
pub fn external_id(tenant: &str, external_id: &str) -> Vec<u8> {
    Key::new(b'x').str(tenant).last_str(external_id).into_vec()
}

/// The reference index entry.
pub fn reference(tenant: &str, reference: &str) -> Vec<u8> {
    Key::new(b'r').str(tenant).last_str(reference).into_vec()
}

/// Prefix of the processing timeout index.
pub const TIMEOUT_PREFIX: &[u8] = b"t";

/// A processing timeout index entry; sorts by time.
pub fn timeout(at_unix_seconds: i64, tenant: &str, case_id: &str) -> Vec<u8> {
    let at = at_unix_seconds.max(0) as u64;
    Key::new(b't')
        .u64(at)
        .str(tenant)
        .last_str(case_id)
        .into_vec()
}

/// Splits a timeout key into (unix seconds, tenant, case id).
pub fn parse_timeout(key: &[u8]) -> Option<(i64, String, String)> {
    let mut r = KeyReader::new(key, b't')?;
    let at = r.u64()? as i64;
    Some((at, r.str()?.to_owned(), r.last_str()?.to_owned()))
}

/// Prefix of the outbox.
pub const OUTBOX_PREFIX: &[u8] = b"o";

/// An outbox entry; sorts in append order.
pub fn outbox(sequence: u64) -> Vec<u8> {
    Key::new(b'o').u64(sequence).into_vec()
}

/// The sequence number of an outbox key.
pub fn outbox_sequence(key: &[u8]) -> Option<u64> {
    KeyReader::new(key, b'o')?.u64()
}

/// The key of a key of layout 1: `e` 0 tenant 0 case 0 version(8); `x`/`r` 0 tenant 0 text;
/// `t` 0 at(8) 0 tenant 0 case; `o` sequence(8), unchanged.
pub fn upgraded(key: &[u8]) -> Option<Vec<u8>> {
    let (&prefix, tail) = key.split_first()?;
    Some(match prefix {
        b'e' => {
            let (parts, version) = separated(tail, 2, 8)?;
            event(
                parts[0],
                parts[1],
                u64::from_be_bytes(version.try_into().ok()?),
            )
        }
        b'x' | b'r' => {
            let (parts, _) = separated(tail, 2, 0)?;
            Key::new(prefix).str(parts[0]).last_str(parts[1]).into_vec()
        }
        b't' => {
            let (at, rest) = tail.strip_prefix(&[0])?.split_at_checked(8)?;
            let (parts, _) = separated(rest, 2, 0)?;
            let at = u64::from_be_bytes(at.try_into().ok()?);
            timeout(at as i64, parts[0], parts[1])
        }
        b'o' => key.to_vec(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_keys_round_trip_and_sort_by_time() {
        let a = timeout(100, "t1", "case-b");
        let b = timeout(200, "t0", "case-a");
        assert!(a < b);
        assert_eq!(
            parse_timeout(&a),
            Some((100, "t1".to_owned(), "case-b".to_owned()))
        );
    }

    #[test]
    fn versions_sort_numerically_within_a_stream() {
        assert!(event("t", "c", 9) < event("t", "c", 10));
        assert!(event("t", "c", 255) < event("t", "c", 256));
        assert!(event("t", "c", 1).starts_with(&stream_prefix("t", "c")));
        assert!(!event("t", "c2", 1).starts_with(&stream_prefix("t", "c")));
        assert_eq!(
            parse_event(&event("t", "c", 7)),
            Some(("t".to_owned(), "c".to_owned(), 7))
        );
    }

    #[test]
    fn outbox_sequence_round_trips() {
        assert_eq!(outbox_sequence(&outbox(42)), Some(42));
        assert!(outbox(1) < outbox(256));
    }

    #[test]
    fn keys_of_layout_one_are_upgraded() {
        let sep = |parts: &[&[u8]]| -> Vec<u8> {
            let mut key = vec![parts[0][0]];
            for part in &parts[1..] {
                key.push(0);
                key.extend_from_slice(part);
            }
            key
        };
        let v = 9u64.to_be_bytes();
        assert_eq!(
            upgraded(&sep(&[b"e", b"acme", b"case-1", &v])),
            Some(event("acme", "case-1", 9))
        );
        assert_eq!(
            upgraded(&sep(&[b"x", b"acme", b"ext-1"])),
            Some(external_id("acme", "ext-1"))
        );
        assert_eq!(
            upgraded(&sep(&[b"r", b"acme", b"INV-1"])),
            Some(reference("acme", "INV-1"))
        );
        let at = 1_700_000_000u64.to_be_bytes();
        assert_eq!(
            upgraded(&sep(&[b"t", &at, b"acme", b"case-1"])),
            Some(timeout(1_700_000_000, "acme", "case-1"))
        );
        assert_eq!(upgraded(&outbox(5)), Some(outbox(5)));
        assert_eq!(upgraded(b"e\0acme"), None);
    }
}
