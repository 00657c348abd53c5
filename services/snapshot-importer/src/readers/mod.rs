//! Readers turn an uploaded file into rows, one at a time, in constant memory.

pub mod csv;

use paygo_snapshots::{AccountSnapshot, HeaderError, RowError};

/// One data row of a file: its number as the sender sees it (the header is row 1) and either
/// the snapshot or everything that is wrong with the row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    pub row: u64,
    pub result: Result<AccountSnapshot, Vec<RowError>>,
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
}
