//! The CSV reader on real files.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use chrono::{NaiveDate, TimeZone, Utc};
use paygo_snapshots::{ImportContext, Value, rule};
use snapshot_importer::readers::csv::CsvSnapshots;
use snapshot_importer::readers::{FileError, RowOutcome};

fn ctx() -> ImportContext {
    ImportContext {
        organization_id: "1".into(),
        data_origin: Some("crm".into()),
        source_id: "upload-1".into(),
        now: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
    }
}

fn file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    File::create(&path).unwrap().write_all(bytes).unwrap();
    path
}

fn read_all(bytes: &[u8]) -> Result<Vec<RowOutcome>, FileError> {
    let dir = tempfile::tempdir().unwrap();
    let path = file(&dir, "upload.csv", bytes);
    let mut reader = CsvSnapshots::new(File::open(path).unwrap())?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        rows.push(row?);
    }
    Ok(rows)
}

#[test]
fn reads_rows_in_any_column_order_with_bom_crlf_and_quotes() {
    let csv = "\u{feff}account_external_id,notes,snapshot_date,days_to_cutoff_source\r\n\
               C11223344,\"paid, late\",2021-05-03,200\r\n\
               C2,\"two\r\nlines, \"\"quoted\"\"\",2021-05-04,-3\r\n";
    let rows = read_all(csv.as_bytes()).unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].row, 2);
    assert_eq!(rows[1].row, 3);
    let first = rows[0].result.as_ref().unwrap();
    assert_eq!(first.account_uid(), Some("1_crm_C11223344"));
    assert_eq!(
        first.snapshot_date(),
        Some(NaiveDate::from_ymd_opt(2021, 5, 3).unwrap())
    );
    assert_eq!(
        first.get("days_to_cutoff_source"),
        Some(&Value::Integer(200))
    );
    assert_eq!(first.custom["notes"], "paid, late");
    let second = rows[1].result.as_ref().unwrap();
    assert_eq!(second.custom["notes"], "two\r\nlines, \"quoted\"");
    assert_eq!(
        second.get("days_to_cutoff_source"),
        Some(&Value::Integer(-3))
    );
}

#[test]
fn a_bad_row_is_that_rows_error_and_the_others_still_count() {
    let csv = "snapshot_date,account_external_id,days_delays_daily_source,days_to_cutoff_source\n\
               2021-05-03,A,15.5,200\n\
               2021-05-03,B,\"15,5\",12.5\n\
               2021-05-03,C,1.0,7\n";
    let rows = read_all(csv.as_bytes()).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].result.is_ok());
    assert!(rows[2].result.is_ok());
    let errors = rows[1].result.as_ref().unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|e| e.row == 3));
    let comma = errors
        .iter()
        .find(|e| e.column == "days_delays_daily_source")
        .unwrap();
    assert_eq!(
        (comma.rule, comma.value.as_str()),
        (rule::DECIMAL_COMMA, "15,5")
    );
    let fraction = errors
        .iter()
        .find(|e| e.column == "days_to_cutoff_source")
        .unwrap();
    assert_eq!(
        (fraction.rule, fraction.value.as_str()),
        (rule::INTEGER, "12.5")
    );
}

#[test]
fn invalid_utf8_short_and_long_rows_are_row_errors() {
    let mut csv = b"snapshot_date,account_external_id,notes\n".to_vec();
    csv.extend_from_slice(b"2021-05-03,A,caf\xe9\n");
    csv.extend_from_slice(b"2021-05-03\n");
    csv.extend_from_slice(b"2021-05-03,C,x,extra\n");
    csv.extend_from_slice(b"2021-05-03,D,fine\n");
    let rows = read_all(&csv).unwrap();
    assert_eq!(rows.len(), 4);
    let encoding = rows[0].result.as_ref().unwrap_err();
    assert_eq!(encoding[0].rule, rule::ENCODING);
    assert_eq!(encoding[0].column, "notes");
    let short = rows[1].result.as_ref().unwrap_err();
    assert!(
        short
            .iter()
            .any(|e| e.rule == rule::REQUIRED && e.column == "account_external_id")
    );
    let long = rows[2].result.as_ref().unwrap_err();
    assert_eq!(long[0].rule, rule::EXTRA_CELLS);
    assert!(rows[3].result.is_ok());
}

#[test]
fn blank_lines_are_not_rows_and_records_are_numbered_from_two() {
    let csv = "snapshot_date,account_external_id\n\n2021-05-03,A\n\n,\n\n2021-05-04,B\n";
    let rows = read_all(csv.as_bytes()).unwrap();
    assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), vec![2, 3]);
}

#[test]
fn file_level_errors_name_the_problem() {
    assert!(matches!(read_all(b""), Err(FileError::Empty)));
    assert!(matches!(
        read_all(b"2021-05-03,C11223344\n2021-05-04,C2\n"),
        Err(FileError::Header(_))
    ));
    let duplicate = read_all(b"snapshot_date,account_external_id,snapshot_date\n").unwrap_err();
    assert!(matches!(duplicate, FileError::Header(_)));
    assert!(
        duplicate.to_string().contains("snapshot_date"),
        "{duplicate}"
    );
    let mut bad_header = b"snapshot_date,account_external_id,n\xffotes\n".to_vec();
    bad_header.extend_from_slice(b"2021-05-03,A,x\n");
    assert!(matches!(
        read_all(&bad_header),
        Err(FileError::HeaderEncoding { column: 3 })
    ));
}

#[test]
fn a_ten_thousand_character_cell_is_refused_for_its_row_only() {
    let csv = format!(
        "snapshot_date,account_external_id,customer_name\n2021-05-03,A,{}\n2021-05-03,B,Ada\n",
        "x".repeat(10_000)
    );
    let rows = read_all(csv.as_bytes()).unwrap();
    let errors = rows[0].result.as_ref().unwrap_err();
    assert!(
        errors.iter().any(|e| e.rule == rule::TOO_LONG),
        "{errors:?}"
    );
    assert!(rows[1].result.is_ok());
}

#[test]
fn reads_a_large_file_row_by_row() {
    // 200,000 rows through one reader, which keeps one record at a time (memory is measured by
    // the import benchmark, not here).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.csv");
    let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
    writeln!(
        out,
        "snapshot_date,account_external_id,days_to_cutoff_source"
    )
    .unwrap();
    for i in 0..200_000 {
        writeln!(out, "2021-05-03,C{i},{}", i % 400 - 200).unwrap();
    }
    drop(out);
    let mut reader = CsvSnapshots::new(File::open(&path).unwrap()).unwrap();
    let (mut ok, mut last_row) = (0, 0);
    while let Some(row) = reader.next_row(&ctx()) {
        let row = row.unwrap();
        assert!(row.result.is_ok());
        ok += 1;
        last_row = row.row;
    }
    assert_eq!((ok, last_row), (200_000, 200_001));
}
