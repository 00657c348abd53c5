//! JSON: an array of objects (`[{...}, {...}]`) or NDJSON (one object per line), told apart by
//! the first byte that is not whitespace (after an optional UTF-8 BOM). Each object is one
//! snapshot and its keys are the columns, in any order.
//!
//! Read one element at a time in constant memory: a byte scanner finds each element of the array
//! (or each line) and only that element is parsed. Row numbers: in an array, the element's
//! position counted from 1; in NDJSON, the line number counted from 1 (blank lines are skipped
//! but counted, so an editor finds the row).
//!
//! Cells: a string is its text; a number its JSON text as written (`12.50`, `1e2`); `true` /
//! `false`; `null` an empty cell; an object or array its compact JSON text (what `custom` and the
//! jsonb columns take).
//!
//! What is wrong inside one element is that row's error and reading goes on: invalid JSON, an
//! element that is not an object or a key twice in one object ([`rule::JSON`]), invalid UTF-8
//! ([`rule::ENCODING`]), an element longer than [`ReadLimits::max_record_bytes`]
//! ([`rule::TOO_LONG`]: only its start is kept). Brackets are tracked one bit per level, so a
//! deeply nested element costs an eighth of its length at most.
//! NDJSON lines always frame their rows; in an array, a break in the framing (brackets that do
//! not match, a missing `,`, the end of the input inside the array) ends the file with
//! [`FileError::Unreadable`], and the rows before it count. A body whose first line opens a
//! value it does not close is one document over several lines, not NDJSON
//! ([`FileError::MultilineJson`]): nothing of it is read.

mod element;
mod scan;

use std::io::{self, BufRead};

use paygo_snapshots::{ImportContext, cut, rule};
use serde::de::IgnoredAny;

use self::element::{Element, KeySets, element_error, encoding_outcome, quote, rejected_element};
use self::scan::{fill, is_whitespace, keep, skip_bom, skip_whitespace};
use super::{FileError, ReadLimits, RowOutcome};

/// The name under which a rejected element that is no object (or no JSON) keeps its raw text in
/// [`RowOutcome::raw`].
pub const RAW_ELEMENT: &str = "json";

/// A JSON array of objects or an NDJSON body being read row by row.
pub struct JsonSnapshots<R: BufRead> {
    input: R,
    layout: Layout,
    /// The bytes of the current element (array element or line), at most `max_element`.
    element: Vec<u8>,
    max_element: usize,
    /// Its full length, which is more than `element.len()` when it was too long to keep.
    element_len: usize,
    /// Where the scan of the current array element stands.
    scanner: ElementScanner,
    /// Number of the last row read (array: element position; NDJSON: line number).
    row: u64,
    key_sets: KeySets,
    /// NDJSON: whether the first line was checked for a document spread over lines.
    first_line_checked: bool,
    finished: bool,
}

/// Which framing the body uses, and where an array's scanner stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Lines,
    /// After `[`: an element or `]` follows.
    ArrayStart,
    /// After `,`: an element (or, tolerated, `]`) follows.
    ArrayAfterComma,
    /// After an element: `,` or `]` follows.
    ArrayAfterElement,
    /// After the closing `]`: only whitespace may follow.
    ArrayClosed,
}

/// The brackets open in an element, one bit each (`true`: a brace).
#[derive(Default)]
struct Brackets {
    bits: Vec<u64>,
    depth: usize,
}

impl Brackets {
    fn clear(&mut self) {
        self.bits.clear();
        self.depth = 0;
    }

    fn is_empty(&self) -> bool {
        self.depth == 0
    }

    fn push(&mut self, brace: bool) {
        let (word, bit) = (self.depth / 64, self.depth % 64);
        if word == self.bits.len() {
            self.bits.push(0);
        }
        if let Some(bits) = self.bits.get_mut(word) {
            *bits = (*bits & !(1 << bit)) | (u64::from(brace) << bit);
        }
        self.depth += 1;
    }

    /// The innermost bracket, closed; `None` when none is open.
    fn pop(&mut self) -> Option<bool> {
        self.depth = self.depth.checked_sub(1)?;
        let bits = self.bits.get(self.depth / 64)?;
        Some(bits >> (self.depth % 64) & 1 == 1)
    }
}

/// How the scan of one array element ended.
enum Scan {
    Complete,
    /// The input ended inside the element.
    Eof,
    /// A closing bracket that does not match the open one.
    Mismatch {
        found: u8,
    },
}

/// Where the scan of one array element stands, carried from one buffer to the next.
#[derive(Default)]
struct ElementScanner {
    /// The brackets open inside the current array element.
    brackets: Brackets,
    /// Whether the element's first byte is still to come.
    first: bool,
    /// Whether the element is a scalar (no string, object or array).
    scalar: bool,
    /// Whether the scan is inside a string.
    in_string: bool,
    /// Whether the previous byte in a string was an unescaped `\`.
    escaped: bool,
}

impl ElementScanner {
    /// Gets ready for a new element, keeping the brackets' allocation.
    fn start(&mut self) {
        self.brackets.clear();
        (self.first, self.scalar, self.in_string, self.escaped) = (true, false, false, false);
    }

    /// Scans `buf`, the element's next bytes: `Ok(Some(n))` when the element ends after the
    /// first `n` of them, `Ok(None)` when it goes on past them, `Err(found)` at a closing
    /// bracket that does not match the open one.
    fn end_in(&mut self, buf: &[u8]) -> Result<Option<usize>, u8> {
        let brackets = &mut self.brackets;
        for (i, &b) in buf.iter().enumerate() {
            if self.first {
                self.first = false;
                match b {
                    b'{' | b'[' => {
                        brackets.push(b == b'{');
                        continue;
                    }
                    b'"' => {
                        self.in_string = true;
                        continue;
                    }
                    _ => self.scalar = true,
                }
            }
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if brackets.is_empty() {
                        return Ok(Some(i + 1));
                    }
                }
            } else if self.scalar {
                if is_whitespace(b) || b == b',' || b == b']' {
                    return Ok(Some(i));
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => brackets.push(b == b'{'),
                    b'}' | b']' => {
                        if brackets.pop() != Some(b == b'}') {
                            return Err(b);
                        }
                        if brackets.is_empty() {
                            return Ok(Some(i + 1));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(None)
    }
}

impl<R: BufRead> JsonSnapshots<R> {
    /// Skips a BOM and whitespace and tells an array (`[`) from NDJSON (`{`). Nothing else is
    /// parsed yet.
    pub fn new(input: R) -> Result<Self, FileError> {
        Self::with_limits(input, &ReadLimits::default())
    }

    /// The same, with no element longer than `limits` allow.
    pub fn with_limits(mut input: R, limits: &ReadLimits) -> Result<Self, FileError> {
        let io_error = |e: io::Error| FileError::Io {
            row: 1,
            message: e.to_string(),
        };
        skip_bom(&mut input)?;
        // NDJSON rows are numbered by line, so the blank lines before the first object count.
        let mut blank_lines = 0;
        let layout = match skip_whitespace(&mut input, &mut blank_lines).map_err(io_error)? {
            None => return Err(FileError::Empty),
            Some(b'[') => {
                input.consume(1);
                Layout::ArrayStart
            }
            Some(b'{') => Layout::Lines,
            Some(_) => {
                let start = fill(&mut input).map_err(io_error)?;
                return Err(FileError::NotJson {
                    start: first_chars(start),
                });
            }
        };
        Ok(Self {
            input,
            layout,
            element: Vec::with_capacity(4096),
            max_element: limits.max_record_bytes,
            element_len: 0,
            scanner: ElementScanner::default(),
            row: if layout == Layout::Lines {
                blank_lines
            } else {
                0
            },
            key_sets: KeySets::default(),
            first_line_checked: layout != Layout::Lines,
            finished: false,
        })
    }

    /// Whether the body is NDJSON (rows numbered by line) rather than an array.
    pub fn is_ndjson(&self) -> bool {
        self.layout == Layout::Lines
    }

    /// The next row, `None` at the end of the body; see the module documentation for the row
    /// numbers.
    pub fn next_row(&mut self, ctx: &ImportContext) -> Option<Result<RowOutcome, FileError>> {
        if self.finished {
            return None;
        }
        let next = if self.layout == Layout::Lines {
            self.next_line()
        } else {
            self.next_array_element()
        };
        let next = match next {
            Ok(true) if !self.first_line_checked => self.check_first_line().map(|()| true),
            other => other,
        };
        match next {
            Ok(true) => Some(Ok(self.outcome(ctx))),
            Ok(false) => {
                self.finished = true;
                None
            }
            Err(error) => {
                self.finished = true;
                Some(Err(error))
            }
        }
    }

    /// A body that starts with `{` but whose first line ends inside that value is one JSON
    /// document over several lines (e.g. `{"rows": [...]}` pretty-printed), not NDJSON: reading
    /// it line by line would import whichever inner lines happen to be objects.
    fn check_first_line(&mut self) -> Result<(), FileError> {
        self.first_line_checked = true;
        let Ok(line) = std::str::from_utf8(&self.element) else {
            return Ok(());
        };
        match serde_json::from_str::<IgnoredAny>(line) {
            Err(e) if e.is_eof() && self.element_len == self.element.len() => {
                Err(FileError::MultilineJson {
                    line: first_chars(line.trim().as_bytes()),
                })
            }
            _ => Ok(()),
        }
    }

    /// Reads the next non-blank line into `element`; `false` at the end of the input.
    fn next_line(&mut self) -> Result<bool, FileError> {
        loop {
            let line = self.row + 1;
            let Self {
                input,
                element,
                element_len,
                max_element,
                ..
            } = self;
            element.clear();
            *element_len = 0;
            let mut any = false;
            loop {
                let buf = fill(input).map_err(|e| unreadable(line, &e))?;
                if buf.is_empty() {
                    break;
                }
                any = true;
                let (take, newline) = match buf.iter().position(|&b| b == b'\n') {
                    Some(at) => (at, true),
                    None => (buf.len(), false),
                };
                keep(element, element_len, &buf[..take], *max_element);
                input.consume(take + usize::from(newline));
                if newline {
                    break;
                }
            }
            if !any {
                return Ok(false);
            }
            self.row = line;
            if !self.element.iter().all(|&b| is_whitespace(b))
                || self.element_len > self.element.len()
            {
                return Ok(true);
            }
        }
    }

    /// Reads the next element of the array into `element`; `false` after the closing `]`.
    fn next_array_element(&mut self) -> Result<bool, FileError> {
        let next = self.row + 1;
        if self.layout == Layout::ArrayAfterElement {
            match self.skip_whitespace(next)? {
                Some(b',') => {
                    self.input.consume(1);
                    self.layout = Layout::ArrayAfterComma;
                }
                Some(b']') => {
                    self.input.consume(1);
                    self.layout = Layout::ArrayClosed;
                }
                Some(found) => {
                    return Err(FileError::Unreadable {
                        row: next,
                        message: format!(
                            "expected `,` or `]` after row {}, found {}",
                            self.row,
                            shown(found)
                        ),
                    });
                }
                None => return Err(unclosed(next, self.row)),
            }
        }
        if self.layout == Layout::ArrayClosed {
            return match self.skip_whitespace(next)? {
                None => Ok(false),
                Some(found) => Err(FileError::Unreadable {
                    row: next,
                    message: format!(
                        "{} after the closing `]` of the array: only one array is read",
                        shown(found)
                    ),
                }),
            };
        }
        match self.skip_whitespace(next)? {
            None => return Err(unclosed(next, self.row)),
            // `[]` is an array without rows; a trailing comma before `]` is tolerated.
            Some(b']') => {
                self.input.consume(1);
                self.layout = Layout::ArrayClosed;
                return self.next_array_element();
            }
            Some(_) => {}
        }
        self.row = next;
        match self.scan_element(next)? {
            Scan::Complete => {
                self.layout = Layout::ArrayAfterElement;
                Ok(true)
            }
            Scan::Eof => Err(FileError::Unreadable {
                row: next,
                message: format!(
                    "the input ends inside row {next}: a string, `{{` or `[` is not closed"
                ),
            }),
            Scan::Mismatch { found } => Err(FileError::Unreadable {
                row: next,
                message: format!(
                    "{} in row {next} closes no open `{{` or `[` of the same kind",
                    shown(found)
                ),
            }),
        }
    }

    /// The next byte that is not whitespace, not consumed.
    fn skip_whitespace(&mut self, row: u64) -> Result<Option<u8>, FileError> {
        skip_whitespace(&mut self.input, &mut 0).map_err(|e| unreadable(row, &e))
    }

    /// Copies one array element, from its first byte to its last, into `element`. Strings and
    /// their escapes are skipped; brackets must match; a scalar ends at whitespace, `,` or `]`.
    fn scan_element(&mut self, row: u64) -> Result<Scan, FileError> {
        let Self {
            input,
            element,
            element_len,
            max_element,
            scanner,
            ..
        } = self;
        element.clear();
        *element_len = 0;
        scanner.start();
        loop {
            let buf = fill(input).map_err(|e| unreadable(row, &e))?;
            if buf.is_empty() {
                return Ok(Scan::Eof);
            }
            let end = match scanner.end_in(buf) {
                Ok(end) => end,
                Err(found) => return Ok(Scan::Mismatch { found }),
            };
            let take = end.unwrap_or(buf.len());
            keep(element, element_len, &buf[..take], *max_element);
            input.consume(take);
            if end.is_some() {
                return Ok(Scan::Complete);
            }
        }
    }

    /// The row the current element makes.
    fn outcome(&mut self, ctx: &ImportContext) -> RowOutcome {
        let row = self.row;
        let bytes = &self.element;
        if self.element_len > bytes.len() {
            let text = String::from_utf8_lossy(bytes);
            let error = element_error(
                row,
                &text,
                rule::TOO_LONG,
                format!(
                    "the element of {} bytes starting {} is longer than the limit of \
                     {} bytes",
                    self.element_len,
                    quote(&text),
                    self.max_element,
                ),
            );
            return RowOutcome {
                row,
                result: Err(vec![error]),
                raw: vec![(RAW_ELEMENT.to_owned(), cut(&text).to_owned())],
            };
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return encoding_outcome(row, bytes, &e),
        };
        match serde_json::from_str::<Element>(text) {
            Ok(Element::Object(entries)) => self.key_sets.outcome(row, entries, ctx),
            Ok(Element::Other(kind)) => rejected_element(
                row,
                text,
                format!("{} is {kind}, not an object", quote(text.trim())),
            ),
            Err(e) => {
                let place = if self.layout == Layout::Lines {
                    format!("at column {} of the line", e.column())
                } else {
                    format!("at line {}, column {} of the element", e.line(), e.column())
                };
                rejected_element(
                    row,
                    text,
                    format!(
                        "{} is not valid JSON: {} {place}",
                        quote(text.trim()),
                        without_position(&e)
                    ),
                )
            }
        }
    }
}

fn unreadable(row: u64, error: &io::Error) -> FileError {
    FileError::Unreadable {
        row,
        message: error.to_string(),
    }
}

fn unclosed(row: u64, last: u64) -> FileError {
    FileError::Unreadable {
        row,
        message: format!("the array is not closed: the input ends after row {last} without `]`"),
    }
}

/// A byte of the framing, for a message.
fn shown(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("`{}`", char::from(b))
    } else {
        format!("byte 0x{b:02x}")
    }
}

/// The start of the body, for a message: up to 20 characters of its first line.
fn first_chars(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(80)];
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(20).collect()
}

/// serde_json's message without its `at line L column C`, which counts within the element.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}
