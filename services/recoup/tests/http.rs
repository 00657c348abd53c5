//! The snapshot importer's HTTP API end to end, in process: real requests over loopback (a tiny
//! HTTP/1.1 client on a TCP stream) → the same import as gRPC → reports as JSON and CSV; request
//! size limits; the per-tenant rate limit shared with gRPC.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::http::{exchange, get, head, post, read_answer, xlsx};
use common::{channel, config, req, start};
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use serde_json::Value;
use snapshot_importer::import::ImportHasher;
use snapshot_importer::limits::LimiterClock;
use tempfile::TempDir;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const CSV: &str = "text/csv";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Three accounts, one with a comma decimal (row 3: the header is row 1) that CSV must quote.
const SNAPSHOTS_CSV: &str = "snapshot_date,account_external_id,amt_remaining_installment_source,\
                             days_arrears_consecutive_source\n\
                             2024-05-01,H1,100.5,0\n\
                             2024-05-01,H2,\"1,5\",3\n\
                             2024-05-01,H3,7,2\n";

fn counts(report: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| report[k].as_u64().unwrap();
    (n("rows_read"), n("accepted"), n("unchanged"), n("rejected"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_json_ndjson_and_xlsx_bodies_are_imported_and_reported() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let http = platform.http_addr.unwrap();
    assert!(platform.ready_line().contains(&format!(" http={http} ")));

    // CSV, with an origin and a file name.
    let path = "/v1/paygo_snapshots_ts?data_origin=crm&file_name=may.csv";
    let answer = post(http, "acme", path, CSV, SNAPSHOTS_CSV.as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer
            .header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let report = answer.json();
    assert_eq!(counts(&report), (3, 2, 0, 1), "{report}");
    assert_eq!(report["format"], "csv");
    assert_eq!(report["data_origin"], "crm");
    assert_eq!(report["file_name"], "may.csv");
    assert_eq!(report["duplicate"], false);
    assert_eq!(report["file_error"], Value::Null);
    assert_eq!(report["error_count"], 1);
    assert!(report["started_at"].as_str().unwrap().ends_with('Z'));
    assert!(report["finished_at"].as_str().unwrap() >= report["started_at"].as_str().unwrap());
    let error = &report["errors"][0];
    assert_eq!(
        (
            &error["row"],
            &error["column"],
            &error["value"],
            &error["rule"]
        ),
        (
            &Value::from(3),
            &Value::from("amt_remaining_installment_source"),
            &Value::from("1,5"),
            &Value::from("decimal_comma")
        )
    );
    let id = report["import_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);

    // The same body again: recognised, nothing imported.
    let again = post(http, "acme", path, CSV, SNAPSHOTS_CSV.as_bytes())
        .await
        .json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["import_id"], id.as_str());

    // The report again, its errors paged; it belongs to its tenant.
    let stored = get(http, "acme", &format!("/v1/imports/{id}")).await;
    assert_eq!(stored.status, 200);
    assert_eq!(counts(&stored.json()), (3, 2, 0, 1));
    assert_eq!(stored.json()["next_errors_page_token"], Value::Null);
    let hidden = get(http, "globex", &format!("/v1/imports/{id}")).await;
    assert_eq!(hidden.status, 404);
    assert_eq!(hidden.error(), format!("import {id} not found"));

    // The errors as CSV, quoted where needed.
    let csv = get(http, "acme", &format!("/v1/imports/{id}/errors.csv")).await;
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0], "row,column,value,rule,message");
    assert!(
        lines[1].starts_with("3,amt_remaining_installment_source,\"1,5\",decimal_comma,"),
        "{text}"
    );

    // A JSON array: one good row, one rejected (fraction in an integer column).
    let array = br#"[{"snapshot_date": "2024-05-02", "account_external_id": "J1", "days_arrears_consecutive_source": 4},
                    {"snapshot_date": "2024-05-02", "account_external_id": "J2", "days_arrears_consecutive_source": 4.5}]"#;
    let json = post(
        http,
        "acme",
        "/v1/paygo_snapshots_ts",
        "application/json; charset=utf-8",
        array,
    )
    .await;
    assert_eq!(json.status, 200, "{}", json.text());
    let json = json.json();
    assert_eq!(counts(&json), (2, 1, 0, 1), "{json}");
    assert_eq!(json["format"], "json");
    assert_eq!(json["data_origin"], "");
    assert_eq!(json["errors"][0]["rule"], "integer");

    // NDJSON: three rows, all good.
    let ndjson = (1..=3)
        .map(|i| format!(r#"{{"snapshot_date":"2024-05-03","account_external_id":"N{i}"}}"#))
        .collect::<Vec<_>>()
        .join("\n");
    let nd = post(
        http,
        "acme",
        "/v1/paygo_snapshots_ts",
        "application/x-ndjson",
        ndjson.as_bytes(),
    )
    .await
    .json();
    assert_eq!(counts(&nd), (3, 3, 0, 0), "{nd}");

    // XLSX, from a named sheet.
    let workbook = xlsx(
        "May",
        &[
            &[
                "snapshot_date",
                "account_external_id",
                "days_to_cutoff_source",
            ],
            &["2024-05-04", "X1", "5"],
            &["2024-05-04", "X2", "-3"],
        ],
    );
    let sheet = post(
        http,
        "acme",
        "/v1/paygo_snapshots_ts?sheet=May&file_name=may.xlsx",
        XLSX,
        &workbook,
    )
    .await;
    assert_eq!(sheet.status, 200, "{}", sheet.text());
    let sheet = sheet.json();
    assert_eq!(counts(&sheet), (2, 2, 0, 0), "{sheet}");
    assert_eq!(sheet["format"], "xlsx");
    let unknown_sheet = post(
        http,
        "acme",
        // The sheet is part of the import id: the same bytes are another import.
        "/v1/paygo_snapshots_ts?sheet=June",
        XLSX,
        &workbook,
    )
    .await
    .json();
    assert!(
        unknown_sheet["file_error"]
            .as_str()
            .unwrap()
            .contains("May"),
        "{unknown_sheet}"
    );

    // What HTTP imported, gRPC reports.
    let mut imports = SnapshotImportsClient::new(channel(&platform).await);
    let through_grpc = imports
        .get_import(req(
            "acme",
            v1::GetImportRequest {
                import_id: id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((through_grpc.accepted, through_grpc.rejected), (2, 1));

    // And the read models have it: the latest snapshot of an account, and the day's PAR.
    let mut query = QueryClient::new(channel(&platform).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let par = loop {
        let par = query
            .portfolio_par(req(
                "acme",
                v1::PortfolioParRequest {
                    snapshot_date: "2024-05-01".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        if par.accounts == 2 {
            break par;
        }
        assert!(tokio::time::Instant::now() < deadline, "{par:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // H1: 0 days, 100.5 outstanding; H3: 2 days, 7; the rejected H2 counts nowhere.
    let bucket = |name: &str| par.buckets.iter().find(|b| b.bucket == name).unwrap();
    assert_eq!((bucket("0").accounts, bucket("0").outstanding), (1, 100.5));
    assert_eq!(
        (bucket("1-7").accounts, bucket("1-7").outstanding),
        (1, 7.0)
    );
    assert_eq!(par.outstanding, 107.5);
    let h1 = query
        .get_account(req(
            "acme",
            v1::GetAccountRequest {
                account_uid: "acme_crm_H1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h1.amt_remaining_installment_source, Some(100.5));
    assert_eq!(h1.source_id.as_deref(), Some(id.as_str()));

    // The tenant's imports, the latest first; the CSV was the first of them.
    let list = get(http, "acme", "/v1/imports?page_size=100").await;
    assert_eq!(list.status, 200, "{}", list.text());
    let list = list.json();
    let imports = list["imports"].as_array().unwrap();
    assert!(imports.len() >= 4, "{list}");
    assert_eq!(imports.last().unwrap()["import_id"], id.as_str());
    assert_eq!(imports.last().unwrap()["file_name"], "may.csv");
    assert_eq!(list["next_page_token"], Value::Null);
    let first = get(http, "acme", "/v1/imports?page_size=1").await.json();
    assert_eq!(first["imports"].as_array().unwrap().len(), 1);
    assert!(first["next_page_token"].is_string(), "{first}");
    assert_eq!(
        get(http, "globex", "/v1/imports").await.json()["imports"],
        serde_json::json!([])
    );

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_json_with_the_right_status() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let http = platform.http_addr.unwrap();

    let xml = post(
        http,
        "acme",
        "/v1/paygo_snapshots_ts",
        "application/xml",
        b"<a/>",
    )
    .await;
    assert_eq!(xml.status, 415);
    let message = xml.error();
    for accepted in ["application/json", "application/x-ndjson", "text/csv", XLSX] {
        assert!(message.contains(accepted), "{message}");
    }
    let untyped = exchange(
        http,
        b"POST /v1/paygo_snapshots_ts HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}",
    )
    .await;
    assert_eq!(untyped.status, 415);
    assert!(untyped.error().contains("Content-Type is required"));

    let bad_tenant = get(http, "no spaces", "/v1/imports/x").await;
    assert_eq!(bad_tenant.status, 400);
    assert!(
        bad_tenant.error().contains("x-recoup-tenant"),
        "{bad_tenant:?}"
    );

    let twice = exchange(
        http,
        b"GET /v1/imports/x HTTP/1.1\r\nhost: x\r\nx-recoup-tenant: acme\r\nx-recoup-tenant: globex\r\n\r\n",
    )
    .await;
    assert_eq!(twice.status, 400);
    assert!(twice.error().contains("more than once"), "{twice:?}");

    let page = get(http, "acme", "/v1/imports/x?errors_page_size=10001").await;
    assert_eq!(page.status, 400);
    assert!(page.error().contains("errors_page_size"));
    let token = get(http, "acme", "/v1/imports/x?errors_page_token=nope").await;
    assert_eq!(token.status, 400);

    assert_eq!(get(http, "acme", "/v1/imports/x").await.status, 404);
    let csv = get(http, "acme", "/v1/imports/x/errors.csv").await;
    assert_eq!(csv.status, 404);
    assert_eq!(csv.error(), "import x not found");
    let nowhere = get(http, "acme", "/v2/nothing").await;
    assert_eq!(nowhere.status, 404);
    assert_eq!(nowhere.error(), "no such endpoint");
    let wrong_method = get(http, "acme", "/v1/paygo_snapshots_ts").await;
    assert_eq!(wrong_method.status, 405);
    assert!(!wrong_method.error().is_empty());
    // Names over their limits: the data origin is part of every account id, the file and sheet
    // names are kept in every report.
    let origin = format!("/v1/paygo_snapshots_ts?data_origin={}", "o".repeat(101));
    let long = post(http, "acme", &origin, "text/csv", b"snapshot_date\n").await;
    assert_eq!(long.status, 400);
    assert!(
        long.error().contains("data_origin is 101 bytes long"),
        "{long:?}"
    );
    let name = format!("/v1/paygo_snapshots_ts?file_name={}", "f".repeat(256));
    let long = post(http, "acme", &name, "text/csv", b"snapshot_date\n").await;
    assert_eq!(long.status, 400);
    assert!(
        long.error().contains("file_name is 256 bytes long"),
        "{long:?}"
    );
    // The list of imports pages as GetImport does: a size over the limit, a foreign token.
    let list = get(http, "acme", "/v1/imports?page_size=101").await;
    assert_eq!(list.status, 400);
    assert!(list.error().contains("page_size"), "{list:?}");
    let list = get(http, "acme", "/v1/imports?page_token=nope").await;
    assert_eq!(list.status, 400);

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_and_nothing_is_imported() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.importer.max_upload_bytes = 1024;
    let platform = start(cfg).await;
    let http = platform.http_addr.unwrap();
    let mut big = String::from("snapshot_date,account_external_id\n");
    for i in 0..200 {
        big += &format!("2024-05-01,BIG{i}\n");
    }
    assert!(big.len() > 3000);

    // Announced too large: refused before the body is sent (the client waits for 100-continue).
    let announced = exchange(
        http,
        head(
            "POST",
            "/v1/paygo_snapshots_ts",
            "acme",
            Some((CSV, big.len())),
            "expect: 100-continue\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(announced.status, 413);
    assert_eq!(
        announced.error(),
        "the upload is larger than the limit of 1024 bytes"
    );

    // Chunked, no length announced: refused at the chunk that crosses the limit.
    let mut request = head(
        "POST",
        "/v1/paygo_snapshots_ts",
        "acme",
        None,
        "content-type: text/csv\r\ntransfer-encoding: chunked\r\n",
    )
    .into_bytes();
    for chunk in big.as_bytes().chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let chunked = exchange(http, &request).await;
    assert_eq!(chunked.status, 413);
    assert!(chunked.error().contains("1024 bytes"));

    // Nothing was imported, nothing is left in the spool.
    let mut hasher = ImportHasher::new(v1::FileFormat::Csv, None);
    hasher.update(big.as_bytes());
    let id = hasher.finish();
    assert_eq!(
        get(http, "acme", &format!("/v1/imports/{id}")).await.status,
        404
    );
    let spool = dir.path().join("snapshot-importer/uploads");
    let left = std::fs::read_dir(&spool).map_or(0, |d| d.count());
    assert_eq!(left, 0);

    // A body within the limit still goes through.
    let small = post(
        http,
        "acme",
        "/v1/paygo_snapshots_ts",
        CSV,
        SNAPSHOTS_CSV.as_bytes(),
    )
    .await;
    assert_eq!(small.status, 200, "{}", small.text());

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_axums_default_limit_are_taken() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let http = platform.http_addr.unwrap();
    // About 3 MB in few rows: more than axum's default body limit of 2 MB.
    let mut csv = String::from("snapshot_date,account_external_id,notes\n");
    let padding = "x".repeat(1000);
    for i in 0..3000 {
        csv += &format!("2024-05-01,L{i},{padding}\n");
    }
    assert!(csv.len() > 3_000_000);
    let answer = post(http, "acme", "/v1/paygo_snapshots_ts", CSV, csv.as_bytes()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(counts(&answer.json()), (3000, 3000, 0, 0));
    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_past_their_budget_are_told_when_to_retry_over_http_and_grpc() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.importer.rate_limit_per_minute = std::num::NonZeroU32::new(5).unwrap();
    let platform = start(cfg).await;
    let http = platform.http_addr.unwrap();
    let mut imports = SnapshotImportsClient::new(channel(&platform).await);

    // Uploads, reports and refusals all count: 5 requests, then the 6th is refused.
    for _ in 0..2 {
        let ok = post(
            http,
            "acme",
            "/v1/paygo_snapshots_ts",
            CSV,
            SNAPSHOTS_CSV.as_bytes(),
        )
        .await;
        assert_eq!(ok.status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(http, "acme", "/v1/imports/none").await.status, 404);
    }
    let refused = get(http, "acme", "/v1/imports/none").await;
    assert_eq!(refused.status, 429);
    // One request every 12 s comes back.
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(
        refused.error(),
        format!("rate limit of 5 requests per minute for tenant acme exceeded; retry in {retry} s")
    );
    let upload = post(http, "acme", "/v1/paygo_snapshots_ts", CSV, b"x").await;
    assert_eq!(upload.status, 429);

    // The budget is the tenant's, whatever protocol it speaks.
    let grpc_refused = imports
        .get_import(req(
            "acme",
            v1::GetImportRequest {
                import_id: "none".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(grpc_refused.code(), tonic::Code::ResourceExhausted);
    let retry: u64 = grpc_refused
        .metadata()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert!(
        grpc_refused
            .message()
            .starts_with("rate limit of 5 requests per minute for tenant acme exceeded; retry in"),
        "{}",
        grpc_refused.message()
    );

    // Another tenant has a budget of its own: gRPC calls count, and the 6th is refused.
    assert_eq!(get(http, "globex", "/v1/imports/none").await.status, 404);
    for _ in 0..4 {
        let rows = imports
            .import_rows(req(
                "globex",
                v1::ImportRowsRequest {
                    data_origin: String::new(),
                    rows: Vec::new(),
                },
            ))
            .await;
        assert!(rows.is_ok(), "{rows:?}");
    }
    let sixth = imports
        .import_rows(req("globex", v1::ImportRowsRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(sixth.code(), tonic::Code::ResourceExhausted);
    assert!(sixth.metadata().get("retry-after").is_some());
    assert_eq!(get(http, "globex", "/v1/imports/none").await.status, 429);
    // And a third is untouched.
    assert_eq!(get(http, "initech", "/v1/imports/none").await.status, 404);

    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_budget_refuses_request_301() {
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    // The limiter's time stands still: "within a minute" holds however slow this machine is.
    let clock = LimiterClock::manual();
    cfg.importer.rate_limit_clock = clock.clone();
    let platform = start(cfg).await;
    let http = platform.http_addr.unwrap();

    // 301 cheap requests pipelined on one connection.
    let one = head("GET", "/v1/imports/unknown", "acme", None, "");
    let stream = TcpStream::connect(http).await.unwrap();
    let (read, mut write) = stream.into_split();
    write.write_all(one.repeat(301).as_bytes()).await.unwrap();
    let mut reader = BufReader::new(read);
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..301 {
        let answer = read_answer(&mut reader).await;
        statuses.push(answer.status);
        last = Some(answer);
    }
    assert!(statuses[..300].iter().all(|s| *s == 404), "{statuses:?}");
    let last = last.unwrap();
    assert_eq!(last.status, 429);
    assert_eq!(last.header("retry-after"), Some("1"));

    // 200 ms later the budget has one request again (300 per minute), and only one.
    clock.advance(Duration::from_millis(200));
    write.write_all(one.repeat(2).as_bytes()).await.unwrap();
    assert_eq!(read_answer(&mut reader).await.status, 404);
    assert_eq!(read_answer(&mut reader).await.status, 429);
    platform.shutdown().await.unwrap();
}
