//! The readers' budgets against hostile files: a record that never ends, a zip bomb, more
//! shared strings or parts than a workbook may have. Each is refused with an error naming the
//! limit, and what is within the limits around it is still read.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use common::{XlsxWriter, ctx, text};
use paygo_snapshots::rule;
use snapshot_importer::readers::csv::CsvSnapshots;
use snapshot_importer::readers::json::JsonSnapshots;
use snapshot_importer::readers::xlsx::XlsxSnapshots;
use snapshot_importer::readers::xlsx::budget::{MAX_ENTRIES, MAX_SHARED_STRINGS};
use snapshot_importer::readers::{FileError, ReadLimits, RowOutcome, SnapshotRows};
use zip::ZipWriter;
use zip::write::SimpleFileOptions;

const HEADER: &str = "snapshot_date,account_external_id,customer_name\n";

fn limits(max_record_bytes: usize) -> ReadLimits {
    ReadLimits {
        max_record_bytes,
        ..ReadLimits::default()
    }
}

fn drain(mut reader: impl SnapshotRows) -> Result<Vec<RowOutcome>, FileError> {
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        rows.push(row?);
    }
    Ok(rows)
}

fn csv(bytes: &[u8], limits: &ReadLimits) -> Result<Vec<RowOutcome>, FileError> {
    drain(CsvSnapshots::with_limits(bytes, limits)?)
}

fn json(bytes: &[u8], limits: &ReadLimits) -> Result<Vec<RowOutcome>, FileError> {
    drain(JsonSnapshots::with_limits(BufReader::new(bytes), limits)?)
}

fn too_long(row: &RowOutcome) -> bool {
    row.result
        .as_ref()
        .is_err_and(|errors| errors.iter().any(|e| e.rule == rule::TOO_LONG))
}

#[test]
fn a_csv_record_past_the_limit_is_its_rows_error_and_reading_goes_on() {
    let mut file = HEADER.to_owned();
    file.push_str("2021-05-03,A,Ada\n");
    file.push_str(&format!("2021-05-03,B,{}\n", "x".repeat(200_000)));
    // A record of nothing but separators: its cells cost only their ends.
    file.push_str(&",".repeat(200_000));
    file.push('\n');
    file.push_str("2021-05-03,C,Grace\n");
    let rows = csv(file.as_bytes(), &limits(64 * 1024)).unwrap();
    assert_eq!(rows.iter().map(|r| r.row).collect::<Vec<_>>(), [2, 3, 4, 5]);
    assert!(rows[0].result.is_ok() && rows[3].result.is_ok());
    assert!(
        too_long(&rows[1]) && too_long(&rows[2]),
        "{:?}",
        rows[1].result
    );
    let message = &rows[1].result.as_ref().unwrap_err()[0].message;
    assert!(message.contains("65536 bytes"), "{message}");
    // The reject keeps the start of what was sent, not all of it.
    assert_eq!(
        rows[1].raw[0],
        ("snapshot_date".to_owned(), "2021-05-03".to_owned())
    );
    // Under the default limit the same long cell is read, and refused by its column's rule.
    let rows = csv(file.as_bytes(), &ReadLimits::default()).unwrap();
    assert_eq!(rows.len(), 3, "the separators-only line is no record");
}

#[test]
fn a_quote_never_closed_makes_one_record_that_is_refused_alone() {
    let mut file = HEADER.to_owned();
    file.push_str("2021-05-03,A,Ada\n2021-05-03,B,\"never closed\n");
    for i in 0..10_000 {
        file.push_str(&format!("2021-05-03,C{i},Name {i}\n"));
    }
    let rows = csv(file.as_bytes(), &limits(16 * 1024)).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].result.is_ok());
    assert!(too_long(&rows[1]));
}

#[test]
fn a_csv_header_past_the_limit_refuses_the_file() {
    let header = format!("snapshot_date,{}\n", "a".repeat(5000));
    let error = csv(header.as_bytes(), &limits(4096)).err().unwrap();
    assert!(error.to_string().contains("4096 bytes"), "{error}");
}

#[test]
fn deep_json_nesting_costs_bits_and_is_its_rows_error() {
    let depth = 1_000_000;
    let mut body = String::from("[{\"snapshot_date\": \"2021-05-03\", \"custom\": ");
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push_str("}, {\"snapshot_date\": \"2021-05-03\", \"account_external_id\": \"B\"}]");
    let rows = json(body.as_bytes(), &ReadLimits::default()).unwrap();
    assert_eq!(rows.len(), 2);
    let errors = rows[0].result.as_ref().unwrap_err();
    assert!(errors.iter().any(|e| e.rule == rule::JSON), "{errors:?}");
    assert!(rows[1].result.is_ok(), "{:?}", rows[1].result);
    // Past the record limit, the element is refused for its length.
    let rows = json(body.as_bytes(), &limits(64 * 1024)).unwrap();
    assert!(too_long(&rows[0]) && rows[1].result.is_ok());
}

fn xlsx(path: &Path, limits: &ReadLimits) -> Result<Vec<RowOutcome>, FileError> {
    drain(XlsxSnapshots::open_with(path, None, limits)?)
}

fn over_budget(result: Result<Vec<RowOutcome>, FileError>) -> String {
    match result {
        Err(error @ FileError::OverBudget { .. }) => error.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A workbook whose one data row has a cell of `cell_bytes` bytes.
fn workbook_with_cell(path: &Path, cell_bytes: usize) {
    let mut writer = XlsxWriter::create(path).unwrap();
    writer
        .row(&[
            text("snapshot_date"),
            text("account_external_id"),
            text("notes"),
        ])
        .unwrap();
    writer
        .row(&[text("2021-05-03"), text("A"), text(&"x".repeat(cell_bytes))])
        .unwrap();
    writer.finish().unwrap();
}

#[test]
fn an_xlsx_bomb_is_refused_before_it_is_inflated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.xlsx");
    // 64 MiB of one cell compresses to about 64 KiB.
    workbook_with_cell(&path, 64 << 20);
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20);
    let refused = over_budget(xlsx(&path, &ReadLimits::default()));
    assert!(
        refused.contains("longer than 4194304 bytes") && refused.contains("--max-record-bytes"),
        "{refused}"
    );
    // The inflated total has a limit of its own, whatever the cells.
    let small = ReadLimits {
        xlsx_max_inflated_bytes: 1 << 20,
        max_record_bytes: 128 << 20,
    };
    let refused = over_budget(xlsx(&path, &small));
    assert!(
        refused.contains("more than 1048576 bytes") && refused.contains("--xlsx-max-inflated"),
        "{refused}"
    );
}

#[test]
fn an_xlsx_row_past_the_record_limit_is_its_rows_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.xlsx");
    let mut writer = XlsxWriter::create(&path).unwrap();
    writer
        .row(&[
            text("snapshot_date"),
            text("account_external_id"),
            text("notes"),
        ])
        .unwrap();
    let cell = "y".repeat(3000);
    let mut wide = vec![text("2021-05-03"), text("A")];
    wide.extend((0..10).map(|_| text(&cell)));
    writer.row(&wide).unwrap();
    writer
        .row(&[text("2021-05-03"), text("B"), text("fine")])
        .unwrap();
    writer.finish().unwrap();
    let rows = xlsx(&path, &limits(8192)).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(too_long(&rows[0]), "{:?}", rows[0].result);
    assert!(rows[1].result.is_ok(), "{:?}", rows[1].result);
    // Within the default limit the same row is read (its extra cells are its own errors).
    let rows = xlsx(&path, &ReadLimits::default()).unwrap();
    assert!(!too_long(&rows[0]));
}

/// A zip of the given parts, deflated.
fn archive(path: &Path, parts: &[(&str, &[u8])]) {
    let mut zip = ZipWriter::new(File::create(path).unwrap());
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in parts {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn shared_strings_past_the_limit_are_refused_declared_or_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strings.xlsx");
    // calamine would reserve room for what the part declares.
    let declared = br#"<?xml version="1.0"?><sst xmlns="m" uniqueCount="1152921504606846976"><si><t>a</t></si></sst>"#;
    archive(&path, &[("xl/sharedStrings.xml", declared)]);
    let refused = over_budget(xlsx(&path, &ReadLimits::default()));
    assert!(
        refused.contains("declares 1152921504606846976"),
        "{refused}"
    );

    let mut held = String::from(r#"<?xml version="1.0"?><x:sst xmlns:x="m">"#);
    for _ in 0..=MAX_SHARED_STRINGS {
        held.push_str("<x:si><x:t>a</x:t></x:si>");
    }
    held.push_str("</x:sst>");
    // Under another name: what a part is comes from its root element.
    archive(&path, &[("xl/strings-renamed.xml", held.as_bytes())]);
    let refused = over_budget(xlsx(&path, &ReadLimits::default()));
    assert!(
        refused.contains(&format!("more than {MAX_SHARED_STRINGS} shared strings")),
        "{refused}"
    );
}

#[test]
fn a_part_read_whole_has_a_size_limit_a_sheet_has_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("styles.xlsx");
    let mut styles = String::from(r#"<styleSheet xmlns="m"><cellXfs>"#);
    while styles.len() <= 65 << 20 {
        styles.push_str(r#"<xf numFmtId="0" fontId="0"/>"#);
    }
    archive(&path, &[("xl/styles.xml", styles.as_bytes())]);
    let refused = over_budget(xlsx(&path, &ReadLimits::default()));
    assert!(
        refused.contains("xl/styles.xml") && refused.contains("read whole"),
        "{refused}"
    );
}

#[test]
fn an_archive_listing_too_many_parts_is_refused_before_it_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parts.xlsx");
    let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("p{i}")).collect();
    let parts: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b""[..])).collect();
    archive(&path, &parts);
    let refused = over_budget(xlsx(&path, &ReadLimits::default()));
    assert!(
        refused.contains(&format!("lists {} parts", MAX_ENTRIES + 1)),
        "{refused}"
    );
    // A file that is no zip at all says so.
    std::fs::write(&path, b"PK\x03\x04 but nothing after").unwrap();
    assert!(matches!(
        xlsx(&path, &ReadLimits::default()),
        Err(FileError::NotXlsx { .. })
    ));
}
