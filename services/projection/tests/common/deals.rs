//! Collections deal events (D16 rows) encoded the way the export puller publishes them.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, TimeZone, Utc};
use event_backbone::envelope::{EventMetadata, NewEnvelope};
use projection::deals::PtpChannel;
use prost::Message;
use recoup_proto::contract::aggregate::COLLECTIONS_DEAL as DEAL_AGGREGATE;
use recoup_proto::contract::event_type::COLLECTIONS_DEAL_OBSERVED as DEAL_EVENT_TYPE;
use recoup_proto::{from_timestamp, to_timestamp, v1};

/// The topic the puller publishes deals on.
pub const DEALS_TOPIC: &str = "recoup.collections-deals.v1";

/// A UTC day.
pub fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A UTC instant with microseconds, as the export's ISO-8601 strings give them.
pub fn instant(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32, micros: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap() + Duration::microseconds(micros)
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

/// One revision of one D16 row of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub tenant: String,
    pub deal: v1::CollectionsDealObserved,
}

impl Row {
    /// Revision 1 of the row `(public_id, created_at)`: no optional field set.
    pub fn new(tenant: &str, public_id: &str, created_at: DateTime<Utc>) -> Self {
        let updated_at = created_at + Duration::days(1);
        Self {
            tenant: tenant.into(),
            deal: v1::CollectionsDealObserved {
                dataset: "S3/D16".into(),
                lender_public_id: "lender-7".into(),
                public_id: public_id.into(),
                created_at: Some(to_timestamp(created_at)),
                updated_at: Some(to_timestamp(updated_at)),
                revision: 1,
                fetched_at: Some(to_timestamp(updated_at + Duration::seconds(30))),
                ..Default::default()
            },
        }
    }

    pub fn public_id(&self) -> &str {
        &self.deal.public_id
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        from_timestamp(self.deal.created_at.as_ref().unwrap()).unwrap()
    }

    pub fn updated_at(&self) -> DateTime<Utc> {
        from_timestamp(self.deal.updated_at.as_ref().unwrap()).unwrap()
    }

    pub fn revision(&self) -> u64 {
        self.deal.revision
    }

    /// created_at as GetDeal takes it.
    pub fn created_at_text(&self) -> String {
        self.created_at()
            .to_rfc3339_opts(SecondsFormat::Micros, true)
    }

    /// (public_id, created_at): the row key within the tenant.
    pub fn key(&self) -> (String, DateTime<Utc>) {
        (self.deal.public_id.clone(), self.created_at())
    }

    pub fn stage(mut self, pipeline: &str, stage: &str) -> Self {
        self.deal.pipeline = Some(pipeline.into());
        self.deal.deal_stage_id = Some(stage.into());
        self
    }

    pub fn amount(mut self, minor: i64) -> Self {
        self.deal.amount_minor = Some(minor);
        self
    }

    pub fn due(mut self, due: NaiveDate) -> Self {
        self.deal.dpd_due_date = Some(due.format("%Y-%m-%d").to_string());
        self
    }

    /// A promise for `day` (at 00:00 UTC, as the export writes them).
    pub fn ptp(mut self, channel: PtpChannel, day: NaiveDate) -> Self {
        let at = Some(to_timestamp(midnight(day)));
        match channel {
            PtpChannel::Human => self.deal.ptp_date_human = at,
            PtpChannel::Ai => self.deal.ptp_date_ai = at,
        }
        self
    }

    pub fn broken(mut self, channel: PtpChannel, day: NaiveDate) -> Self {
        let at = Some(to_timestamp(midnight(day) + Duration::hours(9)));
        match channel {
            PtpChannel::Human => self.deal.broken_ptp_date_human = at,
            PtpChannel::Ai => self.deal.broken_ptp_date_ai = at,
        }
        self
    }

    pub fn dnc(mut self, flag: bool) -> Self {
        self.deal.do_not_contact = Some(flag);
        self
    }

    /// The next revision of the row, one hour later, with `change` applied.
    pub fn revise(&self, change: impl FnOnce(Row) -> Row) -> Row {
        let mut next = self.clone();
        next.deal.revision += 1;
        let updated_at = self.updated_at() + Duration::hours(1);
        next.deal.updated_at = Some(to_timestamp(updated_at));
        next.deal.fetched_at = Some(to_timestamp(updated_at + Duration::seconds(30)));
        change(next)
    }

    /// The envelope's aggregate id: `{dataset}/{public_id}|{created_at, µs, Z}`.
    pub fn aggregate_id(&self) -> String {
        format!(
            "{}/{}|{}",
            self.deal.dataset,
            self.deal.public_id,
            self.created_at()
                .to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    }

    /// The encoded envelope, as the puller publishes it.
    pub fn envelope(&self) -> Vec<u8> {
        self.envelope_with(DEAL_AGGREGATE, DEAL_EVENT_TYPE, self.deal.revision)
    }

    /// An encoded envelope with another aggregate type, event type or version.
    pub fn envelope_with(&self, aggregate_type: &str, event_type: &str, version: u64) -> Vec<u8> {
        let metadata = EventMetadata {
            correlation_id: "pull-1".into(),
            causation_id: "pull-1".into(),
            actor: "recoup:export-puller".into(),
        };
        NewEnvelope {
            tenant: &self.tenant,
            aggregate_type,
            aggregate_id: &self.aggregate_id(),
            aggregate_version: version,
            occurred_at: self.updated_at(),
            recorded_at: from_timestamp(self.deal.fetched_at.as_ref().unwrap()).unwrap(),
            event_type,
            schema_version: 1,
            payload: self.deal.encode_to_vec(),
            metadata: &metadata,
        }
        .build()
        .encode_to_vec()
    }
}
