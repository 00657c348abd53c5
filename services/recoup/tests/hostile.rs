//! Hostile input against the real binary, over HTTP and gRPC: each attack gets a clear answer
//! (or a closed connection), the process keeps serving, its peak memory stays under 300 MB, and a stop
//! during an attack stays within its bound without losing what Kafka acknowledged.
//!
//! The server runs with short timeouts (2 s) so the suite takes seconds; the defaults are
//! longer (README, "Limits"). Overflowing money (`i64::MAX` amounts) is in `e2e.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::binary::Up;
use common::http::{Answer, exchange, head, read_answer};
use recoup_proto::v1;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

const CSV: &str = "text/csv";
const JSON: &str = "application/json";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const UPLOAD: &str = "/v1/paygo_snapshots_ts";
const PEAK_RSS_LIMIT: u64 = 300 * 1024 * 1024;
/// How far above its idle level memory may stay once the attacks are over.
const RSS_AFTER_LOAD: u64 = 64 * 1024 * 1024;

/// What the short-timeout server is started with.
const SHORT: &[&str] = &[
    "--header-timeout-seconds",
    "2",
    "--upload-idle-seconds",
    "2",
    "--max-connections-per-peer",
    "16",
    "--max-running-imports",
    "1",
    "--shutdown-grace",
    "2",
];

struct Server {
    up: Up,
    http: SocketAddr,
    grpc: SocketAddr,
    key: String,
}

impl Server {
    fn start(data: &std::path::Path, extra: &[&str]) -> Self {
        let up = Up::start(data, extra);
        Self {
            http: up.http.parse().unwrap(),
            grpc: up.grpc.parse().unwrap(),
            key: up.key(),
            up,
        }
    }

    fn head(&self, content_type: &str, length: usize) -> String {
        let auth = format!("authorization: Bearer {}\r\n", self.key);
        head(
            "POST",
            UPLOAD,
            "default",
            Some((content_type, length)),
            &auth,
        )
    }

    async fn upload(&self, content_type: &str, body: &[u8]) -> Answer {
        let mut request = self.head(content_type, body.len()).into_bytes();
        request.extend_from_slice(body);
        exchange(self.http, &request).await
    }

    /// A CSV upload sent as curl sends large ones (`Expect: 100-continue`): the body only
    /// once the server asks for it, so that a refusal before the body arrives is read, not
    /// lost in a reset. The answer's status.
    async fn upload_expecting(&self, body: &[u8]) -> u16 {
        let stream = TcpStream::connect(self.http).await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let head = self
            .head(CSV, body.len())
            .replace("\r\n\r\n", "\r\nexpect: 100-continue\r\n\r\n");
        write.write_all(head.as_bytes()).await.unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
        if status != 100 {
            return status;
        }
        reader.read_line(&mut line).await.unwrap();
        write.write_all(body).await.unwrap();
        read_answer(&mut reader).await.status
    }

    /// The process answers: `/metrics` on the gRPC port and the importer's HTTP API.
    async fn assert_serving(&self) {
        let metrics = exchange(self.grpc, b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert_eq!(metrics.status, 200);
        let auth = format!("authorization: Bearer {}\r\n", self.key);
        let missing = head("GET", "/v1/imports/none", "default", None, &auth);
        assert_eq!(exchange(self.http, missing.as_bytes()).await.status, 404);
    }

    /// `body` sent through gRPC `Upload` (data origin `grpc`), in 1 MiB chunks.
    async fn grpc_upload(&self, format: v1::FileFormat, body: &[u8]) -> v1::ImportReport {
        use v1::upload_request::Part;
        let header = Part::Header(v1::UploadHeader {
            format: format as i32,
            data_origin: "grpc".into(),
            file_name: "upload".into(),
            sheet: String::new(),
        });
        let parts =
            std::iter::once(header).chain(body.chunks(1 << 20).map(|c| Part::Chunk(c.to_vec())));
        let messages: Vec<v1::UploadRequest> = parts
            .map(|part| v1::UploadRequest { part: Some(part) })
            .collect();
        let mut request = tonic::Request::new(futures::stream::iter(messages));
        let auth = format!("Bearer {}", self.key).parse().unwrap();
        request.metadata_mut().insert("authorization", auth);
        request
            .metadata_mut()
            .insert("x-recoup-tenant", "default".parse().unwrap());
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        SnapshotImportsClient::new(channel)
            .upload(request)
            .await
            .unwrap()
            .into_inner()
    }

    fn spooled_uploads(&self) -> usize {
        std::fs::read_dir(self.up.data.join("snapshot-importer/uploads"))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }
}

/// A connection to `to` from the loopback address `from` (attacks come from their own
/// address, so the per-peer limit does not refuse the test's own requests).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// How long until the server closes `stream` (reads end or fail), at most `within`.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// A workbook of one sheet whose one data cell is `cell_bytes` of `x`, written in pieces:
/// about 1 MiB on the wire per GiB inflated.
fn xlsx_bomb(cell_bytes: usize) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("xl/worksheets/sheet1.xml", options).unwrap();
    zip.write_all(
        br#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>"#,
    )
    .unwrap();
    let piece = vec![b'x'; 1 << 20];
    for _ in 0..cell_bytes / piece.len() {
        zip.write_all(&piece).unwrap();
    }
    zip.write_all(b"</t></is></c></row></sheetData></worksheet>")
        .unwrap();
    zip.finish().unwrap().into_inner()
}

/// A workbook whose shared strings part holds `count` strings.
fn shared_strings(count: usize) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("xl/sharedStrings.xml", options).unwrap();
    zip.write_all(br#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#)
        .unwrap();
    for _ in 0..count {
        zip.write_all(b"<si><t>a</t></si>").unwrap();
    }
    zip.write_all(b"</sst>").unwrap();
    zip.finish().unwrap().into_inner()
}

fn file_error(answer: &Answer) -> String {
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["file_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn row_rules(answer: &Answer) -> Vec<String> {
    let report = answer.json();
    report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_files_get_clear_errors_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHORT);
    server.assert_serving().await;
    let idle = server.up.rss();

    // A 1 MiB workbook inflating to 1 GiB: refused before it is inflated.
    let bomb = xlsx_bomb(1 << 30);
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let refused = file_error(&server.upload(XLSX, &bomb).await);
    assert!(
        refused.contains("over a limit") && refused.contains("--max-record-bytes"),
        "{refused}"
    );
    server.assert_serving().await;
    // The same through gRPC `Upload`, in 1 MiB chunks: the same refusal.
    let refused = server
        .grpc_upload(v1::FileFormat::Xlsx, &bomb)
        .await
        .file_error;
    assert!(
        refused.contains("over a limit") && refused.contains("--max-record-bytes"),
        "{refused}"
    );

    // Two million shared strings, which calamine would keep in memory.
    let refused = file_error(&server.upload(XLSX, &shared_strings(2_000_000)).await);
    assert!(
        refused.contains("more than 1000000 shared strings"),
        "{refused}"
    );

    // A header of a million columns (7 MiB): one record over the limit, refused at once.
    let mut header = (0..1_000_000)
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(",");
    header.push('\n');
    let refused = file_error(&server.upload(CSV, header.as_bytes()).await);
    assert!(
        refused.contains("header row is longer than the limit"),
        "{refused}"
    );

    // A single 99 MiB line: its row's error, the rows around it imported.
    let mut line =
        b"snapshot_date,account_external_id,notes\n2021-05-03,A,ok\n2021-05-03,B,".to_vec();
    line.resize(line.len() + (99 << 20), b'y');
    line.extend_from_slice(b"\n2021-05-03,C,ok\n");
    let answer = server.upload(CSV, &line).await;
    assert_eq!(answer.json()["accepted"], 2, "{:?}", answer.json());
    assert_eq!(row_rules(&answer), ["too_long"]);
    drop(line);

    // A JSON element nested 40 million levels deep: its row's error.
    let mut nested =
        br#"[{"snapshot_date": "2021-05-03", "account_external_id": "N", "custom": "#.to_vec();
    nested.resize(nested.len() + 40_000_000, b'[');
    nested.resize(nested.len() + 40_000_000, b']');
    nested.extend_from_slice(br#"}, {"snapshot_date": "2021-05-03", "account_external_id": "M"}]"#);
    let answer = server.upload(JSON, &nested).await;
    assert_eq!(answer.json()["accepted"], 1, "{:?}", answer.json());
    assert_eq!(row_rules(&answer), ["too_long"]);
    drop(nested);

    server.assert_serving().await;
    let peak = server.up.peak_rss();
    eprintln!("peak RSS of the server: {} MiB", peak >> 20);
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} MiB", peak >> 20);
    // After the attacks on files, memory goes back near where it started (the allocator
    // returns freed pages after a moment).
    let settled = Instant::now();
    let mut after = server.up.rss();
    while after >= idle + RSS_AFTER_LOAD && settled.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = server.up.rss();
    }
    eprintln!(
        "RSS idle {} MiB, after the attacks {} MiB",
        idle >> 20,
        after >> 20
    );
    assert!(
        after < idle + RSS_AFTER_LOAD,
        "RSS {} MiB after, {} MiB idle",
        after >> 20,
        idle >> 20
    );

    // Then imports: 12 uploads at once (the per-peer limit is 16); as many as may run are
    // imported, the others are told when to retry.
    let uploads = (0..12).map(|n| {
        let body = accounts_from(n * 20_000, 20_000);
        let server = &server;
        async move { server.upload_expecting(&body).await }
    });
    let statuses = futures::future::join_all(uploads).await;
    let imported = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        imported >= 1 && refused >= 1 && imported + refused == 12,
        "{statuses:?}"
    );

    let peak = server.up.peak_rss();
    eprintln!("peak RSS of the server with imports: {} MiB", peak >> 20);
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} MiB", peak >> 20);
    assert!(server.up.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_numerous_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHORT);
    let bound = Duration::from_secs(8);

    // Headers trickled a byte every half second: closed at the header timeout.
    let mut slow = connect_from([127, 0, 0, 2], server.http).await;
    let request = server.head(CSV, 100);
    let trickle = async {
        for byte in request.as_bytes() {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let started = Instant::now();
    let _ = tokio::time::timeout(bound, trickle).await;
    assert!(
        started.elapsed() < bound,
        "the trickled headers were never cut off"
    );

    // Sockets that send nothing, on both listeners: closed at the header timeout.
    let mut idle = Vec::new();
    let connected = Instant::now();
    for to in [server.http, server.grpc] {
        for _ in 0..5 {
            idle.push(connect_from([127, 0, 0, 3], to).await);
        }
    }
    for stream in &mut idle {
        closed_after(stream, bound)
            .await
            .expect("an idle socket stayed open");
    }
    let all_closed = connected.elapsed();
    assert!(
        all_closed >= Duration::from_millis(1500) && all_closed < bound,
        "closed after {all_closed:?}, not at the 2 s header timeout"
    );

    // A body that stops: 408 at the upload idle timeout, and its spool file is gone.
    let mut stalled = TcpStream::connect(server.http).await.unwrap();
    let mut request = server.head(CSV, 1_000_000).into_bytes();
    request.extend_from_slice(b"snapshot_date,account_external_id\n2021-05-03,A\n");
    stalled.write_all(&request).await.unwrap();
    let (read, _write) = stalled.into_split();
    let answer = tokio::time::timeout(bound, read_answer(&mut BufReader::new(read)))
        .await
        .unwrap();
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(
        answer.error().contains("--upload-idle-seconds"),
        "{}",
        answer.error()
    );
    assert_eq!(server.spooled_uploads(), 0);

    // More connections from one address than it may have: those past 16 closed at once.
    let mut many = Vec::new();
    for _ in 0..40 {
        many.push(connect_from([127, 0, 0, 4], server.http).await);
    }
    // Looked at together: those let in are closed only at the header timeout.
    let closing = many
        .iter_mut()
        .map(|stream| closed_after(stream, Duration::from_millis(500)));
    let refused = futures::future::join_all(closing)
        .await
        .iter()
        .filter(|closed| closed.is_some())
        .count();
    assert_eq!(refused, 24, "40 connections, 16 allowed");
    // Others are served meanwhile.
    server.assert_serving().await;
    drop(many);

    // A second import while one is received: refused with a wait.
    let mut holding = TcpStream::connect(server.http).await.unwrap();
    holding
        .write_all(server.head(CSV, 1_000_000).as_bytes())
        .await
        .unwrap();
    holding
        .write_all(b"snapshot_date,account_external_id\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = server
        .upload(CSV, b"snapshot_date,account_external_id\n2021-05-03,B\n")
        .await;
    assert_eq!(busy.status, 429, "{}", busy.text());
    assert_eq!(busy.header("retry-after"), Some("5"));
    assert!(
        busy.error().contains("--max-running-imports"),
        "{}",
        busy.error()
    );
    drop(holding);

    let peak = server.up.peak_rss();
    eprintln!("peak RSS of the server: {} MiB", peak >> 20);
    assert!(peak < PEAK_RSS_LIMIT, "peak RSS {} MiB", peak >> 20);
    assert!(server.up.stop().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_trickled_upload_exits_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), SHORT);
    let mut trickling = TcpStream::connect(server.http).await.unwrap();
    trickling
        .write_all(server.head(CSV, 1_000_000).as_bytes())
        .await
        .unwrap();
    let feed = tokio::spawn(async move {
        // A byte a second, under the idle timeout: only the shutdown ends it.
        for _ in 0..60 {
            if trickling.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopping = Instant::now();
    server.up.terminate();
    let status = tokio::task::spawn_blocking(move || server.up.wait())
        .await
        .unwrap();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    // 2 s of grace, 2 s for cancelled requests to answer, and the rest of the shutdown.
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    feed.abort();
}

/// A CSV of `rows` accounts on one day.
fn accounts(rows: usize) -> Vec<u8> {
    accounts_from(0, rows)
}

/// A CSV of `rows` accounts on one day, numbered from `first`.
fn accounts_from(first: usize, rows: usize) -> Vec<u8> {
    let mut csv =
        String::from("snapshot_date,account_external_id,amt_remaining_installment_source\n");
    for i in first..first + rows {
        csv += &format!("2021-05-03,ACC-{i:07},{}\n", 100 + i % 900);
    }
    csv.into_bytes()
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_long_import_cancels_it_and_loses_nothing_acknowledged() {
    const ROWS: usize = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let grace = ["--shutdown-grace", "1"];
    let server = Server::start(dir.path(), &grace);
    let file = accounts(ROWS);
    let request = {
        let mut request = server.head(CSV, file.len()).into_bytes();
        request.extend_from_slice(&file);
        request
    };
    let http = server.http;
    let upload = tokio::spawn(async move { exchange(http, &request).await });
    // Long enough to be importing, far from done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopping = Instant::now();
    server.up.terminate();
    let answer = upload.await.unwrap();
    let status = tokio::task::spawn_blocking(move || server.up.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert!(
        answer.error().contains("send the same upload again"),
        "{}",
        answer.error()
    );

    // The same upload to the restarted server imports the rest: every row once, those Kafka
    // had acknowledged before the stop counted as unchanged.
    let server = Server::start(dir.path(), &[]);
    let again = server.upload(CSV, &file).await;
    let report = again.json();
    let (accepted, unchanged) = (
        report["accepted"].as_u64().unwrap(),
        report["unchanged"].as_u64().unwrap(),
    );
    assert_eq!(accepted + unchanged, ROWS as u64, "{report}");
    assert!(
        unchanged > 0,
        "nothing was kept from the cancelled import: {report}"
    );
    assert!(server.up.stop().success());
}
