//! `recoup import snapshots FILE...`: uploads PAYGo snapshot files to a running recoup over gRPC
//! (`SnapshotImports.Upload`), one file at a time, read from disk a chunk at a time. Shows a
//! progress bar per file, prints each import's summary, writes the rejected rows' errors beside
//! the file and fails when any row was rejected.

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::client::request;
use crate::credential::{CredentialArgs, Link, TlsClientArgs, connect};
use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures::{Stream, StreamExt};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use recoup_proto::snapshots::{ERRORS_CSV_HEADER, error_csv_record};
use recoup_proto::tenant::validate_tenant;
use recoup_proto::v1;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// Bytes per upload message: well below the server's 8 MiB message limit.
const CHUNK_BYTES: u64 = 1024 * 1024;
/// Errors per `GetImport` page when writing the errors file (the server's maximum).
const ERRORS_PAGE: u32 = 10_000;

#[derive(Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    command: ImportCommand,
}

#[derive(Subcommand)]
enum ImportCommand {
    /// Upload PAYGo account snapshot files (CSV, XLSX, JSON array or NDJSON), one import each.
    ///
    /// Files are sent in order, each in 1 MiB chunks, with a progress bar on a terminal. Each
    /// gets one summary line:
    /// `FILE: import <id>: read N, accepted A, unchanged U, rejected R (X rows/s)`. Where rows
    /// were rejected, every error goes to FILE.errors.csv beside the file
    /// (row,column,value,rule,message). Exits 1 if any row was rejected or a file could not be
    /// read whole (after importing the other files); stops at the first refusal of the server
    /// or transport error.
    Snapshots(SnapshotsArgs),
}

#[derive(Args)]
struct SnapshotsArgs {
    /// The files to import.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Tenant sent as x-recoup-tenant; unset: the first tenant of the API key (the tenant
    /// "default" when the server runs with --insecure).
    #[arg(long, env = "RECOUP_TENANT")]
    tenant: Option<String>,
    #[command(flatten)]
    credential: CredentialArgs,
    #[command(flatten)]
    tls: TlsClientArgs,
    /// The name the source gives itself (data_origin, part of every account_uid); unset:
    /// "generic".
    #[arg(long, value_name = "NAME")]
    origin: Option<String>,
    /// XLSX: the sheet to read; unset: the first.
    #[arg(long, value_name = "NAME")]
    sheet: Option<String>,
    /// The format of every file; unset: from each file's extension (.csv, .xlsx, .json,
    /// .ndjson, .jsonl).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// The recoup gRPC endpoint (host:port).
    #[arg(long, env = "RECOUP_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: String,
}

/// A file format as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Csv,
    Xlsx,
    /// A JSON array of objects, or NDJSON (one object per line).
    Json,
}

impl Format {
    fn of(path: &Path) -> Option<Self> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "csv" => Some(Self::Csv),
            "xlsx" => Some(Self::Xlsx),
            "json" | "ndjson" | "jsonl" => Some(Self::Json),
            _ => None,
        }
    }

    fn wire(self) -> v1::FileFormat {
        match self {
            Self::Csv => v1::FileFormat::Csv,
            Self::Xlsx => v1::FileFormat::Xlsx,
            Self::Json => v1::FileFormat::Json,
        }
    }
}

/// One file to upload, checked before anything is sent.
struct SnapshotFile {
    path: PathBuf,
    format: Format,
    bytes: u64,
}

impl SnapshotFile {
    fn check(path: &Path, format: Option<Format>) -> anyhow::Result<Self> {
        let shown = path.display();
        let format = match format.or_else(|| Format::of(path)) {
            Some(format) => format,
            None => bail!(
                "{shown}: cannot tell the format from the file name: use .csv, .xlsx, .json, \
                 .ndjson or .jsonl, or pass --format csv|xlsx|json"
            ),
        };
        let metadata = std::fs::metadata(path).with_context(|| shown.to_string())?;
        if !metadata.is_file() {
            bail!("{shown}: not a file");
        }
        Ok(Self {
            path: path.to_path_buf(),
            format,
            bytes: metadata.len(),
        })
    }

    /// `FILE.errors.csv`, beside the file.
    fn errors_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".errors.csv");
        PathBuf::from(name)
    }
}

type Imports = SnapshotImportsClient<Link>;

/// Imports every file in order. `Ok(FAILURE)` when a row was rejected or a file could not be
/// read whole (after the other files); `Err` stops at a refusal or a transport error.
pub async fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let ImportCommand::Snapshots(args) = args.command;
    if let Some(tenant) = &args.tenant {
        validate_tenant(tenant).map_err(|e| anyhow!("--tenant: {e}"))?;
    }
    let files = args
        .files
        .iter()
        .map(|path| SnapshotFile::check(path, args.format))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let channel = connect(&args.grpc_addr, &args.credential, &args.tls).await?;
    let mut imports = SnapshotImportsClient::new(channel);
    let mut any_failed = false;
    for file in &files {
        let started = Instant::now();
        let report = upload(&mut imports, &args, file).await?;
        println!("{}", summary(file, &report, started.elapsed()));
        any_failed |= report.rejected > 0 || !report.file_error.is_empty();
        if report.rejected > 0 {
            let errors = write_errors(&mut imports, args.tenant.as_deref(), file, report).await?;
            println!(
                "{}: {errors} error{} written to {}",
                file.path.display(),
                if errors == 1 { "" } else { "s" },
                file.errors_path().display()
            );
        }
    }
    Ok(if any_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `FILE: import <id>: read N, accepted A, unchanged U, rejected R (X rows/s)`, then
/// `, duplicate of an earlier import` and `, file error: …` where they apply.
fn summary(file: &SnapshotFile, report: &v1::ImportReport, elapsed: Duration) -> String {
    let rate = report.rows_read as f64 / elapsed.as_secs_f64().max(1e-3);
    let mut line = format!(
        "{}: import {}: read {}, accepted {}, unchanged {}, rejected {} ({rate:.0} rows/s)",
        file.path.display(),
        report.import_id,
        report.rows_read,
        report.accepted,
        report.unchanged,
        report.rejected
    );
    if report.duplicate {
        line.push_str(", duplicate of an earlier import");
    }
    if !report.file_error.is_empty() {
        line.push_str(", file error: ");
        line.push_str(&report.file_error);
    }
    line
}

/// Sends one file and waits for its report, with a progress bar while it goes.
async fn upload(
    imports: &mut Imports,
    args: &SnapshotsArgs,
    file: &SnapshotFile,
) -> anyhow::Result<v1::ImportReport> {
    let shown = file.path.display();
    let opened = tokio::fs::File::open(&file.path)
        .await
        .with_context(|| shown.to_string())?;
    let bar = progress_bar(file);
    let header = v1::UploadHeader {
        format: file.format.wire() as i32,
        data_origin: args.origin.clone().unwrap_or_default(),
        file_name: file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sheet: args.sheet.clone().unwrap_or_default(),
    };
    let (read_failed, read_error) = oneshot::channel();
    let chunks = FileChunks {
        file: opened,
        progress: Progress::new(bar.clone(), file.format),
        read_failed: Some(read_failed),
    };
    let messages = futures::stream::iter([v1::UploadRequest {
        part: Some(v1::upload_request::Part::Header(header)),
    }])
    .chain(chunks.into_stream());
    let call = imports.upload(request(args.tenant.as_deref(), messages)?);
    let outcome = tokio::select! {
        reply = call => reply.map(tonic::Response::into_inner).map_err(|status| refusal(&shown, &status)),
        // Dropping the call cancels the upload: the server imports nothing.
        Ok(error) = read_error => Err(anyhow!("{shown}: cannot read: {error}")),
    };
    bar.finish_and_clear();
    outcome
}

/// A bar over the file's bytes with a rows estimate, or bytes per second where lines are no
/// rows. Hidden when stderr is not a terminal.
fn progress_bar(file: &SnapshotFile) -> ProgressBar {
    let bar = ProgressBar::new(file.bytes);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(file.path.display().to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// How the bar counts rows while the bytes go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowCount {
    /// One row per line (CSV: minus the header line), as an estimate: quoted line breaks and
    /// blank lines count too.
    Lines { header: bool },
    /// No row boundaries worth counting (XLSX, JSON arrays): bytes per second.
    Bytes,
    /// JSON: an array or NDJSON, told by the first byte that is not whitespace.
    Sniff,
}

struct Progress {
    bar: ProgressBar,
    count: RowCount,
    newlines: u64,
    started: Instant,
}

impl Progress {
    fn new(bar: ProgressBar, format: Format) -> Self {
        let count = match format {
            Format::Csv => RowCount::Lines { header: true },
            Format::Xlsx => RowCount::Bytes,
            Format::Json => RowCount::Sniff,
        };
        Self {
            bar,
            count,
            newlines: 0,
            started: Instant::now(),
        }
    }

    fn sent(&mut self, chunk: &[u8]) {
        if self.count == RowCount::Sniff {
            let first = chunk
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0xef | 0xbb | 0xbf));
            self.count = match first {
                Some(b'{') => RowCount::Lines { header: false },
                Some(_) => RowCount::Bytes,
                None => RowCount::Sniff,
            };
        }
        self.bar.inc(chunk.len() as u64);
        let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
        let message = match self.count {
            RowCount::Lines { header } => {
                self.newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                let rows = self.newlines.saturating_sub(u64::from(header));
                format!("~{rows} rows, {:.0} rows/s", rows as f64 / seconds)
            }
            RowCount::Bytes | RowCount::Sniff => {
                let sent = self.bar.position();
                format!("{}/s", HumanBytes((sent as f64 / seconds) as u64))
            }
        };
        self.bar.set_message(message);
    }

    /// The server reads the file only once it has it all: the wait is the import.
    fn all_sent(&self) {
        let message = match self.count {
            RowCount::Lines { header } => format!(
                "~{} rows sent, importing",
                self.newlines.saturating_sub(u64::from(header))
            ),
            RowCount::Bytes | RowCount::Sniff => "sent, importing".to_owned(),
        };
        self.bar.set_message(message);
    }
}

/// A file read a chunk at a time as the upload asks for it: never more than one chunk in memory.
struct FileChunks {
    file: tokio::fs::File,
    progress: Progress,
    read_failed: Option<oneshot::Sender<io::Error>>,
}

impl FileChunks {
    async fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES as usize);
        (&mut self.file)
            .take(CHUNK_BYTES)
            .read_to_end(&mut chunk)
            .await?;
        if chunk.is_empty() {
            return Ok(None);
        }
        self.progress.sent(&chunk);
        Ok(Some(chunk))
    }

    fn into_stream(self) -> impl Stream<Item = v1::UploadRequest> + Send + 'static {
        futures::stream::unfold(self, |mut chunks| async move {
            match chunks.next_chunk().await {
                Ok(Some(chunk)) => Some((
                    v1::UploadRequest {
                        part: Some(v1::upload_request::Part::Chunk(chunk)),
                    },
                    chunks,
                )),
                Ok(None) => {
                    chunks.progress.all_sent();
                    None
                }
                Err(error) => {
                    if let Some(failed) = chunks.read_failed.take() {
                        let _ = failed.send(error);
                    }
                    // An ended stream is a complete upload: stay open until the call is dropped.
                    futures::future::pending::<()>().await;
                    None
                }
            }
        })
    }
}

/// Fetches every error of the import, page by page, into `FILE.errors.csv`; returns how many.
async fn write_errors(
    imports: &mut Imports,
    tenant: Option<&str>,
    file: &SnapshotFile,
    report: v1::ImportReport,
) -> anyhow::Result<u64> {
    let path = file.errors_path();
    let shown = path.display();
    let mut writer = csv::Writer::from_path(&path).with_context(|| shown.to_string())?;
    writer
        .write_record(ERRORS_CSV_HEADER)
        .with_context(|| shown.to_string())?;
    let mut written = 0;
    let mut page = report;
    loop {
        for e in &page.errors {
            writer
                .write_record(error_csv_record(e))
                .with_context(|| shown.to_string())?;
            written += 1;
        }
        if page.next_errors_page_token.is_empty() {
            break;
        }
        page = imports
            .get_import(request(
                tenant,
                v1::GetImportRequest {
                    import_id: page.import_id.clone(),
                    errors_page_size: ERRORS_PAGE,
                    errors_page_token: page.next_errors_page_token.clone(),
                },
            )?)
            .await
            .map_err(|status| refusal(&file.path.display(), &status))?
            .into_inner();
    }
    writer.flush().with_context(|| shown.to_string())?;
    Ok(written)
}

/// A refusal as one line: the file, the gRPC code as the protocol names it, the message, and
/// when to retry if the server said so.
fn refusal(file: &impl std::fmt::Display, status: &tonic::Status) -> anyhow::Error {
    let retry = status
        .metadata()
        .get(snapshot_importer::grpc::RETRY_AFTER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|seconds| format!(" (retry after {seconds} s)"))
        .unwrap_or_default();
    anyhow!(
        "{file}: {}: {}{retry}",
        code_name(status.code()),
        status.message()
    )
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_extension() {
        assert_eq!(Format::of(Path::new("a/b.CSV")), Some(Format::Csv));
        assert_eq!(Format::of(Path::new("b.xlsx")), Some(Format::Xlsx));
        for name in ["b.json", "b.ndjson", "b.jsonl"] {
            assert_eq!(Format::of(Path::new(name)), Some(Format::Json));
        }
        assert_eq!(Format::of(Path::new("b.txt")), None);
        assert_eq!(Format::of(Path::new("csv")), None);
    }

    #[test]
    fn csv_rows_are_estimated_from_lines_json_arrays_in_bytes() {
        let mut csv = Progress::new(ProgressBar::hidden(), Format::Csv);
        csv.sent(b"snapshot_date,account_external_id\n2024-01-01,A\n");
        csv.sent(b"2024-01-01,B\n");
        assert!(
            csv.bar.message().starts_with("~2 rows, "),
            "{}",
            csv.bar.message()
        );
        let mut ndjson = Progress::new(ProgressBar::hidden(), Format::Json);
        ndjson.sent(b"\n {\"a\": 1}\n{\"a\": 2}\n");
        assert_eq!(ndjson.count, RowCount::Lines { header: false });
        let mut array = Progress::new(ProgressBar::hidden(), Format::Json);
        array.sent(b"[{\"a\": 1},\n{\"a\": 2}]");
        assert_eq!(array.count, RowCount::Bytes);
    }
}
