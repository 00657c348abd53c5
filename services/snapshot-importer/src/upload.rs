//! Uploads: spooled to disk while hashed (the import id is the content hash, and XLSX needs a
//! seekable file), then opened with the reader of their format. [`Uploads`] is the one way both
//! front ends (gRPC `Upload`, HTTP `POST /v1/paygo_snapshots_ts`) turn an upload into an import.
//! Rows sent as a batch through the API are read by [`RowsReader`].

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{Stream, StreamExt};
use paygo_snapshots::{Columns, ImportContext};
use recoup_proto::v1;
use tokio::io::AsyncWriteExt;

use crate::admission::Admitted;
use crate::import::{ImportError, ImportHasher, ImportRequest, Importer};
use crate::readers::csv::CsvSnapshots;
use crate::readers::json::JsonSnapshots;
use crate::readers::xlsx::XlsxSnapshots;
use crate::readers::{FileError, ReadLimits, RowOutcome, SnapshotRows};

/// Largest upload by default: 100 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 100 * 1024 * 1024;

/// Opens a spooled upload with the reader of its format, within `limits`.
pub fn open_file(
    format: v1::FileFormat,
    path: &Path,
    sheet: Option<&str>,
    limits: &ReadLimits,
) -> Result<Box<dyn SnapshotRows + Send>, FileError> {
    let file = || {
        std::fs::File::open(path).map_err(|e| FileError::Io {
            row: 0,
            message: format!("cannot open the spooled upload: {e}"),
        })
    };
    Ok(match format {
        v1::FileFormat::Csv => Box::new(CsvSnapshots::with_limits(file()?, limits)?),
        v1::FileFormat::Json => Box::new(JsonSnapshots::with_limits(
            BufReader::with_capacity(256 * 1024, file()?),
            limits,
        )?),
        v1::FileFormat::Xlsx => Box::new(XlsxSnapshots::open_with(path, sheet, limits)?),
        v1::FileFormat::Rows | v1::FileFormat::Unspecified => {
            return Err(FileError::Unreadable {
                row: 0,
                message: format!("{} is not a file format", format.as_str_name()),
            });
        }
    })
}

/// An upload on disk, removed when dropped.
#[derive(Debug)]
pub struct Spooled {
    pub path: PathBuf,
    pub bytes: u64,
    pub import_id: String,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why an upload could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("cannot spool the upload: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes an upload's chunks to a file in `dir` while hashing them.
pub struct Spool {
    file: tokio::io::BufWriter<tokio::fs::File>,
    spooled: Spooled,
    hasher: ImportHasher,
    limit: u64,
}

impl Spool {
    pub async fn create(
        dir: &Path,
        format: v1::FileFormat,
        data_origin: Option<&str>,
        limit: u64,
    ) -> Result<Self, SpoolError> {
        tokio::fs::create_dir_all(dir).await?;
        let path = dir.join(format!("{}.upload", uuid::Uuid::now_v7()));
        let file = tokio::fs::File::create(&path).await?;
        Ok(Self {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            spooled: Spooled {
                path,
                bytes: 0,
                import_id: String::new(),
            },
            hasher: ImportHasher::new(format, data_origin),
            limit,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.spooled.bytes += chunk.len() as u64;
        if self.spooled.bytes > self.limit {
            return Err(SpoolError::TooLarge { limit: self.limit });
        }
        self.hasher.update(chunk);
        self.file.write_all(chunk).await?;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<Spooled, SpoolError> {
        self.file.flush().await?;
        self.file.get_ref().sync_data().await?;
        let mut spooled = self.spooled;
        spooled.import_id = self.hasher.finish();
        Ok(spooled)
    }
}

/// What an upload says about itself besides its bytes.
#[derive(Debug, Clone)]
pub struct FileUpload {
    /// CSV, XLSX or JSON.
    pub format: v1::FileFormat,
    /// `None`: the default origin (`generic`).
    pub data_origin: Option<String>,
    /// The name the client gave the file (reported, not used).
    pub file_name: String,
    /// The XLSX sheet to read; `None`: the first.
    pub sheet: Option<String>,
}

impl FileUpload {
    /// An upload as a request names it; blank origin and sheet mean the defaults.
    pub fn new(format: v1::FileFormat, data_origin: &str, file_name: &str, sheet: &str) -> Self {
        Self {
            format,
            data_origin: non_blank(data_origin),
            file_name: file_name.to_owned(),
            sheet: non_blank(sheet),
        }
    }
}

/// Longest data origin, in bytes: it is part of every account_uid of the import.
pub const MAX_DATA_ORIGIN_BYTES: usize = 100;
/// Longest file name and sheet name, in bytes: they are kept in every report.
pub const MAX_NAME_BYTES: usize = 255;

impl FileUpload {
    /// Refuses names longer than their limits; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        check_data_origin(self.data_origin.as_deref())?;
        for (field, value) in [
            ("file_name", Some(self.file_name.as_str())),
            ("sheet", self.sheet.as_deref()),
        ] {
            if let Some(value) = value.filter(|v| v.len() > MAX_NAME_BYTES) {
                return Err(format!(
                    "{field} is {} bytes long; at most {MAX_NAME_BYTES}",
                    value.len()
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a data origin longer than [`MAX_DATA_ORIGIN_BYTES`].
pub fn check_data_origin(data_origin: Option<&str>) -> Result<(), String> {
    match data_origin {
        Some(origin) if origin.len() > MAX_DATA_ORIGIN_BYTES => Err(format!(
            "data_origin is {} bytes long; at most {MAX_DATA_ORIGIN_BYTES}",
            origin.len()
        )),
        _ => Ok(()),
    }
}

/// A text trimmed, or `None` when nothing is left.
pub fn non_blank(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Why an upload was not imported. `E` is the front end's error for a body it could not read.
#[derive(Debug, thiserror::Error)]
pub enum UploadError<E> {
    #[error("the upload could not be received: {0}")]
    Body(E),
    /// A name of the upload is over its limit.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the upload sent nothing for {} s (--upload-idle-seconds); nothing of it was imported",
        idle.as_secs_f64()
    )]
    Idle { idle: Duration },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Import(#[from] ImportError),
}

/// Uploads into imports: where they are spooled, how large they may be, who imports them.
#[derive(Clone)]
pub struct Uploads {
    importer: Importer,
    spool_dir: PathBuf,
    max_bytes: u64,
    limits: ReadLimits,
    idle: Duration,
}

/// How long an upload may send nothing before it is dropped, by default.
pub const DEFAULT_UPLOAD_IDLE: Duration = Duration::from_secs(30);

impl Uploads {
    /// Uploads spooled in `spool_dir`, each at most `max_bytes` bytes, read within `limits`;
    /// one that sends nothing for `idle` is dropped.
    pub fn new(
        importer: Importer,
        spool_dir: PathBuf,
        max_bytes: u64,
        limits: ReadLimits,
        idle: Duration,
    ) -> Self {
        Self {
            importer,
            spool_dir,
            max_bytes,
            limits,
            idle,
        }
    }

    /// The importer behind the uploads (also for `ImportRows` and reports).
    pub fn importer(&self) -> &Importer {
        &self.importer
    }

    /// The largest upload taken, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Spools the chunks as they arrive (never more than one in memory), then imports the file
    /// for the tenant it was admitted for. An upload over the limit stops at the chunk that
    /// crosses it and imports nothing.
    pub async fn import<S, B, E>(
        &self,
        admitted: Admitted,
        upload: FileUpload,
        chunks: S,
    ) -> Result<v1::ImportReport, UploadError<E>>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
    {
        // Refused before the bytes are taken, not after.
        upload.check().map_err(UploadError::Invalid)?;
        if self.importer.kafka_unreachable() {
            return Err(ImportError::KafkaUnreachable.into());
        }
        let mut permit = self.importer.admit()?;
        let spooled = match permit.within(self.receive(&upload, chunks)).await {
            Ok(spooled) => spooled?,
            Err(stop) => return Err(ImportError::Stopped(stop).into()),
        };
        let path = spooled.path.clone();
        let limits = self.limits;
        let FileUpload {
            format,
            data_origin,
            file_name,
            sheet,
        } = upload;
        let report = self
            .importer
            .import(
                permit,
                ImportRequest {
                    tenant: admitted.tenant,
                    actor: admitted.actor,
                    import_id: spooled.import_id.clone(),
                    format,
                    data_origin,
                    file_name,
                },
                move || open_file(format, &path, sheet.as_deref(), &limits),
            )
            .await?;
        // The file stays until the import read it.
        drop(spooled);
        Ok(report)
    }
}

impl Uploads {
    /// Spools the chunks as they arrive; the file is removed if this is dropped before the
    /// end (a client gone, an import stopped).
    async fn receive<S, B, E>(
        &self,
        upload: &FileUpload,
        chunks: S,
    ) -> Result<Spooled, UploadError<E>>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
    {
        let mut spool = Spool::create(
            &self.spool_dir,
            upload.format,
            upload.data_origin.as_deref(),
            self.max_bytes,
        )
        .await?;
        if let Some(sheet) = &upload.sheet {
            // Another sheet of the same workbook is another import.
            spool.hasher.scope("sheet", sheet);
        }
        let mut chunks = std::pin::pin!(chunks);
        loop {
            let next = tokio::time::timeout(self.idle, chunks.next()).await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk.map_err(UploadError::Body)?,
                Ok(None) => break,
                Err(_) => return Err(UploadError::Idle { idle: self.idle }),
            };
            spool.write(chunk.as_ref()).await?;
        }
        Ok(spool.finish().await?)
    }
}

/// The import id of a batch of rows: the hash of each row's cells sorted by column.
pub fn rows_import_id(data_origin: Option<&str>, rows: &[v1::Row]) -> String {
    let mut hasher = ImportHasher::new(v1::FileFormat::Rows, data_origin);
    for row in rows {
        let mut cells: Vec<(&String, &String)> = row.cells.iter().collect();
        cells.sort();
        for (column, value) in cells {
            hasher.update(&(column.len() as u64).to_be_bytes());
            hasher.update(column.as_bytes());
            hasher.update(&(value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        hasher.update(b"\n");
    }
    hasher.finish()
}

/// Rows given as column → cell maps (the `ImportRows` call). Row numbers are positions in the
/// request, from 1. Columns are taken in name order.
pub struct RowsReader {
    rows: std::vec::IntoIter<v1::Row>,
    row: u64,
    /// The last row's column names and their mapping: rows of one batch share their columns.
    columns: Option<(Vec<String>, Columns)>,
}

impl RowsReader {
    pub fn new(rows: Vec<v1::Row>) -> Self {
        Self {
            rows: rows.into_iter(),
            row: 0,
            columns: None,
        }
    }
}

impl SnapshotRows for RowsReader {
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        let row = self.rows.next()?;
        self.row += 1;
        let mut cells: Vec<(String, String)> = row.cells.into_iter().collect();
        cells.sort();
        let names: Vec<String> = cells.iter().map(|(n, _)| n.clone()).collect();
        if self
            .columns
            .as_ref()
            .is_none_or(|(known, _)| *known != names)
        {
            self.columns = Some((names.clone(), Columns::new(&names)));
        }
        let (_, columns) = self.columns.as_ref()?;
        let values: Vec<&str> = cells.iter().map(|(_, v)| v.as_str()).collect();
        let result = columns.validate(self.row, &values, ctx);
        Some(Ok(RowOutcome::of(self.row, &names, &values, result)))
    }
}
