//! Every version of every row, in page order, and the indexes that page through any snapshot in
//! O(limit · log n).
//!
//! A change (mutation or new row) always gets an `updated_at` later than every existing one, so
//! versions are appended in page order and a version's position never changes. A snapshot `v`
//! is then the prefix of versions made by `v`, less those superseded by `v`; a max-tree over
//! "superseded at" finds the next version alive in a snapshot in O(log n).

use std::ops::Range;

use chrono::{DateTime, Utc};

use super::deal::Deal;

/// "Superseded at" of a version still current.
const ALIVE: u64 = u64::MAX;

/// Which way a chain pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    Asc,
    Desc,
}

struct Version {
    deal: Deal,
    /// The logical row it is a version of.
    row: usize,
}

/// The simulator's data: all versions of all rows, and which one is current.
pub(crate) struct Store {
    /// Sorted by [`Deal::sort_key`]; append only.
    versions: Vec<Version>,
    /// Per version: the data version that superseded it, [`ALIVE`] if none did.
    superseded: MaxTree,
    /// Per version: 1 while it is current.
    current_count: Fenwick,
    /// Per logical row: the position of its current version.
    current: Vec<usize>,
    /// Per data version: how many versions existed once it was made.
    ends: Vec<usize>,
}

/// One page: the rows and, when more follow, the position to go on from.
pub(crate) struct Page<'a> {
    pub(crate) rows: Vec<&'a Deal>,
    pub(crate) next: Option<usize>,
}

impl Store {
    pub(crate) fn new(mut deals: Vec<Deal>) -> Self {
        deals.sort_by_key(Deal::sort_key);
        let len = deals.len();
        let versions: Vec<Version> = deals
            .into_iter()
            .enumerate()
            .map(|(row, deal)| Version { deal, row })
            .collect();
        let mut current_count = Fenwick::default();
        for _ in 0..len {
            current_count.push(1);
        }
        Self {
            versions,
            superseded: MaxTree::filled(len, ALIVE),
            current_count,
            current: (0..len).collect(),
            ends: vec![len],
        }
    }

    /// The current data version; a chain's snapshot is one of these.
    pub(crate) fn version(&self) -> u64 {
        (self.ends.len() - 1) as u64
    }

    pub(crate) fn row_count(&self) -> usize {
        self.current.len()
    }

    /// The latest `updated_at` of all versions.
    pub(crate) fn max_updated_at(&self) -> Option<DateTime<Utc>> {
        self.versions.last().map(|v| v.deal.updated_at)
    }

    /// The current version of logical row `row`.
    pub(crate) fn current(&self, row: usize) -> Option<&Deal> {
        let position = *self.current.get(row)?;
        Some(&self.versions[position].deal)
    }

    /// Records one change: `updated` supersedes the current versions of their rows, `added`
    /// become new rows. Every `updated_at` must be later than [`Self::max_updated_at`].
    pub(crate) fn commit(&mut self, updated: Vec<(usize, Deal)>, added: Vec<Deal>) {
        if updated.is_empty() && added.is_empty() {
            return;
        }
        let version = self.version() + 1;
        let mut batch: Vec<Version> = updated
            .into_iter()
            .map(|(row, deal)| Version { deal, row })
            .collect();
        for deal in added {
            self.current.push(usize::MAX);
            batch.push(Version {
                deal,
                row: self.current.len() - 1,
            });
        }
        batch.sort_by_key(|v| v.deal.sort_key());
        for change in batch {
            let old = self.current[change.row];
            if old != usize::MAX {
                self.superseded.set(old, version);
                self.current_count.add(old, -1);
            }
            self.current[change.row] = self.versions.len();
            self.versions.push(change);
            self.superseded.push(ALIVE);
            self.current_count.push(1);
        }
        self.ends.push(self.versions.len());
    }

    /// Positions of the versions visible in `snapshot` with `since <= updated_at < until` lie
    /// in this range (less the ones superseded by then).
    pub(crate) fn window(
        &self,
        snapshot: u64,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Option<Range<usize>> {
        let end = *self.ends.get(usize::try_from(snapshot).ok()?)?;
        let made = &self.versions[..end];
        let lo = since.map_or(0, |since| {
            made.partition_point(|v| v.deal.updated_at < since)
        });
        let hi = until.map_or(end, |until| {
            made.partition_point(|v| v.deal.updated_at < until)
        });
        Some(lo..hi.max(lo))
    }

    /// Rows current in the latest snapshot within `window`.
    pub(crate) fn count_current(&self, window: &Range<usize>) -> u64 {
        let count = self.current_count.prefix(window.end) - self.current_count.prefix(window.start);
        u64::try_from(count).unwrap_or(0)
    }

    /// Up to `limit` rows of `snapshot` within `window`, from `position` on (for `Desc`,
    /// before `position`); `position` must lie within the window.
    pub(crate) fn page(
        &self,
        snapshot: u64,
        window: &Range<usize>,
        order: Order,
        position: usize,
        limit: usize,
    ) -> Page<'_> {
        let mut rows = Vec::with_capacity(limit.min(window.len()));
        let mut position = position;
        let next_visible = |position: usize| match order {
            Order::Asc => self.superseded.first_above(position, window.end, snapshot),
            Order::Desc => self.superseded.last_above(window.start, position, snapshot),
        };
        while rows.len() < limit {
            let Some(found) = next_visible(position) else {
                return Page { rows, next: None };
            };
            rows.push(&self.versions[found].deal);
            position = match order {
                Order::Asc => found + 1,
                Order::Desc => found,
            };
        }
        let next = next_visible(position).map(|_| position);
        Page { rows, next }
    }

    /// Every current row, in page order.
    pub(crate) fn latest(&self) -> impl Iterator<Item = &Deal> {
        self.versions
            .iter()
            .enumerate()
            .filter(|(position, v)| self.current[v.row] == *position)
            .map(|(_, v)| &v.deal)
    }
}

/// A segment tree of maxima over a growing sequence: find the first/last value above a floor
/// within a range in O(log n).
struct MaxTree {
    /// Leaves in use.
    len: usize,
    /// Leaf capacity, a power of two.
    size: usize,
    /// `nodes[1]` is the root, `nodes[size + i]` leaf `i`; unused leaves are 0.
    nodes: Vec<u64>,
}

impl MaxTree {
    fn filled(len: usize, value: u64) -> Self {
        let size = len.next_power_of_two().max(1);
        let mut tree = Self {
            len,
            size,
            nodes: vec![0; 2 * size],
        };
        tree.nodes[size..size + len].fill(value);
        tree.rebuild();
        tree
    }

    fn rebuild(&mut self) {
        for node in (1..self.size).rev() {
            self.nodes[node] = self.nodes[2 * node].max(self.nodes[2 * node + 1]);
        }
    }

    fn push(&mut self, value: u64) {
        if self.len == self.size {
            let size = self.size * 2;
            let mut nodes = vec![0; 2 * size];
            nodes[size..size + self.len]
                .copy_from_slice(&self.nodes[self.size..self.size + self.len]);
            self.size = size;
            self.nodes = nodes;
            self.rebuild();
        }
        self.len += 1;
        self.set(self.len - 1, value);
    }

    fn set(&mut self, index: usize, value: u64) {
        let mut node = self.size + index;
        self.nodes[node] = value;
        while node > 1 {
            node /= 2;
            self.nodes[node] = self.nodes[2 * node].max(self.nodes[2 * node + 1]);
        }
    }

    /// The first index in `from..to` whose value is above `floor`.
    fn first_above(&self, from: usize, to: usize, floor: u64) -> Option<usize> {
        self.find_in(1, 0..self.size, from..to.min(self.len), floor, false)
    }

    /// The last index in `from..to` whose value is above `floor`.
    fn last_above(&self, from: usize, to: usize, floor: u64) -> Option<usize> {
        self.find_in(1, 0..self.size, from..to.min(self.len), floor, true)
    }

    /// The first (or, with `last`, the last) index of `want` under `node` (covering `span`)
    /// whose value is above `floor`.
    fn find_in(
        &self,
        node: usize,
        span: Range<usize>,
        want: Range<usize>,
        floor: u64,
        last: bool,
    ) -> Option<usize> {
        if span.end <= want.start || want.end <= span.start || self.nodes[node] <= floor {
            return None;
        }
        if span.len() == 1 {
            return Some(span.start);
        }
        let mid = span.start + span.len() / 2;
        let left = (2 * node, span.start..mid);
        let right = (2 * node + 1, mid..span.end);
        let (near, far) = if last { (right, left) } else { (left, right) };
        self.find_in(near.0, near.1, want.clone(), floor, last)
            .or_else(|| self.find_in(far.0, far.1, want, floor, last))
    }
}

/// A Fenwick tree of counts over a growing sequence: prefix sums in O(log n).
#[derive(Default)]
struct Fenwick {
    /// 1-based; `nodes[i]` sums the values in `(i - lowbit(i), i]`.
    nodes: Vec<i64>,
}

impl Fenwick {
    fn push(&mut self, value: i64) {
        if self.nodes.is_empty() {
            self.nodes.push(0);
        }
        let index = self.nodes.len();
        let lowbit = index & index.wrapping_neg();
        let mut sum = value;
        let mut step = 1;
        while step < lowbit {
            sum += self.nodes[index - step];
            step *= 2;
        }
        self.nodes.push(sum);
    }

    fn add(&mut self, position: usize, delta: i64) {
        let mut index = position + 1;
        while index < self.nodes.len() {
            self.nodes[index] += delta;
            index += index & index.wrapping_neg();
        }
    }

    /// The sum of the first `len` values.
    fn prefix(&self, len: usize) -> i64 {
        let mut index = len.min(self.nodes.len().saturating_sub(1));
        let mut sum = 0;
        while index > 0 {
            sum += self.nodes[index];
            index &= index - 1;
        }
        sum
    }
}
