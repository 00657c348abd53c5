//! One exported JSON row → a normalised [`Row`], or every reason it cannot be one.
//!
//! The rules of docs/domain.md §1: renamed fields mapped back (`dpd_due_date_timestamp`,
//! `case_public_id`), `DD/MM/YYYY` dates read as days, ISO-8601 strings as instants, amounts kept
//! as integers in minor units, booleans as booleans, `null` and missing fields absent. Fields the
//! descriptor does not know are kept as JSON text, never dropped.

mod read;

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Timelike, Utc};
use prost::Message;
use recoup_proto::{to_timestamp, v1};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::dataset::{Dataset, FieldKind};
use read::{Fields, Given, Slot};
pub use read::{Normaliser, text_of};

/// The stable codes of what can be wrong with a field.
pub mod rule {
    /// A required field (key, cursor, partition) is missing or null.
    pub const REQUIRED: &str = "required";
    /// An amount is not a whole number of minor units.
    pub const INTEGER: &str = "integer";
    /// A boolean field holds something else.
    pub const BOOLEAN: &str = "boolean";
    /// A date is not in the dataset's format, or no such day exists.
    pub const DATE_FORMAT: &str = "date_format";
    /// An instant is not ISO-8601.
    pub const TIMESTAMP_FORMAT: &str = "timestamp_format";
    /// A text field holds a number, boolean, array or object.
    pub const STRING: &str = "string";
    /// A field came under its old and its new name with different values.
    pub const CONFLICT: &str = "conflict";
    /// The row is not a JSON object, or not valid JSON (a number out of range, a lone
    /// surrogate, nesting deeper than 128).
    pub const OBJECT: &str = "object";
    /// The row key is longer than [`super::MAX_KEY_BYTES`].
    pub const TOO_LONG: &str = "too_long";
}

/// A normalised value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Normalised {
    Text(String),
    Bool(bool),
    /// Minor units.
    Minor(i64),
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

/// One field that could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    /// The field as the export named it.
    pub field: String,
    /// Its JSON text, cut to [`MAX_VALUE_BYTES`].
    pub value: String,
    /// One of [`rule`].
    pub rule: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn to_proto(&self) -> v1::ExportFieldError {
        v1::ExportFieldError {
            field: self.field.clone(),
            value: self.value.clone(),
            rule: self.rule.to_owned(),
            message: self.message.clone(),
        }
    }
}

/// Longest row key, bytes (the store's log keeps keys up to 64 KiB; real keys are ~60 bytes).
pub const MAX_KEY_BYTES: usize = 1024;

/// Most bytes of a value an error repeats.
pub const MAX_VALUE_BYTES: usize = 256;

/// A normalised row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The key fields' values joined by `|` (instants as RFC 3339 with microseconds), e.g.
    /// `7c1e9a02-…|2026-04-18T10:05:12.000000Z`.
    pub key: String,
    /// The partition field's value (`public_id`).
    pub partition: String,
    /// The cursor field's value (`updated_at`).
    pub cursor: DateTime<Utc>,
    /// One value per field of the dataset, in its declaration order; `None` where the export
    /// had null or nothing (see [`Row::value`]).
    pub values: Vec<Option<Normalised>>,
    /// Fields the dataset does not declare, by exported name, as JSON text.
    pub extra: BTreeMap<String, String>,
}

impl Row {
    /// The value of the field named `name` (canonical), if the row has one; `dataset` is the
    /// one the row was normalised by.
    pub fn value(&self, dataset: &Dataset, name: &str) -> Option<&Normalised> {
        let slot = dataset.fields.iter().position(|f| f.name == name)?;
        self.values.get(slot)?.as_ref()
    }

    /// The row as a D16 event, without revision and fetch time (see [`fingerprint`]).
    pub fn to_deal(
        &self,
        dataset: &Dataset,
        lender_public_id: &str,
    ) -> v1::CollectionsDealObserved {
        self.clone().into_deal(dataset, lender_public_id)
    }

    /// [`Row::to_deal`], moving the row's values into the event: one pass over them. Values
    /// of a configured dataset's fields that D16 does not have go into `extra` as JSON text
    /// (dates as `YYYY-MM-DD`, instants as RFC 3339 in UTC), beside the export's unknown fields.
    pub fn into_deal(
        self,
        dataset: &Dataset,
        lender_public_id: &str,
    ) -> v1::CollectionsDealObserved {
        let mut deal = v1::CollectionsDealObserved {
            dataset: dataset.path(),
            lender_public_id: lender_public_id.to_owned(),
            public_id: self.partition,
            updated_at: Some(to_timestamp(self.cursor)),
            ..Default::default()
        };
        let mut extra = self.extra;
        let values = dataset.fields.iter().zip(self.values);
        for (field, value) in values.filter_map(|(f, v)| Some((f, v?))) {
            let name = field.name.as_str();
            match (name, value) {
                ("created_at", Normalised::Instant(at)) => deal.created_at = Some(to_timestamp(at)),
                ("deal_stage_id", Normalised::Text(text)) => deal.deal_stage_id = Some(text),
                ("pipeline", Normalised::Text(text)) => deal.pipeline = Some(text),
                ("comms_pipeline", Normalised::Text(text)) => deal.comms_pipeline = Some(text),
                ("amount", Normalised::Minor(amount)) => deal.amount_minor = Some(amount),
                ("assigned_user_name", Normalised::Text(text)) => {
                    deal.assigned_user_name = Some(text)
                }
                ("dpd_due_date", Normalised::Date(day)) => deal.dpd_due_date = Some(iso_day(day)),
                ("last_due_date", Normalised::Date(day)) => deal.last_due_date = Some(iso_day(day)),
                ("ptp_date_human", Normalised::Instant(at)) => {
                    deal.ptp_date_human = Some(to_timestamp(at))
                }
                ("ptp_date_ai", Normalised::Instant(at)) => {
                    deal.ptp_date_ai = Some(to_timestamp(at))
                }
                ("broken_ptp_date_human", Normalised::Instant(at)) => {
                    deal.broken_ptp_date_human = Some(to_timestamp(at))
                }
                ("broken_ptp_date_ai", Normalised::Instant(at)) => {
                    deal.broken_ptp_date_ai = Some(to_timestamp(at))
                }
                ("hasReachedRpcOrBeyond", Normalised::Bool(flag)) => {
                    deal.has_reached_rpc_or_beyond = Some(flag)
                }
                ("do_not_contact", Normalised::Bool(flag)) => deal.do_not_contact = Some(flag),
                // Already in the event, as the partition and the cursor.
                ("public_id", _) if dataset.partition_field == "public_id" => {}
                ("updated_at", _) if dataset.cursor_field == "updated_at" => {}
                (_, value) => {
                    let text = match value {
                        Normalised::Text(text) => Value::String(text).to_string(),
                        Normalised::Bool(flag) => flag.to_string(),
                        Normalised::Minor(amount) => amount.to_string(),
                        Normalised::Date(day) => format!("\"{}\"", iso_day(day)),
                        Normalised::Instant(at) => {
                            format!("\"{}\"", at.to_rfc3339_opts(SecondsFormat::Micros, true))
                        }
                    };
                    extra.entry(name.to_owned()).or_insert(text);
                }
            }
        }
        deal.extra = extra;
        deal
    }
}

/// The content hash of a deal: everything but its revision and fetch time, so that a row that
/// comes again unchanged hashes the same.
pub fn fingerprint(deal: &v1::CollectionsDealObserved) -> u128 {
    let mut content = deal.clone();
    content.revision = 0;
    content.fetched_at = None;
    xxhash_rust::xxh3::xxh3_128(&content.encode_to_vec())
}

/// Normalises one exported row. Every error of the row is returned, not only the first. (To
/// normalise many rows, build one [`Normaliser`].)
pub fn normalise(dataset: &Dataset, raw: &Value) -> Result<Row, Vec<FieldError>> {
    Normaliser::new(dataset).row(raw)
}

impl Normaliser<'_> {
    /// One parsed row, normalised.
    pub fn row(&self, raw: &Value) -> Result<Row, Vec<FieldError>> {
        self.finish(self.read_value(raw).map_err(|e| vec![e])?)
    }

    /// One row from its JSON text (as [`crate::client::Page`] holds it), normalised: the same
    /// row as [`Normaliser::row`] of the text parsed.
    pub fn row_json(&self, raw: &RawValue) -> Result<Row, Vec<FieldError>> {
        self.finish(self.read_json(raw).map_err(|e| vec![e])?)
    }

    fn finish(&self, fields: Fields<'_>) -> Result<Row, Vec<FieldError>> {
        let (slots, extra, mut errors) = fields.resolve();
        let values = self.parse_fields(slots, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let key = self.row_key(&values)?;
        let partition = key_part(&values, self.partition_slot);
        let cursor = match self.cursor_slot.and_then(|slot| values[slot].as_ref()) {
            Some(Normalised::Instant(cursor)) => *cursor,
            // A checked descriptor's cursor field is a required timestamp.
            _ => {
                let name = &self.dataset.cursor_field;
                return Err(vec![FieldError {
                    field: name.clone(),
                    value: String::new(),
                    rule: rule::TIMESTAMP_FORMAT,
                    message: format!("`{name}` is not an instant"),
                }]);
            }
        };
        Ok(Row {
            key,
            partition,
            cursor,
            values,
            extra,
        })
    }

    /// The declared fields' values, each parsed by its kind, in declaration order; a required
    /// field missing or null, or a value not of its kind, is added to `errors`.
    fn parse_fields(
        &self,
        slots: Vec<Slot<'_>>,
        errors: &mut Vec<FieldError>,
    ) -> Vec<Option<Normalised>> {
        let fields = self.dataset.fields.iter().zip(&self.required);
        fields
            .zip(slots)
            .map(|((field, &required), slot)| {
                let (exported, value) = match slot {
                    Some((exported, value)) if !value.is_null() => (exported, value),
                    given => {
                        if required {
                            let exported =
                                given.map_or(Cow::Borrowed(field.name.as_str()), |g| g.0);
                            errors.push(FieldError {
                                field: exported.into_owned(),
                                value: String::new(),
                                rule: rule::REQUIRED,
                                message: format!(
                                    "`{}` is required but missing or null",
                                    field.name
                                ),
                            });
                        }
                        return None;
                    }
                };
                match parse(field.kind, value) {
                    Ok(parsed) => Some(parsed),
                    Err((rule, value, message)) => {
                        errors.push(FieldError {
                            field: exported.to_string(),
                            value,
                            rule,
                            message: format!("`{exported}`: {message}"),
                        });
                        None
                    }
                }
            })
            .collect()
    }

    /// The key fields' values joined by `|`, or an error if that is longer than
    /// [`MAX_KEY_BYTES`].
    fn row_key(&self, values: &[Option<Normalised>]) -> Result<String, Vec<FieldError>> {
        let key = self
            .key_slots
            .iter()
            .map(|&slot| key_part(values, slot))
            .collect::<Vec<_>>()
            .join("|");
        if key.len() > MAX_KEY_BYTES {
            let key_fields = &self.dataset.key_fields;
            return Err(vec![FieldError {
                field: key_fields.join(","),
                value: cut(&key),
                rule: rule::TOO_LONG,
                message: format!(
                    "the row key ({}) is {} bytes long, more than {MAX_KEY_BYTES}",
                    key_fields.join(", "),
                    key.len()
                ),
            }]);
        }
        Ok(key)
    }
}

/// One field's value as a part of a row key (instants as RFC 3339 with microseconds); empty
/// where the row has none.
fn key_part(values: &[Option<Normalised>], slot: Option<usize>) -> String {
    match slot.and_then(|slot| values[slot].as_ref()) {
        Some(Normalised::Text(text)) => text.clone(),
        Some(Normalised::Instant(at)) => at.to_rfc3339_opts(SecondsFormat::Micros, true),
        Some(Normalised::Date(day)) => iso_day(*day),
        Some(Normalised::Minor(n)) => n.to_string(),
        Some(Normalised::Bool(b)) => b.to_string(),
        None => String::new(),
    }
}

/// What is wrong with a value: the rule, the value as JSON (cut), and a message.
type Refusal = (&'static str, String, String);

/// A value read as its field's kind.
fn parse(kind: FieldKind, value: Given<'_>) -> Result<Normalised, Refusal> {
    let refuse =
        |rule, value: &Given<'_>, message: String| (rule, cut(&value.to_string()), message);
    match (kind, value) {
        (FieldKind::String, Given::Text(text)) => Ok(Normalised::Text(text.into_owned())),
        (FieldKind::String, other) => Err(refuse(
            rule::STRING,
            &other,
            format!("expected text, got {other}"),
        )),
        (FieldKind::Boolean, Given::Json(Value::Bool(flag))) => Ok(Normalised::Bool(flag)),
        (FieldKind::Boolean, other) => Err(refuse(
            rule::BOOLEAN,
            &other,
            format!("expected true or false, got {other}"),
        )),
        (FieldKind::MinorAmount, value) => minor_units(&value)
            .map(Normalised::Minor)
            .map_err(|message| refuse(rule::INTEGER, &value, message)),
        (FieldKind::DateDmy, value) => from_text(
            value,
            rule::DATE_FORMAT,
            (
                "a date written DD/MM/YYYY, e.g. 01/06/2026",
                "a DD/MM/YYYY date",
            ),
            |text| parse_dmy(text).map(Normalised::Date),
        ),
        (FieldKind::DateIso, value) => from_text(
            value,
            rule::DATE_FORMAT,
            ("a date written YYYY-MM-DD", "a YYYY-MM-DD date"),
            |text| {
                let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
                day.filter(|_| text.len() == 10).map(Normalised::Date)
            },
        ),
        (FieldKind::Timestamp, value) => from_text(
            value,
            rule::TIMESTAMP_FORMAT,
            (
                "an ISO-8601 instant, e.g. 2026-05-31T13:48:30.000Z",
                "an ISO-8601 instant",
            ),
            |text| parse_instant(text).map(Normalised::Instant),
        ),
    }
}

/// A value written as text, read by `read`; refused under `rule` as not being `what.0` (text
/// that does not read) or with "expected `what.1`" (no text at all).
fn from_text(
    value: Given<'_>,
    rule: &'static str,
    what: (&str, &str),
    read: impl Fn(&str) -> Option<Normalised>,
) -> Result<Normalised, Refusal> {
    let read = match &value {
        Given::Text(text) => read(text),
        Given::Json(_) => None,
    };
    read.ok_or_else(|| {
        let message = match &value {
            Given::Text(_) => format!("{value} is not {}", what.0),
            Given::Json(_) => format!("expected {}, got {value}", what.1),
        };
        (rule, cut(&value.to_string()), message)
    })
}

/// An amount in minor units: a JSON integer, or a float without fraction (`920000.0`) within
/// the range of i64. Text and fractions are refused: amounts stay integral end to end.
fn minor_units(value: &Given<'_>) -> Result<i64, String> {
    let Given::Json(Value::Number(number)) = value else {
        return Err(format!(
            "expected a whole number of minor units, got {value}"
        ));
    };
    if let Some(n) = number.as_i64() {
        return Ok(n);
    }
    match number.as_f64() {
        // 2^63 is the first float past i64::MAX.
        Some(f) if f.fract() == 0.0 && f.abs() < 9.223_372_036_854_776e18 => Ok(f as i64),
        Some(f) if f.fract() != 0.0 => Err(format!(
            "{value} is not a whole number of minor units (fils, cents)"
        )),
        _ => Err(format!("{value} is out of the amount range")),
    }
}

/// A day as `YYYY-MM-DD` (chrono's `format` parses its pattern on every call).
fn iso_day(day: NaiveDate) -> String {
    use chrono::Datelike;
    format!("{:04}-{:02}-{:02}", day.year(), day.month(), day.day())
}

/// `DD/MM/YYYY`, two digits for day and month, four for the year, a day that exists.
pub fn parse_dmy(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = bytes.get(range)?;
        part.iter().all(u8::is_ascii_digit).then_some(())?;
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if bytes.len() != 10 || bytes[2] != b'/' || bytes[5] != b'/' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(6..10)? as i32, digits(3..5)?, digits(0..2)?)
}

/// An ISO-8601 instant: RFC 3339 with `Z` or an offset, or without offset (taken as UTC), with
/// or without fractional seconds.
///
/// Kept to the microsecond (finer digits are dropped): row keys name instants to the
/// microsecond, and the event must carry the same instant as its key.
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let at = match DateTime::parse_from_rfc3339(text) {
        Ok(at) => at.with_timezone(&Utc),
        Err(_) => NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc(),
    };
    at.with_nanosecond(at.nanosecond() / 1000 * 1000)
}

/// `text` cut to [`MAX_VALUE_BYTES`] on a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_VALUE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
