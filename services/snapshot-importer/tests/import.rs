//! The import pipeline against the embedded Kafka and a real sled store: what a broken reader or
//! an overlong row does to an import.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::Utc;
use event_backbone::EmbeddedKafka;
use event_backbone::producer::{EventProducer, ProducerSettings};
use paygo_snapshots::ImportContext;
use recoup_proto::v1;
use snapshot_importer::import::{
    BUSY_RETRY_AFTER_SECS, ImportError, ImportRequest, ImportSettings, Importer, Stop,
};
use snapshot_importer::readers::csv::CsvSnapshots;
use snapshot_importer::readers::{FileError, RowOutcome, SnapshotRows};
use snapshot_importer::store::ImportStore;
use tempfile::TempDir;

fn importer(dir: &TempDir, kafka: &EmbeddedKafka) -> Importer {
    importer_with(dir, kafka, ImportSettings::default())
}

fn request(id: &str) -> ImportRequest {
    ImportRequest {
        tenant: "acme".into(),
        actor: "key:0123456789abcdef".into(),
        import_id: id.into(),
        format: v1::FileFormat::Csv,
        data_origin: None,
        file_name: "x.csv".into(),
    }
}

/// Yields good rows from a CSV, then dies.
struct DiesAfter {
    rows: CsvSnapshots<std::io::Cursor<Vec<u8>>>,
    left: usize,
}

impl SnapshotRows for DiesAfter {
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        if self.left == 0 {
            panic!("reader bug");
        }
        self.left -= 1;
        self.rows.next_row(ctx)
    }
}

fn csv(rows: usize) -> Vec<u8> {
    let mut text = String::from("snapshot_date,account_external_id\n");
    for i in 0..rows {
        text += &format!("2024-05-01,A{i}\n");
    }
    text.into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_dies_fails_the_import_and_no_report_claims_it_done() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let importer = importer(&dir, &kafka);
    let failed = importer
        .import(importer.admit().unwrap(), request("dies"), || {
            let rows: Box<dyn SnapshotRows + Send> = Box::new(DiesAfter {
                rows: CsvSnapshots::new(std::io::Cursor::new(csv(5000))).unwrap(),
                left: 2500,
            });
            Ok(rows)
        })
        .await
        .unwrap_err();
    assert!(matches!(failed, ImportError::Reader(_)), "{failed}");
    assert!(
        failed.to_string().contains("reading the upload failed"),
        "{failed}"
    );
    assert!(importer.report("acme", "dies", 0, 10).unwrap().is_none());

    // The same upload read whole imports every row; the ones published before the failure
    // count as unchanged.
    let report = importer
        .import(importer.admit().unwrap(), request("dies"), || {
            let rows: Box<dyn SnapshotRows + Send> =
                Box::new(CsvSnapshots::new(std::io::Cursor::new(csv(5000))).unwrap());
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(report.rows_read, 5000);
    assert_eq!(report.accepted + report.unchanged, 5000);
    assert!(report.unchanged > 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_too_big_for_one_event_are_rejected_not_retried_forever() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let importer = importer(&dir, &kafka);

    // 200 unknown columns of 4,000 bytes: each cell is allowed, the row is not.
    let mut text = String::from("snapshot_date,account_external_id");
    for i in 0..200 {
        text += &format!(",extra_{i}");
    }
    text += "\n2024-05-01,SMALL";
    text += &",x".repeat(200);
    text += "\n2024-05-01,WIDE";
    let wide = "w".repeat(4000);
    for _ in 0..200 {
        text += ",";
        text += &wide;
    }
    // A stray quote: the rest of the file becomes one cell of that row.
    text += "\n2024-05-01,QUOTED,\"";
    text += &"y".repeat(2_000_000);
    text += "\n";
    let report = importer
        .import(importer.admit().unwrap(), request("big"), move || {
            let rows: Box<dyn SnapshotRows + Send> =
                Box::new(CsvSnapshots::new(std::io::Cursor::new(text.into_bytes())).unwrap());
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!((report.accepted, report.rejected), (1, 2), "{report:?}");
    let rules: Vec<(u64, &str)> = report
        .errors
        .iter()
        .map(|e| (e.row, e.rule.as_str()))
        .collect();
    assert!(rules.contains(&(3, "too_long")), "{rules:?}");
    assert!(
        rules
            .iter()
            .any(|(row, rule)| *row == 4 && *rule == "too_long"),
        "{rules:?}"
    );
    assert!(report.errors.iter().all(|e| e.value.len() <= 4096));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_side_read_error_fails_the_import_and_keeps_no_report() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let importer = importer(&dir, &kafka);
    let failed = importer
        .import(importer.admit().unwrap(), request("io"), || {
            Err(FileError::Io {
                row: 0,
                message: "too many open files".into(),
            })
        })
        .await
        .unwrap_err();
    assert!(
        failed.to_string().contains("too many open files"),
        "{failed}"
    );
    assert!(importer.report("acme", "io", 0, 10).unwrap().is_none());
    // A file the sender got wrong, in contrast, is that import's answer, kept.
    let report = importer
        .import(importer.admit().unwrap(), request("empty"), || {
            Err(FileError::Empty)
        })
        .await
        .unwrap();
    assert_eq!(report.file_error, "the file is empty");
    assert!(importer.report("acme", "empty", 0, 10).unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_imports_of_one_tenant_touching_the_same_rows_take_turns() {
    use event_backbone::consumer::EventConsumer;
    use event_backbone::envelope::decode_envelope;
    use prost::Message;

    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let importer = importer(&dir, &kafka);
    const ROWS: usize = 2000;
    let file = |arrears: u32| {
        let mut text = String::from("snapshot_date,account_external_id,days_to_cutoff_source\n");
        for i in 0..ROWS {
            text += &format!("2024-05-01,A{i},{arrears}\n");
        }
        text.into_bytes()
    };
    let run = |id: &'static str, bytes: Vec<u8>| {
        let importer = importer.clone();
        async move {
            importer
                .import(importer.admit().unwrap(), request(id), move || {
                    let rows: Box<dyn SnapshotRows + Send> =
                        Box::new(CsvSnapshots::new(std::io::Cursor::new(bytes)).unwrap());
                    Ok(rows)
                })
                .await
                .unwrap()
        }
    };
    let (a, b) = tokio::join!(run("a", file(1)), run("b", file(2)));
    assert_eq!((a.accepted, b.accepted), (ROWS as u64, ROWS as u64));

    // Every row was published twice, under revisions 1 and 2: never twice under one.
    let consumer = EventConsumer::new(
        &kafka.kafka_config(),
        "turns-test",
        event_backbone::topics::PAYGO_SNAPSHOTS.name,
        None,
    )
    .unwrap();
    let partitions = consumer
        .partitions(std::time::Duration::from_secs(10))
        .unwrap();
    consumer
        .assign(&partitions.iter().map(|p| (*p, None)).collect::<Vec<_>>())
        .unwrap();
    let mut revisions: std::collections::HashMap<String, Vec<u64>> = Default::default();
    let mut seen = 0;
    while seen < 2 * ROWS {
        let batch =
            tokio::time::timeout(std::time::Duration::from_secs(20), consumer.recv_batch(500))
                .await
                .unwrap()
                .unwrap();
        for message in batch {
            let envelope = decode_envelope(&message.value).unwrap();
            let recorded =
                recoup_proto::v1::AccountSnapshotRecorded::decode(envelope.payload.as_slice())
                    .unwrap();
            revisions
                .entry(envelope.aggregate_id)
                .or_default()
                .push(recorded.revision);
            seen += 1;
        }
    }
    assert_eq!(revisions.len(), ROWS);
    for (row, mut seen) in revisions {
        seen.sort_unstable();
        assert_eq!(seen, [1, 2], "{row}");
    }
}

fn importer_with(dir: &TempDir, kafka: &EmbeddedKafka, settings: ImportSettings) -> Importer {
    let producer =
        EventProducer::new(&kafka.kafka_config(), &ProducerSettings::default(), None).unwrap();
    Importer::new(
        ImportStore::open(dir.path()).unwrap(),
        Arc::new(producer),
        Arc::new(Utc::now),
        settings,
    )
}

/// Yields the rows of a CSV, sleeping a little before each: an import that takes its time.
struct Slow(CsvSnapshots<std::io::Cursor<Vec<u8>>>);

impl SnapshotRows for Slow {
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        std::thread::sleep(std::time::Duration::from_micros(500));
        self.0.next_row(ctx)
    }
}

fn slow(rows: usize) -> Result<Box<dyn SnapshotRows + Send>, FileError> {
    Ok(Box::new(Slow(
        CsvSnapshots::new(std::io::Cursor::new(csv(rows))).unwrap(),
    )))
}

fn whole(rows: usize) -> Result<Box<dyn SnapshotRows + Send>, FileError> {
    Ok(Box::new(
        CsvSnapshots::new(std::io::Cursor::new(csv(rows))).unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_beyond_the_slots_are_refused_with_a_wait() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let settings = ImportSettings {
        max_running: 2,
        ..ImportSettings::default()
    };
    let importer = importer_with(&dir, &kafka, settings);
    let first = importer.admit().unwrap();
    let second = importer.admit().unwrap();
    assert_eq!(importer.running(), 2);
    let refused = importer.admit().unwrap_err();
    assert!(
        matches!(
            refused,
            ImportError::Busy {
                running: 2,
                retry_after_secs: BUSY_RETRY_AFTER_SECS
            }
        ),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("--max-running-imports"),
        "{refused}"
    );
    // A slot is held until its import ends, then it is free again.
    drop(first);
    let report = importer
        .import(importer.admit().unwrap(), request("slots"), || whole(10))
        .await
        .unwrap();
    assert_eq!(report.accepted, 10);
    assert_eq!(importer.running(), 1);
    drop(second);
    assert_eq!(importer.running(), 0);
}

/// Runs an import that stops early, then the same upload whole with the importer `again`
/// makes of the first: every row is imported once, what was acknowledged before the stop
/// counting as unchanged.
async fn stopped_then_sent_again(
    importer: Importer,
    again: impl FnOnce(Importer) -> Importer,
    id: &str,
    stop: impl std::future::Future,
) -> ImportError {
    const ROWS: usize = 6000;
    let running = {
        let importer = importer.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            importer
                .import(importer.admit().unwrap(), request(&id), || slow(ROWS))
                .await
        })
    };
    stop.await;
    let stopped = running.await.unwrap().unwrap_err();
    assert!(importer.report("acme", id, 0, 10).unwrap().is_none());
    assert_eq!(importer.running(), 0, "the slot is given back");
    let importer = again(importer);
    let report = importer
        .import(importer.admit().unwrap(), request(id), || whole(ROWS))
        .await
        .unwrap();
    assert_eq!(
        report.accepted + report.unchanged,
        ROWS as u64,
        "{report:?}"
    );
    assert!(report.unchanged > 0 && report.accepted > 0, "{report:?}");
    stopped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_past_its_deadline_stops_and_keeps_what_kafka_acknowledged() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let settings = ImportSettings {
        deadline: std::time::Duration::from_millis(1500),
        batch_rows: 100,
        ..ImportSettings::default()
    };
    let importer = importer_with(&dir, &kafka, settings);
    // Sent again to a server with the default deadline (the store is reopened).
    let again = |first: Importer| {
        drop(first);
        importer_with(&dir, &kafka, ImportSettings::default())
    };
    let stopped = stopped_then_sent_again(importer, again, "late", async {}).await;
    assert!(
        matches!(stopped, ImportError::Stopped(Stop::Deadline(_))),
        "{stopped}"
    );
    assert!(stopped.to_string().contains("deadline of 1 s"), "{stopped}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_cancels_imports_and_keeps_what_kafka_acknowledged() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let dir = TempDir::new().unwrap();
    let settings = ImportSettings {
        batch_rows: 100,
        ..ImportSettings::default()
    };
    let (cancel, cancelled) = tokio::sync::watch::channel(false);
    let plain = importer_with(&dir, &kafka, settings);
    let importer = plain.clone().cancelled_by(cancelled);
    let stop = async {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        cancel.send(true).unwrap();
    };
    // Sent again to a server that is not stopping (one sharing the store).
    let stopped = stopped_then_sent_again(importer, |_| plain, "cancelled", stop).await;
    assert!(
        matches!(stopped, ImportError::Stopped(Stop::Shutdown)),
        "{stopped}"
    );
    assert!(
        stopped.to_string().contains("send the same upload again"),
        "{stopped}"
    );
}
