//! One cell: the typed [`Value`] and the rules of docs/domain.md §2 that turn text into it.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, TimeZone, Utc};

use crate::catalogue::{Field, FieldType};

/// The longest cell accepted, in bytes (UTF-8). Longer cells are refused, whatever the column.
pub const MAX_CELL_BYTES: usize = 4096;

/// The stable codes of the rules a cell or a row can break; they appear in import reports.
pub mod rule {
    /// A required column is empty or absent.
    pub const REQUIRED: &str = "required";
    /// An integer column holds something other than a whole number.
    pub const INTEGER: &str = "integer";
    /// A float column holds something other than a decimal number.
    pub const FLOAT: &str = "float";
    /// A numeric cell contains a comma (decimal comma or thousands separator).
    pub const DECIMAL_COMMA: &str = "decimal_comma";
    /// A date column is not `YYYY-MM-DD`.
    pub const DATE_FORMAT: &str = "date_format";
    /// A datetime column is neither `YYYY-MM-DD H:MM:SS` nor ISO-8601.
    pub const DATETIME_FORMAT: &str = "datetime_format";
    /// A json column does not parse (or `custom` is not an object).
    pub const JSON: &str = "json";
    /// A cell is longer than [`MAX_CELL_BYTES`](super::MAX_CELL_BYTES).
    pub const TOO_LONG: &str = "too_long";
    /// A row has more cells than the header has columns.
    pub const EXTRA_CELLS: &str = "extra_cells";
    /// A cell is not valid UTF-8.
    pub const ENCODING: &str = "encoding";
    /// A spreadsheet cell holds an error value (`#DIV/0!`, `#N/A`, ...).
    pub const ERROR_CELL: &str = "error_cell";
}

/// A parsed cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A calendar day (no time zone).
    Date(NaiveDate),
    /// A point in time, normalised to UTC (a datetime without offset is taken as UTC).
    DateTime(DateTime<Utc>),
    /// A whole number.
    Integer(i64),
    /// A decimal number, always finite.
    Float(f64),
    /// Text, trimmed of surrounding whitespace.
    String(String),
    /// A JSON document.
    Json(serde_json::Value),
}

/// Why a cell was refused: a stable rule code and a message that names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CellError {
    /// One of the codes in [`rule`].
    pub rule: &'static str,
    /// What was wrong, naming the value (shortened when it is very long).
    pub message: String,
}

impl CellError {
    fn new(rule: &'static str, message: String) -> Self {
        CellError { rule, message }
    }
}

/// Parses one cell of `field`'s column. An empty or whitespace-only cell is `Ok(None)`; whether
/// that is allowed (required columns) is the row's business.
///
/// Surrounding whitespace is ignored. Integers also accept a zero fraction (`12.0`, `12.00`),
/// because spreadsheets store whole numbers as floats; any other fraction is refused.
pub fn parse_cell(field: &Field, raw: &str) -> Result<Option<Value>, CellError> {
    if raw.len() > MAX_CELL_BYTES {
        return Err(CellError::new(
            rule::TOO_LONG,
            format!(
                "cell of {} bytes starting {} is longer than the limit of {MAX_CELL_BYTES} bytes",
                raw.len(),
                quote(raw)
            ),
        ));
    }
    let text = raw.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let value = match field.ty {
        FieldType::Integer => Value::Integer(parse_integer(text)?),
        FieldType::Float => Value::Float(parse_float(text)?),
        FieldType::Date => Value::Date(parse_date(text).ok_or_else(|| {
            CellError::new(
                rule::DATE_FORMAT,
                format!(
                    "{} is not a date: expected YYYY-MM-DD, e.g. 2021-05-03",
                    quote(text)
                ),
            )
        })?),
        FieldType::DateTime => Value::DateTime(parse_datetime(text).ok_or_else(|| {
            CellError::new(
                rule::DATETIME_FORMAT,
                format!(
                    "{} is not a datetime: expected YYYY-MM-DD H:MM:SS or ISO-8601, \
                     e.g. 2021-05-03 6:23:55 or 2021-05-03T06:23:55Z",
                    quote(text)
                ),
            )
        })?),
        FieldType::String => Value::String(text.to_owned()),
        FieldType::Json => Value::Json(serde_json::from_str(text).map_err(|e| {
            CellError::new(
                rule::JSON,
                format!("{} is not valid JSON: {e}", quote(text)),
            )
        })?),
    };
    Ok(Some(value))
}

/// The value in backquotes, cut to 64 characters so that a huge cell does not flood a report.
pub(crate) fn quote(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("`{}…`", &value[..cut]),
        None => format!("`{value}`"),
    }
}

fn refuse_comma(text: &str) -> Result<(), CellError> {
    if text.contains(',') {
        return Err(CellError::new(
            rule::DECIMAL_COMMA,
            format!(
                "{} contains a comma: use '.' as decimal delimiter and no thousands separators",
                quote(text)
            ),
        ));
    }
    Ok(())
}

fn parse_integer(text: &str) -> Result<i64, CellError> {
    // The common case first: one scan, no other checks.
    if is_signed_digits(text) {
        return text.parse::<i64>().map_err(|_| out_of_range(text));
    }
    refuse_comma(text)?;
    // A zero fraction (`12.0`) is a spreadsheet's way of writing a whole number.
    if let Some((whole, fraction)) = text.split_once('.')
        && fraction.bytes().all(|b| b == b'0')
        && is_signed_digits(whole)
    {
        return whole.parse::<i64>().map_err(|_| out_of_range(text));
    }
    let message = if is_plain_number(text) {
        format!(
            "{} is not a whole number: this column takes integers only",
            quote(text)
        )
    } else {
        format!("{} is not an integer", quote(text))
    };
    Err(CellError::new(rule::INTEGER, message))
}

fn out_of_range(text: &str) -> CellError {
    CellError::new(
        rule::INTEGER,
        format!("{} is out of the integer range", quote(text)),
    )
}

fn parse_float(text: &str) -> Result<f64, CellError> {
    if !is_plain_number(text) {
        // Only a refused cell is scanned again, for the more helpful message.
        refuse_comma(text)?;
        return Err(CellError::new(
            rule::FLOAT,
            format!(
                "{} is not a number: expected digits with '.' as decimal delimiter",
                quote(text)
            ),
        ));
    }
    match text.parse::<f64>() {
        Ok(number) if number.is_finite() => Ok(number),
        _ => Err(CellError::new(
            rule::FLOAT,
            format!("{} is out of the number range", quote(text)),
        )),
    }
}

/// `[+-]digits`, at least one digit.
fn is_signed_digits(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[+-]digits[.digits][e[+-]digits]` with at least one mantissa digit; refuses `inf`, `NaN`,
/// spaces, apostrophes and every other thousands separator that `f64::from_str` would not.
fn is_plain_number(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let digits_from = |i: &mut usize| {
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits_from(&mut i);
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits_from(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(bytes.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits_from(&mut i) == 0 {
            return false;
        }
    }
    i == bytes.len()
}

/// Strictly `YYYY-MM-DD` (four, two and two digits) and a real calendar day.
fn parse_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    if !shape {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().ok();
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
}

/// `YYYY-MM-DD` then ` ` or `T`, then `H:MM:SS` (hour of one or two digits) with an optional
/// fraction of up to nine digits, then optionally `Z` or an offset `±HH:MM`, `±HHMM`, `±HH`.
/// Without a zone the time is taken as UTC.
fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let date = parse_date(text.get(..10)?)?;
    if !matches!(text.as_bytes().get(10), Some(b' ' | b'T')) {
        return None;
    }
    let rest = text.get(11..)?;
    let (time, offset_seconds) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        (&rest[..at], parse_offset(&rest[at..])?)
    } else {
        (rest, 0)
    };
    let local = date.and_time(parse_time(time)?);
    let zone = FixedOffset::east_opt(offset_seconds)?;
    Some(
        zone.from_local_datetime(&local)
            .single()?
            .with_timezone(&Utc),
    )
}

fn parse_time(text: &str) -> Option<NaiveTime> {
    let (hour, rest) = text.split_once(':')?;
    let (minute, rest) = rest.split_once(':')?;
    let (second, fraction) = match rest.split_once('.') {
        Some((second, fraction)) => (second, Some(fraction)),
        None => (rest, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let shape = (1..=2).contains(&hour.len())
        && minute.len() == 2
        && second.len() == 2
        && all_digits(hour)
        && all_digits(minute)
        && all_digits(second);
    if !shape {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if (1..=9).contains(&f.len()) && all_digits(f) => {
            f.parse::<u32>().ok()? * 10u32.pow(9 - u32::try_from(f.len()).ok()?)
        }
        Some(_) => return None,
    };
    NaiveTime::from_hms_nano_opt(
        hour.parse().ok()?,
        minute.parse().ok()?,
        second.parse().ok()?,
        nanos,
    )
}

/// `±HH:MM`, `±HHMM` or `±HH` → seconds east of UTC.
fn parse_offset(text: &str) -> Option<i32> {
    // Byte positions below are only character boundaries in ASCII text.
    if !text.is_ascii() {
        return None;
    }
    let (sign, digits) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = match (digits.len(), digits.as_bytes().get(2)) {
        (5, Some(b':')) => (&digits[..2], &digits[3..]),
        (4, _) => (&digits[..2], &digits[2..]),
        (2, _) => (digits, "00"),
        _ => return None,
    };
    if !(hours.bytes().chain(minutes.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some(sign * (hours * 3600 + minutes * 60))
}
