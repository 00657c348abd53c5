//! The opaque `nextCursor`: a chain's snapshot, filter, order and position, base64url without
//! padding, with a keyed checksum so a forged or cut cursor is refused.

use std::hash::{BuildHasher, RandomState};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::store::Order;

const FORMAT: u8 = 1;

/// Where a cursor chain stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExportCursor {
    /// The data version the chain pages through.
    pub(crate) snapshot: u64,
    /// The position to go on from (for `Desc`, to go on before).
    pub(crate) position: u64,
    /// The chain's row count, taken when the chain started (`includeTotal`).
    pub(crate) total: u64,
    pub(crate) order: Order,
    pub(crate) since: Option<DateTime<Utc>>,
    pub(crate) until: Option<DateTime<Utc>>,
}

/// Signs and checks cursors with a secret of one simulator.
pub(crate) struct CursorKey(RandomState);

impl CursorKey {
    /// A fresh random secret (from the standard library's per-process random keys).
    pub(crate) fn random() -> Self {
        Self(RandomState::new())
    }

    pub(crate) fn encode(&self, cursor: &ExportCursor) -> String {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(FORMAT);
        bytes.extend_from_slice(&cursor.snapshot.to_be_bytes());
        bytes.extend_from_slice(&cursor.position.to_be_bytes());
        bytes.extend_from_slice(&cursor.total.to_be_bytes());
        bytes.push(match cursor.order {
            Order::Asc => 0,
            Order::Desc => 1,
        });
        for bound in [cursor.since, cursor.until] {
            match bound {
                None => bytes.push(0),
                Some(at) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&at.timestamp().to_be_bytes());
                    bytes.extend_from_slice(&at.timestamp_subsec_nanos().to_be_bytes());
                }
            }
        }
        let tag = self.0.hash_one(&bytes);
        bytes.extend_from_slice(&tag.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor `text` encodes, if this simulator made it.
    pub(crate) fn decode(&self, text: &str) -> Option<ExportCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (payload, tag) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
        if self.0.hash_one(payload).to_be_bytes() != tag {
            return None;
        }
        let mut reader = Reader(payload);
        if reader.u8()? != FORMAT {
            return None;
        }
        let snapshot = reader.u64()?;
        let position = reader.u64()?;
        let total = reader.u64()?;
        let order = match reader.u8()? {
            0 => Order::Asc,
            1 => Order::Desc,
            _ => return None,
        };
        let mut bound = || -> Option<Option<DateTime<Utc>>> {
            match reader.u8()? {
                0 => Some(None),
                1 => {
                    let secs = i64::from_be_bytes(reader.take()?);
                    let nanos = u32::from_be_bytes(reader.take()?);
                    DateTime::from_timestamp(secs, nanos).map(Some)
                }
                _ => None,
            }
        };
        let since = bound()?;
        let until = bound()?;
        reader.0.is_empty().then_some(ExportCursor {
            snapshot,
            position,
            total,
            order,
            since,
            until,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_be_bytes)
    }
}
