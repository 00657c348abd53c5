//! The cursor chain a cycle follows, and how gateway timeouts narrow it: a chain begins at the
//! committed `since` (inclusive), optionally ends at `until` (a window), and carries the cursor
//! of its next page.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::store::{Chain, Checkpoint};

/// The chain being followed.
#[derive(Debug, Clone)]
pub(super) struct ChainState {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// `None`: the chain's first page.
    pub cursor: Option<String>,
    pub pages: u64,
}

impl ChainState {
    /// The chain in flight of `cp`, or a new one from its committed `since`.
    pub fn resume(cp: &Checkpoint, now: DateTime<Utc>) -> Self {
        match &cp.chain {
            Some(c) => Self {
                since: c.since,
                until: c.until,
                cursor: Some(c.cursor.clone()),
                pages: c.pages,
            },
            None => Self::fresh(cp, now),
        }
    }

    /// A chain from the committed `since`, narrowed to the window in force unless that reaches
    /// past `now`.
    pub fn fresh(cp: &Checkpoint, now: DateTime<Utc>) -> Self {
        let until = match (cp.since, cp.window_secs) {
            (Some(since), Some(secs)) => since
                .checked_add_signed(TimeDelta::seconds(secs))
                .filter(|until| *until < now),
            _ => None,
        };
        Self {
            since: cp.since,
            until,
            cursor: None,
            pages: 0,
        }
    }

    pub fn request(&self, limit: u32) -> Request {
        Request {
            since: self.since,
            until: self.until,
            cursor: self.cursor.clone(),
            limit,
        }
    }

    /// The request of the page after this one, whose next cursor is `next`.
    pub fn request_after(&self, next: &str, limit: u32) -> Request {
        Request {
            cursor: Some(next.to_owned()),
            ..self.request(limit)
        }
    }

    /// Moves on to the page after a committed one: the chain in flight as the checkpoint keeps
    /// it.
    pub fn advance(&mut self, next: &str) -> Chain {
        self.cursor = Some(next.to_owned());
        self.pages += 1;
        Chain {
            since: self.since,
            until: self.until,
            cursor: next.to_owned(),
            pages: self.pages,
        }
    }
}

/// A page request that can be sent to another task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// The page size a cycle asks for, within what gateway timeouts narrowed it to.
#[derive(Debug, Clone, Copy)]
pub(super) struct PageSize {
    /// As configured for the stream.
    pub configured: u32,
    /// The smallest a gateway timeout narrows to.
    pub min: u32,
    /// In force now.
    pub current: u32,
}

impl PageSize {
    /// The size in force after `cp`, between `min_limit` and `configured` (1–`max`).
    pub fn of(cp: &Checkpoint, configured: u32, min_limit: u32, max: u32) -> Self {
        let configured = configured.clamp(1, max);
        let min = min_limit.clamp(1, configured);
        Self {
            configured,
            min,
            current: cp.limit.unwrap_or(configured).clamp(min, configured),
        }
    }

    /// Half the size (a gateway timeout); what the checkpoint keeps.
    pub fn halve(&mut self) -> Option<u32> {
        self.current = (self.current / 2).max(self.min);
        self.kept()
    }

    /// Twice the size, up to the configured one (a completed chain); what the checkpoint keeps.
    pub fn double(&mut self) -> Option<u32> {
        self.current = self.current.saturating_mul(2).min(self.configured);
        self.kept()
    }

    fn kept(&self) -> Option<u32> {
        (self.current < self.configured).then_some(self.current)
    }
}

/// After a gateway timeout: the window `[since, since + w)` in force halves, down to
/// `min_window`; without one it starts from the span between `since` and `now`. `None` while
/// no `since` is known (only the page size can narrow then).
pub(super) fn narrowed_window(
    cp: &Checkpoint,
    now: DateTime<Utc>,
    min_window: Duration,
) -> Option<i64> {
    let since = cp.since?;
    let min = i64::try_from(min_window.as_secs())
        .unwrap_or(i64::MAX)
        .max(1);
    let span = cp
        .window_secs
        .unwrap_or_else(|| (now - since).num_seconds().max(min));
    Some((span / 2).max(min))
}
