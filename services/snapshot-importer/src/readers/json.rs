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
//! ([`rule::ENCODING`]), an element longer than [`MAX_ELEMENT_BYTES`] ([`rule::TOO_LONG`]).
//! NDJSON lines always frame their rows; in an array, a break in the framing (brackets that do
//! not match, a missing `,`, the end of the input inside the array) ends the file with
//! [`FileError::Unreadable`], and the rows before it count. A body whose first line opens a
//! value it does not close is one document over several lines, not NDJSON
//! ([`FileError::MultilineJson`]): nothing of it is read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};

use paygo_snapshots::{Columns, ImportContext, RowError, column_name, cut, rule};
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

use super::{FileError, RowOutcome};

/// The longest element (array element or NDJSON line) read, in bytes. A row has about 100
/// columns of at most [`MAX_CELL_BYTES`](paygo_snapshots::MAX_CELL_BYTES) each; anything longer is refused for its row only.
pub const MAX_ELEMENT_BYTES: usize = 4 << 20;

/// The name under which a rejected element that is no object (or no JSON) keeps its raw text in
/// [`RowOutcome::raw`].
pub const RAW_ELEMENT: &str = "json";

/// How many different key sequences keep their [`Columns`] mapped (most recent first).
const KEY_SETS_KEPT: usize = 8;

/// A JSON array of objects or an NDJSON body being read row by row.
pub struct JsonSnapshots<R: BufRead> {
    input: R,
    layout: Layout,
    /// The bytes of the current element (array element or line), at most [`MAX_ELEMENT_BYTES`].
    element: Vec<u8>,
    /// Its full length, which is more than `element.len()` when it was too long to keep.
    element_len: usize,
    /// The brackets open inside the current array element.
    brackets: Vec<u8>,
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

impl<R: BufRead> JsonSnapshots<R> {
    /// Skips a BOM and whitespace and tells an array (`[`) from NDJSON (`{`). Nothing else is
    /// parsed yet.
    pub fn new(mut input: R) -> Result<Self, FileError> {
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
            element_len: 0,
            brackets: Vec::new(),
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
                keep(element, element_len, &buf[..take]);
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
            brackets,
            ..
        } = self;
        element.clear();
        *element_len = 0;
        brackets.clear();
        let (mut first, mut scalar, mut in_string, mut escaped) = (true, false, false, false);
        loop {
            let buf = fill(input).map_err(|e| unreadable(row, &e))?;
            if buf.is_empty() {
                return Ok(Scan::Eof);
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if first {
                    first = false;
                    match b {
                        b'{' | b'[' => {
                            brackets.push(b);
                            continue;
                        }
                        b'"' => {
                            in_string = true;
                            continue;
                        }
                        _ => scalar = true,
                    }
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if brackets.is_empty() {
                            end = Some(i + 1);
                            break;
                        }
                    }
                } else if scalar {
                    if is_whitespace(b) || b == b',' || b == b']' {
                        end = Some(i);
                        break;
                    }
                } else {
                    match b {
                        b'"' => in_string = true,
                        b'{' | b'[' => brackets.push(b),
                        b'}' | b']' => {
                            let opening = if b == b'}' { b'{' } else { b'[' };
                            if brackets.pop() != Some(opening) {
                                return Ok(Scan::Mismatch { found: b });
                            }
                            if brackets.is_empty() {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            let take = end.unwrap_or(buf.len());
            keep(element, element_len, &buf[..take]);
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
                     {MAX_ELEMENT_BYTES} bytes",
                    self.element_len,
                    quote(&text)
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

/// One element as parsed: an object's keys and cells in document order (duplicates kept),
/// borrowed from the element's text where JSON escapes allow; or what else it was.
enum Element<'a> {
    Object(Vec<(Cow<'a, str>, Cow<'a, str>)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
        while let Some(key) = map.next_key_seed(Key)? {
            entries.push((key, map.next_value_seed(Cell)?));
        }
        Ok(Element::Object(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Element<'de>, E> {
        Ok(Element::Other("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
        Ok(Element::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
        Ok(Element::Other("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
        Ok(Element::Other("null"))
    }
}

/// An object key, borrowed unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_owned()))
    }
}

/// A value as cell text, taken from the element's own text: a string its (unescaped) text; a
/// number its JSON text as written (`12.50`, `1e2`: no round trip through `f64`); `true` /
/// `false`; `null` empty; an object or array its compact JSON text.
struct Cell;

impl<'de> DeserializeSeed<'de> for Cell {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let raw = <&'de RawValue>::deserialize(deserializer)?;
        cell_text(raw.get()).map_err(de::Error::custom)
    }
}

/// The cell text of one JSON value's text, which serde_json has checked already.
fn cell_text(raw: &str) -> Result<Cow<'_, str>, serde_json::Error> {
    match raw.as_bytes().first() {
        Some(b'"') => match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(text) if !text.contains('\\') => Ok(Cow::Borrowed(text)),
            _ => serde_json::from_str::<String>(raw).map(Cow::Owned),
        },
        Some(b'n') => Ok(Cow::Borrowed("")),
        Some(b'{' | b'[') => serde_json::from_str::<serde_json::Value>(raw)
            .map(|nested| Cow::Owned(nested.to_string())),
        _ => Ok(Cow::Borrowed(raw)),
    }
}

/// The [`Columns`] of the key sequences seen last: objects nearly always repeat their keys in
/// the same order, and mapping them onto the catalogue per row would cost more than the row.
#[derive(Default)]
struct KeySets {
    /// Most recently used first.
    recent: Vec<KeySet>,
}

struct KeySet {
    keys: Vec<String>,
    columns: Columns,
    /// Positions (from 0) of a key's first and second occurrence, compared as column names.
    duplicates: Vec<(usize, usize)>,
}

impl KeySet {
    fn new(keys: Vec<String>) -> Self {
        let columns = Columns::new(&keys);
        let mut first_at: HashMap<&str, usize> = HashMap::with_capacity(keys.len());
        let mut duplicates = Vec::new();
        for (position, key) in keys.iter().enumerate() {
            let name = column_name(key);
            // Blank keys become `column_<n>`, like blank header cells: never duplicates.
            if name.is_empty() {
                continue;
            }
            if let Some(&first) = first_at.get(name) {
                duplicates.push((first, position));
            } else {
                first_at.insert(name, position);
            }
        }
        Self {
            keys,
            columns,
            duplicates,
        }
    }
}

impl KeySets {
    /// The key set of `keys`, mapped once and moved to the front.
    fn get(&mut self, keys: &[Cow<'_, str>]) -> &KeySet {
        let same = |set: &&KeySet| {
            set.keys.len() == keys.len() && set.keys.iter().zip(keys).all(|(a, b)| a == b)
        };
        match self.recent.iter().position(|set| same(&set)) {
            Some(0) => {}
            Some(at) => {
                let set = self.recent.remove(at);
                self.recent.insert(0, set);
            }
            None => {
                self.recent.truncate(KEY_SETS_KEPT - 1);
                let keys = keys.iter().map(|key| key.clone().into_owned()).collect();
                self.recent.insert(0, KeySet::new(keys));
            }
        }
        &self.recent[0]
    }

    /// Validates one object.
    fn outcome(
        &mut self,
        row: u64,
        entries: Vec<(Cow<'_, str>, Cow<'_, str>)>,
        ctx: &ImportContext,
    ) -> RowOutcome {
        let (keys, cells): (Vec<Cow<'_, str>>, Vec<Cow<'_, str>>) = entries.into_iter().unzip();
        let set = self.get(&keys);
        let cells: Vec<&str> = cells.iter().map(|cell| cell.as_ref()).collect();
        let mut errors: Vec<RowError> = set
            .duplicates
            .iter()
            .map(|&(first, second)| {
                let name = set.columns.names()[second].clone();
                let value = cells.get(second).copied().unwrap_or_default();
                RowError {
                    row,
                    message: format!(
                        "key `{name}` appears twice in the object (keys {} and {}), so its \
                         value is ambiguous",
                        first + 1,
                        second + 1
                    ),
                    column: name,
                    value: cut(value).to_owned(),
                    rule: rule::JSON,
                }
            })
            .collect();
        let result = match set.columns.validate(row, &cells, ctx) {
            Ok(snapshot) if errors.is_empty() => Ok(snapshot),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        };
        RowOutcome::of(row, set.columns.names(), &cells, result)
    }
}

/// A row that is no object, or no JSON: one error for the whole element.
fn rejected_element(row: u64, text: &str, message: String) -> RowOutcome {
    RowOutcome {
        row,
        result: Err(vec![element_error(row, text, rule::JSON, message)]),
        raw: vec![(RAW_ELEMENT.to_owned(), cut(text).to_owned())],
    }
}

fn element_error(row: u64, text: &str, rule: &'static str, message: String) -> RowError {
    RowError {
        row,
        column: String::new(),
        value: cut(text.trim()).to_owned(),
        rule,
        message,
    }
}

/// An element with invalid UTF-8: the error names the keys whose values hold it when the rest
/// of the element parses, else the element.
fn encoding_outcome(row: u64, bytes: &[u8], error: &std::str::Utf8Error) -> RowOutcome {
    let text = String::from_utf8_lossy(bytes);
    let message = |what: &str| {
        format!(
            "{what} is not valid UTF-8 (invalid byte at offset {} of the element)",
            error.valid_up_to()
        )
    };
    let mut errors = Vec::new();
    let mut raw = Vec::new();
    if let Ok(Element::Object(entries)) = serde_json::from_str::<Element>(&text) {
        for (key, value) in entries {
            if key.contains('\u{fffd}') || value.contains('\u{fffd}') {
                errors.push(RowError {
                    row,
                    column: column_name(&key).to_owned(),
                    value: cut(&value).to_owned(),
                    rule: rule::ENCODING,
                    message: message(&format!("column `{}`", column_name(&key))),
                });
            }
            raw.push((column_name(&key).to_owned(), value.into_owned()));
        }
    }
    if errors.is_empty() {
        errors.push(element_error(
            row,
            &text,
            rule::ENCODING,
            message(&quote(text.trim())),
        ));
        raw = vec![(RAW_ELEMENT.to_owned(), text.into_owned())];
    }
    RowOutcome {
        row,
        result: Err(errors),
        raw: super::keep_raw(
            raw.iter()
                .map(|(column, value)| (column.clone(), value.as_str())),
        ),
    }
}

/// `BufRead::fill_buf`, retried when interrupted.
fn fill<R: BufRead>(input: &mut R) -> io::Result<&[u8]> {
    loop {
        match input.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    input.fill_buf()
}

/// Skips a UTF-8 byte order mark at the start, if there is one. A body that starts like a BOM
/// but is not one is no JSON.
fn skip_bom<R: BufRead>(input: &mut R) -> Result<(), FileError> {
    const BOM: &[u8] = b"\xef\xbb\xbf";
    let io_error = |e: io::Error| FileError::Io {
        row: 1,
        message: e.to_string(),
    };
    let mut matched = 0;
    while matched < BOM.len() {
        let buf = fill(input).map_err(io_error)?;
        match buf.first() {
            Some(&b) if b == BOM[matched] => {
                input.consume(1);
                matched += 1;
            }
            _ if matched == 0 => return Ok(()),
            _ => {
                return Err(FileError::NotJson {
                    start: format!("{}…", String::from_utf8_lossy(&BOM[..matched])),
                });
            }
        }
    }
    Ok(())
}

/// The next byte that is not JSON whitespace, not consumed; `None` at the end of the input.
/// Adds the line feeds skipped to `newlines`.
fn skip_whitespace<R: BufRead>(input: &mut R, newlines: &mut u64) -> io::Result<Option<u8>> {
    loop {
        let buf = fill(input)?;
        if buf.is_empty() {
            return Ok(None);
        }
        let (skipped, next) = match buf.iter().position(|&b| !is_whitespace(b)) {
            Some(at) => (at, Some(buf[at])),
            None => (buf.len(), None),
        };
        *newlines += buf[..skipped].iter().filter(|&&b| b == b'\n').count() as u64;
        input.consume(skipped);
        if next.is_some() {
            return Ok(next);
        }
    }
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Appends `bytes` to the element while it stays within [`MAX_ELEMENT_BYTES`]; counts them all.
fn keep(element: &mut Vec<u8>, len: &mut usize, bytes: &[u8]) {
    *len = len.saturating_add(bytes.len());
    if *len <= MAX_ELEMENT_BYTES {
        element.extend_from_slice(bytes);
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

/// The value in backquotes, cut to 64 characters so that a huge element does not flood a report.
fn quote(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("`{}…`", &value[..end]),
        None => format!("`{value}`"),
    }
}
