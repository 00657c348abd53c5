//! The bounds a cycle runs within and what it comes to: its report, or why it failed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_backbone::producer::PublishError;
use serde::Serialize;

use crate::client::FetchError;
use crate::readback::ReadBackError;
use crate::store::StoreError;

/// Bounds of the fault handling.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// The smallest page size a gateway timeout narrows to.
    pub min_limit: u32,
    /// The narrowest window a gateway timeout narrows to.
    pub min_window: Duration,
    /// "Invalid cursor" answers in a row (no page committed between) before the cycle fails.
    pub max_cursor_restarts: u32,
    /// Gateway timeouts in a row before the cycle fails.
    pub max_gateway_timeouts: u32,
    /// Longest wait for the broker while reading the stream's events back at start.
    pub readback_timeout: Duration,
}

impl Default for PullSettings {
    /// Pages down to 50 rows, windows down to 1 minute, 5 cursor restarts, 8 gateway timeouts,
    /// 30 s read-back waits.
    fn default() -> Self {
        Self {
            min_limit: 50,
            min_window: Duration::from_secs(60),
            max_cursor_restarts: 5,
            max_gateway_timeouts: 8,
            readback_timeout: Duration::from_secs(30),
        }
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    /// Pages committed.
    pub pages: u64,
    /// Rows in them.
    pub rows: u64,
    /// Deals published (new or changed content).
    pub published: u64,
    /// Rows whose content was published before.
    pub unchanged: u64,
    /// Rejected rows published to the rejects topic.
    pub rejected: u64,
    /// Rejected rows already published before (the same raw row again).
    pub rejects_repeated: u64,
    /// Cursor chains completed.
    pub chains: u64,
    /// Chains started again after an "invalid cursor".
    pub cursor_restarts: u64,
    pub gateway_timeouts: u64,
    /// Contents found on the topic by the read-back at start, unknown to the store.
    pub recovered: u64,
    /// The committed `since` at the end.
    pub since: Option<DateTime<Utc>>,
    /// The cycle stopped for a shutdown before its chain ended (it resumes where it stopped).
    pub stopped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("kafka did not take the page's events (those it acknowledged are remembered): {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ReadBack(#[from] ReadBackError),
    #[error(
        "the API answered \"invalid cursor\" {0} times in a row, also for chains started afresh"
    )]
    CursorRestarts(u32),
    #[error("{count} gateway timeouts in a row, the last at limit {limit} and window {window:?}")]
    GatewayTimeouts {
        count: u32,
        limit: u32,
        window: Option<Duration>,
    },
    #[error("internal: {0}")]
    Task(String),
    #[error(
        "did not stop within {0:?} of the shutdown signal (a broker that takes nothing?); \
         the pages in flight are pulled again next time"
    )]
    Abandoned(Duration),
}

impl PullError {
    /// A configuration or credentials problem: pulling again without a change cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PullError::Fetch(
                FetchError::LoginRefused { .. }
                    | FetchError::Forbidden { .. }
                    | FetchError::DatasetNotFound { .. }
                    | FetchError::LenderMismatch { .. }
                    | FetchError::BadRequest(_)
                    | FetchError::Unexpected(_)
            )
        )
    }
}
