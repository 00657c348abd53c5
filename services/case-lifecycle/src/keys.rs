//! Key layout of the event store's one sled tree. Every key but the outbox's carries the tenant;
//! tenants and ids never contain the 0 byte that separates the parts.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `e` | tenant, case id, version (u64 BE) | encoded `EventEnvelope` |
//! | `x` | tenant, external id | case id |
//! | `r` | tenant, reference | case id |
//! | `t` | timeout (unix seconds, u64 BE), tenant, case id | empty: processing timeout index |
//! | `o` | sequence (u64 BE) | encoded outbox record |

const SEP: u8 = 0;

fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len = 1 + parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut k = Vec::with_capacity(len);
    k.push(prefix);
    for part in parts {
        k.push(SEP);
        k.extend_from_slice(part);
    }
    k
}

/// All events of one case, for a prefix scan.
pub fn stream_prefix(tenant: &str, case_id: &str) -> Vec<u8> {
    let mut k = key(b'e', &[tenant.as_bytes(), case_id.as_bytes()]);
    k.push(SEP);
    k
}

/// One event of a case.
pub fn event(tenant: &str, case_id: &str, version: u64) -> Vec<u8> {
    let mut k = stream_prefix(tenant, case_id);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// The external-id index entry.
pub fn external_id(tenant: &str, external_id: &str) -> Vec<u8> {
    key(b'x', &[tenant.as_bytes(), external_id.as_bytes()])
}

/// The reference index entry.
pub fn reference(tenant: &str, reference: &str) -> Vec<u8> {
    key(b'r', &[tenant.as_bytes(), reference.as_bytes()])
}

/// Prefix of the processing timeout index.
pub const TIMEOUT_PREFIX: &[u8] = b"t";

/// A processing timeout index entry; sorts by time.
pub fn timeout(at_unix_seconds: i64, tenant: &str, case_id: &str) -> Vec<u8> {
    let at = at_unix_seconds.max(0) as u64;
    key(
        b't',
        &[&at.to_be_bytes(), tenant.as_bytes(), case_id.as_bytes()],
    )
}

/// Splits a timeout key into (unix seconds, tenant, case id).
pub fn parse_timeout(k: &[u8]) -> Option<(i64, String, String)> {
    // b't', SEP, 8 bytes, SEP, tenant, SEP, case id
    let rest = k.strip_prefix(&[b't', SEP])?;
    let (at, rest) = rest.split_at_checked(8)?;
    let at = u64::from_be_bytes(at.try_into().ok()?) as i64;
    let rest = rest.strip_prefix(&[SEP])?;
    let sep = rest.iter().position(|b| *b == SEP)?;
    let tenant = std::str::from_utf8(&rest[..sep]).ok()?.to_owned();
    let case_id = std::str::from_utf8(&rest[sep + 1..]).ok()?.to_owned();
    Some((at, tenant, case_id))
}

/// Prefix of the outbox.
pub const OUTBOX_PREFIX: &[u8] = b"o";

/// An outbox entry; sorts in append order.
pub fn outbox(sequence: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.extend_from_slice(OUTBOX_PREFIX);
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// The sequence number of an outbox key.
pub fn outbox_sequence(k: &[u8]) -> Option<u64> {
    let rest = k.strip_prefix(OUTBOX_PREFIX)?;
    Some(u64::from_be_bytes(rest.try_into().ok()?))
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
    }

    #[test]
    fn outbox_sequence_round_trips() {
        assert_eq!(outbox_sequence(&outbox(42)), Some(42));
        assert!(outbox(1) < outbox(256));
    }
}
