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
/// JSON arrays: the element's position, from 1; NDJSON: the line number) and either the
/// snapshot or everything that is wrong with the row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    pub row: u64,
    pub result: Result<AccountSnapshot, Vec<RowError>>,
    /// The row's cells by column name, as sent, when the row was rejected: rejects keep the raw
    /// values (each cut to `MAX_CELL_BYTES`, at most [`MAX_RAW_BYTES`] in all). Empty for
    /// accepted rows.
    pub raw: Vec<(String, String)>,
}

/// What reading one file may cost, whatever the file holds. Every reader keeps one record at a
/// time, so these bound its memory; they are checked while the bytes stream, before anything
/// is built from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// The longest record read, in bytes: a CSV record's cells, an XLSX row's cells (and any one
    /// cell, string or tag of the workbook), a JSON element or NDJSON line. A longer record is
    /// its row's error ([`rule::TOO_LONG`](paygo_snapshots::rule::TOO_LONG)); a longer XLSX
    /// cell or tag ends the file.
    pub max_record_bytes: usize,
    /// XLSX: the most bytes the parts of the archive may inflate to, all together. The upload
    /// limit bounds the compressed bytes only; a zip bomb is refused by this one.
    pub xlsx_max_inflated_bytes: u64,
}

/// Default longest record: 4 MiB (a row has about 100 columns of at most
/// [`MAX_CELL_BYTES`](paygo_snapshots::MAX_CELL_BYTES) each).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 4 << 20;
/// Default inflated size of an XLSX upload: 1 GiB, ten times the default upload limit.
pub const DEFAULT_XLSX_MAX_INFLATED_BYTES: u64 = 1 << 30;

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            xlsx_max_inflated_bytes: DEFAULT_XLSX_MAX_INFLATED_BYTES,
        }
    }
}

/// The error of a record longer than [`ReadLimits::max_record_bytes`]: it names the whole row,
/// no column.
pub(crate) fn too_long(row: u64, message: String) -> RowError {
    RowError {
        row,
        column: String::new(),
        value: String::new(),
        rule: paygo_snapshots::rule::TOO_LONG,
        message,
    }
}

/// Most bytes of raw cells a rejected row keeps, so that its reject stays a small event however
/// broken the row (a stray quote can make the rest of a CSV file one cell).
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// The column name under which [`keep_raw`] notes the cells it left out.
pub const OMITTED_CELLS: &str = "(omitted)";

/// Keeps `(column, cell)` pairs for a reject: each cell cut to `MAX_CELL_BYTES`, and no more
/// than [`MAX_RAW_BYTES`] in all; what did not fit is counted under [`OMITTED_CELLS`].
pub fn keep_raw<'a>(cells: impl Iterator<Item = (String, &'a str)>) -> Vec<(String, String)> {
    let mut raw = Vec::new();
    let mut bytes = 0;
    let mut omitted = 0usize;
    for (column, cell) in cells {
        let cell = paygo_snapshots::cut(cell);
        if bytes + column.len() + cell.len() > MAX_RAW_BYTES {
            omitted += 1;
            continue;
        }
        bytes += column.len() + cell.len();
        raw.push((column, cell.to_owned()));
    }
    if omitted > 0 {
        raw.push((
            OMITTED_CELLS.to_owned(),
            format!("{omitted} more cells, over the {MAX_RAW_BYTES} bytes a reject keeps"),
        ));
    }
    raw
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
            // Cells beyond the header keep their position as a name.
            keep_raw(cells.iter().enumerate().map(|(i, cell)| {
                let name = names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("column_{}", i + 1));
                (name, *cell)
            }))
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
    /// This server could not read its own copy of the upload (an I/O error, not the file's
    /// fault): the import fails and may be sent again; no report is kept.
    #[error("reading the spooled upload failed at row {row}: {message}")]
    Io { row: u64, message: String },
    #[error("the body is neither a JSON array of objects nor NDJSON: it starts with `{start}`")]
    NotJson { start: String },
    #[error(
        "the body is neither a JSON array of objects nor NDJSON: its first line `{line}` is not \
         a whole object (one JSON document over several lines?); send an array of objects or one \
         object per line"
    )]
    MultilineJson { line: String },
    /// The file would cost more than a limit allows (see [`ReadLimits`]); nothing of it is read.
    #[error("the file is over a limit: {reason}")]
    OverBudget { reason: String },
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
