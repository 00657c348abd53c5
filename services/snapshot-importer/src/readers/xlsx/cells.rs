//! A typed cell as the text the catalogue's rules read (see the module above).

use calamine::{DataRef, ExcelDateTime};

/// A cell as text, and whether it holds a spreadsheet error.
pub(super) fn cell_text(value: &DataRef<'_>, datetime_column: bool) -> (String, bool) {
    let text = match value {
        DataRef::Empty => String::new(),
        DataRef::String(text) => text.clone(),
        DataRef::SharedString(text) => (*text).to_owned(),
        DataRef::Float(number) => number.to_string(),
        DataRef::Int(number) => number.to_string(),
        DataRef::Bool(b) => b.to_string(),
        DataRef::DateTime(datetime) => excel_datetime(datetime, datetime_column),
        DataRef::DateTimeIso(text) => iso_datetime(text, datetime_column),
        DataRef::DurationIso(text) => text.clone(),
        DataRef::Error(error) => return (error.to_string(), true),
    };
    (text, false)
}

/// `YYYY-MM-DD`, or `YYYY-MM-DD HH:MM:SS[.mmm]` when there is a time of day or the column is a
/// datetime. A duration (`[h]:mm` format) stays its number of days.
fn excel_datetime(datetime: &ExcelDateTime, with_time: bool) -> String {
    if datetime.is_duration() {
        return datetime.as_f64().to_string();
    }
    let (year, month, day, hour, minute, second, milli) = datetime.to_ymd_hms_milli();
    let date = format!("{year:04}-{month:02}-{day:02}");
    if (hour, minute, second, milli) == (0, 0, 0, 0) && !with_time {
        date
    } else if milli == 0 {
        format!("{date} {hour:02}:{minute:02}:{second:02}")
    } else {
        format!("{date} {hour:02}:{minute:02}:{second:02}.{milli:03}")
    }
}

/// An ISO 8601 cell (`t="d"`) with the same shape as [`excel_datetime`]: `T` becomes a space and
/// a midnight time is dropped outside datetime columns.
fn iso_datetime(text: &str, with_time: bool) -> String {
    match text.split_once('T') {
        Some((date, time)) if !date.is_empty() => {
            let midnight = time
                .trim_end_matches('Z')
                .bytes()
                .all(|b| matches!(b, b'0' | b':' | b'.'));
            if midnight && !with_time {
                date.to_owned()
            } else {
                format!("{date} {time}")
            }
        }
        _ => text.to_owned(),
    }
}
