//! The bad-input corpus (`tests/data/bad/`, each file and its error listed in its README.md)
//! through gRPC `Upload` on one platform: every malformed file gives its per-row or per-file
//! error, the valid rows of the same file are imported and reach the read model, nothing
//! panics, and an upload over the size limit is refused and leaves nothing behind.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{channel, config, eventually, req, start};
use futures::{Stream, StreamExt};
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use snapshot_importer::import::ImportHasher;
use snapshot_importer::upload::DEFAULT_MAX_UPLOAD_BYTES;
use tempfile::TempDir;
use tonic::transport::Channel;

type Imports = SnapshotImportsClient<Channel>;
type Query = QueryClient<Channel>;

const TENANT: &str = "bad";
const ORIGIN: &str = "corpus";
/// The day of every valid row of the corpus.
const DAY: &str = "2024-06-01";
const CHUNK: usize = 1024 * 1024;

/// What one file must give.
enum Expect {
    /// Rows read, the accounts of the accepted rows, and every error as (row, column, rule).
    Rows {
        read: u64,
        accepted: &'static [&'static str],
        errors: &'static [(u64, &'static str, &'static str)],
    },
    /// Nothing is read; the file error says this.
    File(&'static str),
}

/// The committed corpus, in `tests/data/bad/`.
const CORPUS: &[(&str, Expect)] = &[
    (
        "comma_decimals.csv",
        Expect::Rows {
            read: 4,
            accepted: &["CD1", "CD4"],
            errors: &[
                (3, "amt_remaining_installment_source", "decimal_comma"),
                (4, "days_arrears_consecutive_source", "decimal_comma"),
            ],
        },
    ),
    (
        "integer_fractions.ndjson",
        Expect::Rows {
            read: 4,
            accepted: &["IF1", "IF3"],
            errors: &[
                (2, "days_arrears_consecutive_source", "integer"),
                (4, "days_to_cutoff_source", "integer"),
            ],
        },
    ),
    (
        "missing_required.csv",
        Expect::Rows {
            read: 4,
            accepted: &["MR1", "MR4"],
            errors: &[
                (3, "account_external_id", "required"),
                (4, "snapshot_date", "required"),
            ],
        },
    ),
    (
        "no_header.csv",
        Expect::File("no header row? the first row has no `snapshot_date` column"),
    ),
    (
        "duplicate_header.csv",
        Expect::File(
            "column `account_external_id` appears twice in the header, as columns 2 and 4",
        ),
    ),
    (
        "short_and_long_rows.csv",
        Expect::Rows {
            read: 4,
            accepted: &["SL1", "SL4"],
            errors: &[
                (3, "", "extra_cells"),
                (4, "account_external_id", "required"),
            ],
        },
    ),
    (
        "invalid_utf8.csv",
        Expect::Rows {
            read: 4,
            accepted: &["IU1", "IU4"],
            errors: &[
                (3, "region", "encoding"),
                (4, "account_external_id", "encoding"),
            ],
        },
    ),
    ("empty.csv", Expect::File("the file is empty")),
    (
        "not_a_zip.xlsx",
        Expect::File("not an XLSX file (not a zip archive)"),
    ),
    (
        "neither_array_nor_ndjson.json",
        Expect::File(
            "the body is neither a JSON array of objects nor NDJSON: it starts with \
             `\"snapshot_date=2024-`",
        ),
    ),
    (
        "object_not_array.json",
        Expect::File("its first line `{` is not a whole object"),
    ),
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/bad")
}

fn format_of(file: &str) -> v1::FileFormat {
    match file.rsplit_once('.').map(|(_, extension)| extension) {
        Some("csv") => v1::FileFormat::Csv,
        Some("xlsx") => v1::FileFormat::Xlsx,
        Some("json" | "ndjson") => v1::FileFormat::Json,
        other => panic!("no format for {file} ({other:?})"),
    }
}

async fn upload(
    imports: &mut Imports,
    format: v1::FileFormat,
    file_name: &str,
    chunks: impl Stream<Item = Vec<u8>> + Send + 'static,
) -> Result<v1::ImportReport, tonic::Status> {
    let header = v1::UploadRequest {
        part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
            format: format as i32,
            data_origin: ORIGIN.into(),
            file_name: file_name.into(),
            sheet: String::new(),
        })),
    };
    let messages = futures::stream::iter([header]).chain(chunks.map(|chunk| v1::UploadRequest {
        part: Some(v1::upload_request::Part::Chunk(chunk)),
    }));
    imports
        .upload(req(TENANT, messages))
        .await
        .map(tonic::Response::into_inner)
}

/// Uploads bytes in 1 MiB chunks (an empty file: the header alone).
async fn upload_bytes(imports: &mut Imports, file_name: &str, bytes: &[u8]) -> v1::ImportReport {
    let chunks: Vec<Vec<u8>> = bytes.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    upload(
        imports,
        format_of(file_name),
        file_name,
        futures::stream::iter(chunks),
    )
    .await
    .unwrap_or_else(|status| panic!("{file_name}: {status:?}"))
}

fn errors_of(report: &v1::ImportReport) -> Vec<(u64, &str, &str)> {
    report
        .errors
        .iter()
        .map(|e| (e.row, e.column.as_str(), e.rule.as_str()))
        .collect()
}

fn uid(account: &str) -> String {
    format!("{TENANT}_{ORIGIN}_{account}")
}

async fn in_read_model(query: &Query, account: &str) -> bool {
    let uid = uid(account);
    eventually(Duration::from_secs(20), || {
        let mut query = query.clone();
        let uid = uid.clone();
        async move {
            query
                .get_account(req(TENANT, v1::GetAccountRequest { account_uid: uid }))
                .await
                .is_ok_and(|a| a.into_inner().snapshot_date.as_deref() == Some(DAY))
        }
    })
    .await
}

/// 10,000-character cells: in a column that matches no field, and as the account id.
fn long_cells() -> String {
    let long = "x".repeat(10_000);
    format!(
        "snapshot_date,account_external_id,days_arrears_consecutive_source,region\n\
         {DAY},LC1,0,{long}\n\
         {DAY},{long},0,West\n\
         {DAY},LC3,1,East\n"
    )
}

/// Rows per generated chunk of the oversized upload, each row 26 bytes.
const BIG_ROWS_PER_CHUNK: usize = CHUNK / 26;
const BIG_CHUNKS: usize = 200;

/// One chunk of a 200 MiB CSV, made when the upload asks for it.
fn big_chunk(k: usize) -> Vec<u8> {
    let mut chunk = Vec::with_capacity(CHUNK);
    if k == 0 {
        chunk.extend_from_slice(b"snapshot_date,account_external_id,days_to_cutoff_source\n");
    }
    for i in 0..BIG_ROWS_PER_CHUNK {
        writeln!(chunk, "2024-07-01,B{k:03}{i:07},1").unwrap();
    }
    chunk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_file_gives_its_error_and_its_valid_rows_are_imported() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let query = QueryClient::new(ch);

    // The corpus and this table list the same files.
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "README.md")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CORPUS.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    let readme = std::fs::read_to_string(corpus_dir().join("README.md")).unwrap();
    for file in &listed {
        assert!(readme.contains(&format!("`{file}`")), "README lacks {file}");
    }

    let mut accepted = Vec::new();
    for (file, expect) in CORPUS {
        let bytes = std::fs::read(corpus_dir().join(file)).unwrap();
        let report = upload_bytes(&mut imports, file, &bytes).await;
        match expect {
            Expect::Rows {
                read,
                accepted: accounts,
                errors,
            } => {
                assert_eq!(report.file_error, "", "{file}");
                assert_eq!(
                    (
                        report.rows_read,
                        report.accepted,
                        report.unchanged,
                        report.rejected
                    ),
                    (
                        *read,
                        accounts.len() as u64,
                        0,
                        *read - accounts.len() as u64
                    ),
                    "{file}: {report:?}"
                );
                assert_eq!(errors_of(&report), *errors, "{file}");
                accepted.extend_from_slice(accounts);
            }
            Expect::File(text) => {
                assert!(
                    report.file_error.contains(text),
                    "{file}: {:?}",
                    report.file_error
                );
                assert_eq!((report.rows_read, report.accepted), (0, 0), "{file}");
            }
        }
        if *file == "comma_decimals.csv" {
            // The import id is the content hash: the oversized upload's id below is checked so.
            let mut hasher = ImportHasher::new(v1::FileFormat::Csv, Some(ORIGIN));
            hasher.update(&bytes);
            assert_eq!(hasher.finish(), report.import_id);
        }
    }

    // 10,000-character cells: refused for their rows, the value cut, the length named.
    let report = upload_bytes(&mut imports, "long_cells.csv", long_cells().as_bytes()).await;
    assert_eq!((report.rows_read, report.accepted), (3, 1), "{report:?}");
    assert_eq!(
        errors_of(&report),
        [
            (2, "region", "too_long"),
            (3, "account_external_id", "too_long")
        ]
    );
    for error in &report.errors {
        assert!(error.value.len() <= 4096, "{}", error.value.len());
        assert!(error.message.contains("10000 bytes"), "{}", error.message);
    }
    accepted.push("LC3");

    // Every accepted row reaches the read model, and nothing else does.
    for account in &accepted {
        assert!(
            in_read_model(&query, account).await,
            "{account} never arrived"
        );
    }
    let par = query
        .clone()
        .portfolio_par(req(
            TENANT,
            v1::PortfolioParRequest {
                snapshot_date: DAY.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(par.accounts, accepted.len() as u64);

    // 200 MiB, generated a chunk at a time, against the default limit of 100 MiB.
    let refused = upload(
        &mut imports,
        v1::FileFormat::Csv,
        "big.csv",
        futures::stream::iter((0..BIG_CHUNKS).map(big_chunk)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains(&format!("limit of {DEFAULT_MAX_UPLOAD_BYTES} bytes")),
        "{}",
        refused.message()
    );
    let mut hasher = ImportHasher::new(v1::FileFormat::Csv, Some(ORIGIN));
    for k in 0..BIG_CHUNKS {
        hasher.update(&big_chunk(k));
    }
    let missing = imports
        .get_import(req(
            TENANT,
            v1::GetImportRequest {
                import_id: hasher.finish(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let spooled = dir.path().join("snapshot-importer/uploads");
    let left = std::fs::read_dir(&spooled).map_or(0, Iterator::count);
    assert_eq!(left, 0, "the refused upload left its spool file");

    // Still serving: one more file is imported.
    let report = upload_bytes(
        &mut imports,
        "after.csv",
        format!("snapshot_date,account_external_id\n{DAY},AFTER1\n").as_bytes(),
    )
    .await;
    assert_eq!(report.accepted, 1, "{report:?}");
    assert!(in_read_model(&query, "AFTER1").await);

    platform.shutdown().await.unwrap();
}
