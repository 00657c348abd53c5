//! Collections rules (docs/domain.md §1 and §4) as pure functions: no I/O, no clock (the as-of
//! day is always an argument).
//!
//! - [`dpd`]: days past due and their buckets.
//! - [`ptp`]: promises to pay, per channel, and their status on a day.
//! - [`d16`]: the D16 "Collections Cases" dataset and its row key.

pub mod d16;
pub mod dpd;
pub mod ptp;

pub use d16::DealKey;
pub use dpd::DpdBucket;
pub use ptp::{PtpChannel, PtpFact, PtpStatus};
