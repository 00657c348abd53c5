//! PAYGo account snapshots between the domain (`paygo_snapshots`) and the wire (`recoup.v1`).
//!
//! `recoup.v1.AccountSnapshot` numbers its fields by catalogue position (+1), so a snapshot is
//! encoded straight from its value slots, without a hundred assignments that could drift from
//! the catalogue. Decoding is prost's generated `v1::AccountSnapshot`.

use chrono::{Datelike, NaiveDate};
use paygo_snapshots::catalogue::{CREATED_AT, CUSTOM, SOURCE_ID, UPDATED_AT};
use paygo_snapshots::{AccountSnapshot, RowError, Value};
use prost::encoding;

use crate::time::to_timestamp;
use crate::v1;

/// The proto field number of the catalogue column at `index`.
pub fn field_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// Encodes `snapshot` as a `recoup.v1.AccountSnapshot`, appending to `buf`.
pub fn encode_snapshot(snapshot: &AccountSnapshot, buf: &mut Vec<u8>) {
    encode_fields(snapshot, buf, |_| true);
}

/// The columns that describe an import rather than the account.
fn describes_import(index: usize) -> bool {
    matches!(index, CREATED_AT | UPDATED_AT | SOURCE_ID)
}

/// Encodes what a snapshot says about the account, without the columns that describe its
/// import (`created_at`, `updated_at`, `source_id`): two rows with equal content encode equal.
pub fn encode_snapshot_content(snapshot: &AccountSnapshot, buf: &mut Vec<u8>) {
    encode_fields(snapshot, buf, |index| !describes_import(index));
}

/// Appends the columns [`encode_snapshot_content`] leaves out: content followed by these is a
/// complete `recoup.v1.AccountSnapshot` (protobuf takes fields in any order), so an import
/// encodes each row once, hashing the content part on the way.
pub fn encode_snapshot_import_fields(snapshot: &AccountSnapshot, buf: &mut Vec<u8>) {
    encode_fields(snapshot, buf, describes_import);
}

/// Whether the catalogue column numbered `tag` is a `*_calculated` one.
fn is_calculated(tag: u32) -> bool {
    usize::try_from(tag)
        .ok()
        .and_then(|t| t.checked_sub(1))
        .and_then(|index| paygo_snapshots::FIELDS.get(index))
        .is_some_and(|f| f.name.ends_with("_calculated"))
}

/// An encoded `recoup.v1.AccountSnapshot` without its `*_calculated` fields, field by field as
/// it was (nothing decoded but the keys).
pub fn without_calculated(snapshot: &[u8]) -> Result<Vec<u8>, prost::DecodeError> {
    let mut out = Vec::with_capacity(snapshot.len());
    let mut rest = snapshot;
    while !rest.is_empty() {
        let before = rest;
        let (tag, wire_type) = encoding::decode_key(&mut rest)?;
        encoding::skip_field(
            wire_type,
            tag,
            &mut rest,
            encoding::DecodeContext::default(),
        )?;
        if !is_calculated(tag) {
            out.extend_from_slice(&before[..before.len() - rest.len()]);
        }
    }
    Ok(out)
}

/// The value of the numeric field `tag` (int64 or double) of an encoded
/// `recoup.v1.AccountSnapshot`, as f64; `None` when absent or not numeric.
pub fn numeric_field(snapshot: &[u8], tag: u32) -> Option<f64> {
    let mut rest = snapshot;
    let mut found = None;
    while !rest.is_empty() {
        let (field, wire_type) = encoding::decode_key(&mut rest).ok()?;
        if field == tag {
            // The last occurrence counts, as protobuf merges scalars.
            found = Some(match wire_type {
                encoding::WireType::Varint => {
                    encoding::decode_varint(&mut rest).ok()? as i64 as f64
                }
                encoding::WireType::SixtyFourBit => {
                    let (bytes, tail) = rest.split_first_chunk::<8>()?;
                    rest = tail;
                    f64::from_le_bytes(*bytes)
                }
                _ => return None,
            });
            continue;
        }
        encoding::skip_field(
            wire_type,
            field,
            &mut rest,
            encoding::DecodeContext::default(),
        )
        .ok()?;
    }
    found
}

/// `YYYY-MM-DD` without chrono's format parser (this runs for every date of every row).
pub fn format_date(date: NaiveDate) -> String {
    let mut out = String::with_capacity(10);
    let year = date.year();
    if (0..=9999).contains(&year) {
        let digits = [year / 1000, year / 100 % 10, year / 10 % 10, year % 10];
        for d in digits {
            out.push(char::from(b'0' + d as u8));
        }
    } else {
        out.push_str(&format!("{year:04}"));
    }
    for n in [date.month(), date.day()] {
        out.push('-');
        out.push(char::from(b'0' + (n / 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    }
    out
}

fn encode_fields(snapshot: &AccountSnapshot, buf: &mut Vec<u8>, include: impl Fn(usize) -> bool) {
    for (index, value) in snapshot.values.iter().enumerate() {
        if !include(index) {
            continue;
        }
        let tag = field_number(index);
        if index == CUSTOM {
            if !snapshot.custom.is_empty() {
                let text = serde_json::to_string(&snapshot.custom).unwrap_or_default();
                encoding::string::encode(tag, &text, buf);
            }
            continue;
        }
        if let Some(value) = value {
            encode_value(tag, value, buf);
        }
    }
}

/// Encodes one cell as field `tag` of a `recoup.v1.AccountSnapshot`.
pub fn encode_value(tag: u32, value: &Value, buf: &mut Vec<u8>) {
    match value {
        Value::Integer(n) => encoding::int64::encode(tag, n, buf),
        Value::Float(x) => encoding::double::encode(tag, x, buf),
        Value::String(s) => encoding::string::encode(tag, s, buf),
        Value::Date(d) => encoding::string::encode(tag, &format_date(*d), buf),
        Value::DateTime(t) => encoding::message::encode(tag, &to_timestamp(*t), buf),
        Value::Json(json) => encoding::string::encode(tag, &json.to_string(), buf),
    }
}

/// A row error as the wire carries it.
/// The header of an import's errors as CSV (`GET /v1/imports/{id}/errors.csv`,
/// `FILE.errors.csv` of `recoup import snapshots`).
pub const ERRORS_CSV_HEADER: [&str; 5] = ["row", "column", "value", "rule", "message"];

/// One error as a record of the errors CSV, in the order of [`ERRORS_CSV_HEADER`].
pub fn error_csv_record(error: &v1::RowError) -> [String; 5] {
    [
        error.row.to_string(),
        error.column.clone(),
        error.value.clone(),
        error.rule.clone(),
        error.message.clone(),
    ]
}

pub fn row_error_to_proto(error: &RowError) -> v1::RowError {
    v1::RowError {
        row: error.row,
        column: error.column.clone(),
        value: error.value.clone(),
        rule: error.rule.to_owned(),
        message: error.message.clone(),
    }
}

/// Encodes an `AccountSnapshotRecorded` around a snapshot already encoded by
/// [`encode_snapshot`], without decoding it again.
pub fn encode_recorded(snapshot: &[u8], import_id: &str, row: u64, revision: u64) -> Vec<u8> {
    let mut buf = Vec::with_capacity(snapshot.len() + import_id.len() + 32);
    encoding::encode_key(1, encoding::WireType::LengthDelimited, &mut buf);
    encoding::encode_varint(snapshot.len() as u64, &mut buf);
    buf.extend_from_slice(snapshot);
    encoding::string::encode(2, &import_id.to_owned(), &mut buf);
    encoding::uint64::encode(3, &row, &mut buf);
    encoding::uint64::encode(4, &revision, &mut buf);
    buf
}
