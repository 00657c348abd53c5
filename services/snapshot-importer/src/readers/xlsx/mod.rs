//! XLSX: one sheet (the first unless named), its first non-empty row the header, then one
//! snapshot per row. Rows carry the sheet's own numbers (1-based, as Excel shows them); empty
//! rows are skipped, missing cells are empty.
//!
//! Typed cells become the text the rules of the catalogue read: a number its shortest decimal
//! (`12.0` → `12`, `0.1` → `0.1`), a boolean `true`/`false`, a date-formatted cell
//! `YYYY-MM-DD` when it has no time of day, else `YYYY-MM-DD HH:MM:SS` (always with the time in
//! a datetime column, whose rule wants one). A cell holding a spreadsheet error (`#DIV/0!`) is
//! its row's error ([`ERROR_CELL`]).
//!
//! Memory stays flat: the sheet is streamed with calamine's cell reader, never loaded as a
//! range. That reader borrows the workbook, so a worker thread owns both and hands rows over a
//! small bounded channel; the rows are validated on the caller's thread. calamine keeps the
//! workbook's shared strings in memory and buffers one cell or tag whole, so the archive is
//! measured first ([`budget`]): a zip bomb, a huge cell or too many shared strings are refused
//! before calamine opens the file. A row whose cells together pass
//! [`ReadLimits::max_record_bytes`] is its row's error, and its cells past the limit are not
//! kept.

pub mod budget;
mod cells;

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use calamine::{DataRef, Reader, Xlsx, XlsxError};

use self::cells::cell_text;
use paygo_snapshots::{Columns, FieldType, ImportContext, RowError, column_name, field, rule};

use super::{FileError, ReadLimits, RowOutcome};

pub use paygo_snapshots::rule::ERROR_CELL;

/// Excel's last column is XFD; a cell beyond it is a broken file, not a wide row.
const MAX_COLUMNS: u32 = 16_384;
/// Rows (or bytes of cells) per message from the worker, and messages in flight: what memory the
/// hand-over takes.
const ROWS_PER_BATCH: usize = 128;
const BYTES_PER_BATCH: usize = 1 << 20;
const BATCHES_IN_FLIGHT: usize = 2;

/// A sheet of an XLSX workbook being read row by row.
pub struct XlsxSnapshots {
    rows: Receiver<Message>,
    batch: std::vec::IntoIter<SheetRow>,
    columns: Columns,
    sheet: String,
    /// Most bytes of cells in a row.
    max_row: usize,
    /// Number of the last row returned.
    row: u64,
    finished: bool,
}

/// What the worker sends: first the header (or why there is none), then rows, then the end.
enum Message {
    Header { sheet: String, columns: Columns },
    Rows(Vec<SheetRow>),
    Failed(FileError),
    End,
}

/// One non-empty row of the sheet as text, in column order, without trailing empty cells.
#[derive(Default)]
struct SheetRow {
    /// The sheet's row number, from 1.
    row: u64,
    cells: Vec<String>,
    /// Positions (from 0) of cells that hold a spreadsheet error; their text is the error.
    error_cells: Vec<usize>,
    /// Bytes of the cells' text, counting those past the limit that were not kept.
    bytes: usize,
}

impl XlsxSnapshots {
    /// Opens the workbook at `path` and reads the header of `sheet` (the first sheet when
    /// `None`), within the default [`ReadLimits`].
    pub fn open(path: impl AsRef<Path>, sheet: Option<&str>) -> Result<Self, FileError> {
        Self::open_with(path, sheet, &ReadLimits::default())
    }

    /// The same within `limits`.
    pub fn open_with(
        path: impl AsRef<Path>,
        sheet: Option<&str>,
        limits: &ReadLimits,
    ) -> Result<Self, FileError> {
        let file = File::open(path.as_ref()).map_err(|e| FileError::Io {
            row: 1,
            message: format!("cannot open {}: {e}", path.as_ref().display()),
        })?;
        Self::from_reader(BufReader::new(file), sheet, limits)
    }

    /// Reads the workbook from `reader` and the header of `sheet` (the first sheet when
    /// `None`), once the archive was measured against `limits`.
    pub fn from_reader<RS>(
        mut reader: RS,
        sheet: Option<&str>,
        limits: &ReadLimits,
    ) -> Result<Self, FileError>
    where
        RS: Read + Seek + Send + 'static,
    {
        check_signature(&mut reader)?;
        budget::check(&mut reader, limits)?;
        let (sender, rows) = sync_channel(BATCHES_IN_FLIGHT);
        let wanted = sheet.map(str::to_owned);
        let max_row = limits.max_record_bytes;
        std::thread::Builder::new()
            .name("xlsx-reader".to_owned())
            .spawn(move || read_sheet(reader, wanted.as_deref(), max_row, &sender))
            .map_err(|e| FileError::Unreadable {
                row: 1,
                message: format!("cannot start the XLSX reader: {e}"),
            })?;
        match rows.recv() {
            Ok(Message::Header { sheet, columns }) => Ok(Self {
                rows,
                batch: Vec::new().into_iter(),
                columns,
                sheet,
                max_row,
                row: 0,
                finished: false,
            }),
            Ok(Message::Failed(error)) => Err(error),
            Ok(Message::Rows(_) | Message::End) | Err(_) => Err(stopped(1)),
        }
    }

    /// The name of the sheet being read.
    pub fn sheet(&self) -> &str {
        &self.sheet
    }

    /// The checked header row.
    pub fn headers(&self) -> &[String] {
        self.columns.names()
    }

    /// The next non-empty row, `None` at the end of the sheet. Rows are numbered as the sheet
    /// numbers them: the header is the row it is on (row 1 unless rows above it are empty).
    pub fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        loop {
            if let Some(row) = self.batch.next() {
                self.row = row.row;
                return Some(Ok(self.outcome(&row, ctx)));
            }
            if self.finished {
                return None;
            }
            match self.rows.recv() {
                Ok(Message::Rows(rows)) => self.batch = rows.into_iter(),
                Ok(Message::End) => {
                    self.finished = true;
                    return None;
                }
                Ok(Message::Failed(error)) => {
                    self.finished = true;
                    return Some(Err(error));
                }
                Ok(Message::Header { .. }) | Err(_) => {
                    self.finished = true;
                    return Some(Err(stopped(self.row + 1)));
                }
            }
        }
    }

    fn outcome(&self, sheet_row: &SheetRow, ctx: &ImportContext) -> RowOutcome {
        let row = sheet_row.row;
        let names = self.columns.names();
        let raw: Vec<&str> = sheet_row.cells.iter().map(String::as_str).collect();
        if sheet_row.bytes > self.max_row {
            let error = super::too_long(
                row,
                format!(
                    "the row's cells take {} bytes, more than the limit of {} for one record; \
                     it was not read",
                    sheet_row.bytes, self.max_row
                ),
            );
            return RowOutcome::of(row, names, &raw, Err(vec![error]));
        }
        if sheet_row.error_cells.is_empty() {
            let result = self.columns.validate(row, &raw, ctx);
            return RowOutcome::of(row, names, &raw, result);
        }
        let mut cells = raw.clone();
        let mut errors = Vec::with_capacity(sheet_row.error_cells.len());
        let mut error_columns = Vec::with_capacity(sheet_row.error_cells.len());
        for &position in &sheet_row.error_cells {
            let value = raw.get(position).copied().unwrap_or_default();
            let column = match names.get(position) {
                Some(name) if !name.is_empty() => name.clone(),
                _ => format!("column_{}", position + 1),
            };
            errors.push(RowError {
                row,
                message: format!(
                    "column `{column}`: the cell holds the spreadsheet error `{value}`, not a value"
                ),
                column: column.clone(),
                value: value.to_owned(),
                rule: ERROR_CELL,
            });
            error_columns.push(column);
            if let Some(cell) = cells.get_mut(position) {
                *cell = "";
            }
        }
        if let Err(more) = self.columns.validate(row, &cells, ctx) {
            // An error cell in a required column is reported once, as what it is.
            errors.extend(
                more.into_iter()
                    .filter(|e| !(e.rule == rule::REQUIRED && error_columns.contains(&e.column))),
            );
        }
        RowOutcome::of(row, names, &raw, Err(errors))
    }
}

/// The worker: opens the workbook, finds the sheet and its header, then streams the rows.
fn read_sheet<RS: Read + Seek>(
    reader: RS,
    wanted: Option<&str>,
    max_row: usize,
    out: &SyncSender<Message>,
) {
    // A send fails only when the caller dropped the reader: then there is nobody to tell.
    let fail = |error: FileError| {
        let _ = out.send(Message::Failed(error));
    };
    let mut workbook = match Xlsx::new(reader) {
        Ok(workbook) => workbook,
        Err(error) => return fail(not_xlsx(&error)),
    };
    let sheet = match chosen_sheet(&workbook.sheet_names(), wanted) {
        Ok(sheet) => sheet,
        Err(error) => return fail(error),
    };
    let mut cells = match workbook.worksheet_cells_reader(&sheet) {
        Ok(cells) => cells,
        Err(error) => {
            return fail(FileError::Unreadable {
                row: 1,
                message: format!("sheet `{sheet}`: {error}"),
            });
        }
    };
    let mut rows = RowAssembler {
        max_row,
        ..RowAssembler::default()
    };
    let mut next_cell = || cells.next_cell();
    let (columns, datetime_columns) = match read_header(&mut rows, &mut next_cell) {
        Ok(header) => header,
        Err(error) => return fail(error),
    };
    if out.send(Message::Header { sheet, columns }).is_err() {
        return;
    }
    send_rows(&mut rows, &mut next_cell, &datetime_columns, out);
}

/// The name of the sheet to read: `wanted`, which must be one of `sheets`, else the first.
fn chosen_sheet(sheets: &[String], wanted: Option<&str>) -> Result<String, FileError> {
    match wanted {
        None => sheets.first().cloned().ok_or(FileError::Empty),
        Some(name) if sheets.iter().any(|s| s == name) => Ok(name.to_owned()),
        Some(name) => Err(FileError::UnknownSheet {
            name: name.to_owned(),
            sheets: sheets.join("`, `"),
        }),
    }
}

/// Reads the header, the first non-empty row: its checked columns, and which of them are
/// datetimes.
fn read_header<'a, F>(
    rows: &mut RowAssembler,
    next_cell: &mut F,
) -> Result<(Columns, Vec<bool>), FileError>
where
    F: FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, XlsxError>,
{
    let header = rows.next(next_cell, &[])?.ok_or(FileError::Empty)?;
    if header.bytes > rows.max_row {
        return Err(FileError::OverBudget {
            reason: format!(
                "the header row takes more than {} bytes, the limit for one record \
                 (--max-record-bytes)",
                rows.max_row
            ),
        });
    }
    let headers: Vec<String> = header
        .cells
        .iter()
        .map(|h| column_name(h).to_owned())
        .collect();
    let columns = Columns::checked(&headers)?;
    let datetime_columns: Vec<bool> = headers
        .iter()
        .map(|name| matches!(field(name), Some((_, f)) if f.ty == FieldType::DateTime))
        .collect();
    Ok((columns, datetime_columns))
}

/// Sends the rows after the header in batches of [`ROWS_PER_BATCH`], then the end or the error
/// that stopped them; stops early when the caller is gone.
fn send_rows<'a, F>(
    rows: &mut RowAssembler,
    next_cell: &mut F,
    datetime_columns: &[bool],
    out: &SyncSender<Message>,
) where
    F: FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, XlsxError>,
{
    let mut batch = Vec::with_capacity(ROWS_PER_BATCH);
    let mut bytes = 0;
    loop {
        match rows.next(next_cell, datetime_columns) {
            Ok(Some(row)) => {
                bytes += row.bytes;
                batch.push(row);
                if batch.len() == ROWS_PER_BATCH || bytes >= BYTES_PER_BATCH {
                    bytes = 0;
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(ROWS_PER_BATCH));
                    if out.send(Message::Rows(full)).is_err() {
                        return;
                    }
                }
            }
            Ok(None) => {
                if !batch.is_empty() && out.send(Message::Rows(batch)).is_err() {
                    return;
                }
                let _ = out.send(Message::End);
                return;
            }
            Err(error) => {
                if !batch.is_empty() && out.send(Message::Rows(batch)).is_err() {
                    return;
                }
                let _ = out.send(Message::Failed(error));
                return;
            }
        }
    }
}

/// A cell read but not yet placed: the first cell of the next row.
struct PendingCell {
    row: u32,
    column: u32,
    text: String,
    is_error: bool,
}

/// Groups the sheet's cells, which come row by row in column order, into rows.
#[derive(Default)]
struct RowAssembler {
    pending: Option<PendingCell>,
    /// The last row number seen, from 1, for the row of a broken cell.
    last_row: u64,
    /// Whether the sheet's last cell was read: the cell reader must not be asked again.
    exhausted: bool,
    /// Most bytes of cells a row keeps.
    max_row: usize,
}

impl RowAssembler {
    /// The next row with a non-blank cell; `None` after the last one.
    fn next<'a, F>(
        &mut self,
        next_cell: &mut F,
        datetime_columns: &[bool],
    ) -> Result<Option<SheetRow>, FileError>
    where
        F: FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, XlsxError>,
    {
        let mut row = SheetRow::default();
        let mut current: Option<u32> = None;
        loop {
            let Some(cell) = self.next_cell(next_cell, datetime_columns, current)? else {
                return Ok(finished(row));
            };
            // Excel writes rows in order; a row number going back would split or repeat rows.
            if u64::from(cell.row) + 1 < self.last_row {
                return Err(FileError::Unreadable {
                    row: self.last_row,
                    message: format!(
                        "the sheet's cells are out of order: a cell of row {} comes after row \
                         {}; the file is damaged",
                        u64::from(cell.row) + 1,
                        self.last_row
                    ),
                });
            }
            match current {
                Some(r) if r != cell.row => {
                    self.pending = Some(cell);
                    if let Some(done) = finished(row) {
                        return Ok(Some(done));
                    }
                    row = SheetRow::default();
                    current = None;
                    continue;
                }
                _ => {}
            }
            current = Some(cell.row);
            self.last_row = u64::from(cell.row) + 1;
            row.row = self.last_row;
            place_cell(&mut row, cell, self.max_row)?;
        }
    }

    /// The next cell as text: the one held back at the end of the previous row, else the
    /// reader's next; `None` after the sheet's last cell. `current` is the sheet row being
    /// assembled (from 0), for the row of a read error.
    fn next_cell<'a, F>(
        &mut self,
        next_cell: &mut F,
        datetime_columns: &[bool],
        current: Option<u32>,
    ) -> Result<Option<PendingCell>, FileError>
    where
        F: FnMut() -> Result<Option<calamine::Cell<DataRef<'a>>>, XlsxError>,
    {
        if let Some(cell) = self.pending.take() {
            return Ok(Some(cell));
        }
        if self.exhausted {
            return Ok(None);
        }
        match next_cell() {
            Ok(Some(cell)) => {
                let (sheet_row, column) = cell.get_position();
                let datetime = datetime_columns
                    .get(usize::try_from(column).unwrap_or(usize::MAX))
                    .copied()
                    .unwrap_or(false);
                let (text, is_error) = cell_text(cell.get_value(), datetime);
                Ok(Some(PendingCell {
                    row: sheet_row,
                    column,
                    text,
                    is_error,
                }))
            }
            Ok(None) => {
                self.exhausted = true;
                Ok(None)
            }
            Err(error) => {
                let at = current.map_or(self.last_row + 1, |r| u64::from(r) + 1);
                Err(FileError::Unreadable {
                    row: at,
                    message: error.to_string(),
                })
            }
        }
    }
}

/// Puts a cell of `row` in its column unless it is blank or the row's cells already take
/// `max_row` bytes (then it is only counted); a column beyond Excel's last is a broken file.
fn place_cell(row: &mut SheetRow, cell: PendingCell, max_row: usize) -> Result<(), FileError> {
    if cell.column >= MAX_COLUMNS {
        return Err(FileError::Unreadable {
            row: row.row,
            message: format!(
                "a cell in column {} is beyond Excel's last column (XFD)",
                u64::from(cell.column) + 1
            ),
        });
    }
    if cell.text.trim().is_empty() && !cell.is_error {
        return Ok(());
    }
    row.bytes = row.bytes.saturating_add(cell.text.len());
    if row.bytes > max_row {
        return Ok(());
    }
    let position = usize::try_from(cell.column).unwrap_or(usize::MAX);
    if position >= row.cells.len() {
        row.cells.resize(position + 1, String::new());
    }
    row.cells[position] = cell.text;
    if cell.is_error {
        row.error_cells.push(position);
    }
    Ok(())
}

/// The row if it has a non-blank cell. Cells are placed only when non-blank, so a row without
/// cells is blank.
fn finished(row: SheetRow) -> Option<SheetRow> {
    (!row.cells.is_empty() || row.bytes > 0).then_some(row)
}

/// Tells a zip archive from what is clearly something else, so the message can say what it is.
fn check_signature<RS: Read + Seek>(reader: &mut RS) -> Result<(), FileError> {
    let io_error = |e: std::io::Error| FileError::Io {
        row: 1,
        message: e.to_string(),
    };
    let mut head = [0u8; 8];
    let mut len = 0;
    while len < head.len() {
        match reader.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
    reader.seek(SeekFrom::Start(0)).map_err(io_error)?;
    let head = &head[..len];
    if head.is_empty() {
        return Err(FileError::Empty);
    }
    if head.starts_with(b"PK") {
        return Ok(());
    }
    let reason = if head.starts_with(&[0xd0, 0xcf, 0x11, 0xe0]) {
        "an Excel 97-2003 (.xls) or encrypted workbook, not a zip archive: save it as .xlsx"
    } else {
        "not a zip archive"
    };
    Err(FileError::NotXlsx {
        reason: reason.to_owned(),
    })
}

fn not_xlsx(error: &XlsxError) -> FileError {
    let reason = match error {
        XlsxError::Zip(e) => format!("not a zip archive: {e}"),
        other => other.to_string(),
    };
    FileError::NotXlsx { reason }
}

fn stopped(row: u64) -> FileError {
    FileError::Unreadable {
        row,
        message: "the XLSX reader stopped unexpectedly".to_owned(),
    }
}
