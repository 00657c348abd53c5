//! The collections deal queries of `recoup.v1.Query`: one deal, listings with page tokens bound
//! to their filters and day, the funnel, promises to pay, and the do-not-contact stream.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use recoup_proto::to_timestamp;
use recoup_proto::v1;
use recoup_proto::v1::do_not_contact_update::Kind;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Queries, WATCH_BUFFER, internal, not_issued, optional_date, page_size};
use crate::deals::{
    DealFilter, DealReadModel, DoNotContactList, DoNotContactWatch, DpdBucket, ListChange,
    ListDealsError, ListPosition, PtpChannel, PtpStatus, WatchError, dpd_days, ptp_status,
};
use crate::generations::Live;
use crate::kernel::{wire_count, wire_total};

impl Queries {
    pub(super) async fn get_deal_query(
        &self,
        request: Request<v1::GetDealRequest>,
    ) -> Result<Response<v1::DealView>, Status> {
        let deals = self.deals()?;
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        if r.public_id.is_empty() {
            return Err(Status::invalid_argument("public_id is required"));
        }
        if r.created_at.is_empty() {
            return Err(Status::invalid_argument(
                "created_at is required (RFC 3339, e.g. 2026-04-18T10:05:12Z)",
            ));
        }
        let created_at = DateTime::parse_from_rfc3339(&r.created_at)
            .map_err(|_| {
                Status::invalid_argument(format!(
                    "created_at {:?} is not an RFC 3339 timestamp (e.g. 2026-04-18T10:05:12Z)",
                    r.created_at
                ))
            })?
            .with_timezone(&Utc);
        let deal = deals
            .model
            .current()
            .deal(&tenant, &r.public_id, created_at)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "deal {} created at {} not found",
                    r.public_id, r.created_at
                ))
            })?;
        Ok(Response::new(deal_view(deal, deals.today())))
    }

    pub(super) async fn list_deals_query(
        &self,
        request: Request<v1::ListDealsRequest>,
    ) -> Result<Response<v1::ListDealsResponse>, Status> {
        let deals = self.deals()?;
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        let dpd_bucket = match r.dpd_bucket.as_str() {
            "" => None,
            name => Some(DpdBucket::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = DpdBucket::ALL.iter().map(|b| b.name()).collect();
                Status::invalid_argument(format!(
                    "dpd_bucket {name:?} is not one of {}",
                    names.join(", ")
                ))
            })?),
        };
        let page_size = page_size(r.page_size)?;
        let filter = DealFilter {
            deal_stage_id: (!r.deal_stage_id.is_empty()).then(|| r.deal_stage_id.clone()),
            pipeline: (!r.pipeline.is_empty()).then(|| r.pipeline.clone()),
            dpd_bucket,
            do_not_contact: r.do_not_contact,
        };
        let fingerprint = listing_fingerprint(&tenant, r);
        let (as_of, after) = match r.page_token.as_str() {
            "" => (deals.today(), None),
            token => {
                let (as_of, position) = decode_deal_token(token, fingerprint)?;
                (as_of, Some(position))
            }
        };
        let page = deals
            .model
            .current()
            .list_deals(&tenant, &filter, as_of, after.as_ref(), page_size)
            .map_err(|e| match e {
                ListDealsError::Position => not_issued(),
                ListDealsError::ReadModel(e) => internal(e),
            })?;
        Ok(Response::new(v1::ListDealsResponse {
            next_page_token: page
                .next
                .map(|p| encode_deal_token(as_of, fingerprint, &p))
                .unwrap_or_default(),
            deals: page
                .deals
                .into_iter()
                .map(|d| deal_view(d, as_of))
                .collect(),
        }))
    }

    pub(super) async fn collections_funnel_query(
        &self,
        request: Request<v1::CollectionsFunnelRequest>,
    ) -> Result<Response<v1::CollectionsFunnelResponse>, Status> {
        let deals = self.deals()?;
        let tenant = self.reader(&request)?;
        let stages = deals.model.current().funnel(&tenant).map_err(internal)?;
        let mut response = v1::CollectionsFunnelResponse::default();
        let mut amount = 0i128;
        for stage in stages {
            let count = wire_count(stage.totals.deals);
            response.deals = response.deals.saturating_add(count);
            amount += stage.totals.amount_minor;
            let what = format!(
                "of stage {:?} of pipeline {:?}",
                stage.deal_stage_id, stage.pipeline
            );
            response.stages.push(v1::FunnelStage {
                amount_minor: wire_total(stage.totals.amount_minor, what)?,
                pipeline: stage.pipeline,
                deal_stage_id: stage.deal_stage_id,
                deals: count,
            });
        }
        response.amount_minor = wire_total(amount, "of the funnel")?;
        Ok(Response::new(response))
    }

    /// For a question about one day: the deals read model's live generation, the reader's
    /// tenant, and the day (`as_of`, YYYY-MM-DD; today when empty).
    fn on_day<T>(
        &self,
        request: &Request<T>,
        as_of: &str,
    ) -> Result<(DealReadModel, String, NaiveDate), Status> {
        let deals = self.deals()?;
        let tenant = self.reader(request)?;
        let day = optional_date("as_of", as_of)?.unwrap_or(deals.today());
        Ok((deals.model.current(), tenant, day))
    }

    pub(super) async fn ptp_summary_query(
        &self,
        request: Request<v1::PtpSummaryRequest>,
    ) -> Result<Response<v1::PtpSummaryResponse>, Status> {
        let (deals, tenant, as_of) = self.on_day(&request, &request.get_ref().as_of)?;
        let totals = deals.ptp_summary(&tenant, as_of).map_err(internal)?;
        let mut channels = Vec::new();
        for (channel, t) in PtpChannel::ALL.iter().zip(totals) {
            let name = channel.name();
            channels.push(v1::PtpChannelSummary {
                channel: name.to_owned(),
                open: wire_count(t.open.deals),
                open_amount_minor: wire_total(t.open.amount_minor, format!("open on {name}"))?,
                kept: wire_count(t.kept.deals),
                kept_amount_minor: wire_total(t.kept.amount_minor, format!("kept on {name}"))?,
                broken: wire_count(t.broken.deals),
                broken_amount_minor: wire_total(
                    t.broken.amount_minor,
                    format!("broken on {name}"),
                )?,
            });
        }
        Ok(Response::new(v1::PtpSummaryResponse {
            as_of: as_of.format("%Y-%m-%d").to_string(),
            channels,
        }))
    }

    pub(super) async fn dpd_buckets_query(
        &self,
        request: Request<v1::DpdBucketsRequest>,
    ) -> Result<Response<v1::DpdBucketsResponse>, Status> {
        let (deals, tenant, as_of) = self.on_day(&request, &request.get_ref().as_of)?;
        let totals = deals.dpd_buckets(&tenant, as_of).map_err(internal)?;
        let mut buckets = Vec::new();
        for (bucket, t) in DpdBucket::ALL.iter().zip(totals) {
            let name = bucket.name();
            buckets.push(v1::DpdBucketTotals {
                bucket: name.to_owned(),
                deals: wire_count(t.deals),
                amount_minor: wire_total(t.amount_minor, format!("of DPD bucket {name}"))?,
            });
        }
        Ok(Response::new(v1::DpdBucketsResponse {
            as_of: as_of.format("%Y-%m-%d").to_string(),
            buckets,
        }))
    }

    pub(super) async fn watch_do_not_contact_query(
        &self,
        request: Request<v1::WatchDoNotContactRequest>,
    ) -> Result<Response<ReceiverStream<Result<v1::DoNotContactUpdate, Status>>>, Status> {
        let deals = self.deals()?;
        let tenant = self.reader(&request)?;
        let model = deals.model.clone();
        // Subscribed before the answer: every change after the call returns reaches the stream.
        let first = subscribe(&model.current(), &tenant).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(follow_do_not_contact(
            model,
            tenant,
            first,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A deal and its facts as of `as_of`.
fn deal_view(deal: v1::CollectionsDealObserved, as_of: NaiveDate) -> v1::DealView {
    let dpd = dpd_days(&deal, as_of);
    let ptp = |channel| {
        match ptp_status(&deal, channel, as_of) {
            PtpStatus::None => v1::PtpStatus::None,
            PtpStatus::Open => v1::PtpStatus::Open,
            PtpStatus::Kept => v1::PtpStatus::Kept,
            PtpStatus::Broken => v1::PtpStatus::Broken,
        }
        .into()
    };
    v1::DealView {
        as_of: as_of.format("%Y-%m-%d").to_string(),
        dpd_days: dpd,
        dpd_bucket: DpdBucket::of(dpd).name().to_owned(),
        ptp_human: ptp(PtpChannel::Human),
        ptp_ai: ptp(PtpChannel::Ai),
        deal: Some(deal),
    }
}

/// FNV-1a 64 over length-prefixed parts: a checksum, not a MAC (tokens carry no secret).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in parts {
        for byte in (part.len() as u64).to_be_bytes().iter().chain(part.iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// What a `ListDeals` page token is bound to: the tenant and every filter.
fn listing_fingerprint(tenant: &str, r: &v1::ListDealsRequest) -> u64 {
    let dnc: &[u8] = match r.do_not_contact {
        None => b"",
        Some(false) => b"0",
        Some(true) => b"1",
    };
    fnv1a(&[
        b"ListDeals",
        tenant.as_bytes(),
        r.deal_stage_id.as_bytes(),
        r.pipeline.as_bytes(),
        r.dpd_bucket.as_bytes(),
        dnc,
    ])
}

const DEAL_TOKEN_VERSION: u8 = 1;

/// version (1) · as-of day (i32 BE, days since CE) · fingerprint (8) · position · checksum (8),
/// base64url.
fn encode_deal_token(as_of: NaiveDate, fingerprint: u64, position: &ListPosition) -> String {
    let mut bytes = vec![DEAL_TOKEN_VERSION];
    bytes.extend_from_slice(&as_of.num_days_from_ce().to_be_bytes());
    bytes.extend_from_slice(&fingerprint.to_be_bytes());
    bytes.extend_from_slice(&position.to_bytes());
    let check = fnv1a(&[&bytes]);
    bytes.extend_from_slice(&check.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_deal_token(token: &str, fingerprint: u64) -> Result<(NaiveDate, ListPosition), Status> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| not_issued())?;
    let Some((body, check)) = bytes.split_last_chunk::<8>() else {
        return Err(not_issued());
    };
    if fnv1a(&[body]) != u64::from_be_bytes(*check) {
        return Err(not_issued());
    }
    let Some((&DEAL_TOKEN_VERSION, rest)) = body.split_first() else {
        return Err(not_issued());
    };
    let (Some(day), Some(issued_for), Some(position)) = (
        rest.first_chunk::<4>(),
        rest.get(4..12),
        rest.get(12..).and_then(ListPosition::from_bytes),
    ) else {
        return Err(not_issued());
    };
    let as_of =
        NaiveDate::from_num_days_from_ce_opt(i32::from_be_bytes(*day)).ok_or_else(not_issued)?;
    if issued_for != fingerprint.to_be_bytes() {
        return Err(Status::invalid_argument(
            "page_token was issued for other filters: repeat the first page's filters",
        ));
    }
    Ok((as_of, position))
}

/// Subscribes off the async threads: it waits while a batch is being applied.
async fn subscribe(
    model: &DealReadModel,
    tenant: &str,
) -> Result<(DoNotContactList, DoNotContactWatch), Status> {
    let model = model.clone();
    let tenant = tenant.to_owned();
    tokio::task::spawn_blocking(move || model.watch_do_not_contact(&tenant))
        .await
        .map_err(|e| Status::internal(format!("subscription failed: {e}")))?
        .map_err(internal)
}

fn update(kind: Kind, public_id: String, sequence: u64) -> v1::DoNotContactUpdate {
    v1::DoNotContactUpdate {
        kind: kind.into(),
        public_id,
        sequence,
        changed_at: None,
    }
}

/// Feeds one `WatchDoNotContact` stream: a snapshot, then the changes; a fresh snapshot when
/// the watcher fell behind. Ends when the client goes away or the server shuts down.
async fn follow_do_not_contact(
    model: Live<DealReadModel>,
    tenant: String,
    first: (DoNotContactList, DoNotContactWatch),
    tx: mpsc::Sender<Result<v1::DoNotContactUpdate, Status>>,
    shutdown: Option<watch::Receiver<bool>>,
) {
    let stopping = async move {
        match shutdown {
            // A dropped sender means the server that could signal is gone too.
            Some(mut shutdown) => {
                let _ = shutdown.wait_for(|stop| *stop).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopping);
    // Hands one message to the stream, or ends the feed: the client went away or the server stops.
    macro_rules! deliver {
        ($message:expr) => {
            tokio::select! {
                sent = tx.send(Ok($message)) => if sent.is_err() { return; },
                () = &mut stopping => {
                    let _ = tx.try_send(Err(Status::unavailable("the server is shutting down")));
                    return;
                }
            }
        };
    }
    let (mut list, mut changes) = first;
    loop {
        deliver!(update(Kind::SnapshotBegin, String::new(), list.sequence));
        for public_id in std::mem::take(&mut list.borrowers) {
            deliver!(update(Kind::Listed, public_id, list.sequence));
        }
        deliver!(update(Kind::SnapshotEnd, String::new(), list.sequence));
        loop {
            let next = tokio::select! {
                next = changes.next() => next,
                () = tx.closed() => return,
                () = &mut stopping => {
                    let _ = tx.try_send(Err(Status::unavailable("the server is shutting down")));
                    return;
                }
            };
            match next {
                Ok(change) => deliver!(v1::DoNotContactUpdate {
                    kind: match change.change {
                        ListChange::Added => Kind::Added,
                        ListChange::Removed => Kind::Removed,
                    }
                    .into(),
                    public_id: change.public_id,
                    sequence: change.sequence,
                    changed_at: Some(to_timestamp(change.changed_at)),
                }),
                Err(WatchError::Lagged) => break,
                Err(WatchError::Closed) => return,
            }
        }
        tracing::info!(%tenant, "do-not-contact watcher fell behind; sending a fresh snapshot");
        // From the generation live now: a rebuild's switch makes every watcher start over.
        match subscribe(&model.current(), &tenant).await {
            Ok(fresh) => (list, changes) = fresh,
            Err(status) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        }
    }
}
