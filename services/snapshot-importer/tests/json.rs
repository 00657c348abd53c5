//! The JSON reader (arrays and NDJSON) on real files.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use common::{assert_examples_round_trip, ctx, seed_examples};
use paygo_snapshots::{FieldType, Value, rule};
use serde_json::json;
use snapshot_importer::readers::json::JsonSnapshots;
use snapshot_importer::readers::{FileError, RowOutcome};

fn read_all(bytes: &[u8]) -> Result<Vec<RowOutcome>, FileError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.json");
    File::create(&path).unwrap().write_all(bytes).unwrap();
    let mut reader = JsonSnapshots::new(BufReader::new(File::open(path).unwrap()))?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        rows.push(row?);
    }
    Ok(rows)
}

/// Reads until the first file error: the rows before it and the error.
fn read_until_error(bytes: &[u8]) -> (Vec<RowOutcome>, Option<FileError>) {
    let mut reader = JsonSnapshots::new(bytes).unwrap();
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        match row {
            Ok(row) => rows.push(row),
            Err(error) => {
                assert!(
                    reader.next_row(&ctx()).is_none(),
                    "a file error ends reading"
                );
                return (rows, Some(error));
            }
        }
    }
    (rows, None)
}

fn rows_of(rows: &[RowOutcome]) -> Vec<u64> {
    rows.iter().map(|r| r.row).collect()
}

/// An object with every column of the seed, each example in its natural JSON type.
fn seed_object(account: &str) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    for e in seed_examples() {
        let value = match (e.name, e.ty) {
            ("account_external_id", _) => json!(account),
            (_, FieldType::Integer) => json!(e.example.parse::<i64>().unwrap()),
            (_, FieldType::Float) => json!(e.example.parse::<f64>().unwrap()),
            (_, FieldType::Json) => serde_json::from_str(&e.example).unwrap(),
            _ => json!(e.example),
        };
        object.insert(e.name.to_owned(), value);
    }
    serde_json::Value::Object(object)
}

#[test]
fn the_seeds_examples_round_trip_as_an_array_and_as_ndjson() {
    let array = serde_json::to_vec_pretty(&json!([seed_object("C1"), seed_object("C2")])).unwrap();
    let rows = read_all(&array).unwrap();
    assert_eq!(rows_of(&rows), [1, 2]);
    assert_examples_round_trip(rows[0].result.as_ref().unwrap(), "C1");
    assert_examples_round_trip(rows[1].result.as_ref().unwrap(), "C2");

    let ndjson = format!("{}\n{}\n", seed_object("C1"), seed_object("C2"));
    let rows = read_all(ndjson.as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [1, 2]);
    assert_examples_round_trip(rows[1].result.as_ref().unwrap(), "C2");
}

#[test]
fn examples_as_text_round_trip_too() {
    let mut object = serde_json::Map::new();
    for e in seed_examples() {
        let value = if e.name == "account_external_id" {
            "C1".to_owned()
        } else {
            e.example.clone()
        };
        object.insert(e.name.to_owned(), json!(value));
    }
    let rows = read_all(serde_json::Value::Object(object).to_string().as_bytes()).unwrap();
    assert_examples_round_trip(rows[0].result.as_ref().unwrap(), "C1");
}

#[test]
fn an_array_with_a_bom_and_whitespace_anywhere() {
    let body = "\u{feff} \n [ \n\t{ \"snapshot_date\" : \"2021-05-03\" ,\n \"account_external_id\": \"A\" } ,\r\n\
                {\"account_external_id\":\"B\",\"snapshot_date\":\"2021-05-04\"}\n]\n  ";
    let rows = read_all(body.as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [1, 2]);
    let second = rows[1].result.as_ref().unwrap();
    assert_eq!(second.account_uid(), Some("1_crm_B"));
    assert_eq!(second.snapshot_date().unwrap().to_string(), "2021-05-04");
}

#[test]
fn ndjson_rows_are_numbered_by_line_and_blank_lines_are_skipped() {
    let body = "\u{feff}\n{\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"A\"}\r\n\
                \r\n   \n\
                {\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"B\"}\n\
                {\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"C\"}";
    let rows = read_all(body.as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [2, 5, 6]);
    assert!(rows.iter().all(|r| r.result.is_ok()));
}

#[test]
fn cells_take_the_json_text_of_each_value() {
    let body = r#"[{"snapshot_date": "2021-05-03", "account_external_id": "A",
        "days_to_cutoff_source": 12.0, "days_delays_daily_source": 1.55e1,
        "repayment_rate_source": null, "flag": true, "count": 7, "ratio": 12.50, "tiny": -1E-7,
        "note": "x", "nested": {"b": [1, 2]}, "custom": {"some": "key"},
        "esc\u0061ped": "a \"b\" \u00e9\n"}]"#;
    let rows = read_all(body.as_bytes()).unwrap();
    let s = rows[0].result.as_ref().unwrap();
    assert_eq!(s.get("days_to_cutoff_source"), Some(&Value::Integer(12)));
    assert_eq!(s.get("days_delays_daily_source"), Some(&Value::Float(15.5)));
    assert_eq!(s.get("repayment_rate_source"), None);
    assert_eq!(s.custom["flag"], "true");
    assert_eq!(s.custom["count"], "7");
    // Numbers keep the text they were written with.
    assert_eq!(s.custom["ratio"], "12.50");
    assert_eq!(s.custom["tiny"], "-1E-7");
    assert_eq!(s.custom["note"], "x");
    assert_eq!(s.custom["nested"], r#"{"b":[1,2]}"#);
    assert_eq!(s.custom["some"], "key");
    assert_eq!(s.custom["escaped"], "a \"b\" \u{e9}\n");
}

#[test]
fn bad_rows_are_their_own_errors_and_the_good_rows_still_count() {
    let body = r#"[
        {"snapshot_date": "2021-05-03", "account_external_id": "A", "days_delays_daily_source": 15.5},
        {"snapshot_date": "2021-05-03", "account_external_id": "B", "days_delays_daily_source": "15,5", "days_to_cutoff_source": 12.5},
        42,
        {"snapshot_date": "2021-05-03" "account_external_id": "C"},
        {"account_external_id": "D"},
        [1, 2],
        {"snapshot_date": "2021-05-03", "account_external_id": "E"}
    ]"#;
    let rows = read_all(body.as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [1, 2, 3, 4, 5, 6, 7]);
    assert!(rows[0].result.is_ok());
    assert!(rows[6].result.is_ok());

    let errors = rows[1].result.as_ref().unwrap_err();
    let comma = errors
        .iter()
        .find(|e| e.column == "days_delays_daily_source")
        .unwrap();
    assert_eq!(
        (comma.row, comma.rule, comma.value.as_str()),
        (2, rule::DECIMAL_COMMA, "15,5")
    );
    let fraction = errors
        .iter()
        .find(|e| e.column == "days_to_cutoff_source")
        .unwrap();
    assert_eq!(
        (fraction.rule, fraction.value.as_str()),
        (rule::INTEGER, "12.5")
    );

    let number = &rows[2].result.as_ref().unwrap_err()[0];
    assert_eq!((number.row, number.rule), (3, rule::JSON));
    assert!(
        number.message.contains("`42` is a number, not an object"),
        "{}",
        number.message
    );
    assert_eq!(rows[2].raw, [("json".to_owned(), "42".to_owned())]);

    let syntax = &rows[3].result.as_ref().unwrap_err()[0];
    assert_eq!((syntax.row, syntax.rule), (4, rule::JSON));
    assert!(
        syntax.message.contains("is not valid JSON"),
        "{}",
        syntax.message
    );
    assert!(syntax.value.contains("\"account_external_id\": \"C\""));

    let missing = &rows[4].result.as_ref().unwrap_err()[0];
    assert_eq!(
        (missing.row, missing.rule, missing.column.as_str()),
        (5, rule::REQUIRED, "snapshot_date")
    );
    assert!(
        rows[4]
            .raw
            .contains(&("account_external_id".to_owned(), "D".to_owned()))
    );

    let array = &rows[5].result.as_ref().unwrap_err()[0];
    assert!(
        array.message.contains("is an array, not an object"),
        "{}",
        array.message
    );
}

#[test]
fn an_invalid_ndjson_line_is_its_rows_error_and_reading_goes_on() {
    let body = "{\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"A\"}\n\
                {\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\n\
                \"just a string\"\n\
                {\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"B\"} trailing\n\
                {\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"C\"}\n";
    let rows = read_all(body.as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [1, 2, 3, 4, 5]);
    let truncated = &rows[1].result.as_ref().unwrap_err()[0];
    assert_eq!((truncated.row, truncated.rule), (2, rule::JSON));
    assert!(
        truncated.message.contains("at column"),
        "{}",
        truncated.message
    );
    let string = &rows[2].result.as_ref().unwrap_err()[0];
    assert!(
        string.message.contains("is a string, not an object"),
        "{}",
        string.message
    );
    let trailing = &rows[3].result.as_ref().unwrap_err()[0];
    assert!(
        trailing.message.contains("trailing characters"),
        "{}",
        trailing.message
    );
    assert!(rows[4].result.is_ok());
}

#[test]
fn a_key_twice_in_one_object_is_that_rows_error() {
    let body = r#"[{"snapshot_date": "2021-05-03", "account_external_id": "A", "notes": "x", "notes": "y"},
                  {"snapshot_date": "2021-05-03", "account_external_id": "B", "notes": "z"}]"#;
    let rows = read_all(body.as_bytes()).unwrap();
    let errors = rows[0].result.as_ref().unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (
            errors[0].rule,
            errors[0].column.as_str(),
            errors[0].value.as_str()
        ),
        (rule::JSON, "notes", "y")
    );
    assert!(
        errors[0].message.contains("appears twice"),
        "{}",
        errors[0].message
    );
    assert_eq!(rows[1].result.as_ref().unwrap().custom["notes"], "z");
}

#[test]
fn objects_with_other_keys_or_key_orders_map_their_own_columns() {
    let body = [
        r#"{"snapshot_date":"2021-05-03","account_external_id":"A","days_to_cutoff_source":1}"#,
        r#"{"account_external_id":"B","days_to_cutoff_source":2,"snapshot_date":"2021-05-04"}"#,
        r#"{"snapshot_date":"2021-05-05","account_external_id":"C","days_to_cutoff_source":3}"#,
        r#"{"days_to_cutoff_source":4,"snapshot_date":"2021-05-06","account_external_id":"D","x":"y"}"#,
        r#"{"account_external_id":"E","days_to_cutoff_source":5,"snapshot_date":"2021-05-07"}"#,
    ]
    .join("\n");
    let rows = read_all(body.as_bytes()).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let s = row.result.as_ref().unwrap();
        let n = i64::try_from(i).unwrap() + 1;
        assert_eq!(s.get("days_to_cutoff_source"), Some(&Value::Integer(n)));
        assert_eq!(
            s.snapshot_date().unwrap().to_string(),
            format!("2021-05-0{}", n + 2)
        );
        assert_eq!(
            s.account_uid().unwrap(),
            format!("1_crm_{}", ["A", "B", "C", "D", "E"][i])
        );
    }
    assert_eq!(rows[3].result.as_ref().unwrap().custom["x"], "y");
    assert!(!rows[4].result.as_ref().unwrap().custom.contains_key("x"));
}

#[test]
fn invalid_utf8_names_its_column() {
    let mut body =
        b"{\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"A\",\"notes\":\"caf".to_vec();
    body.extend_from_slice(
        b"\xe9\"}\n{\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"B\"}\n",
    );
    let rows = read_all(&body).unwrap();
    let error = &rows[0].result.as_ref().unwrap_err()[0];
    assert_eq!(
        (error.row, error.rule, error.column.as_str()),
        (1, rule::ENCODING, "notes")
    );
    assert_eq!(error.value, "caf\u{fffd}");
    assert!(rows[1].result.is_ok());
}

#[test]
fn an_element_longer_than_the_limit_is_refused_for_its_row_only() {
    let long = "x".repeat(5 << 20);
    let body = format!(
        "[{{\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"A\",\"notes\":\"{long}\"}},\n\
         {{\"snapshot_date\":\"2021-05-03\",\"account_external_id\":\"B\"}}]"
    );
    let rows = read_all(body.as_bytes()).unwrap();
    let error = &rows[0].result.as_ref().unwrap_err()[0];
    assert_eq!(error.rule, rule::TOO_LONG);
    assert!(error.value.len() <= paygo_snapshots::MAX_CELL_BYTES);
    assert!(rows[1].result.is_ok());
}

#[test]
fn a_break_in_the_arrays_framing_ends_the_file_after_the_rows_before() {
    let a = r#"{"snapshot_date":"2021-05-03","account_external_id":"A"}"#;
    let missing_comma = format!("[{a}\n{a}]");
    let (rows, error) = read_until_error(missing_comma.as_bytes());
    assert_eq!(rows_of(&rows), [1]);
    let error = error.unwrap();
    assert!(
        matches!(error, FileError::Unreadable { row: 2, .. }),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains("expected `,` or `]` after row 1"),
        "{error}"
    );

    let cut_short = format!("[{a}, {a}, {{\"snapshot_date\": \"2021-");
    let (rows, error) = read_until_error(cut_short.as_bytes());
    assert_eq!(rows_of(&rows), [1, 2]);
    assert!(
        matches!(error, Some(FileError::Unreadable { row: 3, .. })),
        "{error:?}"
    );

    let unclosed = format!("[{a}, {a}");
    let (rows, error) = read_until_error(unclosed.as_bytes());
    assert_eq!(rows.len(), 2);
    assert!(error.unwrap().to_string().contains("not closed"));

    let mismatch = format!("[{a}, {{\"custom\": [1}}, {a}]");
    let (rows, error) = read_until_error(mismatch.as_bytes());
    assert_eq!(rows.len(), 1);
    assert!(
        matches!(error, Some(FileError::Unreadable { row: 2, .. })),
        "{error:?}"
    );

    let two_arrays = format!("[{a}] [{a}]");
    let (rows, error) = read_until_error(two_arrays.as_bytes());
    assert_eq!(rows.len(), 1);
    assert!(
        error
            .unwrap()
            .to_string()
            .contains("only one array is read")
    );
}

#[test]
fn empty_arrays_trailing_commas_and_stray_commas() {
    assert!(read_all(b" [ ] \n").unwrap().is_empty());
    let a = r#"{"snapshot_date":"2021-05-03","account_external_id":"A"}"#;
    let rows = read_all(format!("[{a},{a},]").as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [1, 2]);
    let rows = read_all(format!("[{a},,{a}]").as_bytes()).unwrap();
    assert_eq!(rows_of(&rows), [1, 2, 3]);
    assert_eq!(rows[1].result.as_ref().unwrap_err()[0].rule, rule::JSON);
}

#[test]
fn a_body_that_is_neither_an_array_nor_ndjson_or_is_empty() {
    let csv = read_all(b"snapshot_date,account_external_id\n2021-05-03,A\n").unwrap_err();
    assert!(matches!(csv, FileError::NotJson { .. }));
    assert_eq!(
        csv.to_string(),
        "the body is neither a JSON array of objects nor NDJSON: it starts with \
         `snapshot_date,accoun`"
    );
    assert!(matches!(
        read_all(b"\"a string\""),
        Err(FileError::NotJson { .. })
    ));
    assert!(matches!(
        read_all(b"\xff\xfe{"),
        Err(FileError::NotJson { .. })
    ));
    assert!(matches!(
        read_all(b"\xef{}"),
        Err(FileError::NotJson { .. })
    ));
    assert!(matches!(read_all(b""), Err(FileError::Empty)));
    assert!(matches!(read_all(b" \r\n\t "), Err(FileError::Empty)));
    assert!(matches!(read_all(b"\xef\xbb\xbf\n"), Err(FileError::Empty)));
}

#[test]
fn reads_large_bodies_row_by_row() {
    // 200,000 rows per layout through one reader that holds one element at a time.
    let dir = tempfile::tempdir().unwrap();
    for ndjson in [true, false] {
        let path = dir.path().join("big.json");
        let mut out = BufWriter::new(File::create(&path).unwrap());
        if !ndjson {
            out.write_all(b"[\n").unwrap();
        }
        for i in 0..200_000 {
            let separator = match (ndjson, i) {
                (true, _) => "\n",
                (false, 199_999) => "\n]",
                (false, _) => ",\n",
            };
            write!(
                out,
                r#"{{"snapshot_date":"2021-05-03","account_external_id":"C{i}","days_to_cutoff_source":{},"amt_remaining_installment_source":30000.5,"days_par_status_source":"1-7","next_payment_due_at_source":"2021-05-03 6:23:55","region":"Kisumu"}}{separator}"#,
                i % 400 - 200
            )
            .unwrap();
        }
        drop(out);
        let started = Instant::now();
        let mut reader = JsonSnapshots::new(BufReader::new(File::open(&path).unwrap())).unwrap();
        let (mut ok, mut last_row) = (0, 0);
        while let Some(row) = reader.next_row(&ctx()) {
            let row = row.unwrap();
            assert!(row.result.is_ok(), "{:?}", row.result);
            ok += 1;
            last_row = row.row;
        }
        let rate = 200_000.0 / started.elapsed().as_secs_f64();
        eprintln!("json (ndjson: {ndjson}): {rate:.0} rows/s");
        assert_eq!((ok, last_row), (200_000, 200_000));
    }

    // Wide rows: every column of the seed.
    let path = dir.path().join("wide.ndjson");
    let mut out = BufWriter::new(File::create(&path).unwrap());
    for i in 0..20_000 {
        writeln!(out, "{}", seed_object(&format!("C{i}"))).unwrap();
    }
    drop(out);
    let started = Instant::now();
    let mut reader = JsonSnapshots::new(BufReader::new(File::open(&path).unwrap())).unwrap();
    let mut ok = 0;
    while let Some(row) = reader.next_row(&ctx()) {
        assert!(row.unwrap().result.is_ok());
        ok += 1;
    }
    let rate = 20_000.0 / started.elapsed().as_secs_f64();
    eprintln!("json (100 columns): {rate:.0} rows/s");
    assert_eq!(ok, 20_000);
}
