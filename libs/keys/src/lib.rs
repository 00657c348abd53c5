//! The one codec of recoup's sled keys.
//!
//! A key is a one-byte prefix (which table of a tree it belongs to) followed by typed parts.
//! Every part sorts as its value does, and a key's prefix names whole parts, so a prefix scan
//! or a range over keys is a query over values:
//!
//! | part | bytes |
//! |---|---|
//! | [`Key::str`], [`Key::bytes`] | length (u32 BE) + bytes: whole fields; strings of one length sort by bytes |
//! | [`Key::last_str`] | UTF-8 bytes, as the last part only: keys sort by them |
//! | [`Key::u8`], [`Key::u32`], [`Key::u64`] | big-endian |
//! | [`Key::i32`], [`Key::i64`] | big-endian with the sign bit flipped, so negatives sort first |
//! | [`Key::day`] | days since 0001-01-01 as [`Key::i32`] |
//! | [`Key::instant`] | seconds since the epoch as [`Key::i64`], then nanoseconds as [`Key::u32`] |
//! | [`Key::u128`] | big-endian, 16 bytes |
//!
//! Strings are length-prefixed rather than separated, so any text (a separator byte included)
//! is a key part, and no part's bytes can be read as the next part.

pub mod layout;
pub mod record;
pub mod store;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// A key being built: a prefix, then parts.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(Vec<u8>);

impl Key {
    /// A key of the table `prefix`.
    pub fn new(prefix: u8) -> Self {
        let mut bytes = Vec::with_capacity(48);
        bytes.push(prefix);
        Self(bytes)
    }

    /// Parts without a table prefix: a tail that keys of several tables end with.
    pub fn parts() -> Self {
        Self(Vec::with_capacity(48))
    }

    /// A string part: length (u32 BE) and bytes.
    pub fn str(self, part: &str) -> Self {
        self.bytes(part.as_bytes())
    }

    /// A byte string part: length (u32 BE) and bytes, as [`Key::str`] writes text.
    pub fn bytes(mut self, part: &[u8]) -> Self {
        let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(part);
        self
    }

    /// A string as the key's last part: its bytes alone, so that keys ending in it sort by
    /// those bytes (`b` before `k0` before `m-1`); no part may follow it.
    pub fn last_str(mut self, part: &str) -> Self {
        self.0.extend_from_slice(part.as_bytes());
        self
    }

    pub fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }

    pub fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u128(mut self, value: u128) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn i32(self, value: i32) -> Self {
        self.u32((value as u32) ^ (1 << 31))
    }

    pub fn i64(self, value: i64) -> Self {
        self.u64((value as u64) ^ (1 << 63))
    }

    /// A day, as days since 0001-01-01 (CE).
    pub fn day(self, day: NaiveDate) -> Self {
        self.i32(day.num_days_from_ce())
    }

    /// A day given as days since 0001-01-01 (CE).
    pub fn day_number(self, days_from_ce: i32) -> Self {
        self.i32(days_from_ce)
    }

    /// An instant, to the nanosecond.
    pub fn instant(self, at: DateTime<Utc>) -> Self {
        self.i64(at.timestamp()).u32(at.timestamp_subsec_nanos())
    }

    /// Bytes appended as they are (a tail cut from another key).
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }

    /// The smallest key above every key that starts with this one: the end of a prefix scan.
    pub fn prefix_end(&self) -> Vec<u8> {
        prefix_end(&self.0)
    }
}

impl AsRef<[u8]> for Key {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Key> for Vec<u8> {
    fn from(key: Key) -> Self {
        key.0
    }
}

/// The smallest key above every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only a prefix of 0xFF bytes gets here: nothing sorts above it but longer runs of 0xFF.
    vec![u8::MAX; prefix.len() + 1]
}

/// Reads a key's parts back, in the order they were written; each read returns `None` when
/// the bytes left are not such a part.
#[derive(Debug, Clone, Copy)]
pub struct KeyReader<'a> {
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// Reads the parts of `key` after its one-byte prefix, which must be `prefix`.
    pub fn new(key: &'a [u8], prefix: u8) -> Option<Self> {
        match key.split_first() {
            Some((&p, rest)) if p == prefix => Some(Self { rest }),
            _ => None,
        }
    }

    /// Reads parts from `bytes` (a key's tail, after parts already known).
    pub fn tail(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (part, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(part)
    }

    /// A [`Key::str`] part, as bytes.
    pub fn str_bytes(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(len)
    }

    /// A [`Key::str`] part; `None` also when it is not UTF-8.
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.str_bytes()?).ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn u128(&mut self) -> Option<u128> {
        Some(u128::from_be_bytes(self.take(16)?.try_into().ok()?))
    }

    pub fn i32(&mut self) -> Option<i32> {
        Some((self.u32()? ^ (1 << 31)) as i32)
    }

    pub fn i64(&mut self) -> Option<i64> {
        Some((self.u64()? ^ (1 << 63)) as i64)
    }

    pub fn day(&mut self) -> Option<NaiveDate> {
        NaiveDate::from_num_days_from_ce_opt(self.i32()?)
    }

    pub fn instant(&mut self) -> Option<DateTime<Utc>> {
        let seconds = self.i64()?;
        let nanos = self.u32()?;
        DateTime::from_timestamp(seconds, nanos)
    }

    /// A [`Key::last_str`] part: every byte not read yet, as text.
    pub fn last_str(&mut self) -> Option<&'a str> {
        let text = std::str::from_utf8(self.rest).ok()?;
        self.rest = &[];
        Some(text)
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// True when every byte was read.
    pub fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}
