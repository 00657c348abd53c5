//! The one clock every decision reads: services take "now" from it, tests pass their own.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// The current UTC instant; `Arc::new(Utc::now)` in production, a stopped or moving clock in
/// tests.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system clock.
pub fn system() -> Clock {
    Arc::new(Utc::now)
}
