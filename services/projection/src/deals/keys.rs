//! Keys of the deals tree (see the table in [`super`]).

use chrono::{DateTime, Utc};
use recoup_keys::Key;

pub(super) use crate::kernel::tenant_prefix;

/// The end of every key naming one deal: public_id, created_at.
pub(super) fn deal_tail(public_id: &str, created_at: DateTime<Utc>) -> Vec<u8> {
    Key::parts().str(public_id).instant(created_at).into_vec()
}

pub(super) fn deal_key(tenant: &str, tail: &[u8]) -> Vec<u8> {
    tenant_prefix(b'd', tenant).raw(tail).into_vec()
}

pub(super) fn funnel_prefix(tenant: &str, pipeline: Option<&str>) -> Key {
    let key = tenant_prefix(b'f', tenant);
    match pipeline {
        Some(pipeline) => key.str(pipeline),
        None => key,
    }
}

pub(super) fn funnel_key(tenant: &str, pipeline: &str, stage: &str) -> Vec<u8> {
    funnel_prefix(tenant, Some(pipeline)).str(stage).into_vec()
}

/// A due slot: `0` without a readable due date, else `1` and the day (days since CE).
pub(super) fn due(key: Key, due: Option<i32>) -> Key {
    match due {
        None => key.u8(0),
        Some(day) => key.u8(1).day_number(day),
    }
}

pub(super) fn due_totals_key(tenant: &str, due_day: Option<i32>) -> Vec<u8> {
    due(tenant_prefix(b'u', tenant), due_day).into_vec()
}

pub(super) fn ptp_prefix(tenant: &str, channel: u8) -> Key {
    tenant_prefix(b'p', tenant).u8(channel)
}

pub(super) fn borrower_key(tenant: &str, public_id: &str) -> Vec<u8> {
    tenant_prefix(b'b', tenant).str(public_id).into_vec()
}

pub(super) fn sequence_key(tenant: &str) -> Vec<u8> {
    tenant_prefix(b'q', tenant).into_vec()
}
