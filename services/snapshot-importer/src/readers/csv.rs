//! CSV: a header row, then one snapshot per row. Any column order; UTF-8 with or without a BOM;
//! quoted fields (with commas, quotes and line breaks inside); LF or CRLF line ends. A row with
//! invalid UTF-8, too few or too many cells is that row's error; the other rows still count.
//!
//! Records are parsed with `csv-core` into one buffer that grows up to
//! [`ReadLimits::max_record_bytes`]: a longer record (a stray quote can make the rest of the
//! file one cell) is read past without being kept and is its row's error
//! ([`rule::TOO_LONG`]); memory stays one record whatever the file.

use std::io::{BufRead, BufReader, Read};

use csv_core::ReadRecordResult;
use paygo_snapshots::{Columns, ImportContext, RowError, column_name, rule};

use super::{FileError, ReadLimits, RowOutcome};

/// A CSV file being read row by row.
pub struct CsvSnapshots<R: Read> {
    records: Records<R>,
    columns: Columns,
    /// Number of the last row read; the header is row 1.
    row: u64,
}

/// CSV records one at a time, each within a byte budget.
struct Records<R: Read> {
    input: BufReader<R>,
    parser: csv_core::Reader,
    /// The current record's cells end to end, and where each ends (`fields` of them).
    bytes: Vec<u8>,
    ends: Vec<usize>,
    len: usize,
    fields: usize,
    /// The record's full length in bytes of cells: more than `len` when it was too long.
    total: u64,
    max: usize,
    /// Where the rest of a record too long to keep is parsed, and forgotten.
    spill: Vec<u8>,
    spill_ends: Vec<usize>,
}

impl<R: Read> Records<R> {
    fn new(input: R, max: usize) -> Self {
        Self {
            input: BufReader::with_capacity(64 * 1024, input),
            parser: csv_core::Reader::new(),
            bytes: vec![0; 1024.min(max.max(1))],
            ends: vec![0; 64],
            len: 0,
            fields: 0,
            total: 0,
            max: max.max(1),
            spill: vec![0; 8 * 1024],
            spill_ends: vec![0; 1024],
        }
    }

    /// Reads the next record; `false` at the end of the input.
    fn read(&mut self) -> std::io::Result<bool> {
        (self.len, self.fields, self.total) = (0, 0, 0);
        let mut too_long = false;
        loop {
            let input = self.input.fill_buf()?;
            let (output, ends) = if too_long {
                (&mut self.spill[..], &mut self.spill_ends[..])
            } else {
                (&mut self.bytes[self.len..], &mut self.ends[self.fields..])
            };
            let (result, read, written, ended) = self.parser.read_record(input, output, ends);
            self.input.consume(read);
            self.total += written as u64;
            if !too_long {
                self.len += written;
                self.fields += ended;
            }
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull if !too_long => {
                    too_long = !grow(&mut self.bytes, self.max);
                }
                ReadRecordResult::OutputEndsFull if !too_long => {
                    // An empty cell costs its end position only: the ends count as well.
                    too_long = self.ends.len() * size_of::<usize>() >= self.max
                        || !grow(&mut self.ends, self.max / size_of::<usize>());
                }
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::Record => {
                    if too_long {
                        // The budget is the record's length, not the bytes it happened to keep.
                        self.total = self.total.max(self.max as u64 + 1);
                    }
                    return Ok(true);
                }
                ReadRecordResult::End => return Ok(false),
            }
        }
    }

    /// Whether the last record was longer than the budget (only its start was kept).
    fn too_long(&self) -> bool {
        self.total > self.max as u64
    }

    /// How many cells the last record has (kept).
    fn cell_count(&self) -> usize {
        self.fields
    }

    /// Where the `i`-th cell of the last record lies in [`Records::as_slice`].
    fn range(&self, i: usize) -> Option<std::ops::Range<usize>> {
        let start = match i.checked_sub(1) {
            None => 0,
            Some(before) => *self.ends.get(before)?,
        };
        Some(start..*self.ends.get(i).filter(|_| i < self.fields)?)
    }

    /// The cells of the last record (what was kept of it) end to end.
    fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// The `i`-th cell of the last record.
    fn cell(&self, i: usize) -> &[u8] {
        self.range(i)
            .and_then(|range| self.as_slice().get(range))
            .unwrap_or_default()
    }

    fn cells(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.fields).map(|i| self.cell(i))
    }
}

/// Doubles `buffer` up to `max` elements; `false` when it is already that long.
fn grow<T: Default + Clone>(buffer: &mut Vec<T>, max: usize) -> bool {
    if buffer.len() >= max {
        return false;
    }
    let len = (buffer.len() * 2).clamp(1, max);
    buffer.resize(len, T::default());
    true
}

impl<R: Read> CsvSnapshots<R> {
    /// Reads and checks the header row, with the default [`ReadLimits`].
    pub fn new(input: R) -> Result<Self, FileError> {
        Self::with_limits(input, &ReadLimits::default())
    }

    /// Reads and checks the header row; no record is longer than `limits` allow.
    pub fn with_limits(input: R, limits: &ReadLimits) -> Result<Self, FileError> {
        let mut records = Records::new(input, limits.max_record_bytes);
        let found = records.read().map_err(|e| io_error(1, &e))?;
        if !found {
            return Err(FileError::Empty);
        }
        if records.too_long() {
            return Err(FileError::Unreadable {
                row: 1,
                message: format!(
                    "the header row is longer than the limit of {} bytes per record",
                    limits.max_record_bytes
                ),
            });
        }
        let mut headers = Vec::with_capacity(records.cell_count());
        for (column, cell) in records.cells().enumerate() {
            let text = std::str::from_utf8(cell)
                .map_err(|_| FileError::HeaderEncoding { column: column + 1 })?;
            headers.push(column_name(text).to_owned());
        }
        if headers.iter().all(String::is_empty) {
            return Err(FileError::Empty);
        }
        let columns = Columns::checked(&headers)?;
        Ok(Self {
            records,
            columns,
            row: 1,
        })
    }

    /// The checked header row.
    pub fn headers(&self) -> &[String] {
        self.columns.names()
    }

    /// The next data row, `None` at the end of the file. Rows are numbered as a spreadsheet
    /// shows the records: the header is row 1, the first record row 2; a record whose quoted
    /// cells span lines is one row, and blank lines are not rows.
    pub fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        loop {
            let row = self.row + 1;
            match self.records.read() {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => return Some(Err(io_error(row, &e))),
            }
            // A line of only separators is no record either.
            if !self.records.too_long() && self.records.cells().all(<[u8]>::is_empty) {
                continue;
            }
            self.row = row;
            if self.records.too_long() {
                return Some(Ok(self.too_long(row)));
            }
            return Some(Ok(self.outcome(row, ctx)));
        }
    }

    /// The row of a record longer than the budget: its error, and the start of its cells.
    fn too_long(&self, row: u64) -> RowOutcome {
        let error = super::too_long(
            row,
            format!(
                "the record is longer than the limit of {} bytes; it was not read (a quote \
                 that is never closed makes the rest of the file one cell)",
                self.records.max
            ),
        );
        let cells: Vec<String> = self
            .records
            .cells()
            .map(|cell| String::from_utf8_lossy(cell).into_owned())
            .collect();
        let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
        RowOutcome::of(row, self.columns.names(), &cells, Err(vec![error]))
    }

    fn outcome(&self, row: u64, ctx: &ImportContext) -> RowOutcome {
        let record = &self.records;
        let mut cells = Vec::with_capacity(record.cell_count());
        let mut errors = Vec::new();
        // One UTF-8 check of the whole record; cell by cell only when it fails.
        if let Ok(text) = std::str::from_utf8(record.as_slice()) {
            let mut end = 0;
            for i in 0..record.cell_count() {
                let range = record.range(i).unwrap_or(end..end);
                end = range.end;
                cells.push(text.get(range).unwrap_or(""));
            }
        }
        let checked = cells.len() == record.cell_count();
        for (i, cell) in record.cells().enumerate().filter(|_| !checked) {
            match std::str::from_utf8(cell) {
                Ok(text) => cells.push(text),
                Err(e) => {
                    errors.push(RowError {
                        row,
                        column: self.columns.names().get(i).cloned().unwrap_or_default(),
                        value: paygo_snapshots::cut(&String::from_utf8_lossy(cell)).to_owned(),
                        rule: rule::ENCODING,
                        message: format!(
                            "not valid UTF-8 (invalid byte at offset {})",
                            e.valid_up_to()
                        ),
                    });
                    cells.push("");
                }
            }
        }
        let errors_free = errors.is_empty();
        let result = match self.columns.validate(row, &cells, ctx) {
            Ok(snapshot) if errors.is_empty() => Ok(snapshot),
            Ok(_) => Err(errors),
            Err(mut more) => {
                // A cell that is not UTF-8 was sent: it is no missing required cell as well.
                more.retain(|m| {
                    m.rule != rule::REQUIRED || errors.iter().all(|e| e.column != m.column)
                });
                errors.append(&mut more);
                Err(errors)
            }
        };
        let not_utf8 = !errors_free;
        let mut outcome = RowOutcome::of(row, self.columns.names(), &cells, result);
        // Rejects keep what the sender wrote, even where it is not UTF-8.
        for (i, cell) in self.records.cells().enumerate().filter(|_| not_utf8) {
            if std::str::from_utf8(cell).is_err()
                && let Some((_, raw)) = outcome.raw.get_mut(i)
            {
                *raw = paygo_snapshots::cut(&String::from_utf8_lossy(cell)).to_owned();
            }
        }
        outcome
    }
}

fn io_error(row: u64, error: &std::io::Error) -> FileError {
    FileError::Io {
        row,
        message: error.to_string(),
    }
}
