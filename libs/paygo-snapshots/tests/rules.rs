//! One test per rule of docs/domain.md §2 and per column type: given a cell or a row, then this value
//! or this error.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use paygo_snapshots::{
    AccountSnapshot, CellError, Field, HeaderError, ImportContext, RowError, Value, check_headers,
    field, parse_cell, rule, validate_row,
};
use proptest::prelude::*;

fn column(name: &str) -> &'static Field {
    match field(name) {
        Some((_, f)) => f,
        None => panic!("{name} is not in the catalogue"),
    }
}

const INTEGER: &str = "days_to_cutoff_source";
const FLOAT: &str = "amt_remaining_installment_source";
const DATE: &str = "expected_maturity_date_source";
const DATETIME: &str = "next_payment_due_at_source";
const STRING: &str = "days_par_status_source";

fn ok(name: &str, raw: &str) -> Value {
    match parse_cell(column(name), raw) {
        Ok(Some(value)) => value,
        other => panic!("{name} = {raw:?}: expected a value, got {other:?}"),
    }
}

fn refused(name: &str, raw: &str) -> CellError {
    match parse_cell(column(name), raw) {
        Err(error) => error,
        other => panic!("{name} = {raw:?}: expected an error, got {other:?}"),
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    match Utc.with_ymd_and_hms(y, mo, d, h, mi, s) {
        chrono::LocalResult::Single(t) => t,
        _ => panic!("bad test time"),
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default()
}

fn ctx() -> ImportContext {
    ImportContext {
        organization_id: "1".to_owned(),
        data_origin: Some("crm".to_owned()),
        source_id: "upload-7".to_owned(),
        now: utc(2024, 2, 1, 12, 0, 0),
    }
}

fn headers(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn accepted(names: &[&str], cells: &[&str], ctx: &ImportContext) -> AccountSnapshot {
    match validate_row(2, &headers(names), cells, ctx) {
        Ok(snapshot) => snapshot,
        Err(errors) => panic!("row refused: {errors:?}"),
    }
}

fn rejected(names: &[&str], cells: &[&str]) -> Vec<RowError> {
    match validate_row(2, &headers(names), cells, &ctx()) {
        Ok(snapshot) => panic!("row accepted: {snapshot:?}"),
        Err(errors) => errors,
    }
}

// ---- cells: empty ----

#[test]
fn empty_and_blank_cells_are_no_value_in_every_type() {
    for name in [INTEGER, FLOAT, DATE, DATETIME, STRING, "custom"] {
        assert_eq!(parse_cell(column(name), ""), Ok(None), "{name}");
        assert_eq!(parse_cell(column(name), "  \t "), Ok(None), "{name}");
    }
}

// ---- integers ----

#[test]
fn integer_accepts_whole_numbers_with_sign_and_spaces() {
    assert_eq!(ok(INTEGER, "12"), Value::Integer(12));
    assert_eq!(ok(INTEGER, "-3"), Value::Integer(-3));
    assert_eq!(ok(INTEGER, "+7"), Value::Integer(7));
    assert_eq!(ok(INTEGER, " 45 "), Value::Integer(45));
}

#[test]
fn integer_accepts_a_zero_fraction_as_spreadsheets_write_it() {
    assert_eq!(ok(INTEGER, "12.0"), Value::Integer(12));
    assert_eq!(ok(INTEGER, "-3.00"), Value::Integer(-3));
}

#[test]
fn integer_rejects_a_fraction() {
    let error = refused(INTEGER, "12.5");
    assert_eq!(error.rule, rule::INTEGER);
    assert!(error.message.contains("`12.5`"), "{}", error.message);
}

#[test]
fn integer_rejects_text_and_overflow() {
    assert_eq!(refused(INTEGER, "twelve").rule, rule::INTEGER);
    assert_eq!(refused(INTEGER, "1 000").rule, rule::INTEGER);
    assert_eq!(refused(INTEGER, "99999999999999999999").rule, rule::INTEGER);
}

#[test]
fn integer_rejects_a_comma() {
    assert_eq!(refused(INTEGER, "1,000").rule, rule::DECIMAL_COMMA);
}

// ---- floats ----

#[test]
fn float_accepts_a_point_as_decimal_delimiter() {
    assert_eq!(ok(FLOAT, "15.5"), Value::Float(15.5));
    assert_eq!(ok(FLOAT, "-0.25"), Value::Float(-0.25));
    assert_eq!(ok(FLOAT, "30000"), Value::Float(30000.0));
    assert_eq!(ok(FLOAT, "1.5e3"), Value::Float(1500.0));
}

#[test]
fn float_rejects_a_decimal_comma_naming_the_value() {
    let error = refused(FLOAT, "1,5");
    assert_eq!(error.rule, rule::DECIMAL_COMMA);
    assert!(error.message.contains("`1,5`"), "{}", error.message);
    assert!(
        error.message.contains("use '.' as decimal delimiter"),
        "{}",
        error.message
    );
}

#[test]
fn float_rejects_thousands_separators() {
    assert_eq!(refused(FLOAT, "12,000.5").rule, rule::DECIMAL_COMMA);
    assert_eq!(refused(FLOAT, "12 000.5").rule, rule::FLOAT);
    assert_eq!(refused(FLOAT, "12'000.5").rule, rule::FLOAT);
    assert_eq!(refused(FLOAT, "12_000.5").rule, rule::FLOAT);
}

#[test]
fn float_rejects_words_and_non_finite_numbers() {
    for raw in [
        "abc",
        "NaN",
        "inf",
        "-infinity",
        ".",
        "1e",
        "1.2.3",
        "1e999",
    ] {
        assert_eq!(refused(FLOAT, raw).rule, rule::FLOAT, "{raw}");
    }
}

// ---- dates ----

#[test]
fn date_accepts_yyyy_mm_dd() {
    assert_eq!(ok(DATE, "2021-05-03"), Value::Date(date(2021, 5, 3)));
}

#[test]
fn date_rejects_every_other_shape_and_impossible_days() {
    for raw in [
        "2021-5-3",
        "03.05.2021",
        "2021/05/03",
        "20210503",
        "2021-05-03 00:00:00",
        "2021-02-30",
    ] {
        let error = refused(DATE, raw);
        assert_eq!(error.rule, rule::DATE_FORMAT, "{raw}");
        assert!(error.message.contains(raw), "{}", error.message);
    }
}

// ---- datetimes ----

#[test]
fn datetime_accepts_the_seeds_single_digit_hour() {
    assert_eq!(
        ok(DATETIME, "2021-05-03 6:23:55"),
        Value::DateTime(utc(2021, 5, 3, 6, 23, 55))
    );
    assert_eq!(
        ok(DATETIME, "2021-05-03 0:00:00"),
        Value::DateTime(utc(2021, 5, 3, 0, 0, 0))
    );
    assert_eq!(
        ok(DATETIME, "2021-05-03 16:23:55"),
        Value::DateTime(utc(2021, 5, 3, 16, 23, 55))
    );
}

#[test]
fn datetime_accepts_iso_8601_and_normalises_to_utc() {
    let expected = Value::DateTime(utc(2021, 5, 3, 6, 23, 55));
    assert_eq!(ok(DATETIME, "2021-05-03T06:23:55"), expected);
    assert_eq!(ok(DATETIME, "2021-05-03T06:23:55Z"), expected);
    assert_eq!(ok(DATETIME, "2021-05-03T08:23:55+02:00"), expected);
    assert_eq!(ok(DATETIME, "2021-05-03T01:23:55-0500"), expected);
    assert_eq!(ok(DATETIME, "2021-05-03T09:23:55+03"), expected);
    let with_fraction = utc(2021, 5, 3, 6, 23, 55) + chrono::Duration::milliseconds(125);
    assert_eq!(
        ok(DATETIME, "2021-05-03T06:23:55.125Z"),
        Value::DateTime(with_fraction)
    );
}

#[test]
fn datetime_rejects_other_shapes() {
    for raw in [
        "2021-05-03",
        "2021-5-3 6:23:55",
        "2021-05-03 6:23",
        "2021-05-03 06:3:55",
        "2021-05-03 25:00:00",
        "03.05.2021 06:23:55",
        "2021-05-03T06:23:55+25:00",
        "2021-05-03T06:23:55.Z",
        "2021-05-03  6:23:55",
    ] {
        let error = refused(DATETIME, raw);
        assert_eq!(error.rule, rule::DATETIME_FORMAT, "{raw}");
        assert!(error.message.contains(raw), "{}", error.message);
    }
}

// ---- strings and json ----

#[test]
fn string_keeps_the_text_trimmed() {
    assert_eq!(ok(STRING, " 1-7 "), Value::String("1-7".to_owned()));
}

#[test]
fn json_accepts_any_document() {
    assert_eq!(
        ok("custom", r#"{ "some": "key" }"#),
        Value::Json(serde_json::json!({"some": "key"}))
    );
    assert_eq!(
        ok("custom", "[1, 2]"),
        Value::Json(serde_json::json!([1, 2]))
    );
}

#[test]
fn json_rejects_a_broken_document() {
    let error = refused("custom", r#"{"some": "#);
    assert_eq!(error.rule, rule::JSON);
    assert!(error.message.contains(r#"`{"some":`"#), "{}", error.message);
}

// ---- length ----

#[test]
fn a_cell_over_4096_bytes_is_refused_in_every_type() {
    let long = "1".repeat(10_000);
    for name in [INTEGER, FLOAT, DATE, DATETIME, STRING, "custom"] {
        let error = refused(name, &long);
        assert_eq!(error.rule, rule::TOO_LONG, "{name}");
        assert!(error.message.contains("10000 bytes"), "{}", error.message);
        assert!(
            error.message.len() < 300,
            "the message must not repeat the whole cell"
        );
    }
    assert!(
        parse_cell(column(STRING), &"x".repeat(4096)).is_ok(),
        "4096 bytes is the limit, allowed"
    );
}

// ---- rows ----

#[test]
fn row_with_required_fields_is_accepted() {
    let s = accepted(
        &["snapshot_date", "account_external_id"],
        &["2021-05-03", "C11223344"],
        &ctx(),
    );
    assert_eq!(s.snapshot_date(), Some(date(2021, 5, 3)));
    assert_eq!(
        s.get("account_external_id"),
        Some(&Value::String("C11223344".to_owned()))
    );
    assert_eq!(s.get("days_to_cutoff_source"), None);
    assert!(s.custom.is_empty());
}

#[test]
fn required_fields_missing_or_empty_are_refused() {
    let errors = rejected(&["snapshot_date", "account_external_id"], &["", " "]);
    let got: Vec<(&str, &str)> = errors.iter().map(|e| (e.column.as_str(), e.rule)).collect();
    assert_eq!(
        got,
        [
            ("snapshot_date", rule::REQUIRED),
            ("account_external_id", rule::REQUIRED)
        ]
    );
    let errors = rejected(&["snapshot_date"], &["2021-05-03"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        (errors[0].column.as_str(), errors[0].rule),
        ("account_external_id", rule::REQUIRED)
    );
}

#[test]
fn a_required_field_with_a_bad_value_reports_the_value_not_required() {
    let errors = rejected(
        &["snapshot_date", "account_external_id"],
        &["2021-5-3", "C1"],
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].rule, rule::DATE_FORMAT);
    assert_eq!(errors[0].value, "2021-5-3");
}

#[test]
fn account_uid_is_tenant_origin_and_external_id() {
    let s = accepted(
        &["snapshot_date", "account_external_id"],
        &["2021-05-03", "C11223344"],
        &ctx(),
    );
    assert_eq!(s.account_uid(), Some("1_crm_C11223344"));
}

#[test]
fn data_origin_is_generic_unless_the_source_names_itself() {
    for origin in [None, Some(String::new()), Some("  ".to_owned())] {
        let ctx = ImportContext {
            data_origin: origin,
            ..ctx()
        };
        let s = accepted(
            &["snapshot_date", "account_external_id"],
            &["2021-05-03", "C1"],
            &ctx,
        );
        assert_eq!(
            s.get("data_origin"),
            Some(&Value::String("generic".to_owned()))
        );
        assert_eq!(s.account_uid(), Some("1_generic_C1"));
    }
}

#[test]
fn autogenerated_fields_override_what_the_file_says() {
    let names = [
        "snapshot_date",
        "account_external_id",
        "data_origin",
        "organization_id",
        "source_id",
        "account_uid",
        "created_at",
        "updated_at",
    ];
    let cells = [
        "2021-05-03",
        "C1",
        "forged",
        "666",
        "not-an-int",
        "x_y_z",
        "garbage",
        "2000-01-01 0:00:00",
    ];
    let s = accepted(&names, &cells, &ctx());
    let now = Value::DateTime(utc(2024, 2, 1, 12, 0, 0));
    assert_eq!(s.get("data_origin"), Some(&Value::String("crm".to_owned())));
    assert_eq!(
        s.get("organization_id"),
        Some(&Value::String("1".to_owned()))
    );
    assert_eq!(
        s.get("source_id"),
        Some(&Value::String("upload-7".to_owned()))
    );
    assert_eq!(s.account_uid(), Some("1_crm_C1"));
    assert_eq!(s.get("created_at"), Some(&now));
    assert_eq!(s.get("updated_at"), Some(&now));
    assert!(
        s.custom.is_empty(),
        "overridden columns are not unknown columns"
    );
}

#[test]
fn unknown_columns_go_into_custom_as_strings() {
    let s = accepted(
        &[
            "snapshot_date",
            "account_external_id",
            "region",
            "agent",
            "empty_one",
            "",
        ],
        &["2021-05-03", "C1", "Kisumu", " 42 ", "  ", "tail"],
        &ctx(),
    );
    assert_eq!(
        serde_json::Value::Object(s.custom.clone()),
        serde_json::json!({"region": "Kisumu", "agent": " 42 ", "column_6": "tail"})
    );
    assert_eq!(
        s.get("custom"),
        None,
        "custom lives in AccountSnapshot::custom"
    );
}

#[test]
fn a_custom_object_in_the_file_is_merged_with_unknown_columns() {
    let s = accepted(
        &["snapshot_date", "account_external_id", "custom", "region"],
        &[
            "2021-05-03",
            "C1",
            r#"{"some": "key", "region": "old"}"#,
            "Kisumu",
        ],
        &ctx(),
    );
    assert_eq!(
        serde_json::Value::Object(s.custom.clone()),
        serde_json::json!({"some": "key", "region": "Kisumu"})
    );
    let errors = rejected(
        &["snapshot_date", "account_external_id", "custom"],
        &["2021-05-03", "C1", "[1]"],
    );
    assert_eq!(errors[0].rule, rule::JSON);
}

#[test]
fn all_errors_of_a_row_are_collected() {
    let names = [
        "snapshot_date",
        "account_external_id",
        INTEGER,
        FLOAT,
        DATETIME,
        "custom",
        "note",
    ];
    let long = "x".repeat(10_000);
    let cells = [
        "2021-5-3",
        "",
        "12.5",
        "1,5",
        "yesterday",
        "{",
        long.as_str(),
    ];
    let errors = rejected(&names, &cells);
    let got: Vec<(&str, &str)> = errors.iter().map(|e| (e.column.as_str(), e.rule)).collect();
    assert_eq!(
        got,
        [
            ("snapshot_date", rule::DATE_FORMAT),
            (INTEGER, rule::INTEGER),
            (FLOAT, rule::DECIMAL_COMMA),
            (DATETIME, rule::DATETIME_FORMAT),
            ("custom", rule::JSON),
            ("note", rule::TOO_LONG),
            ("account_external_id", rule::REQUIRED),
        ]
    );
    assert!(errors.iter().all(|e| e.row == 2));
    let comma = &errors[2];
    assert_eq!(comma.value, "1,5");
    assert!(
        comma.message.contains(FLOAT) && comma.message.contains("`1,5`"),
        "{}",
        comma.message
    );
    assert_eq!(
        errors[5].value.len(),
        4096,
        "a huge value is cut in the report"
    );
}

#[test]
fn a_short_row_treats_missing_cells_as_empty() {
    let s = accepted(
        &["snapshot_date", "account_external_id", INTEGER, FLOAT],
        &["2021-05-03", "C1"],
        &ctx(),
    );
    assert_eq!(s.get(INTEGER), None);
    let errors = rejected(
        &["account_external_id", INTEGER, "snapshot_date"],
        &["C1", "5"],
    );
    assert_eq!(
        (errors[0].column.as_str(), errors[0].rule),
        ("snapshot_date", rule::REQUIRED)
    );
}

#[test]
fn a_long_row_is_refused_naming_the_count() {
    let errors = rejected(
        &["snapshot_date", "account_external_id"],
        &["2021-05-03", "C1", "x", "y"],
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].rule, rule::EXTRA_CELLS);
    assert_eq!(errors[0].value, "x,y");
    assert!(
        errors[0].message.contains("4 cells") && errors[0].message.contains("2 extra"),
        "{}",
        errors[0].message
    );
}

#[test]
fn bom_and_spaces_around_header_names_are_ignored() {
    let names = [
        "\u{feff}snapshot_date",
        " account_external_id ",
        " days_to_cutoff_source",
    ];
    assert_eq!(check_headers(&headers(&names)), Ok(()));
    let s = accepted(&names, &["2021-05-03", "C1", "-4"], &ctx());
    assert_eq!(s.get(INTEGER), Some(&Value::Integer(-4)));
}

// ---- headers ----

#[test]
fn duplicate_header_names_are_refused() {
    let names = headers(&[
        "\u{feff}snapshot_date",
        "account_external_id",
        "region",
        " snapshot_date",
    ]);
    assert_eq!(
        check_headers(&names),
        Err(HeaderError::Duplicate {
            name: "snapshot_date".to_owned(),
            first: 1,
            second: 4
        })
    );
    let unknown_twice = headers(&["snapshot_date", "account_external_id", "region", "region"]);
    assert!(matches!(
        check_headers(&unknown_twice),
        Err(HeaderError::Duplicate { .. })
    ));
    let blanks = headers(&["snapshot_date", "account_external_id", "", ""]);
    assert_eq!(
        check_headers(&blanks),
        Ok(()),
        "blank header cells from trailing separators"
    );
}

#[test]
fn a_header_of_a_million_columns_is_checked_in_one_pass() {
    // Compared pair by pair, this took about 15 minutes of a core.
    let mut names = vec!["snapshot_date".to_owned(), "account_external_id".to_owned()];
    names.extend((0..1_000_000).map(|i| format!("extra_{i}")));
    assert_eq!(check_headers(&names), Ok(()));
    names.push("extra_999999".to_owned());
    assert_eq!(
        check_headers(&names),
        Err(HeaderError::Duplicate {
            name: "extra_999999".to_owned(),
            first: 1_000_002,
            second: 1_000_003,
        })
    );
}

#[test]
fn a_first_row_without_the_required_columns_is_no_header() {
    let data_row = headers(&["2021-05-03", "C11223344", "200"]);
    let error = check_headers(&data_row);
    assert_eq!(
        error,
        Err(HeaderError::MissingRequired {
            column: "snapshot_date"
        })
    );
    let message = error.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("no header row"), "{message}");
    let half = headers(&["snapshot_date", "account_id"]);
    assert_eq!(
        check_headers(&half),
        Err(HeaderError::MissingRequired {
            column: "account_external_id"
        })
    );
    assert!(check_headers(&[]).is_err());
    // A data row whose values repeat is still no header, before it is a duplicate.
    let repeating = headers(&["2021-05-03", "C1", "0", "0"]);
    assert!(matches!(
        check_headers(&repeating),
        Err(HeaderError::MissingRequired { .. })
    ));
}

// ---- round trips ----

proptest! {
    #[test]
    fn any_integer_round_trips(n in any::<i64>()) {
        prop_assert_eq!(parse_cell(column(INTEGER), &n.to_string()), Ok(Some(Value::Integer(n))));
        prop_assert_eq!(parse_cell(column(INTEGER), &format!("{n}.0")), Ok(Some(Value::Integer(n))));
    }

    #[test]
    fn any_finite_float_round_trips(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        prop_assert_eq!(parse_cell(column(FLOAT), &x.to_string()), Ok(Some(Value::Float(x))));
        prop_assert_eq!(parse_cell(column(FLOAT), &format!("{x:?}")), Ok(Some(Value::Float(x))));
        prop_assert_eq!(parse_cell(column(FLOAT), &format!("{x:e}")), Ok(Some(Value::Float(x))));
    }

    #[test]
    fn a_comma_in_a_number_is_always_refused(a in 0u32..100_000, b in 0u32..1000) {
        let raw = format!("{a},{b}");
        prop_assert_eq!(parse_cell(column(FLOAT), &raw).map_err(|e| e.rule), Err(rule::DECIMAL_COMMA));
        prop_assert_eq!(parse_cell(column(INTEGER), &raw).map_err(|e| e.rule), Err(rule::DECIMAL_COMMA));
    }

    #[test]
    fn any_text_gives_a_value_or_an_error_never_a_panic(raw in ".{0,40}") {
        for f in paygo_snapshots::FIELDS {
            let _ = parse_cell(f, &raw);
        }
    }

    /// Random text rarely looks like a datetime; these reach the offset and fraction parsers
    /// with any characters, multi-byte ones included.
    #[test]
    fn datetimes_with_any_tail_never_panic(tail in ".{0,8}", sign in "[+\\-Z.: ]") {
        let raw = format!("2021-05-03 06:23:55{sign}{tail}");
        let _ = parse_cell(column(DATETIME), &raw);
    }
}

#[test]
fn an_offset_with_a_multi_byte_character_is_a_datetime_error() {
    for raw in [
        "2021-05-03 06:23:55+1€",
        "2021-05-03 06:23:55-€1",
        "2021-05-03 06:23:55+€:00",
    ] {
        assert_eq!(refused(DATETIME, raw).rule, rule::DATETIME_FORMAT, "{raw}");
    }
}

#[test]
fn a_column_named_like_a_blank_headers_key_is_a_duplicate() {
    let names = headers(&["snapshot_date", "account_external_id", "", "column_3"]);
    assert_eq!(
        check_headers(&names),
        Err(HeaderError::Duplicate {
            name: "column_3".to_owned(),
            first: 3,
            second: 4,
        })
    );
    let fine = headers(&["snapshot_date", "account_external_id", "", "column_4"]);
    assert_eq!(check_headers(&fine), Ok(()));
}
