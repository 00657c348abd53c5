//! Uploads: spooled to disk while hashed (the import id is the content hash, and XLSX needs a
//! seekable file), then opened with the reader of their format. Rows sent as a batch through the
//! API are read by [`RowsReader`].

use std::io::BufReader;
use std::path::{Path, PathBuf};

use paygo_snapshots::{Columns, ImportContext};
use recoup_proto::v1;
use tokio::io::AsyncWriteExt;

use crate::import::ImportHasher;
use crate::readers::csv::CsvSnapshots;
use crate::readers::json::JsonSnapshots;
use crate::readers::xlsx::XlsxSnapshots;
use crate::readers::{FileError, RowOutcome, SnapshotRows};

/// Largest upload by default: 100 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 100 * 1024 * 1024;

/// Opens a spooled upload with the reader of its format.
pub fn open_file(
    format: v1::FileFormat,
    path: &Path,
    sheet: Option<&str>,
) -> Result<Box<dyn SnapshotRows + Send>, FileError> {
    let file = || {
        std::fs::File::open(path).map_err(|e| FileError::Unreadable {
            row: 0,
            message: format!("cannot open the spooled upload: {e}"),
        })
    };
    Ok(match format {
        v1::FileFormat::Csv => Box::new(CsvSnapshots::new(BufReader::with_capacity(
            256 * 1024,
            file()?,
        ))?),
        v1::FileFormat::Json => Box::new(JsonSnapshots::new(BufReader::with_capacity(
            256 * 1024,
            file()?,
        ))?),
        v1::FileFormat::Xlsx => Box::new(XlsxSnapshots::open(path, sheet)?),
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
