//! A row's field values as the export API writes them, written straight into a page's bytes:
//! no `Value` and no `String` per field. Serving pages is the vendor's work, not the puller's,
//! yet the simulator shares the puller's cores in tests and benchmarks; it should cost little.
//! Every value writes exactly the bytes of its [`Out::to_value`] serialised (tested below).

use std::io::Write;

use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Timelike, Utc};
use serde_json::{Value, json};

/// One field's value in a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Text(&'static str),
    /// Text made up for a malformed row.
    Made(String),
    /// A UUID, written `8-4-4-4-12` in lower-case hex.
    Uuid(u128),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    /// ISO-8601 with milliseconds and `Z`, as the vendor writes instants.
    Instant(DateTime<Utc>),
    /// `DD/MM/YYYY`, as the vendor writes days.
    Day(NaiveDate),
}

impl Out {
    /// The value as JSON.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Out::Text(text) => Value::String((*text).to_owned()),
            Out::Made(text) => Value::String(text.clone()),
            Out::Uuid(id) => Value::String(uuid(*id)),
            Out::Int(n) => json!(n),
            Out::Float(f) => json!(f),
            Out::Bool(flag) => Value::Bool(*flag),
            Out::Null => Value::Null,
            Out::Instant(at) => Value::String(iso(*at)),
            Out::Day(day) => Value::String(dmy(*day)),
        }
    }

    /// The value's JSON text, appended to `out`.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        match self {
            Out::Text(text) => {
                let _ = serde_json::to_writer(&mut *out, text);
            }
            Out::Made(text) => {
                let _ = serde_json::to_writer(&mut *out, text);
            }
            Out::Uuid(id) => {
                out.push(b'"');
                write_uuid(*id, out);
                out.push(b'"');
            }
            Out::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Out::Float(f) => {
                let _ = serde_json::to_writer(&mut *out, &json!(f));
            }
            Out::Bool(flag) => out.extend_from_slice(if *flag { b"true" } else { b"false" }),
            Out::Null => out.extend_from_slice(b"null"),
            Out::Instant(at) => write_instant(*at, out),
            Out::Day(day) => write_day(*day, out),
        }
    }
}

pub(crate) fn uuid(id: u128) -> String {
    let mut text = Vec::with_capacity(36);
    write_uuid(id, &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// ISO-8601 with milliseconds and `Z`.
pub(crate) fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn dmy(day: NaiveDate) -> String {
    format!("{:02}/{:02}/{:04}", day.day(), day.month(), day.year())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_uuid(id: u128, out: &mut Vec<u8>) {
    for nibble in 0..32 {
        if matches!(nibble, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        out.push(HEX[((id >> (124 - 4 * nibble)) & 0xF) as usize]);
    }
}

/// `n` as `width` decimal digits, zero-padded (`n` < 10^width).
fn digits(n: u32, width: u32, out: &mut Vec<u8>) {
    for place in (0..width).rev() {
        out.push(b'0' + (n / 10u32.pow(place) % 10) as u8);
    }
}

fn write_instant(at: DateTime<Utc>, out: &mut Vec<u8>) {
    // Four-digit years and no leap second: everything the simulator makes. Else chrono.
    if !(0..=9999).contains(&at.year()) || at.nanosecond() >= 1_000_000_000 {
        let _ = serde_json::to_writer(&mut *out, &iso(at));
        return;
    }
    out.push(b'"');
    write_date(at.year() as u32, at.month(), at.day(), out);
    out.push(b'T');
    digits(at.hour(), 2, out);
    out.push(b':');
    digits(at.minute(), 2, out);
    out.push(b':');
    digits(at.second(), 2, out);
    out.push(b'.');
    digits(at.nanosecond() / 1_000_000, 3, out);
    out.extend_from_slice(b"Z\"");
}

fn write_day(day: NaiveDate, out: &mut Vec<u8>) {
    if !(0..=9999).contains(&day.year()) {
        let _ = serde_json::to_writer(&mut *out, &dmy(day));
        return;
    }
    out.push(b'"');
    digits(day.day(), 2, out);
    out.push(b'/');
    digits(day.month(), 2, out);
    out.push(b'/');
    digits(day.year() as u32, 4, out);
    out.push(b'"');
}

/// `YYYY-MM-DD`.
fn write_date(year: u32, month: u32, day: u32, out: &mut Vec<u8>) {
    digits(year, 4, out);
    out.push(b'-');
    digits(month, 2, out);
    out.push(b'-');
    digits(day, 2, out);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn written(out: &Out) -> String {
        let mut bytes = Vec::new();
        out.write(&mut bytes);
        String::from_utf8(bytes).unwrap_or_default()
    }

    fn instant(rng: &mut SplitMix64, lo: i64, hi: i64) -> DateTime<Utc> {
        let micros = rng.between(lo, hi);
        DateTime::from_timestamp_micros(micros).unwrap_or_default()
    }

    /// Every kind of value writes the bytes its JSON value serialises to, over the ranges the
    /// simulator uses and past them (years before 0 and after 9999 go through chrono).
    #[test]
    fn every_value_writes_what_its_json_value_serialises_to() {
        let mut rng = SplitMix64::new(7);
        let far = 200_000 * 365 * 86_400 * 1_000_000i64;
        for _ in 0..20_000 {
            let mut outs = vec![
                Out::Text("Mariam Al-Shehri"),
                Out::Made(format!("{}\"\\\n\u{1F600}", rng.next_u64())),
                Out::Uuid(u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())),
                Out::Uuid(u128::from(rng.next_u64())),
                Out::Int(rng.next_u64() as i64),
                Out::Int(rng.between(-1000, 1000)),
                Out::Float(rng.between(-1_000_000, 1_000_000) as f64 + 0.5),
                Out::Float(f64::from_bits(rng.next_u64())),
                Out::Bool(rng.chance(0.5)),
                Out::Null,
                Out::Instant(instant(&mut rng, 0, 4_102_444_800_000_000)),
                Out::Instant(instant(&mut rng, -far, far)),
            ];
            let days = [outs[10].clone(), outs[11].clone()].map(|at| match at {
                Out::Instant(at) => Out::Day(at.date_naive()),
                other => other,
            });
            outs.extend(days);
            for out in outs {
                assert_eq!(written(&out), out.to_value().to_string(), "{out:?}");
            }
        }
    }

    #[test]
    fn instants_and_days_as_the_vendor_writes_them() {
        let at = DateTime::parse_from_rfc3339("2026-04-18T10:05:12.345678Z")
            .unwrap()
            .to_utc();
        assert_eq!(written(&Out::Instant(at)), "\"2026-04-18T10:05:12.345Z\"");
        assert_eq!(written(&Out::Day(at.date_naive())), "\"18/04/2026\"");
        assert_eq!(
            written(&Out::Uuid(0x7c1e9a02_5d38_4b6f_9012_a3e8c5d7b461)),
            "\"7c1e9a02-5d38-4b6f-9012-a3e8c5d7b461\""
        );
    }
}
