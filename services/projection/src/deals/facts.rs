//! What one deal contributes to the totals and indexes, read from its content with the
//! collections rules.

use chrono::{Datelike, NaiveDate};
use collections::dpd::{dpd_days_between, parse_due_date};
use collections::{DpdBucket, PtpChannel, PtpFact, PtpStatus};
use recoup_proto::{from_timestamp, v1};

use super::keys::{due, due_totals_key, funnel_key, ptp_prefix, tenant_prefix};

/// Days past due of a deal on `as_of`: `as_of − dpd_due_date`, negative before the due date;
/// `None` when the deal has no readable dpd_due_date (YYYY-MM-DD).
pub fn dpd_days(deal: &v1::CollectionsDealObserved, as_of: NaiveDate) -> Option<i64> {
    collections::dpd::dpd_days(due_date(deal), as_of)
}

/// The status of a deal's promise on `channel` as of `as_of`.
pub fn ptp_status(
    deal: &v1::CollectionsDealObserved,
    channel: PtpChannel,
    as_of: NaiveDate,
) -> PtpStatus {
    ptp_fact(deal, channel).status(as_of)
}

fn due_date(deal: &v1::CollectionsDealObserved) -> Option<NaiveDate> {
    deal.dpd_due_date.as_deref().and_then(parse_due_date)
}

fn ptp_fact(deal: &v1::CollectionsDealObserved, channel: PtpChannel) -> PtpFact {
    let (promised, broken) = match channel {
        PtpChannel::Human => (&deal.ptp_date_human, &deal.broken_ptp_date_human),
        PtpChannel::Ai => (&deal.ptp_date_ai, &deal.broken_ptp_date_ai),
    };
    PtpFact::of(promised.as_ref().and_then(from_timestamp), broken.is_some())
}

/// What one deal contributes to the totals and indexes.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Facts {
    pub pipeline: String,
    pub stage: String,
    pub amount: i64,
    /// Days since CE.
    pub due: Option<i32>,
    pub ptp: [PtpFact; 2],
    pub dnc: bool,
}

impl Facts {
    pub fn of(deal: &v1::CollectionsDealObserved) -> Self {
        Self {
            pipeline: deal.pipeline.clone().unwrap_or_default(),
            stage: deal.deal_stage_id.clone().unwrap_or_default(),
            amount: deal.amount_minor.unwrap_or(0),
            due: due_date(deal).map(|d| d.num_days_from_ce()),
            ptp: PtpChannel::ALL.map(|c| ptp_fact(deal, c)),
            dnc: deal.do_not_contact == Some(true),
        }
    }

    /// The DPD bucket on day number `as_of` (days since CE).
    pub fn bucket(&self, as_of: i32) -> DpdBucket {
        DpdBucket::of(dpd_days_between(self.due, as_of))
    }

    /// The totals this deal counts in, once each.
    pub fn totals_keys(&self, tenant: &str) -> Vec<Vec<u8>> {
        let mut keys = Vec::with_capacity(4);
        keys.push(funnel_key(tenant, &self.pipeline, &self.stage));
        keys.push(due_totals_key(tenant, self.due));
        for (channel, fact) in PtpChannel::ALL.iter().zip(self.ptp) {
            let key = ptp_prefix(tenant, channel.code());
            let key = match fact {
                PtpFact::None => continue,
                PtpFact::Broken => key.u8(0),
                PtpFact::Promised(day) => key.u8(1).day_number(day),
            };
            keys.push(key.into_vec());
        }
        keys
    }

    /// The index entries of this deal.
    pub fn index_keys(&self, tenant: &str, tail: &[u8]) -> Vec<Vec<u8>> {
        let by_pipeline = tenant_prefix(b'g', tenant)
            .str(&self.pipeline)
            .str(&self.stage);
        let by_stage = tenant_prefix(b'h', tenant).str(&self.stage);
        let by_due = due(tenant_prefix(b'i', tenant), self.due);
        let mut keys = vec![
            by_pipeline.raw(tail).into_vec(),
            by_stage.raw(tail).into_vec(),
            by_due.raw(tail).into_vec(),
        ];
        if self.dnc {
            keys.push(tenant_prefix(b'k', tenant).raw(tail).into_vec());
        }
        keys
    }
}
