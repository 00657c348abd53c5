//! Byte-level reading of the body: buffer filling, BOM and whitespace skipping, and keeping
//! an element's bytes within its budget.

use std::io::{self, BufRead};

use crate::readers::FileError;

/// `BufRead::fill_buf`, retried when interrupted.
pub(super) fn fill<R: BufRead>(input: &mut R) -> io::Result<&[u8]> {
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
pub(super) fn skip_bom<R: BufRead>(input: &mut R) -> Result<(), FileError> {
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
pub(super) fn skip_whitespace<R: BufRead>(
    input: &mut R,
    newlines: &mut u64,
) -> io::Result<Option<u8>> {
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

pub(super) fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Appends `bytes` to the element while it stays within `max` bytes; counts them all.
pub(super) fn keep(element: &mut Vec<u8>, len: &mut usize, bytes: &[u8], max: usize) {
    *len = len.saturating_add(bytes.len());
    if *len <= max {
        element.extend_from_slice(bytes);
    }
}
