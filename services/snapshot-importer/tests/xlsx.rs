//! The XLSX reader on real workbooks, written by the fixture writer in `common`.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use chrono::NaiveDate;
use common::{XCell, XlsxWriter, assert_examples_round_trip, ctx, seed_examples, text, write_xlsx};
use paygo_snapshots::{FieldType, Value, rule};
use snapshot_importer::readers::xlsx::{ERROR_CELL, XlsxSnapshots};
use snapshot_importer::readers::{FileError, RowOutcome};

fn read_path(path: &Path, sheet: Option<&str>) -> Result<Vec<RowOutcome>, FileError> {
    let mut reader = XlsxSnapshots::open(path, sheet)?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        rows.push(row?);
    }
    Ok(rows)
}

fn read_rows(rows: &[Vec<XCell>]) -> Result<Vec<RowOutcome>, FileError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upload.xlsx");
    write_xlsx(&path, rows);
    read_path(&path, None)
}

fn rows_of(rows: &[RowOutcome]) -> Vec<u64> {
    rows.iter().map(|r| r.row).collect()
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

#[test]
fn the_seeds_examples_round_trip_as_typed_cells_and_as_text() {
    let examples = seed_examples();
    let header: Vec<XCell> = examples.iter().map(|e| text(e.name)).collect();
    let typed = |account: &str| -> Vec<XCell> {
        examples
            .iter()
            .map(|e| match (e.name, e.ty) {
                ("account_external_id", _) => text(account),
                (_, FieldType::Integer | FieldType::Float) => {
                    XCell::Number(e.example.parse().unwrap())
                }
                (_, FieldType::Date) => {
                    XCell::Date(NaiveDate::parse_from_str(&e.example, "%Y-%m-%d").unwrap())
                }
                (_, FieldType::DateTime) => XCell::DateTime(
                    chrono::NaiveDateTime::parse_from_str(&e.example, "%Y-%m-%d %H:%M:%S").unwrap(),
                ),
                _ => text(&e.example),
            })
            .collect()
    };
    let as_text: Vec<XCell> = examples
        .iter()
        .map(|e| match e.name {
            "account_external_id" => text("C3"),
            _ => text(&e.example),
        })
        .collect();
    let rows = read_rows(&[header, typed("C1"), typed("C2"), as_text]).unwrap();
    assert_eq!(rows_of(&rows), [2, 3, 4]);
    assert_examples_round_trip(rows[0].result.as_ref().unwrap(), "C1");
    assert_examples_round_trip(rows[1].result.as_ref().unwrap(), "C2");
    assert_examples_round_trip(rows[2].result.as_ref().unwrap(), "C3");
}

#[test]
fn typed_cells_become_the_text_the_rules_read() {
    let at = |h, mi, s| date(2021, 5, 3).and_hms_opt(h, mi, s).unwrap();
    let rows = read_rows(&[
        [
            "snapshot_date",
            "account_external_id",
            "days_to_cutoff_source",
            "repayment_rate_source",
            "next_payment_due_at_source",
            "next_payment_due_at_calculated",
            "flag",
            "ratio",
            "count",
            "day",
            "when",
            "stamp",
            "big",
        ]
        .map(text)
        .to_vec(),
        vec![
            XCell::Date(date(2021, 5, 3)),
            XCell::Number(11_223_344.0),
            XCell::Number(12.0),
            XCell::Number(0.1),
            XCell::DateTime(at(6, 23, 55)),
            XCell::DateTime(at(0, 0, 0)),
            XCell::Bool(true),
            XCell::Number(0.1),
            XCell::Number(12.0),
            XCell::Date(date(2021, 5, 3)),
            XCell::DateTime(at(6, 23, 55)),
            XCell::CustomDateTime(at(16, 0, 1)),
            XCell::Number(-1.5e15),
        ],
    ])
    .unwrap();
    let s = rows[0].result.as_ref().unwrap();
    assert_eq!(s.snapshot_date(), Some(date(2021, 5, 3)));
    assert_eq!(s.account_uid(), Some("1_crm_11223344"));
    assert_eq!(s.get("days_to_cutoff_source"), Some(&Value::Integer(12)));
    assert_eq!(s.get("repayment_rate_source"), Some(&Value::Float(0.1)));
    let utc = |h, mi, s| chrono::TimeZone::from_utc_datetime(&chrono::Utc, &at(h, mi, s));
    assert_eq!(
        s.get("next_payment_due_at_source"),
        Some(&Value::DateTime(utc(6, 23, 55)))
    );
    // A datetime column keeps midnight: `2021-05-03` alone is no datetime.
    assert_eq!(
        s.get("next_payment_due_at_calculated"),
        Some(&Value::DateTime(utc(0, 0, 0)))
    );
    assert_eq!(s.custom["flag"], "true");
    assert_eq!(s.custom["ratio"], "0.1");
    assert_eq!(s.custom["count"], "12");
    assert_eq!(s.custom["day"], "2021-05-03");
    assert_eq!(s.custom["when"], "2021-05-03 06:23:55");
    assert_eq!(s.custom["stamp"], "2021-05-03 16:00:01");
    assert_eq!(s.custom["big"], "-1500000000000000");
}

#[test]
fn rows_carry_the_sheets_numbers_and_empty_rows_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gaps.xlsx");
    let mut writer = XlsxWriter::create(&path).unwrap();
    writer.skip_rows(1).unwrap();
    writer.row(&[XCell::Blank, XCell::Blank]).unwrap();
    writer
        .row(&[
            text("snapshot_date"),
            text("account_external_id"),
            XCell::Blank,
        ])
        .unwrap();
    writer.row(&[text("2021-05-03"), text("A")]).unwrap();
    writer.skip_rows(2).unwrap();
    writer.row(&[text(" "), XCell::Blank]).unwrap();
    // Styled empty cells past the header are no extra cells.
    writer
        .row(&[text("2021-05-03"), text("B"), XCell::Blank, XCell::Blank])
        .unwrap();
    writer.finish().unwrap();
    let mut reader = XlsxSnapshots::open(&path, None).unwrap();
    assert_eq!(reader.headers(), ["snapshot_date", "account_external_id"]);
    assert_eq!(reader.sheet(), "Sheet1");
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        rows.push(row.unwrap());
    }
    assert_eq!(rows_of(&rows), [4, 8]);
    assert!(rows.iter().all(|r| r.result.is_ok()), "{rows:?}");
}

#[test]
fn bad_rows_are_their_own_errors_and_the_good_rows_still_count() {
    let rows = read_rows(&[
        [
            "snapshot_date",
            "account_external_id",
            "days_delays_daily_source",
            "days_to_cutoff_source",
        ]
        .map(text)
        .to_vec(),
        vec![
            text("2021-05-03"),
            text("A"),
            XCell::Number(15.5),
            XCell::Number(200.0),
        ],
        vec![
            text("2021-05-03"),
            text("B"),
            text("15,5"),
            XCell::Number(12.5),
        ],
        vec![text("03.05.2021"), text("C")],
        vec![
            text("2021-05-03"),
            text("D"),
            XCell::Number(1.0),
            XCell::Number(7.0),
            text("extra"),
        ],
        vec![text("2021-05-03"), text("E")],
    ])
    .unwrap();
    assert_eq!(rows_of(&rows), [2, 3, 4, 5, 6]);
    assert!(rows[0].result.is_ok());
    assert!(rows[4].result.is_ok());
    let errors = rows[1].result.as_ref().unwrap_err();
    let found: Vec<_> = errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.value.as_str(), e.rule))
        .collect();
    assert_eq!(
        found,
        [
            (3, "days_delays_daily_source", "15,5", rule::DECIMAL_COMMA),
            (3, "days_to_cutoff_source", "12.5", rule::INTEGER),
        ]
    );
    assert_eq!(
        rows[2].result.as_ref().unwrap_err()[0].rule,
        rule::DATE_FORMAT
    );
    assert_eq!(
        rows[3].result.as_ref().unwrap_err()[0].rule,
        rule::EXTRA_CELLS
    );
    assert!(
        rows[1]
            .raw
            .contains(&("days_delays_daily_source".to_owned(), "15,5".to_owned()))
    );
}

#[test]
fn an_error_cell_is_its_rows_error_naming_the_column() {
    let rows = read_rows(&[
        [
            "snapshot_date",
            "account_external_id",
            "repayment_rate_source",
        ]
        .map(text)
        .to_vec(),
        vec![text("2021-05-03"), text("A"), XCell::Error("#DIV/0!")],
        vec![XCell::Error("#REF!"), text("B"), XCell::Number(0.5)],
        vec![text("2021-05-03"), text("C"), XCell::Number(0.5)],
    ])
    .unwrap();
    let errors = rows[0].result.as_ref().unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(
        (e.row, e.column.as_str(), e.value.as_str(), e.rule),
        (2, "repayment_rate_source", "#DIV/0!", ERROR_CELL)
    );
    assert!(e.message.contains("`#DIV/0!`"), "{}", e.message);
    assert!(
        rows[0]
            .raw
            .contains(&("repayment_rate_source".to_owned(), "#DIV/0!".to_owned()))
    );
    // In a required column the error cell is reported once, not also as `required`.
    let errors = rows[1].result.as_ref().unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].column.as_str(), errors[0].rule),
        ("snapshot_date", ERROR_CELL)
    );
    assert!(rows[2].result.is_ok());
}

#[test]
fn a_named_sheet_is_read_and_an_unknown_name_lists_the_sheets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two sheets.xlsx");
    let mut writer = XlsxWriter::create(&path).unwrap();
    writer.sheet("Notes").unwrap();
    writer.row(&[text("read me first")]).unwrap();
    writer.sheet("Data").unwrap();
    writer
        .row(&[text("snapshot_date"), text("account_external_id")])
        .unwrap();
    writer
        .row(&[XCell::Date(date(2021, 5, 3)), text("A")])
        .unwrap();
    writer.finish().unwrap();

    let rows = read_path(&path, Some("Data")).unwrap();
    assert_eq!(rows_of(&rows), [2]);
    assert_eq!(
        rows[0].result.as_ref().unwrap().account_uid(),
        Some("1_crm_A")
    );
    // The first sheet is the default: it has no header here.
    assert!(matches!(read_path(&path, None), Err(FileError::Header(_))));
    let unknown = read_path(&path, Some("Daten")).unwrap_err();
    assert!(matches!(unknown, FileError::UnknownSheet { .. }));
    assert_eq!(
        unknown.to_string(),
        "the workbook has no sheet named `Daten`; its sheets are `Notes`, `Data`"
    );
}

#[test]
fn files_that_are_not_xlsx_or_are_empty() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    };
    let csv = write(
        "upload.xlsx",
        b"snapshot_date,account_external_id\n2021-05-03,A\n",
    );
    let error = read_path(&csv, None).unwrap_err();
    assert!(matches!(error, FileError::NotXlsx { .. }));
    assert_eq!(error.to_string(), "not an XLSX file (not a zip archive)");

    let xls = write("old.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1 and more");
    assert!(
        read_path(&xls, None)
            .unwrap_err()
            .to_string()
            .contains(".xls")
    );

    // A zip archive without a workbook in it.
    let path = dir.path().join("other.zip");
    let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
    zip.start_file("readme.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    zip.write_all(b"hello").unwrap();
    zip.finish().unwrap();
    let error = read_path(&path, None).unwrap_err();
    assert!(matches!(error, FileError::NotXlsx { .. }), "{error}");

    let truncated = write("cut.xlsx", b"PK\x03\x04 cut short");
    assert!(matches!(
        read_path(&truncated, None),
        Err(FileError::NotXlsx { .. })
    ));

    assert!(matches!(
        read_path(&write("empty.xlsx", b""), None),
        Err(FileError::Empty)
    ));
    let blank = dir.path().join("blank.xlsx");
    write_xlsx(&blank, &[vec![XCell::Blank], vec![text("  ")]]);
    assert!(matches!(read_path(&blank, None), Err(FileError::Empty)));
    let no_header = dir.path().join("no header.xlsx");
    write_xlsx(&no_header, &[vec![text("2021-05-03"), text("A")]]);
    assert!(matches!(
        read_path(&no_header, None),
        Err(FileError::Header(_))
    ));
    // A file that cannot be opened is this server's fault (its spool), not the sender's.
    assert!(matches!(
        read_path(&dir.path().join("missing.xlsx"), None),
        Err(FileError::Io { .. })
    ));
}

#[test]
fn dropping_the_reader_midway_stops_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.xlsx");
    let mut writer = XlsxWriter::create(&path).unwrap();
    writer
        .row(&[text("snapshot_date"), text("account_external_id")])
        .unwrap();
    for i in 0..2_000 {
        writer
            .row(&[text("2021-05-03"), text(&format!("C{i}"))])
            .unwrap();
    }
    writer.finish().unwrap();
    for _ in 0..20 {
        let mut reader = XlsxSnapshots::open(&path, None).unwrap();
        assert!(reader.next_row(&ctx()).unwrap().is_ok());
    }
}

#[test]
fn reads_a_large_sheet_row_by_row() {
    // 100,000 rows streamed through the writer and the reader, neither holding the sheet.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.xlsx");
    let mut writer = XlsxWriter::create(&path).unwrap();
    writer
        .row(
            &[
                "snapshot_date",
                "account_external_id",
                "days_to_cutoff_source",
                "amt_remaining_installment_source",
                "days_par_status_source",
                "next_payment_due_at_source",
                "region",
            ]
            .map(text),
        )
        .unwrap();
    let due = date(2021, 5, 3).and_hms_opt(6, 23, 55).unwrap();
    for i in 0..100_000 {
        writer
            .row(&[
                XCell::Date(date(2021, 5, 3)),
                text(&format!("C{i}")),
                XCell::Number(f64::from(i % 400 - 200)),
                XCell::Number(30_000.5),
                text("1-7"),
                XCell::DateTime(due),
                text("Kisumu"),
            ])
            .unwrap();
    }
    writer.finish().unwrap();
    let started = Instant::now();
    let mut reader = XlsxSnapshots::open(&path, None).unwrap();
    let (mut ok, mut last_row) = (0, 0);
    while let Some(row) = reader.next_row(&ctx()) {
        let row = row.unwrap();
        assert!(row.result.is_ok(), "{:?}", row.result);
        ok += 1;
        last_row = row.row;
    }
    let rate = 100_000.0 / started.elapsed().as_secs_f64();
    eprintln!("xlsx: {rate:.0} rows/s");
    assert_eq!((ok, last_row), (100_000, 100_001));

    // Wide rows: every column of the seed, as text.
    let examples = seed_examples();
    let mut writer = XlsxWriter::create(&path).unwrap();
    let header: Vec<XCell> = examples.iter().map(|e| text(e.name)).collect();
    writer.row(&header).unwrap();
    for i in 0..20_000 {
        let account = format!("C{i}");
        let row: Vec<XCell> = examples
            .iter()
            .map(|e| match e.name {
                "account_external_id" => text(&account),
                _ => text(&e.example),
            })
            .collect();
        writer.row(&row).unwrap();
    }
    writer.finish().unwrap();
    let started = Instant::now();
    let mut reader = XlsxSnapshots::open(&path, None).unwrap();
    let mut ok = 0;
    while let Some(row) = reader.next_row(&ctx()) {
        assert!(row.unwrap().result.is_ok());
        ok += 1;
    }
    let rate = 20_000.0 / started.elapsed().as_secs_f64();
    eprintln!("xlsx (100 columns): {rate:.0} rows/s");
    assert_eq!(ok, 20_000);
}
