//! Keys of the case read model's tree, and the upgrade of a tree written before the key codec.

use debt_cases::CaseState;
use recoup_keys::layout::separated;
use recoup_keys::{Key, KeyReader};
use recoup_proto::convert::state_to_proto;

use crate::kernel::old_offset_or_reject_key;
pub(super) use crate::kernel::tenant_prefix;

pub(super) fn state_code(state: CaseState) -> u8 {
    state_to_proto(state) as i32 as u8
}

// Case ids and currencies end their keys (`last_str`): listings come in the order of their bytes.

pub(super) fn case_key(tenant: &str, case_id: &str) -> Key {
    tenant_prefix(b'c', tenant).last_str(case_id)
}

pub(super) fn state_prefix(tenant: &str, state: CaseState) -> Key {
    tenant_prefix(b's', tenant).u8(state_code(state))
}

pub(super) fn state_key(tenant: &str, state: CaseState, case_id: &str) -> Key {
    state_prefix(tenant, state).last_str(case_id)
}

pub(super) fn stats_key(tenant: &str, state: CaseState, currency: &str) -> Key {
    tenant_prefix(b't', tenant)
        .u8(state_code(state))
        .last_str(currency)
}

pub(super) fn version_key(tenant: &str, case_id: &str) -> Key {
    tenant_prefix(b'v', tenant).last_str(case_id)
}

pub(super) fn pending_key(tenant: &str, case_id: &str, version: u64) -> Key {
    tenant_prefix(b'p', tenant).str(case_id).u64(version)
}

pub(super) fn history_prefix(tenant: &str, case_id: &str) -> Key {
    tenant_prefix(b'h', tenant).str(case_id)
}

pub(super) fn history_key(tenant: &str, case_id: &str, version: u64) -> Key {
    history_prefix(tenant, case_id).u64(version)
}

pub(super) fn parked_rejected_key(tenant: &str, case_id: &str, version: u64) -> Key {
    tenant_prefix(b'y', tenant).str(case_id).u64(version)
}

/// The (tenant, case id) of a `c` or `v` key.
pub(super) fn tenant_and_case(key: &[u8]) -> Option<(String, String)> {
    let (&prefix, _) = key.split_first()?;
    let mut r = KeyReader::new(key, prefix)?;
    Some((r.str()?.to_owned(), r.last_str()?.to_owned()))
}

/// The key of layout 2 (the key codec) of a key of layout 1, where the parts were separated by
/// 0 bytes: `c`/`v` tenant, case; `s`/`t` tenant, state byte, case or currency; `p`/`y`
/// tenant, case, version (8 bytes); `o`/`x` offsets and rejects.
pub(super) fn upgraded(key: &[u8]) -> Option<Vec<u8>> {
    let (&prefix, tail) = key.split_first()?;
    let key = match prefix {
        b'o' | b'x' => return old_offset_or_reject_key(key),
        b'c' | b'v' => {
            let (parts, _) = separated(tail, 2, 0)?;
            tenant_prefix(prefix, parts[0]).last_str(parts[1])
        }
        b's' | b't' => {
            // tenant 0 state 0 text: the state byte is never 0.
            let (parts, _) = separated(tail, 3, 0)?;
            let &[state] = parts[1].as_bytes() else {
                return None;
            };
            tenant_prefix(prefix, parts[0]).u8(state).last_str(parts[2])
        }
        b'p' | b'y' => {
            let (parts, version) = separated(tail, 2, 8)?;
            let version = u64::from_be_bytes(version.try_into().ok()?);
            tenant_prefix(prefix, parts[0]).str(parts[1]).u64(version)
        }
        _ => return None,
    };
    Some(key.into_vec())
}
