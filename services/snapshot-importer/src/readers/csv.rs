//! CSV: a header row, then one snapshot per row. Any column order; UTF-8 with or without a BOM;
//! quoted fields (with commas, quotes and line breaks inside); LF or CRLF line ends. A row with
//! invalid UTF-8, too few or too many cells is that row's error; the other rows still count.

use std::io::Read;

use paygo_snapshots::{Columns, ImportContext, RowError, column_name, rule};

use super::{FileError, RowOutcome};

/// A CSV file being read row by row.
pub struct CsvSnapshots<R: Read> {
    reader: ::csv::Reader<R>,
    columns: Columns,
    record: ::csv::ByteRecord,
    /// Number of the last row read; the header is row 1.
    row: u64,
}

impl<R: Read> CsvSnapshots<R> {
    /// Reads and checks the header row.
    pub fn new(input: R) -> Result<Self, FileError> {
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            // Rows of another length are reported per row, not as a file error.
            .flexible(true)
            .from_reader(input);
        let mut record = ::csv::ByteRecord::new();
        let found = reader
            .read_byte_record(&mut record)
            .map_err(|e| unreadable(1, e))?;
        if !found {
            return Err(FileError::Empty);
        }
        let mut headers = Vec::with_capacity(record.len());
        for (column, cell) in record.iter().enumerate() {
            let text = std::str::from_utf8(cell)
                .map_err(|_| FileError::HeaderEncoding { column: column + 1 })?;
            headers.push(column_name(text).to_owned());
        }
        if headers.iter().all(String::is_empty) {
            return Err(FileError::Empty);
        }
        let columns = Columns::checked(&headers)?;
        Ok(Self {
            reader,
            columns,
            record,
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
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => return Some(Err(unreadable(row, e))),
            }
            // A line of only separators is no record either.
            if self.record.iter().all(<[u8]>::is_empty) {
                continue;
            }
            self.row = row;
            return Some(Ok(self.outcome(row, ctx)));
        }
    }

    fn outcome(&self, row: u64, ctx: &ImportContext) -> RowOutcome {
        let mut cells = Vec::with_capacity(self.record.len());
        let mut errors = Vec::new();
        // One UTF-8 check of the whole record; cell by cell only when it fails.
        if let Ok(text) = std::str::from_utf8(self.record.as_slice()) {
            let mut end = 0;
            for i in 0..self.record.len() {
                let range = self.record.range(i).unwrap_or(end..end);
                end = range.end;
                cells.push(text.get(range).unwrap_or(""));
            }
        }
        let checked = cells.len() == self.record.len();
        for (i, cell) in self.record.iter().enumerate().filter(|_| !checked) {
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
        for (i, cell) in self.record.iter().enumerate().filter(|_| not_utf8) {
            if std::str::from_utf8(cell).is_err()
                && let Some((_, raw)) = outcome.raw.get_mut(i)
            {
                *raw = paygo_snapshots::cut(&String::from_utf8_lossy(cell)).to_owned();
            }
        }
        outcome
    }
}

fn unreadable(row: u64, error: ::csv::Error) -> FileError {
    let message = error.to_string();
    if error.is_io_error() {
        FileError::Io { row, message }
    } else {
        FileError::Unreadable { row, message }
    }
}
