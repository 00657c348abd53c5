//! Snapshot import rate: a generated CSV with every seed column, imported end to end (read,
//! validate, classify against the store, encode, publish to Kafka, await acks, remember) into the
//! embedded Kafka cluster, beside the raw `csv` crate parse of the same file in the same run.
//!
//! `cargo bench -p snapshot-importer --bench import` (BENCH_ROWS to change the size; default
//! 1,000,000; BENCH_XLSX_ROWS, default 100,000; BENCH_ROUNDS, default 5; BENCH_BATCH_ROWS,
//! BENCH_IN_FLIGHT and BENCH_LINGER_MS tune the pipeline). The raw parse and the imports run
//! interleaved, round after round, each round into a fresh store so that every row is new to
//! it; the report gives each one's median and range and its ratio to the raw parse of the same
//! round. Peak RSS is the process's high-water mark during an import (reset before it).
#![allow(clippy::unwrap_used)]

use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use event_backbone::EmbeddedKafka;
use event_backbone::producer::{EventProducer, ProducerSettings};
use paygo_snapshots::{FIELDS, FieldType};
use recoup_proto::v1;
use snapshot_importer::import::{ImportRequest, ImportSettings, Importer};
use snapshot_importer::readers::csv::CsvSnapshots;
use snapshot_importer::readers::xlsx::XlsxSnapshots;
use snapshot_importer::readers::{FileError, SnapshotRows};
use snapshot_importer::store::ImportStore;

#[path = "../tests/common/mod.rs"]
mod common;
use common::{XCell, XlsxWriter};
use recoup_runtime::process::cpu_seconds;

// The allocator the recoup binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn cell(ty: FieldType, name: &str, row: usize) -> String {
    match (name, ty) {
        ("snapshot_date", _) => "2024-03-01".to_owned(),
        ("account_external_id", _) => format!("ACC{row:08}"),
        (_, FieldType::Date) => "2025-01-31".to_owned(),
        (_, FieldType::DateTime) => format!("2024-03-0{} 6:23:55", 1 + row % 9),
        (_, FieldType::Integer) => (row % 365).to_string(),
        (_, FieldType::Float) => format!("{}.{:02}", row % 10_000, row % 100),
        (_, FieldType::String) => ["0", "1-7", "8-30", "31-60"][row % 4].to_owned(),
        (_, FieldType::Json) => format!("{{\"branch\":\"b{}\"}}", row % 50),
    }
}

/// The same row as typed spreadsheet cells.
fn xlsx_cell(ty: FieldType, name: &str, row: usize) -> XCell {
    let text = cell(ty, name, row);
    match (name, ty) {
        ("snapshot_date", _) | (_, FieldType::Date) => {
            chrono::NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .map_or(XCell::Text(text), XCell::Date)
        }
        (_, FieldType::DateTime) => {
            chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S")
                .map_or(XCell::Text(text), XCell::DateTime)
        }
        (_, FieldType::Integer | FieldType::Float) => {
            text.parse().map_or(XCell::Text(text), XCell::Number)
        }
        _ => XCell::Text(text),
    }
}

fn generate_xlsx(path: &Path, rows: usize) -> u64 {
    let mut out = XlsxWriter::create(path).unwrap();
    out.sheet("snapshots").unwrap();
    let header: Vec<XCell> = FIELDS
        .iter()
        .map(|f| XCell::Text(f.name.to_owned()))
        .collect();
    out.row(&header).unwrap();
    for row in 0..rows {
        let cells: Vec<XCell> = FIELDS
            .iter()
            .map(|f| xlsx_cell(f.ty, f.name, row))
            .collect();
        out.row(&cells).unwrap();
    }
    out.finish().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn generate(path: &Path, rows: usize) -> u64 {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let header: Vec<&str> = FIELDS.iter().map(|f| f.name).collect();
    writeln!(out, "{}", header.join(",")).unwrap();
    let mut line = String::with_capacity(2048);
    for row in 0..rows {
        line.clear();
        for (i, f) in FIELDS.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let value = cell(f.ty, f.name, row);
            if value.contains([',', '"']) {
                line.push('"');
                line.push_str(&value.replace('"', "\"\""));
                line.push('"');
            } else {
                line.push_str(&value);
            }
        }
        line.push('\n');
        out.write_all(line.as_bytes()).unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn reset_peak_rss() {
    // Linux: writing 5 resets the high-water mark to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn request(import_id: &str) -> ImportRequest {
    ImportRequest {
        tenant: "bench".into(),
        actor: "key:0123456789abcdef".into(),
        import_id: import_id.into(),
        format: v1::FileFormat::Csv,
        data_origin: Some("crm".into()),
        file_name: "snapshots.csv".into(),
    }
}

fn open_csv(path: &Path) -> Result<Box<dyn SnapshotRows + Send>, FileError> {
    let file = std::fs::File::open(path).map_err(|e| FileError::Io {
        row: 0,
        message: e.to_string(),
    })?;
    Ok(Box::new(CsvSnapshots::new(BufReader::with_capacity(
        256 * 1024,
        file,
    ))?))
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The baseline: the csv crate alone, records into a reused ByteRecord.
fn raw_parse(file: &Path) -> usize {
    let mut reader = csv::ReaderBuilder::new().from_reader(BufReader::with_capacity(
        256 * 1024,
        std::fs::File::open(file).unwrap(),
    ));
    let mut record = csv::ByteRecord::new();
    let mut parsed = 0usize;
    while reader.read_byte_record(&mut record).unwrap() {
        parsed += 1;
    }
    parsed
}

fn importer(dir: &Path, producer: &Arc<EventProducer>) -> Importer {
    Importer::new(
        ImportStore::open(dir).unwrap(),
        producer.clone(),
        Arc::new(Utc::now),
        ImportSettings {
            batch_rows: env_or("BENCH_BATCH_ROWS", ImportSettings::default().batch_rows),
            batches_in_flight: env_or(
                "BENCH_IN_FLIGHT",
                ImportSettings::default().batches_in_flight,
            ),
            ..ImportSettings::default()
        },
    )
}

/// One measure of an import: rows per second, CPU µs per row, peak RSS in MB.
struct Measure {
    rate: f64,
    cpu_us: f64,
    peak_mb: f64,
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    importer: &Importer,
    request: ImportRequest,
    open: impl FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError> + Send + 'static,
    check: impl FnOnce(&v1::ImportReport),
) -> Measure {
    reset_peak_rss();
    let cpu = cpu_seconds();
    let started = Instant::now();
    let report = runtime
        .block_on(importer.import(importer.admit().unwrap(), request, open))
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    check(&report);
    let rows = (report.accepted + report.unchanged) as f64;
    Measure {
        rate: rows / secs,
        cpu_us: cpu * 1e6 / rows,
        peak_mb: peak_rss_mb(),
    }
}

const VARIANTS: [&str; 4] = [
    "raw csv parse",
    "CSV import into Kafka, new rows",
    "CSV re-import, all unchanged",
    "XLSX import into Kafka, new rows",
];

fn main() {
    let rows = env_or("BENCH_ROWS", 1_000_000);
    let xlsx_rows = env_or("BENCH_XLSX_ROWS", 100_000);
    let rounds = bench_rounds::rounds();
    let dir = tempfile::TempDir::new().unwrap();
    let file = dir.path().join("snapshots.csv");
    let bytes = generate(&file, rows);
    let xlsx = dir.path().join("snapshots.xlsx");
    let xlsx_bytes = generate_xlsx(&xlsx, xlsx_rows);
    println!(
        "generated {rows} rows x {} columns as CSV, {:.0} MB, and {xlsx_rows} as XLSX, {:.0} MB; {rounds} rounds",
        FIELDS.len(),
        bytes as f64 / 1e6,
        xlsx_bytes as f64 / 1e6
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let embedded = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let producer = Arc::new(
        EventProducer::new(
            &embedded.kafka_config(),
            &ProducerSettings {
                linger: std::time::Duration::from_millis(env_or("BENCH_LINGER_MS", 5) as u64),
                ..ProducerSettings::default()
            },
            // No consumer here: the mock broker drops what falls out of its retention.
            None,
        )
        .unwrap(),
    );

    let mut rates = bench_rounds::Rounds::new("rows/s", &VARIANTS);
    let mut cpu = bench_rounds::Rounds::new("µs CPU/row", &VARIANTS);
    let mut peak = bench_rounds::Rounds::without_baseline("MB peak RSS", &VARIANTS[1..]);
    for round in 0..rounds {
        let started = Instant::now();
        let parse_cpu = cpu_seconds();
        assert_eq!(raw_parse(&file), rows);
        let secs = started.elapsed().as_secs_f64();
        rates.record(0, rows as f64 / secs);
        cpu.record(0, (cpu_seconds() - parse_cpu) * 1e6 / rows as f64);

        // A fresh store per round: every row of the first import is new to it.
        let store = tempfile::TempDir::new_in(dir.path()).unwrap();
        let importer = importer(store.path(), &producer);
        let csv = |id: &str, count: fn(&v1::ImportReport) -> u64| {
            let path = file.clone();
            let request = ImportRequest {
                import_id: format!("{id}-{round}"),
                ..request(id)
            };
            let open = move || open_csv(&path);
            measure(&runtime, &importer, request, open, |r| {
                assert_eq!(count(r) as usize, rows, "{r:?}")
            })
        };
        let m = csv("bench-import", |r| r.accepted);
        let again = csv("bench-again", |r| r.unchanged);
        let path = xlsx.clone();
        let sheet = measure(
            &runtime,
            &importer,
            ImportRequest {
                import_id: format!("bench-xlsx-{round}"),
                format: v1::FileFormat::Xlsx,
                data_origin: Some("sheet".into()),
                file_name: "snapshots.xlsx".into(),
                ..request("bench-xlsx")
            },
            move || {
                let rows: Box<dyn SnapshotRows + Send> =
                    Box::new(XlsxSnapshots::open(&path, None)?);
                Ok(rows)
            },
            |r| assert_eq!(r.accepted as usize, xlsx_rows, "{r:?}"),
        );
        for (variant, m) in [(1, &m), (2, &again), (3, &sheet)] {
            rates.record(variant, m.rate);
            cpu.record(variant, m.cpu_us);
            peak.record(variant - 1, m.peak_mb);
        }
        println!(
            "round {}: raw parse {:.0}, import {:.0} ({:.1} µs CPU/row, {:.0} MB), re-import {:.0}, XLSX {:.0} rows/s",
            round + 1,
            rows as f64 / secs,
            m.rate,
            m.cpu_us,
            m.peak_mb,
            again.rate,
            sheet.rate
        );
    }
    println!("\n{}\n{}\n{}", rates.report(), cpu.report(), peak.report());
}
