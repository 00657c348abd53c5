//! Readers turn an uploaded file into rows, one at a time, in constant memory.
//!
//! Every format maps its header (CSV, XLSX) or each object's keys (JSON) onto the catalogue with
//! [`Columns`] and hands each row to [`Columns::validate`]. A bad row is that row's
//! [`RowOutcome`]; only what stops the whole file is a [`FileError`].

pub mod csv;
pub mod json;
pub mod xlsx;

use paygo_snapshots::{AccountSnapshot, HeaderError, ImportContext, RowError};

/// One data row of a file: its number as the sender sees it (CSV and XLSX: the header is row 1;
/// JSON arrays: the element's position, from 1; NDJSON: the line number) and either the snapshot or everything that is wrong with
/// the row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    pub row: u64,
    pub result: Result<AccountSnapshot, Vec<RowError>>,
    /// The row's cells by column name, as sent, when the row was rejected: rejects keep the raw
    /// values. Empty for accepted rows.
    pub raw: Vec<(String, String)>,
}

impl RowOutcome {
    /// The outcome of validating `cells`; keeps the raw cells when the row is rejected.
    pub fn of(
        row: u64,
        names: &[String],
        cells: &[&str],
        result: Result<AccountSnapshot, Vec<RowError>>,
    ) -> Self {
        let raw = if result.is_err() {
            let mut raw: Vec<(String, String)> = names
                .iter()
                .zip(cells)
                .map(|(name, cell)| (name.clone(), (*cell).to_owned()))
                .collect();
            // Cells beyond the header keep their position as a name.
            for (i, cell) in cells.iter().enumerate().skip(names.len()) {
                raw.push((format!("column_{}", i + 1), (*cell).to_owned()));
            }
            raw
        } else {
            Vec::new()
        };
        Self { row, result, raw }
    }
}

/// Why a whole file cannot be read; rows read before it stay valid.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error("header row: {0}")]
    Header(#[from] HeaderError),
    #[error("header row: column {column} is not valid UTF-8")]
    HeaderEncoding { column: usize },
    #[error("the file cannot be read at row {row}: {message}")]
    Unreadable { row: u64, message: String },
    #[error("the body is neither a JSON array of objects nor NDJSON: it starts with `{start}`")]
    NotJson { start: String },
    #[error(
        "the body is neither a JSON array of objects nor NDJSON: its first line `{line}` is not \
         a whole object (one JSON document over several lines?); send an array of objects or one \
         object per line"
    )]
    MultilineJson { line: String },
    #[error("not an XLSX file ({reason})")]
    NotXlsx { reason: String },
    #[error("the workbook has no sheet named `{name}`; its sheets are `{sheets}`")]
    UnknownSheet { name: String, sheets: String },
}

/// A file being read row by row, whatever its format.
pub trait SnapshotRows {
    /// The next data row, `None` at the end of the file. After a `FileError` the reader is done.
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>>;
}

impl<R: std::io::Read> SnapshotRows for csv::CsvSnapshots<R> {
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        csv::CsvSnapshots::next_row(self, ctx)
    }
}

impl<R: std::io::BufRead> SnapshotRows for json::JsonSnapshots<R> {
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        json::JsonSnapshots::next_row(self, ctx)
    }
}

impl SnapshotRows for xlsx::XlsxSnapshots {
    fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        xlsx::XlsxSnapshots::next_row(self, ctx)
    }
}
