//! What an XLSX archive would cost, measured before calamine opens it.
//!
//! calamine trusts the archive: it inflates each part as far as the part goes, keeps the
//! shared strings in memory (reserving what the part declares), and buffers any one cell,
//! string or tag whole. A 1 MiB upload can inflate to gigabytes. So every part is inflated
//! once here, in a fixed buffer, and the upload is refused with a [`FileError::OverBudget`]
//! naming the limit when:
//! - the archive lists more than [`MAX_ENTRIES`] parts, or a central directory over
//!   [`MAX_DIRECTORY_BYTES`] (read from its end record, before the zip reader loads it);
//! - its parts inflate to more than [`ReadLimits::xlsx_max_inflated_bytes`] together;
//! - a part calamine reads whole (everything but a sheet: shared strings, styles, the workbook,
//!   relationships) inflates to more than [`MAX_PART_BYTES`];
//! - the shared strings declare or hold more than [`MAX_SHARED_STRINGS`] strings;
//! - one text or markup token (a cell, a string, a tag, a comment) is longer than
//!   [`ReadLimits::max_record_bytes`].
//!
//! What a part is comes from its root element, not its name: calamine follows relationships, so
//! any name can hold a sheet.

use std::io::{Read, Seek, SeekFrom};

use super::super::{FileError, ReadLimits};

/// Most parts (zip entries) an archive may list.
pub const MAX_ENTRIES: u64 = 10_000;
/// Largest central directory read.
pub const MAX_DIRECTORY_BYTES: u64 = 4 << 20;
/// Largest part read whole (anything but a worksheet), inflated.
pub const MAX_PART_BYTES: u64 = 64 << 20;
/// Most shared strings a workbook may hold.
pub const MAX_SHARED_STRINGS: u64 = 1_000_000;

/// Measures the archive in `reader` against the limits, then rewinds it.
pub(super) fn check<RS: Read + Seek>(
    reader: &mut RS,
    limits: &ReadLimits,
) -> Result<(), FileError> {
    check_directory(reader)?;
    reader.seek(SeekFrom::Start(0)).map_err(io_error)?;
    let mut archive = zip::ZipArchive::new(&mut *reader).map_err(|e| FileError::NotXlsx {
        reason: format!("not a zip archive: {e}"),
    })?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut inflated = 0u64;
    for index in 0..archive.len() {
        let mut part = archive.by_index(index).map_err(|e| FileError::NotXlsx {
            reason: format!("part {index} cannot be read: {e}"),
        })?;
        let name = part
            .name()
            .map_or_else(|_| format!("#{index}"), std::borrow::Cow::into_owned);
        let over = |what: String| FileError::OverBudget {
            reason: format!("part `{name}`: {what}"),
        };
        let mut scan = PartScan::new(limits.max_record_bytes);
        let mut part_bytes = 0u64;
        loop {
            let read = match part.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FileError::NotXlsx {
                        reason: format!("part `{name}` cannot be inflated: {e}"),
                    });
                }
            };
            part_bytes += read as u64;
            inflated += read as u64;
            if inflated > limits.xlsx_max_inflated_bytes {
                return Err(FileError::OverBudget {
                    reason: format!(
                        "the workbook inflates to more than {} bytes, the limit for one XLSX \
                         upload (--xlsx-max-inflated-bytes); split it or send it as CSV",
                        limits.xlsx_max_inflated_bytes
                    ),
                });
            }
            scan.feed(buffer.get(..read).unwrap_or_default())
                .map_err(&over)?;
            if !scan.is_sheet() && part_bytes > MAX_PART_BYTES {
                return Err(over(format!(
                    "inflates to more than {MAX_PART_BYTES} bytes, the limit for a part read \
                     whole (shared strings, styles, the workbook)"
                )));
            }
        }
    }
    drop(archive);
    reader.seek(SeekFrom::Start(0)).map_err(io_error)?;
    Ok(())
}

/// Reads the archive's end record (the zip64 one when there is one) and refuses a central
/// directory listing too many parts before anything loads it.
fn check_directory<RS: Read + Seek>(reader: &mut RS) -> Result<(), FileError> {
    const END: &[u8] = b"PK\x05\x06";
    const END_LEN: u64 = 22;
    let len = reader.seek(SeekFrom::End(0)).map_err(io_error)?;
    let tail_len = len.min(END_LEN + u64::from(u16::MAX));
    let tail = read_at(reader, len - tail_len, tail_len)?;
    let Some(at) = tail.windows(4).rposition(|w| w == END) else {
        return Err(FileError::NotXlsx {
            reason: "not a zip archive: it has no end of central directory record".to_owned(),
        });
    };
    let record = tail.get(at..).unwrap_or_default();
    let mut entries = le(record, 10, 2);
    let mut directory = le(record, 12, 4);
    if entries == u64::from(u16::MAX) || directory == u64::from(u32::MAX) {
        // zip64: the locator sits just before the end record and points at the real counts.
        let end_at = len - tail_len + at as u64;
        if let Some(locator_at) = end_at.checked_sub(20) {
            let locator = read_at(reader, locator_at, 20)?;
            if locator.starts_with(b"PK\x06\x07") {
                let record = read_at(reader, le(&locator, 8, 8), 56)?;
                if record.starts_with(b"PK\x06\x06") {
                    entries = le(&record, 32, 8);
                    directory = le(&record, 40, 8);
                }
            }
        }
    }
    if entries > MAX_ENTRIES {
        return Err(FileError::OverBudget {
            reason: format!(
                "the archive lists {entries} parts; a workbook may have at most {MAX_ENTRIES}"
            ),
        });
    }
    if directory > MAX_DIRECTORY_BYTES {
        return Err(FileError::OverBudget {
            reason: format!(
                "the archive's central directory takes {directory} bytes; at most \
                 {MAX_DIRECTORY_BYTES} are read"
            ),
        });
    }
    Ok(())
}

/// `len` bytes at `offset`, fewer at the end of the file.
fn read_at<RS: Read + Seek>(reader: &mut RS, offset: u64, len: u64) -> Result<Vec<u8>, FileError> {
    reader.seek(SeekFrom::Start(offset)).map_err(io_error)?;
    let mut bytes = Vec::new();
    reader.take(len).read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// The little-endian number of `len` bytes (2, 4 or 8) at `at`; 0 past the end.
fn le(bytes: &[u8], at: usize, len: usize) -> u64 {
    let mut number = [0u8; 8];
    if let (Some(field), Some(into)) = (bytes.get(at..at + len), number.get_mut(..len)) {
        into.copy_from_slice(field);
    }
    u64::from_le_bytes(number)
}

fn io_error(e: std::io::Error) -> FileError {
    FileError::Io {
        row: 1,
        message: format!("reading the spooled upload: {e}"),
    }
}

/// Where the scan of a part's XML stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Markup {
    Text,
    /// After `<`.
    Open,
    /// In a start or end tag; `quote` is the quote of the attribute value it is in, or 0.
    Tag {
        quote: u8,
    },
    /// After `<!`: `matched` bytes of `--` (`cdata` false) or `[CDATA[` (true).
    Bang {
        matched: usize,
        cdata: bool,
    },
    /// In a comment; `dashes` the `-` just before.
    Comment {
        dashes: u8,
    },
    /// In a CDATA section; `brackets` the `]` just before.
    Cdata {
        brackets: u8,
    },
    /// In a processing instruction; `question` whether a `?` was just before.
    Instruction {
        question: bool,
    },
    /// In a `<!DOCTYPE ...>` or another declaration, with its `[...]` depth.
    Declaration {
        quote: u8,
        depth: u32,
    },
}

/// Longest tag name kept to recognise `si`, and start of the root tag kept for its attributes.
const NAME_BYTES: usize = 64;
const ROOT_BYTES: usize = 4096;

/// A streaming scan of one part: token lengths, its root element, its shared strings.
struct PartScan {
    state: Markup,
    /// Bytes of the current token (text run or markup) so far.
    run: usize,
    max_run: usize,
    /// The name of the start tag being read, while it is being read.
    name: Vec<u8>,
    naming: bool,
    /// The root element's start tag (its first bytes), once read.
    root: Vec<u8>,
    root_done: bool,
    /// Start tags named `si`: shared strings.
    strings: u64,
}

impl PartScan {
    fn new(max_run: usize) -> Self {
        Self {
            state: Markup::Text,
            run: 0,
            max_run,
            name: Vec::with_capacity(NAME_BYTES),
            naming: false,
            root: Vec::with_capacity(ROOT_BYTES),
            root_done: false,
            strings: 0,
        }
    }

    /// Whether the part is a sheet, which calamine streams rather than reads whole.
    fn is_sheet(&self) -> bool {
        matches!(
            local_name(root_name(&self.root)),
            b"worksheet" | b"chartsheet" | b"dialogsheet"
        )
    }

    fn is_shared_strings(&self) -> bool {
        local_name(root_name(&self.root)) == b"sst"
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut rest = bytes;
        while !rest.is_empty() {
            // Runs of bytes that change nothing are skipped at once: text up to the next tag,
            // attributes up to the next quote or the end of the tag.
            let plain = !self.naming && self.root_done;
            let skip = match self.state {
                Markup::Text => rest.iter().position(|&b| b == b'<'),
                Markup::Tag { quote: 0 } if plain => {
                    rest.iter().position(|&b| matches!(b, b'"' | b'\'' | b'>'))
                }
                Markup::Tag { quote } if plain => rest.iter().position(|&b| b == quote),
                _ => Some(0),
            }
            .unwrap_or(rest.len());
            self.run += skip;
            self.check_run()?;
            let Some((&b, after)) = rest.get(skip..).and_then(<[u8]>::split_first) else {
                return Ok(());
            };
            rest = after;
            self.run += 1;
            self.check_run()?;
            if self.state == Markup::Text {
                // `b` is the `<` the skip stopped at.
                self.state = Markup::Open;
                self.run = 1;
                continue;
            }
            self.step(b)?;
        }
        Ok(())
    }

    fn check_run(&self) -> Result<(), String> {
        if self.run > self.max_run {
            return Err(format!(
                "a cell, string or tag is longer than {} bytes, the limit for one record \
                 (--max-record-bytes)",
                self.max_run
            ));
        }
        Ok(())
    }

    /// One byte of markup.
    fn step(&mut self, b: u8) -> Result<(), String> {
        self.state = match self.state {
            Markup::Text => Markup::Text,
            Markup::Open => match b {
                b'!' => Markup::Bang {
                    matched: 0,
                    cdata: false,
                },
                b'?' => Markup::Instruction { question: false },
                b'/' => Markup::Tag { quote: 0 },
                _ => {
                    self.start_tag(b);
                    Markup::Tag { quote: 0 }
                }
            },
            Markup::Tag { quote } => {
                self.tag_byte(b)?;
                match (quote, b) {
                    (0, b'"' | b'\'') => Markup::Tag { quote: b },
                    (0, b'>') => self.token_end(),
                    (0, _) => Markup::Tag { quote: 0 },
                    (q, _) if q == b => Markup::Tag { quote: 0 },
                    (q, _) => Markup::Tag { quote: q },
                }
            }
            Markup::Bang { matched, cdata } => bang(matched, cdata, b),
            Markup::Comment { dashes } => match b {
                b'-' => Markup::Comment {
                    dashes: dashes.saturating_add(1),
                },
                b'>' if dashes >= 2 => self.token_end(),
                _ => Markup::Comment { dashes: 0 },
            },
            Markup::Cdata { brackets } => match b {
                b']' => Markup::Cdata {
                    brackets: brackets.saturating_add(1),
                },
                b'>' if brackets >= 2 => self.token_end(),
                _ => Markup::Cdata { brackets: 0 },
            },
            Markup::Instruction { question } => match b {
                b'>' if question => self.token_end(),
                _ => Markup::Instruction {
                    question: b == b'?',
                },
            },
            Markup::Declaration { quote, depth } => match (quote, b) {
                (0, b'"' | b'\'') => Markup::Declaration { quote: b, depth },
                (0, b'[') => Markup::Declaration {
                    quote,
                    depth: depth.saturating_add(1),
                },
                (0, b']') => Markup::Declaration {
                    quote,
                    depth: depth.saturating_sub(1),
                },
                (0, b'>') if depth == 0 => self.token_end(),
                (q, _) if q == b => Markup::Declaration { quote: 0, depth },
                _ => Markup::Declaration { quote, depth },
            },
        };
        Ok(())
    }

    fn start_tag(&mut self, first: u8) {
        self.name.clear();
        self.name.push(first);
        self.naming = true;
        if !self.root_done {
            self.root.push(b'<');
            self.root.push(first);
        }
    }

    /// A byte inside a tag after its first: the name while it lasts, the root's attributes.
    fn tag_byte(&mut self, b: u8) -> Result<(), String> {
        let in_root = !self.root_done && !self.root.is_empty();
        if in_root && self.root.len() < ROOT_BYTES {
            self.root.push(b);
        }
        if self.naming {
            if b.is_ascii_whitespace() || b == b'/' || b == b'>' {
                self.naming = false;
                if local_name(&self.name) == b"si" {
                    self.strings += 1;
                    if self.is_shared_strings() && self.strings > MAX_SHARED_STRINGS {
                        return Err(format!(
                            "more than {MAX_SHARED_STRINGS} shared strings, the limit for one \
                             workbook"
                        ));
                    }
                }
            } else if self.name.len() < NAME_BYTES {
                self.name.push(b);
            }
        }
        if in_root && b == b'>' {
            self.root_done = true;
            self.check_root()?;
        }
        Ok(())
    }

    /// The shared strings' declared count, which calamine reserves room for.
    fn check_root(&self) -> Result<(), String> {
        if !self.is_shared_strings() {
            return Ok(());
        }
        for attribute in [&b"uniqueCount"[..], b"count"] {
            if let Some(count) = attribute_number(&self.root, attribute)
                && count > MAX_SHARED_STRINGS
            {
                return Err(format!(
                    "declares {count} shared strings; a workbook may have at most \
                     {MAX_SHARED_STRINGS}"
                ));
            }
        }
        Ok(())
    }

    fn token_end(&mut self) -> Markup {
        self.run = 0;
        Markup::Text
    }
}

/// The next state after `<!` and `matched` bytes of `--` or `[CDATA[`.
fn bang(matched: usize, cdata: bool, b: u8) -> Markup {
    const COMMENT: &[u8] = b"--";
    const CDATA: &[u8] = b"[CDATA[";
    let pattern = match (matched, b) {
        (0, b'-') => COMMENT,
        (0, b'[') => CDATA,
        (0, _) => return declaration(b),
        _ if cdata => CDATA,
        _ => COMMENT,
    };
    if pattern.get(matched) != Some(&b) {
        return declaration(b);
    }
    match (matched + 1 == pattern.len(), pattern == CDATA) {
        (true, false) => Markup::Comment { dashes: 0 },
        (true, true) => Markup::Cdata { brackets: 0 },
        (false, cdata) => Markup::Bang {
            matched: matched + 1,
            cdata,
        },
    }
}

fn declaration(b: u8) -> Markup {
    match b {
        b'>' => Markup::Text,
        b'[' => Markup::Declaration { quote: 0, depth: 1 },
        b'"' | b'\'' => Markup::Declaration { quote: b, depth: 0 },
        _ => Markup::Declaration { quote: 0, depth: 0 },
    }
}

/// The name of the tag `<name ...`.
fn root_name(tag: &[u8]) -> &[u8] {
    let tag = tag.strip_prefix(b"<").unwrap_or(tag);
    let end = tag
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/' || b == b'>')
        .unwrap_or(tag.len());
    tag.get(..end).unwrap_or_default()
}

/// A name without its namespace prefix.
fn local_name(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b':') {
        Some(colon) => name.get(colon + 1..).unwrap_or_default(),
        None => name,
    }
}

/// The number in `name="123"` within a start tag; `None` when absent or not a number (calamine
/// reserves nothing then). A number too large for `u64` is `u64::MAX`.
fn attribute_number(tag: &[u8], name: &[u8]) -> Option<u64> {
    let mut from = 0;
    while let Some(at) = tag.get(from..)?.windows(name.len()).position(|w| w == name) {
        let start = from + at;
        from = start + 1;
        let before = start.checked_sub(1).and_then(|i| tag.get(i));
        if !before.is_some_and(u8::is_ascii_whitespace) {
            continue;
        }
        let rest = tag.get(start + name.len()..)?;
        let rest = rest
            .trim_ascii_start()
            .strip_prefix(b"=")?
            .trim_ascii_start();
        let rest = rest
            .strip_prefix(b"\"")
            .or_else(|| rest.strip_prefix(b"'"))?;
        let digits: Vec<u8> = rest
            .iter()
            .copied()
            .take_while(u8::is_ascii_digit)
            .collect();
        if digits.is_empty() {
            return None;
        }
        let value = digits.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        return Some(value.unwrap_or(u64::MAX));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scan(xml: &str, max_run: usize) -> Result<PartScan, String> {
        let mut scan = PartScan::new(max_run);
        // Fed in small pieces: the state carries over.
        for piece in xml.as_bytes().chunks(3) {
            scan.feed(piece)?;
        }
        Ok(scan)
    }

    #[test]
    fn tells_parts_by_their_root_element() {
        let sheet = r#"<?xml version="1.0"?><!-- a > b --><x:worksheet xmlns:x="s"><sheetData/></x:worksheet>"#;
        assert!(scan(sheet, 100).unwrap().is_sheet());
        let strings = r#"<?xml version="1.0"?><sst count="2" uniqueCount="2"><si><t>a</t></si><x:si><t>b</t></x:si></sst>"#;
        let strings = scan(strings, 100).unwrap();
        assert!(strings.is_shared_strings() && !strings.is_sheet());
        assert_eq!(strings.strings, 2);
    }

    #[test]
    fn a_token_longer_than_the_limit_is_refused_whatever_hides_it() {
        let long = "y".repeat(50);
        for xml in [
            format!("<t>{long}</t>"),
            format!(r#"<c a="{long}"/>"#),
            format!(r#"<c a="{}>{}"/>"#, &long[..20], &long[..20]),
            format!("<!-- {}>{} -->", &long[..20], &long[..20]),
            format!("<![CDATA[{}>]>{}]]>", &long[..20], &long[..20]),
            format!(
                "<!DOCTYPE x [<!ENTITY a '{}'>{}]>",
                &long[..20],
                &long[..10]
            ),
        ] {
            let error = scan(&xml, 40)
                .err()
                .unwrap_or_else(|| panic!("{xml} passed"));
            assert!(error.contains("longer than 40 bytes"), "{error}");
        }
        // The same tokens within the limit pass, and text runs reset at each tag.
        assert!(scan(&format!("<t>{}</t><t>{}</t>", &long[..30], &long[..30]), 40).is_ok());
        assert!(scan(&format!("<![CDATA[{}]]><t/>", &long[..20]), 40).is_ok());
    }

    #[test]
    fn declared_shared_strings_beyond_the_limit_are_refused() {
        let error = scan(
            r#"<sst xmlns="s" uniqueCount="99999999999999999999999">"#,
            1000,
        )
        .err()
        .unwrap();
        assert!(error.contains(&u64::MAX.to_string()), "{error}");
        assert!(scan(r#"<sst count="5" uniqueCount="5">"#, 1000).is_ok());
        assert_eq!(
            attribute_number(br#"<sst count = '12'"#, b"count"),
            Some(12)
        );
        assert_eq!(attribute_number(br#"<sst uniqueCount="3""#, b"count"), None);
    }
}
