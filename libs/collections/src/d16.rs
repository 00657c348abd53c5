//! The D16 "Collections Cases" dataset: one deal per row key `(public_id, created_at)`.
//! `public_id` is the borrower × lender link and repeats across a borrower's deals.

use chrono::{DateTime, SecondsFormat, Utc};

/// The section of the export API D16 lives in.
pub const SECTION: &str = "S3";
/// The dataset's code.
pub const CODE: &str = "D16";
/// The dataset's path, `{section}/{code}`: what the deal events name as their dataset.
pub const DATASET: &str = "S3/D16";

/// The row key of a D16 deal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DealKey {
    pub public_id: String,
    /// Kept to the microsecond, as the export names it.
    pub created_at: DateTime<Utc>,
}

impl DealKey {
    pub fn new(public_id: impl Into<String>, created_at: DateTime<Utc>) -> Self {
        Self {
            public_id: public_id.into(),
            created_at,
        }
    }

    /// The row key as text: `{public_id}|{created_at}`, the instant in RFC 3339 with
    /// microseconds and `Z`, the way a dataset's key fields are joined.
    pub fn row_key(&self) -> String {
        format!(
            "{}|{}",
            self.public_id,
            self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    }

    /// The key of a [`DealKey::row_key`] text; `None` for any other text.
    pub fn parse(row_key: &str) -> Option<Self> {
        let (public_id, at) = row_key.rsplit_once('|')?;
        let created_at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
        Some(Self::new(public_id, created_at))
    }
}
