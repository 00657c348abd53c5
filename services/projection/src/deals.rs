//! Collections deal read models (D16 rows, docs/domain.md §1 and §4), in one sled tree beside the case
//! read model (same database), so that a batch's changes and the consumer offsets after it are
//! one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `d` | tenant, public_id, created_at | revision (u64 BE) + encoded `CollectionsDealObserved`: the latest |
//! | `g` | tenant, pipeline, deal_stage_id, public_id, created_at | empty: deals by pipeline and stage |
//! | `h` | tenant, deal_stage_id, public_id, created_at | empty: deals by stage |
//! | `i` | tenant, due slot, public_id, created_at | empty: deals by dpd_due_date |
//! | `k` | tenant, public_id, created_at | empty: deals with `do_not_contact = true` |
//! | `f` | tenant, pipeline, deal_stage_id | funnel: deals (i64 BE) + amount_minor (i64 BE) |
//! | `u` | tenant, due slot | deals + amount_minor per dpd_due_date |
//! | `p` | tenant, channel (u8), 0 | deals + amount_minor of broken promises |
//! | `p` | tenant, channel (u8), 1, PTP day | deals + amount_minor of promises not broken, per PTP day |
//! | `b` | tenant, public_id | flagged deals of the borrower (u64 BE); present while it is on the DNC list |
//! | `q` | tenant | sequence of the tenant's last DNC list change (u64 BE) |
//! | `o` | cluster id, topic, partition (i32 BE) | next offset to read (i64 BE) |
//! | `x` | cluster id, topic, partition, offset | a message that could not be applied, with the reason |
//!
//! Strings are length-prefixed (u32 BE), so a key prefix names whole fields; `created_at` is
//! seconds (i64 BE, sign bit flipped) + nanoseconds (u32 BE); days are days since CE (i32 BE,
//! sign bit flipped), so that both sort by time. A due slot is `0` (no readable dpd_due_date) or
//! `1` + the day. Absent pipeline and stage are empty strings; absent amounts count as 0.
//! Offsets and rejects are kept as the case read model keeps them (`read_model::stored_offsets`).
//!
//! DPD and PTP status depend on the day asked, so nothing per deal stores them: the totals per
//! due day and per PTP day answer any as-of day with one scan over distinct days.
//!
//! A deal's revision only grows: the same revision again (at-least-once delivery) and older
//! revisions are duplicates and change nothing; a newer one replaces the deal and moves every
//! total and index entry from the old content to the new one in the same batch.
//!
//! The do-not-contact list changes are published to watchers after the batch that made them is
//! written and flushed. Applying (through publishing) and subscribing (with reading the list)
//! take the same lock, so a watcher's snapshot plus the changes it receives are exactly the list.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{decode_envelope, occurred_at};
use prost::Message;
use recoup_proto::from_timestamp;
use recoup_proto::v1;
use tokio::sync::broadcast;

use crate::read_model::{
    BatchOutcome, KeyedStep as Step, ReadModel, ReadModelError, apply_each, decode_pair,
    encode_pair, stage_offsets, stored_offsets,
};

use recoup_proto::contract::aggregate::COLLECTIONS_DEAL as DEAL_AGGREGATE;
use recoup_proto::contract::event_type::COLLECTIONS_DEAL_OBSERVED as DEAL_EVENT_TYPE;
/// The dataset whose rows are collections deals (D16 "Collections Cases"); other datasets'
/// events on the topic are ignored here.
pub const DEALS_DATASET: &str = "S3/D16";

/// How many applied batches with DNC changes a watcher may fall behind before it must take a
/// fresh snapshot.
pub const DEFAULT_FEED_CAPACITY: usize = 1024;

/// A DPD bucket (docs/domain.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DpdBucket {
    /// DPD ≤ 0 (not yet due, or due today).
    Current,
    /// DPD 1 to 30.
    Days1To30,
    /// DPD 31 to 60.
    Days31To60,
    /// DPD 61 to 90.
    Days61To90,
    /// DPD ≥ 91.
    Over90,
    /// No readable dpd_due_date.
    Unknown,
}

impl DpdBucket {
    /// Every bucket, in order.
    pub const ALL: [DpdBucket; 6] = [
        DpdBucket::Current,
        DpdBucket::Days1To30,
        DpdBucket::Days31To60,
        DpdBucket::Days61To90,
        DpdBucket::Over90,
        DpdBucket::Unknown,
    ];

    /// The bucket's name on the wire: `current`, `1-30`, `31-60`, `61-90`, `90+`, `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            DpdBucket::Current => "current",
            DpdBucket::Days1To30 => "1-30",
            DpdBucket::Days31To60 => "31-60",
            DpdBucket::Days61To90 => "61-90",
            DpdBucket::Over90 => "90+",
            DpdBucket::Unknown => "unknown",
        }
    }

    /// The bucket of a wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    /// The bucket of a number of days past due (`None`: no due date).
    pub fn of(dpd_days: Option<i64>) -> Self {
        match dpd_days {
            None => DpdBucket::Unknown,
            Some(d) if d <= 0 => DpdBucket::Current,
            Some(d) if d <= 30 => DpdBucket::Days1To30,
            Some(d) if d <= 60 => DpdBucket::Days31To60,
            Some(d) if d <= 90 => DpdBucket::Days61To90,
            Some(_) => DpdBucket::Over90,
        }
    }

    /// The days past due of the bucket, inclusive (`None`: unbounded); `None` for `Unknown`.
    fn dpd_bounds(self) -> Option<(Option<i64>, Option<i64>)> {
        match self {
            DpdBucket::Current => Some((None, Some(0))),
            DpdBucket::Days1To30 => Some((Some(1), Some(30))),
            DpdBucket::Days31To60 => Some((Some(31), Some(60))),
            DpdBucket::Days61To90 => Some((Some(61), Some(90))),
            DpdBucket::Over90 => Some((Some(91), None)),
            DpdBucket::Unknown => None,
        }
    }
}

/// Days past due of a deal on `as_of`: `as_of − dpd_due_date`, negative before the due date;
/// `None` when the deal has no readable dpd_due_date (YYYY-MM-DD).
pub fn dpd_days(deal: &v1::CollectionsDealObserved, as_of: NaiveDate) -> Option<i64> {
    due_date(deal).map(|due| as_of.signed_duration_since(due).num_days())
}

fn due_date(deal: &v1::CollectionsDealObserved) -> Option<NaiveDate> {
    deal.dpd_due_date
        .as_deref()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

/// Who set a promise to pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PtpChannel {
    /// A human agent (`ptp_date_human`, `broken_ptp_date_human`).
    Human,
    /// An AI call (`ptp_date_ai`, `broken_ptp_date_ai`).
    Ai,
}

impl PtpChannel {
    /// Both channels, in order.
    pub const ALL: [PtpChannel; 2] = [PtpChannel::Human, PtpChannel::Ai];

    /// `human` or `ai`.
    pub fn name(self) -> &'static str {
        match self {
            PtpChannel::Human => "human",
            PtpChannel::Ai => "ai",
        }
    }

    fn code(self) -> u8 {
        match self {
            PtpChannel::Human => 0,
            PtpChannel::Ai => 1,
        }
    }
}

/// A deal's promise to pay on one channel, as of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtpStatus {
    /// No promise on the channel.
    None,
    /// The PTP day (UTC) is the as-of day or later, and the promise is not marked broken.
    Open,
    /// The PTP day passed without the promise being marked broken.
    Kept,
    /// `broken_ptp_date_*` is set.
    Broken,
}

/// What a deal's channel contributes to the PTP totals, whatever the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PtpFact {
    None,
    Broken,
    /// Not broken, promised for this day (days since CE, UTC).
    Promised(i32),
}

fn ptp_fact(deal: &v1::CollectionsDealObserved, channel: PtpChannel) -> PtpFact {
    let (promised, broken) = match channel {
        PtpChannel::Human => (&deal.ptp_date_human, &deal.broken_ptp_date_human),
        PtpChannel::Ai => (&deal.ptp_date_ai, &deal.broken_ptp_date_ai),
    };
    if broken.is_some() {
        return PtpFact::Broken;
    }
    match promised.as_ref().and_then(from_timestamp) {
        Some(at) => PtpFact::Promised(at.date_naive().num_days_from_ce()),
        None => PtpFact::None,
    }
}

/// The status of a deal's promise on `channel` as of `as_of`.
pub fn ptp_status(
    deal: &v1::CollectionsDealObserved,
    channel: PtpChannel,
    as_of: NaiveDate,
) -> PtpStatus {
    match ptp_fact(deal, channel) {
        PtpFact::None => PtpStatus::None,
        PtpFact::Broken => PtpStatus::Broken,
        PtpFact::Promised(day) if day >= as_of.num_days_from_ce() => PtpStatus::Open,
        PtpFact::Promised(_) => PtpStatus::Kept,
    }
}

/// Deals and their amount.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DealTotals {
    /// Deals (their latest revision).
    pub deals: i64,
    /// Sum of `amount_minor` (absent counts as 0), minor units.
    pub amount_minor: i64,
}

impl DealTotals {
    fn decode(bytes: &[u8]) -> Self {
        let (deals, amount_minor) = decode_pair(bytes);
        Self {
            deals,
            amount_minor,
        }
    }

    fn encode(&self) -> [u8; 16] {
        encode_pair(self.deals, self.amount_minor)
    }

    // Saturating: absurd amounts give a capped total, never a panic that would stop the
    // projection on the same batch forever.
    fn add(&mut self, other: DealTotals) {
        self.deals = self.deals.saturating_add(other.deals);
        self.amount_minor = self.amount_minor.saturating_add(other.amount_minor);
    }
}

/// One pipeline stage of the funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelStage {
    /// Empty: deals without a pipeline.
    pub pipeline: String,
    /// Empty: deals without a stage.
    pub deal_stage_id: String,
    pub totals: DealTotals,
}

/// The promises of one channel on one day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PtpTotals {
    pub open: DealTotals,
    pub kept: DealTotals,
    pub broken: DealTotals,
}

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
        let mut prefix = tenant_prefix(self.letter(), tenant);
        match self {
            DealIndex::All | DealIndex::DoNotContact => {}
            DealIndex::PipelineStage => {
                push_str(&mut prefix, filter.pipeline.as_deref().unwrap_or_default());
                if let Some(stage) = &filter.deal_stage_id {
                    push_str(&mut prefix, stage);
                }
            }
            DealIndex::Stage => {
                push_str(
                    &mut prefix,
                    filter.deal_stage_id.as_deref().unwrap_or_default(),
                );
            }
            DealIndex::DueDate => {
                let bounds = filter.dpd_bucket.and_then(DpdBucket::dpd_bounds);
                let Some((low_dpd, high_dpd)) = bounds else {
                    prefix.push(0);
                    let end = prefix_end(&prefix);
                    return (prefix, end);
                };
                // dpd in [a, b] ⇔ due day in [as_of − b, as_of − a].
                let as_of = i64::from(as_of);
                let first = high_dpd.map_or(i64::from(i32::MIN), |b| as_of - b);
                let last = low_dpd.map_or(i64::from(i32::MAX), |a| as_of - a);
                let clamp = |d: i64| d.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                let mut start = prefix.clone();
                start.push(1);
                push_day(&mut start, clamp(first));
                let mut end = prefix;
                if last >= i64::from(i32::MAX) {
                    end.push(2);
                } else {
                    end.push(1);
                    push_day(&mut end, clamp(last + 1));
                }
                return (start, end);
            }
        }
        let end = prefix_end(&prefix);
        (prefix, end)
    }

    /// The deal part (public_id, created_at) of an index key, given the key after its tenant.
    fn tail(self, mut rest: &[u8]) -> Option<&[u8]> {
        match self {
            DealIndex::All | DealIndex::DoNotContact => {}
            DealIndex::PipelineStage => {
                read_str(&mut rest)?;
                read_str(&mut rest)?;
            }
            DealIndex::Stage => {
                read_str(&mut rest)?;
            }
            DealIndex::DueDate => {
                let skip = if *rest.first()? == 0 { 1 } else { 5 };
                rest = rest.get(skip..)?;
            }
        }
        Some(rest)
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

/// Whether a borrower joined or left the do-not-contact list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListChange {
    Added,
    Removed,
}

/// One change of a tenant's do-not-contact list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoNotContactChange {
    pub tenant: String,
    /// The borrower.
    pub public_id: String,
    pub change: ListChange,
    /// Consecutive per tenant, from 1.
    pub sequence: u64,
    /// The `occurred_at` (the row's updated_at) of the event that made the change.
    pub changed_at: DateTime<Utc>,
}

/// A tenant's do-not-contact list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoNotContactList {
    /// Borrowers (public_id) with at least one flagged deal, in byte order.
    pub borrowers: Vec<String>,
    /// The sequence of the last change the list includes (0: none yet).
    pub sequence: u64,
}

/// Why a watcher cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// Changes were dropped before this watcher took them: take a fresh snapshot.
    #[error("the watcher fell behind; take a fresh snapshot")]
    Lagged,
    /// The read model is gone.
    #[error("the read model is closed")]
    Closed,
}

type ChangeBatch = Arc<[DoNotContactChange]>;

/// The changes of one tenant's do-not-contact list after a snapshot, in sequence order.
#[derive(Debug)]
pub struct DoNotContactWatch {
    tenant: String,
    receiver: broadcast::Receiver<ChangeBatch>,
    pending: VecDeque<DoNotContactChange>,
}

impl DoNotContactWatch {
    /// The next change (cancel-safe).
    pub async fn next(&mut self) -> Result<DoNotContactChange, WatchError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(change);
            }
            match self.receiver.recv().await {
                Ok(batch) => self.take(&batch),
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(WatchError::Lagged),
                Err(broadcast::error::RecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }

    /// The next change if one was published already.
    pub fn try_next(&mut self) -> Result<Option<DoNotContactChange>, WatchError> {
        loop {
            if let Some(change) = self.pending.pop_front() {
                return Ok(Some(change));
            }
            match self.receiver.try_recv() {
                Ok(batch) => self.take(&batch),
                Err(broadcast::error::TryRecvError::Empty) => return Ok(None),
                Err(broadcast::error::TryRecvError::Lagged(_)) => return Err(WatchError::Lagged),
                Err(broadcast::error::TryRecvError::Closed) => return Err(WatchError::Closed),
            }
        }
    }

    fn take(&mut self, batch: &[DoNotContactChange]) {
        self.pending
            .extend(batch.iter().filter(|c| c.tenant == self.tenant).cloned());
    }
}

/// The change feed shared by every clone of one read model.
struct Feed {
    /// Held by `apply_batch` from its first read through publishing, and by a subscription
    /// while it reads the list.
    turn: Mutex<()>,
    sender: broadcast::Sender<ChangeBatch>,
}

/// The collections deal read models.
///
/// Open it once per database and clone it: the clones share the do-not-contact change feed
/// (a second `open` has a feed of its own, which the first one's batches never reach).
#[derive(Clone)]
pub struct DealReadModel {
    tree: sled::Tree,
    feed: Arc<Feed>,
}

fn push_str(key: &mut Vec<u8>, part: &str) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(part.as_bytes());
}

fn read_str<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let part = bytes.get(4..4 + len)?;
    *bytes = bytes.get(4 + len..)?;
    Some(part)
}

fn push_day(key: &mut Vec<u8>, day: i32) {
    key.extend_from_slice(&((day as u32) ^ 0x8000_0000).to_be_bytes());
}

fn day_from_bytes(bytes: &[u8]) -> Option<i32> {
    Some((u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) ^ 0x8000_0000) as i32)
}

fn push_due(key: &mut Vec<u8>, due: Option<i32>) {
    match due {
        None => key.push(0),
        Some(day) => {
            key.push(1);
            push_day(key, day);
        }
    }
}

fn tenant_prefix(prefix: u8, tenant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + tenant.len() + 64);
    key.push(prefix);
    push_str(&mut key, tenant);
    key
}

/// The smallest key above every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // Only a prefix of 0xFF bytes gets here; none of ours starts with one.
    vec![u8::MAX; prefix.len() + 1]
}

/// The end of every key naming one deal: public_id, created_at.
fn deal_tail(public_id: &str, created_at: DateTime<Utc>) -> Vec<u8> {
    let mut tail = Vec::with_capacity(4 + public_id.len() + 12);
    push_str(&mut tail, public_id);
    tail.extend_from_slice(&((created_at.timestamp() as u64) ^ (1 << 63)).to_be_bytes());
    tail.extend_from_slice(&created_at.timestamp_subsec_nanos().to_be_bytes());
    tail
}

fn with_tail(mut key: Vec<u8>, tail: &[u8]) -> Vec<u8> {
    key.extend_from_slice(tail);
    key
}

fn deal_key(tenant: &str, tail: &[u8]) -> Vec<u8> {
    with_tail(tenant_prefix(b'd', tenant), tail)
}

fn funnel_key(tenant: &str, pipeline: &str, stage: &str) -> Vec<u8> {
    let mut key = tenant_prefix(b'f', tenant);
    push_str(&mut key, pipeline);
    push_str(&mut key, stage);
    key
}

fn borrower_key(tenant: &str, public_id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(b'b', tenant);
    push_str(&mut key, public_id);
    key
}

fn corrupt(key: &[u8], reason: &str) -> ReadModelError {
    ReadModelError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

fn decode_stored(
    key: &[u8],
    bytes: &[u8],
) -> Result<(u64, v1::CollectionsDealObserved), ReadModelError> {
    let revision = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt(key, "deal entry"))?;
    let deal = v1::CollectionsDealObserved::decode(bytes.get(8..).unwrap_or_default())
        .map_err(|e| corrupt(key, &e.to_string()))?;
    Ok((revision, deal))
}

fn u64_value(bytes: &[u8]) -> u64 {
    bytes.try_into().map_or(0, u64::from_be_bytes)
}

/// What one deal contributes to the totals and indexes.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    pipeline: String,
    stage: String,
    amount: i64,
    /// Days since CE.
    due: Option<i32>,
    ptp: [PtpFact; 2],
    dnc: bool,
}

impl Facts {
    fn of(deal: &v1::CollectionsDealObserved) -> Self {
        Self {
            pipeline: deal.pipeline.clone().unwrap_or_default(),
            stage: deal.deal_stage_id.clone().unwrap_or_default(),
            amount: deal.amount_minor.unwrap_or(0),
            due: due_date(deal).map(|d| d.num_days_from_ce()),
            ptp: PtpChannel::ALL.map(|c| ptp_fact(deal, c)),
            dnc: deal.do_not_contact == Some(true),
        }
    }

    fn bucket(&self, as_of: i32) -> DpdBucket {
        DpdBucket::of(self.due.map(|d| i64::from(as_of) - i64::from(d)))
    }

    /// The totals this deal counts in, once each.
    fn totals_keys(&self, tenant: &str) -> Vec<Vec<u8>> {
        let mut keys = Vec::with_capacity(4);
        keys.push(funnel_key(tenant, &self.pipeline, &self.stage));
        let mut due = tenant_prefix(b'u', tenant);
        push_due(&mut due, self.due);
        keys.push(due);
        for (channel, fact) in PtpChannel::ALL.iter().zip(self.ptp) {
            let mut key = tenant_prefix(b'p', tenant);
            key.push(channel.code());
            match fact {
                PtpFact::None => continue,
                PtpFact::Broken => key.push(0),
                PtpFact::Promised(day) => {
                    key.push(1);
                    push_day(&mut key, day);
                }
            }
            keys.push(key);
        }
        keys
    }

    /// The index entries of this deal.
    fn index_keys(&self, tenant: &str, tail: &[u8]) -> Vec<Vec<u8>> {
        let mut by_pipeline = tenant_prefix(b'g', tenant);
        push_str(&mut by_pipeline, &self.pipeline);
        push_str(&mut by_pipeline, &self.stage);
        let mut by_stage = tenant_prefix(b'h', tenant);
        push_str(&mut by_stage, &self.stage);
        let mut by_due = tenant_prefix(b'i', tenant);
        push_due(&mut by_due, self.due);
        let mut keys = vec![
            with_tail(by_pipeline, tail),
            with_tail(by_stage, tail),
            with_tail(by_due, tail),
        ];
        if self.dnc {
            keys.push(with_tail(tenant_prefix(b'k', tenant), tail));
        }
        keys
    }
}

struct StagedDeal {
    revision: u64,
    facts: Facts,
    payload: Vec<u8>,
}

/// A borrower whose flagged deals this batch changed.
struct Borrower {
    /// Flagged deals before the batch.
    before: u64,
    after: u64,
    changed_at: DateTime<Utc>,
}

/// Changes of one batch, before they are written.
#[derive(Default)]
struct Staged {
    deals: HashMap<Vec<u8>, StagedDeal>,
    totals: BTreeMap<Vec<u8>, DealTotals>,
    borrowers: BTreeMap<(String, String), Borrower>,
    batch: sled::Batch,
}

impl DealReadModel {
    /// Opens the deal tree in the database of `cases`.
    pub fn open(cases: &ReadModel) -> Result<Self, ReadModelError> {
        Self::open_with_feed_capacity(cases, DEFAULT_FEED_CAPACITY)
    }

    /// [`DealReadModel::open`] with a feed that keeps `capacity` batches of changes (1 to
    /// 65,536) for watchers that fall behind.
    pub fn open_with_feed_capacity(
        cases: &ReadModel,
        capacity: usize,
    ) -> Result<Self, ReadModelError> {
        let (sender, _) = broadcast::channel(capacity.clamp(1, 1 << 16));
        Ok(Self {
            tree: cases.db().open_tree("deals")?,
            feed: Arc::new(Feed {
                turn: Mutex::new(()),
                sender,
            }),
        })
    }

    fn turn(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data, only the order of apply and subscribe: a panic while it was
        // held leaves nothing to repair.
        self.feed
            .turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next offset to read per partition (`None`: from the beginning).
    pub fn offsets(
        &self,
        cluster: &str,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<(i32, Option<i64>)>, ReadModelError> {
        stored_offsets(&self.tree, cluster, topic, partitions)
    }

    /// Applies a batch of deal events and records the offsets after them, atomically; then,
    /// when the do-not-contact list changed, flushes and publishes the changes to watchers.
    pub fn apply_batch(
        &self,
        cluster: &str,
        topic: &str,
        messages: &[ReceivedEvent],
    ) -> Result<BatchOutcome, ReadModelError> {
        let _turn = self.turn();
        let mut staged = Staged::default();
        let (outcome, next_offsets) = apply_each(
            cluster,
            topic,
            messages,
            &mut staged,
            |staged| &mut staged.batch,
            |bytes, staged| self.apply_message(bytes, staged),
        )?;
        let Staged {
            deals,
            totals,
            borrowers,
            mut batch,
        } = staged;
        for (key, deal) in deals {
            let mut value = Vec::with_capacity(8 + deal.payload.len());
            value.extend_from_slice(&deal.revision.to_be_bytes());
            value.extend_from_slice(&deal.payload);
            batch.insert(key, value);
        }
        for (key, totals) in totals {
            if totals == DealTotals::default() {
                batch.remove(key);
            } else {
                batch.insert(key, &totals.encode());
            }
        }
        let changes = self.stage_borrowers(&mut batch, borrowers)?;
        stage_offsets(&mut batch, cluster, topic, next_offsets);
        self.tree.apply_batch(batch)?;
        if !changes.is_empty() {
            // Watchers act on a change (a borrower may be contacted again): it must survive a
            // crash before anyone hears of it.
            self.tree.flush()?;
            for change in &changes {
                tracing::debug!(tenant = %change.tenant, sequence = change.sequence, change = ?change.change, "do-not-contact list changed");
            }
            // No watcher is no error.
            let _ = self.feed.sender.send(changes.into());
        }
        Ok(outcome)
    }

    fn apply_message(&self, bytes: &[u8], staged: &mut Staged) -> Result<Step, ReadModelError> {
        let envelope = match decode_envelope(bytes) {
            Ok(e) => e,
            Err(e) => return Ok(Step::Rejected(e.to_string())),
        };
        if envelope.aggregate_type != DEAL_AGGREGATE {
            return Ok(Step::Rejected(format!(
                "aggregate type {:?} does not belong on this topic",
                envelope.aggregate_type
            )));
        }
        if envelope.event_type != DEAL_EVENT_TYPE {
            return Ok(Step::Rejected(format!(
                "event type {:?} is not {DEAL_EVENT_TYPE}",
                envelope.event_type
            )));
        }
        let deal = match v1::CollectionsDealObserved::decode(envelope.payload.as_slice()) {
            Ok(d) => d,
            Err(e) => return Ok(Step::Rejected(format!("payload does not decode: {e}"))),
        };
        if deal.dataset != DEALS_DATASET {
            // Another dataset's rows share the event type: they are not collections deals.
            return Ok(Step::Ignored);
        }
        if deal.public_id.is_empty() {
            return Ok(Step::Rejected(
                "CollectionsDealObserved without public_id".into(),
            ));
        }
        let Some(created_at) = deal.created_at.as_ref().and_then(from_timestamp) else {
            return Ok(Step::Rejected(
                "CollectionsDealObserved without a valid created_at".into(),
            ));
        };
        if deal.revision != envelope.aggregate_version {
            return Ok(Step::Rejected(format!(
                "payload revision {} is not the envelope's version {}",
                deal.revision, envelope.aggregate_version
            )));
        }
        let Some(changed_at) = occurred_at(&envelope) else {
            return Ok(Step::Rejected("occurred_at is missing".into()));
        };
        let tenant = envelope.tenant.as_str();
        let tail = deal_tail(&deal.public_id, created_at);
        let key = deal_key(tenant, &tail);
        let earlier = match staged.deals.get(&key) {
            Some(d) => Some((d.revision, d.facts.clone())),
            None => match self.tree.get(&key)? {
                Some(bytes) => {
                    let (revision, stored) = decode_stored(&key, &bytes)?;
                    Some((revision, Facts::of(&stored)))
                }
                None => None,
            },
        };
        if earlier
            .as_ref()
            .is_some_and(|(revision, _)| *revision >= deal.revision)
        {
            return Ok(Step::Duplicate);
        }
        let facts = Facts::of(&deal);
        let before = earlier.map(|(_, facts)| facts);
        self.stage_move(
            staged,
            tenant,
            &deal.public_id,
            &tail,
            before.as_ref(),
            &facts,
            changed_at,
        )?;
        staged.deals.insert(
            key,
            StagedDeal {
                revision: deal.revision,
                facts,
                payload: envelope.payload,
            },
        );
        Ok(Step::Applied)
    }

    /// Moves a deal's contributions from its old content (if any) to its new one.
    #[allow(clippy::too_many_arguments)]
    fn stage_move(
        &self,
        staged: &mut Staged,
        tenant: &str,
        public_id: &str,
        tail: &[u8],
        before: Option<&Facts>,
        after: &Facts,
        changed_at: DateTime<Utc>,
    ) -> Result<(), ReadModelError> {
        if let Some(before) = before {
            let minus = DealTotals {
                deals: -1,
                amount_minor: before.amount.saturating_neg(),
            };
            for key in before.totals_keys(tenant) {
                self.add_totals(staged, key, minus)?;
            }
        }
        let plus = DealTotals {
            deals: 1,
            amount_minor: after.amount,
        };
        for key in after.totals_keys(tenant) {
            self.add_totals(staged, key, plus)?;
        }
        let old_index = before.map_or_else(Vec::new, |b| b.index_keys(tenant, tail));
        let new_index = after.index_keys(tenant, tail);
        for key in &old_index {
            if !new_index.contains(key) {
                staged.batch.remove(key.as_slice());
            }
        }
        for key in new_index {
            if !old_index.contains(&key) {
                staged.batch.insert(key, &[] as &[u8]);
            }
        }
        if before.is_some_and(|b| b.dnc) != after.dnc {
            let borrower = match staged
                .borrowers
                .entry((tenant.to_owned(), public_id.to_owned()))
            {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let flagged = self.flagged_deals(tenant, public_id)?;
                    e.insert(Borrower {
                        before: flagged,
                        after: flagged,
                        changed_at,
                    })
                }
            };
            borrower.after = if after.dnc {
                borrower.after.saturating_add(1)
            } else {
                borrower.after.saturating_sub(1)
            };
            borrower.changed_at = changed_at;
        }
        Ok(())
    }

    fn add_totals(
        &self,
        staged: &mut Staged,
        key: Vec<u8>,
        delta: DealTotals,
    ) -> Result<(), ReadModelError> {
        let totals = match staged.totals.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let stored = self
                    .tree
                    .get(e.key())?
                    .map(|b| DealTotals::decode(&b))
                    .unwrap_or_default();
                e.insert(stored)
            }
        };
        totals.add(delta);
        Ok(())
    }

    /// Writes the borrowers' flagged-deal counts and numbers the list changes they make.
    fn stage_borrowers(
        &self,
        batch: &mut sled::Batch,
        borrowers: BTreeMap<(String, String), Borrower>,
    ) -> Result<Vec<DoNotContactChange>, ReadModelError> {
        let mut sequences: BTreeMap<String, u64> = BTreeMap::new();
        let mut changes = Vec::new();
        for ((tenant, public_id), borrower) in borrowers {
            let key = borrower_key(&tenant, &public_id);
            if borrower.after > 0 {
                batch.insert(key, &borrower.after.to_be_bytes());
            } else {
                batch.remove(key);
            }
            let listed = borrower.after > 0;
            if (borrower.before > 0) == listed {
                continue;
            }
            let sequence = match sequences.entry(tenant.clone()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let stored = self.sequence(e.key())?;
                    e.insert(stored)
                }
            };
            *sequence += 1;
            changes.push(DoNotContactChange {
                tenant,
                public_id,
                change: if listed {
                    ListChange::Added
                } else {
                    ListChange::Removed
                },
                sequence: *sequence,
                changed_at: borrower.changed_at,
            });
        }
        for (tenant, sequence) in sequences {
            batch.insert(tenant_prefix(b'q', &tenant), &sequence.to_be_bytes());
        }
        Ok(changes)
    }

    fn flagged_deals(&self, tenant: &str, public_id: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(borrower_key(tenant, public_id))?
            .map_or(0, |v| u64_value(&v)))
    }

    fn sequence(&self, tenant: &str) -> Result<u64, ReadModelError> {
        Ok(self
            .tree
            .get(tenant_prefix(b'q', tenant))?
            .map_or(0, |v| u64_value(&v)))
    }

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
                    candidates = candidates.saturating_add(totals.deals);
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
                count = count.saturating_add(entry.totals.deals);
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
        let mut prefix = tenant_prefix(b'f', tenant);
        if let Some(pipeline) = pipeline {
            push_str(&mut prefix, pipeline);
        }
        let mut out = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, value) = entry?;
            let mut rest = key.get(tenant_len..).unwrap_or_default();
            let (Some(pipeline), Some(stage)) = (read_str(&mut rest), read_str(&mut rest)) else {
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
            let due = match slot.split_first() {
                Some((0, _)) => None,
                Some((1, day)) => {
                    Some(day_from_bytes(day).ok_or_else(|| corrupt(&key, "due totals key"))?)
                }
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
            let slot = DpdBucket::ALL
                .iter()
                .position(|b| *b == bucket)
                .unwrap_or(5);
            out[slot].add(totals);
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
            let mut prefix = tenant_prefix(b'p', tenant);
            prefix.push(channel.code());
            for entry in self.tree.scan_prefix(&prefix) {
                let (key, value) = entry?;
                let totals = DealTotals::decode(&value);
                match key.get(prefix.len()..).unwrap_or_default().split_first() {
                    Some((0, _)) => summary.broken.add(totals),
                    Some((1, day)) => {
                        let day = day_from_bytes(day).ok_or_else(|| corrupt(&key, "ptp key"))?;
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

    /// The tenant's do-not-contact list.
    pub fn do_not_contact_list(&self, tenant: &str) -> Result<DoNotContactList, ReadModelError> {
        let prefix = tenant_prefix(b'b', tenant);
        let mut borrowers = Vec::new();
        for entry in self.tree.scan_prefix(&prefix) {
            let (key, _) = entry?;
            let mut rest = key.get(prefix.len()..).unwrap_or_default();
            let public_id = read_str(&mut rest).ok_or_else(|| corrupt(&key, "borrower key"))?;
            borrowers.push(String::from_utf8_lossy(public_id).into_owned());
        }
        borrowers.sort_unstable();
        Ok(DoNotContactList {
            borrowers,
            sequence: self.sequence(tenant)?,
        })
    }

    /// The tenant's do-not-contact list and the changes after it: no change between the two
    /// is missed or received twice. Blocks while a batch is being applied.
    pub fn watch_do_not_contact(
        &self,
        tenant: &str,
    ) -> Result<(DoNotContactList, DoNotContactWatch), ReadModelError> {
        let _turn = self.turn();
        let receiver = self.feed.sender.subscribe();
        let list = self.do_not_contact_list(tenant)?;
        Ok((
            list,
            DoNotContactWatch {
                tenant: tenant.to_owned(),
                receiver,
                pending: VecDeque::new(),
            },
        ))
    }

    /// Watchers subscribed now (every [`DoNotContactWatch`] not yet dropped).
    pub fn watcher_count(&self) -> usize {
        self.feed.sender.receiver_count()
    }

    /// Makes everything durable.
    pub fn flush(&self) -> Result<(), ReadModelError> {
        self.tree.flush()?;
        Ok(())
    }

    /// Messages that could not be applied.
    pub fn rejected_count(&self) -> usize {
        self.tree.scan_prefix(b"x").count()
    }
}
