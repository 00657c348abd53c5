//! PAYGo snapshot imports end to end, in process: gRPC upload → validation → Kafka (embedded,
//! over TCP) → projection → `recoup.v1.Query`; rejects on `recoup.rejects.v1`; re-imports.
#![allow(clippy::unwrap_used)]

mod common;

use projection::Projection;
use std::time::Duration;

use common::{channel, config, req, start};
use event_backbone::consumer::EventConsumer;
use event_backbone::envelope::decode_envelope;
use event_backbone::topics::REJECTS;
use prost::Message;
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tempfile::TempDir;
use tonic::transport::Channel;

type Imports = SnapshotImportsClient<Channel>;
type Query = QueryClient<Channel>;

const HEADER: &str = "snapshot_date,account_external_id,days_arrears_consecutive_source,\
                      amt_remaining_installment_source,days_to_cutoff_source,region\n";

/// Three accounts over two days, and one row with a comma decimal (row 5).
fn first_file() -> String {
    let mut csv = HEADER.to_owned();
    csv += "2024-03-01,A1,0,100.5,3,West\n";
    csv += "2024-03-01,A2,12,200,-12,West\n";
    csv += "2024-03-01,A3,45,300.25,-45,East\n";
    csv += "2024-03-01,A4,2,\"1,5\",0,East\n";
    csv += "2024-03-02,A1,1,90.5,-1,West\n";
    csv += "2024-03-02,A2,13,200,-13,West\n";
    csv += "2024-03-02,A3,200,300.25,-200,East\n";
    csv
}

async fn upload(
    imports: &mut Imports,
    tenant: &str,
    format: v1::FileFormat,
    bytes: &[u8],
) -> Result<v1::ImportReport, tonic::Status> {
    let mut messages = vec![v1::UploadRequest {
        part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
            format: format as i32,
            data_origin: "crm".into(),
            file_name: "snapshots.csv".into(),
            sheet: String::new(),
        })),
    }];
    // Small chunks: the server must put them together.
    for chunk in bytes.chunks(64) {
        messages.push(v1::UploadRequest {
            part: Some(v1::upload_request::Part::Chunk(chunk.to_vec())),
        });
    }
    imports
        .upload(req(tenant, tokio_stream::iter(messages)))
        .await
        .map(tonic::Response::into_inner)
}

async fn account(query: &mut Query, tenant: &str, uid: &str, date: &str) -> v1::AccountSnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = query
            .get_account(req(
                tenant,
                v1::GetAccountRequest {
                    account_uid: uid.into(),
                },
            ))
            .await;
        if let Ok(snapshot) = found {
            let snapshot = snapshot.into_inner();
            if snapshot.snapshot_date.as_deref() == Some(date) {
                return snapshot;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{uid} never reached {date}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn par(query: &mut Query, tenant: &str, date: &str) -> v1::PortfolioParResponse {
    query
        .portfolio_par(req(
            tenant,
            v1::PortfolioParRequest {
                snapshot_date: date.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

fn bucket<'a>(par: &'a v1::PortfolioParResponse, name: &str) -> &'a v1::ParBucket {
    par.buckets.iter().find(|b| b.bucket == name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_upload_reaches_the_read_models_and_a_second_upload_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let mut query = QueryClient::new(ch);

    let report = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        first_file().as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            report.rows_read,
            report.accepted,
            report.unchanged,
            report.rejected
        ),
        (7, 6, 0, 1),
        "{report:?}"
    );
    assert!(!report.duplicate);
    assert_eq!(report.import_id.len(), 32);
    assert_eq!(report.errors.len(), 1);
    let error = &report.errors[0];
    assert_eq!(
        (
            error.row,
            error.column.as_str(),
            error.value.as_str(),
            error.rule.as_str()
        ),
        (
            5,
            "amt_remaining_installment_source",
            "1,5",
            "decimal_comma"
        )
    );

    // The latest snapshot per account, with custom columns and stamped fields.
    let a3 = account(&mut query, "acme", "acme_crm_A3", "2024-03-02").await;
    assert_eq!(a3.days_arrears_consecutive_source, Some(200));
    assert_eq!(a3.organization_id.as_deref(), Some("acme"));
    assert_eq!(a3.source_id.as_deref(), Some(report.import_id.as_str()));
    assert_eq!(a3.custom.as_deref(), Some(r#"{"region":"East"}"#));
    account(&mut query, "acme", "acme_crm_A1", "2024-03-02").await;
    account(&mut query, "acme", "acme_crm_A2", "2024-03-02").await;

    // PAR on the first day: A1 in 0, A2 in 8-30, A3 in 31-60; the rejected A4 counts nowhere.
    let day1 = par(&mut query, "acme", "2024-03-01").await;
    assert_eq!(day1.accounts, 3);
    assert_eq!(bucket(&day1, "0").accounts, 1);
    assert_eq!(bucket(&day1, "8-30").accounts, 1);
    assert_eq!(bucket(&day1, "31-60").outstanding, 300.25);
    assert_eq!(day1.outstanding, 600.75);
    assert!((day1.par30_ratio - 300.25 / 600.75).abs() < 1e-12);
    let day2 = par(&mut query, "acme", "2024-03-02").await;
    assert_eq!(bucket(&day2, "1-7").accounts, 1);
    assert_eq!(bucket(&day2, "180+").accounts, 1);

    // The same days in one call, with a day before them that has no snapshot; ranges that are
    // backwards or longer than a year are refused.
    let series = |from: &str, to: &str| {
        let mut q = query.clone();
        let asked = v1::PortfolioParSeriesRequest {
            from_date: from.into(),
            to_date: to.into(),
            ..Default::default()
        };
        async move { q.portfolio_par_series(req("acme", asked)).await }
    };
    let days = series("2024-02-29", "2024-03-02")
        .await
        .unwrap()
        .into_inner()
        .days;
    assert_eq!(days.len(), 3);
    assert_eq!(days[0].snapshot_date, "2024-02-29");
    assert_eq!(days[0].accounts, 0);
    assert_eq!(days[1], day1);
    assert_eq!(days[2], day2);
    for (from, to) in [("2024-03-02", "2024-03-01"), ("2024-01-01", "2025-01-01")] {
        let refused = series(from, to).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{from}..{to}");
    }
    assert_eq!(
        series("2024-01-01", "2024-12-31")
            .await
            .unwrap()
            .into_inner()
            .days
            .len(),
        366
    );

    // The series of one account, in date order, and a range.
    let series = query
        .list_account_snapshots(req(
            "acme",
            v1::ListAccountSnapshotsRequest {
                account_uid: "acme_crm_A1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let dates: Vec<_> = series
        .snapshots
        .iter()
        .map(|s| s.snapshot_date.clone().unwrap())
        .collect();
    assert_eq!(dates, ["2024-03-01", "2024-03-02"]);
    let second_only = query
        .list_account_snapshots(req(
            "acme",
            v1::ListAccountSnapshotsRequest {
                account_uid: "acme_crm_A1".into(),
                from: "2024-03-02".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_only.snapshots.len(), 1);

    // The same file again: recognised, nothing imported.
    let again = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        first_file().as_bytes(),
    )
    .await
    .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.import_id, report.import_id);
    assert_eq!((again.accepted, again.rejected), (6, 1));

    // A new file with one changed row and one fixed row: only those two are published.
    let mut changed = first_file().replace("\"1,5\"", "1.5");
    changed = changed.replace("2024-03-02,A3,200,", "2024-03-02,A3,20,");
    let second = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        changed.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            second.rows_read,
            second.accepted,
            second.unchanged,
            second.rejected
        ),
        (7, 2, 5, 0),
        "{second:?}"
    );
    let a4 = account(&mut query, "acme", "acme_crm_A4", "2024-03-01").await;
    assert_eq!(a4.amt_remaining_installment_source, Some(1.5));
    // A3 moved from 180+ to 8-30 on day 2: counted once, in its new bucket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let day2 = par(&mut query, "acme", "2024-03-02").await;
        if bucket(&day2, "8-30").accounts == 2 {
            assert_eq!(bucket(&day2, "180+").accounts, 0);
            assert_eq!(day2.accounts, 3);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A3 never moved: {day2:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Another tenant sees none of it.
    let other = query
        .get_account(req(
            "globex",
            v1::GetAccountRequest {
                account_uid: "acme_crm_A1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::NotFound);

    // The rejected row is on the rejects topic with its raw values and reasons.
    let kafka = event_backbone::KafkaConfig::external(platform.kafka_bootstrap.clone());
    let consumer = EventConsumer::new(&kafka, "rejects-test", REJECTS.name, None).unwrap();
    let partitions = consumer.partitions(Duration::from_secs(10)).unwrap();
    consumer
        .assign(&partitions.iter().map(|p| (*p, None)).collect::<Vec<_>>())
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(20), consumer.recv_batch(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].key, report.import_id.as_bytes());
    let envelope = decode_envelope(&received[0].value).unwrap();
    assert_eq!(envelope.event_type, "RowRejected");
    let rejected = v1::RowRejected::decode(envelope.payload.as_slice()).unwrap();
    assert_eq!(rejected.row, 5);
    assert_eq!(rejected.errors[0].rule, "decimal_comma");
    let raw: Vec<(&str, &str)> = rejected
        .cells
        .iter()
        .map(|c| (c.column.as_str(), c.value.as_str()))
        .collect();
    assert!(raw.contains(&("amt_remaining_installment_source", "1,5")));
    assert!(raw.contains(&("account_external_id", "A4")));

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_batches_reports_and_refusals() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let mut query = QueryClient::new(ch);

    let row = |date: &str, id: &str, arrears: &str| v1::Row {
        cells: [
            ("snapshot_date", date),
            ("account_external_id", id),
            ("days_arrears_consecutive_source", arrears),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let mut rows: Vec<v1::Row> = (0..30)
        .map(|i| row("2024-04-01", &format!("R{i}"), "3"))
        .collect();
    // Rows 31..=33 break one rule each.
    rows.push(row("2024-04-01", "BAD1", "3.5"));
    rows.push(row("01/04/2024", "BAD2", "3"));
    rows.push(row("2024-04-01", "", "3"));
    let report = imports
        .import_rows(req(
            "acme",
            v1::ImportRowsRequest {
                data_origin: String::new(),
                rows: rows.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (report.rows_read, report.accepted, report.rejected),
        (33, 30, 3)
    );
    let rules: Vec<(u64, &str)> = report
        .errors
        .iter()
        .map(|e| (e.row, e.rule.as_str()))
        .collect();
    assert_eq!(
        rules,
        [(31, "integer"), (32, "date_format"), (33, "required")]
    );
    account(&mut query, "acme", "acme_generic_R7", "2024-04-01").await;

    // The report again, its errors one page at a time.
    let page = imports
        .get_import(req(
            "acme",
            v1::GetImportRequest {
                import_id: report.import_id.clone(),
                errors_page_size: 2,
                errors_page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.errors.len(), 2);
    assert_eq!(page.error_count, 3);
    let rest = imports
        .get_import(req(
            "acme",
            v1::GetImportRequest {
                import_id: report.import_id.clone(),
                errors_page_size: 2,
                errors_page_token: page.next_errors_page_token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.errors.len(), 1);
    assert_eq!(rest.errors[0].row, 33);
    assert!(rest.next_errors_page_token.is_empty());
    // Reports belong to their tenant.
    let hidden = imports
        .get_import(req(
            "globex",
            v1::GetImportRequest {
                import_id: report.import_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), tonic::Code::NotFound);

    // The same rows again: a duplicate; in another order they are a new import, all unchanged.
    let again = imports
        .import_rows(req(
            "acme",
            v1::ImportRowsRequest {
                data_origin: String::new(),
                rows: rows.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate);
    rows.reverse();
    let reordered = imports
        .import_rows(req(
            "acme",
            v1::ImportRowsRequest {
                data_origin: String::new(),
                rows,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!reordered.duplicate);
    assert_eq!(
        (reordered.accepted, reordered.unchanged, reordered.rejected),
        (0, 30, 3)
    );

    // Refusals name what is wrong.
    let no_header = imports
        .upload(req(
            "acme",
            tokio_stream::iter(vec![v1::UploadRequest {
                part: Some(v1::upload_request::Part::Chunk(b"x".to_vec())),
            }]),
        ))
        .await
        .unwrap_err();
    assert_eq!(no_header.code(), tonic::Code::InvalidArgument);
    let not_csv = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        b"just some words\n",
    )
    .await
    .unwrap();
    assert_eq!(not_csv.rows_read, 0);
    assert!(not_csv.file_error.contains("snapshot_date"), "{not_csv:?}");

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused_and_imports_nothing() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.importer.max_upload_bytes = 1024;
    let platform = start(cfg).await;
    let mut imports = SnapshotImportsClient::new(channel(&platform).await);
    let mut csv = HEADER.to_owned();
    for i in 0..100 {
        csv += &format!("2024-03-01,X{i},0,1,0,West\n");
    }
    let refused = upload(&mut imports, "acme", v1::FileFormat::Csv, csv.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(
        refused.message().contains("1024 bytes"),
        "{}",
        refused.message()
    );
    platform.shutdown().await.unwrap();
}

/// 300,000 rows on the embedded default: far more than the mock broker keeps (about 5 MiB per
/// partition), so only the flow control between importer and projection gets them all into the
/// read model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_thousand_rows_reach_the_read_model_whole() {
    const ROWS: usize = 300_000;
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let mut query = QueryClient::new(ch);

    let mut csv = String::from(
        "snapshot_date,account_external_id,days_arrears_consecutive_source,\
         amt_remaining_installment_source,days_par_status_source,next_payment_due_at_source,\
         expected_maturity_date_source\n",
    );
    let mut expected = [0u64; 8];
    let mut outstanding_units = 0i64;
    for i in 0..ROWS {
        let arrears = i % 250;
        let amount = (i % 1000) as f64 + 0.25;
        csv += &format!(
            "2024-05-01,ACC{i:07},{arrears},{amount},bucket-{},2024-05-0{} 6:23:55,2026-01-31\n",
            i % 7,
            1 + i % 9
        );
        expected[paygo_snapshots::par::par_bucket(Some(arrears as i64)) as usize] += 1;
        outstanding_units += (amount * 10_000.0).round() as i64;
    }
    let mut messages = vec![v1::UploadRequest {
        part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
            format: v1::FileFormat::Csv as i32,
            data_origin: "bulk".into(),
            ..Default::default()
        })),
    }];
    for chunk in csv.as_bytes().chunks(1 << 20) {
        messages.push(v1::UploadRequest {
            part: Some(v1::upload_request::Part::Chunk(chunk.to_vec())),
        });
    }
    let report = imports
        .upload(req("bulk", tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (report.accepted, report.rejected),
        (ROWS as u64, 0),
        "{report:?}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let par = loop {
        let par = par(&mut query, "bulk", "2024-05-01").await;
        if par.accounts == ROWS as u64 {
            break par;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {ROWS} accounts arrived",
            par.accounts
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts: Vec<u64> = par.buckets.iter().map(|b| b.accounts).collect();
    assert_eq!(counts, expected);
    assert_eq!(par.outstanding, outstanding_units as f64 / 10_000.0);
    let last = account(
        &mut query,
        "bulk",
        &format!("bulk_bulk_ACC{:07}", ROWS - 1),
        "2024-05-01",
    )
    .await;
    assert_eq!(
        last.days_arrears_consecutive_source,
        Some(((ROWS - 1) % 250) as i64)
    );
    let accounts = platform.accounts().unwrap();
    assert_eq!(accounts.rejected_count(), 0);
    platform.shutdown().await.unwrap();
}

/// The embedded broker is memory: snapshots it acknowledged but the projection had not taken
/// when the process ended are gone. The next start notices it, and the same upload sent again
/// imports them instead of counting them unchanged — with a revision above the ones the read
/// model already holds, so it is not skipped as old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_lost_with_the_embedded_broker_are_imported_by_the_same_upload_again() {
    let arrears =
        |n: u32| first_file().replace("2024-03-02,A3,200,", &format!("2024-03-02,A3,{n},"));
    let dir = TempDir::new().unwrap();

    // Run 1: A3's day 2 reaches the read model at revisions 1 and 2.
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let mut query = QueryClient::new(ch);
    upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        first_file().as_bytes(),
    )
    .await
    .unwrap();
    let second = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        arrears(20).as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(second.accepted, 1);
    let a3 = account(&mut query, "acme", "acme_crm_A3", "2024-03-02").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while account(&mut query, "acme", "acme_crm_A3", "2024-03-02")
        .await
        .days_arrears_consecutive_source
        != Some(20)
    {
        assert!(tokio::time::Instant::now() < deadline, "{a3:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    platform.shutdown().await.unwrap();

    // Run 2: revision 3 is acknowledged by the embedded broker but never projected.
    let mut cfg = config(dir.path());
    cfg.projection.accounts = false;
    cfg.drain_timeout = Duration::from_millis(500);
    let platform = start(cfg).await;
    let mut imports = SnapshotImportsClient::new(channel(&platform).await);
    let third = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        arrears(45).as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(third.accepted, 1);
    // Shutdown cannot drain, so this run does not count as clean.
    platform.shutdown().await.unwrap();

    // Run 3: the same upload is no duplicate any more and brings A3 to 45.
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let mut query = QueryClient::new(ch);
    let again = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        arrears(45).as_bytes(),
    )
    .await
    .unwrap();
    assert!(
        !again.duplicate,
        "the report of the lost import was forgotten"
    );
    assert_eq!((again.accepted, again.unchanged, again.rejected), (1, 5, 1));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let a3 = account(&mut query, "acme", "acme_crm_A3", "2024-03-02").await;
        if a3.days_arrears_consecutive_source == Some(45) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A3 stayed at {a3:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Day 2's PAR counts A3 once, in its new bucket (31-60).
    let day2 = par(&mut query, "acme", "2024-03-02").await;
    assert_eq!(day2.accounts, 3);
    assert_eq!(bucket(&day2, "31-60").accounts, 1);
    platform.shutdown().await.unwrap();

    // After a clean run nothing is forgotten: the upload is a duplicate again.
    let platform = start(config(dir.path())).await;
    let mut imports = SnapshotImportsClient::new(channel(&platform).await);
    let fourth = upload(
        &mut imports,
        "acme",
        v1::FileFormat::Csv,
        arrears(45).as_bytes(),
    )
    .await
    .unwrap();
    assert!(fourth.duplicate);
    platform.shutdown().await.unwrap();
}
