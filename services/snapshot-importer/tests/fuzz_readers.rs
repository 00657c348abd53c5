//! Fuzzing the readers with proptest: the checked-in corpus (`tests/corpus/`) mutated byte by
//! byte and with tokens that matter to each format (quotes, brackets, markup, huge numbers),
//! then read to the end under small limits. Whatever the bytes, a reader never panics and
//! never hangs; rows come in increasing order; a rejected row names its row and a rule and keeps
//! a bounded raw copy; a kept record is never longer than the record limit.
//!
//! `cargo fuzz` would need a nightly toolchain and an instrumented build of the whole service
//! (rdkafka, tonic) on 2 cores; proptest runs on the stable toolchain inside the normal test
//! suite. `FUZZ_CASES` sets the cases per reader (default 4000, about a second each); a failure
//! is shrunk and its case kept in `fuzz_readers.proptest-regressions`.
#![allow(clippy::unwrap_used)]

use std::io::{BufReader, Cursor, Write};

use paygo_snapshots::{ImportContext, MAX_CELL_BYTES};
use proptest::prelude::*;
use snapshot_importer::readers::csv::CsvSnapshots;
use snapshot_importer::readers::json::JsonSnapshots;
use snapshot_importer::readers::xlsx::XlsxSnapshots;
use snapshot_importer::readers::{FileError, MAX_RAW_BYTES, ReadLimits, RowOutcome, SnapshotRows};

const QUOTED_CSV: &[u8] = include_bytes!("corpus/quoted.csv");
const TYPES_CSV: &[u8] = include_bytes!("corpus/types.csv");
const ARRAY_JSON: &[u8] = include_bytes!("corpus/array.json");
const LINES_NDJSON: &[u8] = include_bytes!("corpus/lines.ndjson");
const SHEET_XML: &[u8] = include_bytes!("corpus/sheet.xml");

/// Tokens worth inserting: what a format gives meaning to, and values at the edges.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b",",
    b"\n",
    b"\r\n",
    b"\"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"\\",
    b"\\u0000",
    b"\xef\xbb\xbf",
    b"\xff\xfe",
    b"\xc3",
    b"1e999",
    b"-9223372036854775809",
    b"NaN",
    b"null",
    b"2021-02-30",
    b"snapshot_date",
    b"account_external_id",
    b"custom",
    b"<",
    b">",
    b"&amp;",
    b"&#0;",
    b"]]>",
    b"<!--",
    b"-->",
    b"<![CDATA[",
    b"<c r=\"XFE1\"><v>1</v></c>",
    b"<c r=\"A1\" t=\"s\"><v>99999</v></c>",
    b"</row><row r=\"0\">",
    b"<row r=\"4294967296\">",
    b"t=\"e\"",
    b"<?x ?>",
    b"<!DOCTYPE x [<!ENTITY e \"eee\">]>",
    b"&e;",
];

/// One change to a seed; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
    Repeat(usize, usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert(at, token)),
        (any::<usize>(), 1usize..32).prop_map(|(at, len)| Mutation::Delete(at, len)),
        (any::<usize>(), 1usize..64, 1usize..200)
            .prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for mutation in mutations {
        let len = bytes.len().max(1);
        match *mutation {
            Mutation::Flip(at, bits) => {
                if let Some(byte) = bytes.get_mut(at % len) {
                    *byte ^= bits;
                }
            }
            Mutation::Insert(at, token) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, TOKENS[token].iter().copied());
            }
            Mutation::Delete(at, n) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::Repeat(at, n, times) => {
                let at = (at % len).min(bytes.len());
                let end = (at + n).min(bytes.len());
                let piece = bytes[at..end].to_vec();
                for _ in 0..times {
                    bytes.splice(end..end, piece.iter().copied());
                }
            }
            Mutation::Truncate(at) => bytes.truncate(at % len),
        }
    }
    bytes
}

/// Small limits, so that the mutations reach them.
fn limits() -> ReadLimits {
    ReadLimits {
        max_record_bytes: 2048,
        xlsx_max_inflated_bytes: 1 << 20,
    }
}

fn ctx() -> ImportContext {
    ImportContext {
        organization_id: "fuzz".into(),
        data_origin: None,
        source_id: "fuzz".into(),
        now: chrono::Utc::now(),
    }
}

/// Reads every row (at most many more than any input here has: a loop would show).
fn drain(reader: Result<impl SnapshotRows, FileError>) -> Result<Vec<RowOutcome>, FileError> {
    let mut reader = reader?;
    let mut rows = Vec::new();
    while let Some(row) = reader.next_row(&ctx()) {
        rows.push(row?);
        assert!(rows.len() < 100_000, "the reader does not end");
    }
    Ok(rows)
}

/// What holds of any rows a reader gave.
fn check(rows: &[RowOutcome]) -> Result<(), TestCaseError> {
    let mut last = 0;
    for row in rows {
        prop_assert!(
            row.row > last,
            "rows out of order: {} after {last}",
            row.row
        );
        last = row.row;
        match &row.result {
            Ok(_) => prop_assert!(row.raw.is_empty()),
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for error in errors {
                    prop_assert_eq!(error.row, row.row);
                    prop_assert!(!error.rule.is_empty() && !error.message.is_empty());
                    prop_assert!(error.value.len() <= MAX_CELL_BYTES);
                }
                let raw: usize = row.raw.iter().map(|(c, v)| c.len() + v.len()).sum();
                prop_assert!(raw <= MAX_RAW_BYTES + 128, "a reject keeps {raw} bytes");
            }
        }
    }
    Ok(())
}

/// Whatever went wrong with the whole file is said in words.
fn check_file(result: &Result<Vec<RowOutcome>, FileError>) -> Result<(), TestCaseError> {
    match result {
        Ok(rows) => check(rows),
        Err(error) => {
            prop_assert!(!error.to_string().is_empty());
            Ok(())
        }
    }
}

/// A workbook around `sheet` (the sheet's XML as it is, however broken).
fn workbook(sheet: &[u8]) -> Vec<u8> {
    let main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    let rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let pkg = "http://schemas.openxmlformats.org/package/2006/relationships";
    let parts: [(&str, Vec<u8>); 5] = [
        (
            "[Content_Types].xml",
            br#"<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/></Types>"#.to_vec(),
        ),
        (
            "_rels/.rels",
            format!(r#"<Relationships xmlns="{pkg}"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#).into_bytes(),
        ),
        (
            "xl/workbook.xml",
            format!(r#"<workbook xmlns="{main}" xmlns:r="{rel}"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#).into_bytes(),
        ),
        (
            "xl/_rels/workbook.xml.rels",
            format!(r#"<Relationships xmlns="{pkg}"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#).into_bytes(),
        ),
        ("xl/worksheets/sheet1.xml", sheet.to_vec()),
    ];
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in parts {
        zip.start_file(name, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn csv_reader_holds_on_any_bytes(
        seed in prop::sample::select(vec![QUOTED_CSV, TYPES_CSV]),
        mutations in prop::collection::vec(mutation(), 0..12),
    ) {
        let bytes = mutate(seed, &mutations);
        let limits = limits();
        let result = drain(CsvSnapshots::with_limits(&bytes[..], &limits));
        check_file(&result)?;
    }

    #[test]
    fn json_reader_holds_on_any_bytes(
        seed in prop::sample::select(vec![ARRAY_JSON, LINES_NDJSON]),
        mutations in prop::collection::vec(mutation(), 0..12),
    ) {
        let bytes = mutate(seed, &mutations);
        let limits = limits();
        let result = drain(JsonSnapshots::with_limits(BufReader::new(&bytes[..]), &limits));
        check_file(&result)?;
    }

    #[test]
    fn xlsx_reader_holds_on_any_sheet(mutations in prop::collection::vec(mutation(), 0..12)) {
        let sheet = mutate(SHEET_XML, &mutations);
        let limits = limits();
        let result = drain(XlsxSnapshots::from_reader(Cursor::new(workbook(&sheet)), None, &limits));
        check_file(&result)?;
    }

    #[test]
    fn xlsx_reader_holds_on_any_archive(mutations in prop::collection::vec(mutation(), 1..6)) {
        // The archive's own bytes mutated: the zip reader and the budget scan take them first.
        let archive = mutate(&workbook(SHEET_XML), &mutations);
        let limits = limits();
        let result = drain(XlsxSnapshots::from_reader(Cursor::new(archive), None, &limits));
        check_file(&result)?;
    }
}
