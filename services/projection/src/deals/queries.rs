//! Reading the deals: one deal, listings by the fitting index, the funnel, DPD buckets and
//! PTP totals on any day.

use std::collections::HashMap;
use std::ops::Bound;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use collections::{DealKey, DpdBucket, PtpChannel};
use recoup_keys::KeyReader;
use recoup_proto::v1;

use super::facts::Facts;
use super::keys::{deal_key, deal_tail, due, funnel_prefix, ptp_prefix, tenant_prefix};
use super::{DealReadModel, DealTotals, FunnelStage, PtpTotals, corrupt, decode_stored};
use crate::kernel::{Counters, ReadModelError};

/// Which deals to list; every given filter applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DealFilter {
    /// `Some("")`: deals without a stage.
    pub deal_stage_id: Option<String>,
    /// `Some("")`: deals without a pipeline.
    pub pipeline: Option<String>,
    /// The bucket on the listing's as-of day.
    pub dpd_bucket: Option<DpdBucket>,
    /// The deal's own flag (absent counts as false).
    pub do_not_contact: Option<bool>,
}

impl DealFilter {
    fn matches(&self, facts: &Facts, as_of: i32) -> bool {
        self.pipeline.as_ref().is_none_or(|p| *p == facts.pipeline)
            && self
                .deal_stage_id
                .as_ref()
                .is_none_or(|s| *s == facts.stage)
            && self.dpd_bucket.is_none_or(|b| b == facts.bucket(as_of))
            && self.do_not_contact.is_none_or(|d| d == facts.dnc)
    }
}

/// The index a listing walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DealIndex {
    /// Every deal (`d`).
    All,
    /// By pipeline and stage (`g`): needs a pipeline filter.
    PipelineStage,
    /// By stage (`h`): needs a stage filter.
    Stage,
    /// By dpd_due_date (`i`): needs a DPD bucket filter.
    DueDate,
    /// Flagged deals (`k`): needs `do_not_contact = true`.
    DoNotContact,
}

impl DealIndex {
    const ALL: [DealIndex; 5] = [
        DealIndex::All,
        DealIndex::PipelineStage,
        DealIndex::Stage,
        DealIndex::DueDate,
        DealIndex::DoNotContact,
    ];

    fn code(self) -> u8 {
        match self {
            DealIndex::All => 0,
            DealIndex::PipelineStage => 1,
            DealIndex::Stage => 2,
            DealIndex::DueDate => 3,
            DealIndex::DoNotContact => 4,
        }
    }

    fn letter(self) -> u8 {
        match self {
            DealIndex::All => b'd',
            DealIndex::PipelineStage => b'g',
            DealIndex::Stage => b'h',
            DealIndex::DueDate => b'i',
            DealIndex::DoNotContact => b'k',
        }
    }

    fn fits(self, filter: &DealFilter) -> bool {
        match self {
            DealIndex::All => true,
            DealIndex::PipelineStage => filter.pipeline.is_some(),
            DealIndex::Stage => filter.deal_stage_id.is_some(),
            DealIndex::DueDate => filter.dpd_bucket.is_some(),
            DealIndex::DoNotContact => filter.do_not_contact == Some(true),
        }
    }

    /// The keys of the index the filter selects, `[start, end)`.
    fn range(self, tenant: &str, filter: &DealFilter, as_of: i32) -> (Vec<u8>, Vec<u8>) {
        let prefix = tenant_prefix(self.letter(), tenant);
        let prefix = match self {
            DealIndex::All | DealIndex::DoNotContact => prefix,
            DealIndex::PipelineStage => {
                let prefix = prefix.str(filter.pipeline.as_deref().unwrap_or_default());
                match &filter.deal_stage_id {
                    Some(stage) => prefix.str(stage),
                    None => prefix,
                }
            }
            DealIndex::Stage => prefix.str(filter.deal_stage_id.as_deref().unwrap_or_default()),
            DealIndex::DueDate => {
                let bounds = filter.dpd_bucket.and_then(DpdBucket::dpd_bounds);
                let Some((low_dpd, high_dpd)) = bounds else {
                    let prefix = due(prefix, None);
                    let end = prefix.prefix_end();
                    return (prefix.into_vec(), end);
                };
                // dpd in [a, b] ⇔ due day in [as_of − b, as_of − a].
                let as_of = i64::from(as_of);
                let first = high_dpd.map_or(i64::from(i32::MIN), |b| as_of - b);
                let last = low_dpd.map_or(i64::from(i32::MAX), |a| as_of - a);
                let clamp = |d: i64| d.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                let start = due(prefix.clone(), Some(clamp(first)));
                let end = if last >= i64::from(i32::MAX) {
                    // Past every due day: the slot after `1`.
                    prefix.u8(2)
                } else {
                    due(prefix, Some(clamp(last + 1)))
                };
                return (start.into_vec(), end.into_vec());
            }
        };
        let end = prefix.prefix_end();
        (prefix.into_vec(), end)
    }

    /// The deal part (public_id, created_at) of an index key, given the key after its tenant.
    fn tail(self, rest: &[u8]) -> Option<&[u8]> {
        let mut r = KeyReader::tail(rest);
        match self {
            DealIndex::All | DealIndex::DoNotContact => {}
            DealIndex::PipelineStage => {
                r.str_bytes()?;
                r.str_bytes()?;
            }
            DealIndex::Stage => {
                r.str_bytes()?;
            }
            DealIndex::DueDate => {
                if r.u8()? == 1 {
                    r.i32()?;
                }
            }
        }
        Some(r.rest())
    }
}

/// Where a listing stopped: the next page starts right after it. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPosition {
    index: DealIndex,
    after: Vec<u8>,
}

impl ListPosition {
    /// The position as bytes, for a page token.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.after.len());
        v.push(self.index.code());
        v.extend_from_slice(&self.after);
        v
    }

    /// A position from [`ListPosition::to_bytes`]; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let (&code, after) = bytes.split_first()?;
        let index = DealIndex::ALL.into_iter().find(|i| i.code() == code)?;
        (!after.is_empty()).then(|| Self {
            index,
            after: after.to_vec(),
        })
    }
}

/// One page of a deal listing.
#[derive(Debug, Clone, PartialEq)]
pub struct DealPage {
    pub deals: Vec<v1::CollectionsDealObserved>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<ListPosition>,
}

/// Why a listing failed.
#[derive(Debug, thiserror::Error)]
pub enum ListDealsError {
    /// The position does not belong to this listing (other filters, tenant or day).
    #[error("the position does not belong to a listing of these filters")]
    Position,
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

impl DealReadModel {
    /// The revision applied for one deal (`None`: nothing yet).
    pub fn applied_revision(
        &self,
        tenant: &str,
        public_id: &str,
        created_at: DateTime<Utc>,
    ) -> Result<Option<u64>, ReadModelError> {
        let key = deal_key(tenant, &deal_tail(public_id, created_at));
        match self.tree.get(&key)? {
            Some(bytes) => Ok(Some(
                bytes
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes)
                    .ok_or_else(|| corrupt(&key, "deal entry"))?,
            )),
            None => Ok(None),
        }
    }

    /// The latest content of one deal (its `revision` is the applied one).
    pub fn deal(
        &self,
        tenant: &str,
        public_id: &str,
        created_at: DateTime<Utc>,
    ) -> Result<Option<v1::CollectionsDealObserved>, ReadModelError> {
        let key = deal_key(tenant, &deal_tail(public_id, created_at));
        match self.tree.get(&key)? {
            Some(bytes) => Ok(Some(decode_stored(&key, &bytes)?.1)),
            None => Ok(None),
        }
    }

    /// Deals matching `filter` as of `as_of`, up to `limit`, after `after` (the `next` of the
    /// previous page, listed with the same tenant, filter and day). The order is the order of
    /// the index the first page chose: the one with the fewest candidates that fits.
    pub fn list_deals(
        &self,
        tenant: &str,
        filter: &DealFilter,
        as_of: NaiveDate,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Result<DealPage, ListDealsError> {
        let as_of = as_of.num_days_from_ce();
        let index = match after {
            Some(position) if !position.index.fits(filter) => {
                return Err(ListDealsError::Position);
            }
            Some(position) => position.index,
            None => self.choose_index(tenant, filter, as_of)?,
        };
        let (mut start, end) = index.range(tenant, filter, as_of);
        if let Some(position) = after {
            if position.after < start || position.after >= end {
                return Err(ListDealsError::Position);
            }
            start = position.after.clone();
            // The smallest key after the position.
            start.push(0);
        }
        let tenant_len = tenant_prefix(b'd', tenant).len();
        let mut deals = Vec::with_capacity(limit.min(1024));
        let mut last: Option<Vec<u8>> = None;
        let mut more = false;
        let range = (Bound::Included(start), Bound::Excluded(end));
        for entry in self.tree.range::<Vec<u8>, _>(range) {
            let (key, value) = entry.map_err(ReadModelError::from)?;
            let deal = if index == DealIndex::All {
                decode_stored(&key, &value)?.1
            } else {
                let tail = key
                    .get(tenant_len..)
                    .and_then(|rest| index.tail(rest))
                    .ok_or_else(|| corrupt(&key, "index entry"))?;
                let deal_key = deal_key(tenant, tail);
                let Some(value) = self.tree.get(&deal_key).map_err(ReadModelError::from)? else {
                    return Err(corrupt(&key, "index entry without its deal").into());
                };
                decode_stored(&deal_key, &value)?.1
            };
            // Checked again on the deal itself: it may have moved since the index was read.
            if !filter.matches(&Facts::of(&deal), as_of) {
                continue;
            }
            if deals.len() >= limit {
                more = true;
                break;
            }
            last = Some(key.to_vec());
            deals.push(deal);
        }
        Ok(DealPage {
            deals,
            next: last
                .filter(|_| more)
                .map(|after| ListPosition { index, after }),
        })
    }

    /// The fitting index with the fewest candidates, counted from the totals.
    fn choose_index(
        &self,
        tenant: &str,
        filter: &DealFilter,
        as_of: i32,
    ) -> Result<DealIndex, ReadModelError> {
        let mut best = (DealIndex::All, self.count_funnel(tenant, None, |_| true)?);
        fn consider(best: &mut (DealIndex, i64), index: DealIndex, candidates: i64) {
            if candidates < best.1 {
                *best = (index, candidates);
            }
        }
        if let Some(pipeline) = &filter.pipeline {
            let stage = filter.deal_stage_id.as_deref();
            consider(
                &mut best,
                DealIndex::PipelineStage,
                self.count_funnel(tenant, Some(pipeline), |s| stage.is_none_or(|x| x == s))?,
            );
        } else if let Some(stage) = &filter.deal_stage_id {
            consider(
                &mut best,
                DealIndex::Stage,
                self.count_funnel(tenant, None, |s| s == stage)?,
            );
        }
        if let Some(bucket) = filter.dpd_bucket {
            let mut candidates = 0i64;
            for (due, totals) in self.due_totals(tenant)? {
                let dpd = due.map(|d| i64::from(as_of) - i64::from(d));
                if DpdBucket::of(dpd) == bucket {
                    candidates = candidates.saturating_add(clamp(totals.deals));
                }
            }
            consider(&mut best, DealIndex::DueDate, candidates);
        }
        if filter.do_not_contact == Some(true) {
            // No total: count the entries, but no further than the best so far.
            let cap = usize::try_from(best.1.max(0)).unwrap_or(usize::MAX);
            let flagged = self
                .tree
                .scan_prefix(tenant_prefix(b'k', tenant))
                .take(cap.saturating_add(1))
                .count();
            consider(
                &mut best,
                DealIndex::DoNotContact,
                i64::try_from(flagged).unwrap_or(i64::MAX),
            );
        }
        Ok(best.0)
    }

    /// Deals of the funnel entries of one pipeline (or all) whose stage passes `stage`.
    fn count_funnel(
        &self,
        tenant: &str,
        pipeline: Option<&str>,
        stage: impl Fn(&str) -> bool,
    ) -> Result<i64, ReadModelError> {
        let mut count = 0i64;
        for entry in self.funnel_entries(tenant, pipeline)? {
            if stage(&entry.deal_stage_id) {
                count = count.saturating_add(clamp(entry.totals.deals));
            }
        }
        Ok(count)
    }

    fn funnel_entries(
        &self,
        tenant: &str,
        pipeline: Option<&str>,
    ) -> Result<Vec<FunnelStage>, ReadModelError> {
        let tenant_len = tenant_prefix(b'f', tenant).len();
        let prefix = funnel_prefix(tenant, pipeline);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let mut rest = KeyReader::tail(key.get(tenant_len..).unwrap_or_default());
            let (Some(pipeline), Some(stage)) = (rest.str_bytes(), rest.str_bytes()) else {
                return Err(corrupt(&key, "funnel key"));
            };
            out.push(FunnelStage {
                pipeline: String::from_utf8_lossy(pipeline).into_owned(),
                deal_stage_id: String::from_utf8_lossy(stage).into_owned(),
                totals: DealTotals::decode(&value),
            });
        }
        Ok(out)
    }

    /// Deals and amount per pipeline and stage, ordered by pipeline then stage.
    pub fn funnel(&self, tenant: &str) -> Result<Vec<FunnelStage>, ReadModelError> {
        let mut stages = self.funnel_entries(tenant, None)?;
        stages
            .sort_by(|a, b| (&a.pipeline, &a.deal_stage_id).cmp(&(&b.pipeline, &b.deal_stage_id)));
        Ok(stages)
    }

    /// Totals per due day (`None`: no readable due date).
    fn due_totals(&self, tenant: &str) -> Result<Vec<(Option<i32>, DealTotals)>, ReadModelError> {
        let prefix = tenant_prefix(b'u', tenant);
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let slot = key.get(prefix.len()..).unwrap_or_default();
            let mut slot = KeyReader::tail(slot);
            let due = match slot.u8() {
                Some(0) => None,
                Some(1) => Some(slot.i32().ok_or_else(|| corrupt(&key, "due totals key"))?),
                _ => return Err(corrupt(&key, "due totals key")),
            };
            out.push((due, DealTotals::decode(&value)));
        }
        Ok(out)
    }

    /// Deals and amount per DPD bucket on `as_of`, in [`DpdBucket::ALL`] order.
    pub fn dpd_buckets(
        &self,
        tenant: &str,
        as_of: NaiveDate,
    ) -> Result<[DealTotals; 6], ReadModelError> {
        let as_of = i64::from(as_of.num_days_from_ce());
        let mut out = [DealTotals::default(); 6];
        for (due, totals) in self.due_totals(tenant)? {
            let bucket = DpdBucket::of(due.map(|d| as_of - i64::from(d)));
            out[bucket.index()].add(totals);
        }
        Ok(out)
    }

    /// Open, kept and broken promises per channel on `as_of`, in [`PtpChannel::ALL`] order.
    pub fn ptp_summary(
        &self,
        tenant: &str,
        as_of: NaiveDate,
    ) -> Result<[PtpTotals; 2], ReadModelError> {
        let as_of = as_of.num_days_from_ce();
        let mut out = [PtpTotals::default(); 2];
        for (channel, summary) in PtpChannel::ALL.iter().zip(out.iter_mut()) {
            let prefix = ptp_prefix(tenant, channel.code());
            for entry in self.tree.scan_prefix(&prefix) {
                let (key, value) = entry?;
                let totals = DealTotals::decode(&value);
                let mut slot = KeyReader::tail(key.get(prefix.len()..).unwrap_or_default());
                match slot.u8() {
                    Some(0) => summary.broken.add(totals),
                    Some(1) => {
                        let day = slot.i32().ok_or_else(|| corrupt(&key, "ptp key"))?;
                        if day >= as_of {
                            summary.open.add(totals);
                        } else {
                            summary.kept.add(totals);
                        }
                    }
                    _ => return Err(corrupt(&key, "ptp key")),
                }
            }
        }
        Ok(out)
    }
}

impl DealReadModel {
    /// Every deal of `tenant` this read model holds, with the revision it applied.
    pub fn applied_revisions(&self, tenant: &str) -> Result<HashMap<DealKey, u64>, ReadModelError> {
        let prefix = tenant_prefix(b'd', tenant);
        let mut out = HashMap::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let mut tail = KeyReader::tail(&key[prefix.len()..]);
            let (Some(public_id), Some(created_at)) = (tail.str(), tail.instant()) else {
                return Err(corrupt(&key, "deal key"));
            };
            let revision = value
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt(&key, "deal entry"))?;
            out.insert(DealKey::new(public_id, created_at), revision);
        }
        Ok(out)
    }
}

/// A count as the index planner compares it.
fn clamp(count: i128) -> i64 {
    i64::try_from(count).unwrap_or(if count < 0 { i64::MIN } else { i64::MAX })
}
