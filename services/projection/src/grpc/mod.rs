//! gRPC service `recoup.v1.Query` over the read models.

mod accounts;
mod deals;
pub mod read_models;

use chrono::NaiveDate;
use recoup_access::{Access, Action};
use recoup_proto::convert::{case_to_proto, state_from_proto, state_to_proto};
use recoup_proto::tenant::{case_id_of, required_case_id};
use recoup_proto::v1;
use recoup_proto::v1::query_server::{Query, QueryServer};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::accounts::AccountReadModel;
use crate::cases::CaseReadModel;
use crate::deals::DealReadModel;
use crate::generations::Live;
use crate::kernel::{ReadModelError, wire_count, wire_total};
use recoup_runtime::Clock;

/// Default and largest `ListCases` page.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Messages a `WatchDoNotContact` stream holds for a client that reads slowly, before its
/// watcher stops taking changes (and, once the feed drops some, sends a fresh snapshot).
const WATCH_BUFFER: usize = 256;

/// The query API: cases, PAYGo accounts and, with [`Queries::with_deals`], collections deals.
#[derive(Clone)]
pub struct Queries {
    read_model: Live<CaseReadModel>,
    accounts: Live<AccountReadModel>,
    deals: Option<Deals>,
    shutdown: Option<watch::Receiver<bool>>,
    access: Access,
}

#[derive(Clone)]
struct Deals {
    model: Live<DealReadModel>,
    clock: Clock,
}

impl Deals {
    fn today(&self) -> NaiveDate {
        (self.clock)().date_naive()
    }
}

impl Queries {
    pub fn new(
        read_model: impl Into<Live<CaseReadModel>>,
        accounts: impl Into<Live<AccountReadModel>>,
    ) -> Self {
        Self {
            read_model: read_model.into(),
            accounts: accounts.into(),
            deals: None,
            shutdown: None,
            access: Access::Open,
        }
    }

    /// Checks every request's credential against `access` (default: [`Access::Open`]).
    pub fn with_access(self, access: Access) -> Self {
        Self { access, ..self }
    }

    /// The tenant a reading request acts for, once its caller may read there.
    fn reader<T>(&self, request: &Request<T>) -> Result<String, Status> {
        Ok(self.access.grpc(request, Action::Read)?.tenant)
    }

    /// Serves the deal RPCs from `deals`; "today" is `clock`'s UTC day. Without it they answer
    /// `FAILED_PRECONDITION`.
    pub fn with_deals(self, deals: impl Into<Live<DealReadModel>>, clock: Clock) -> Self {
        Self {
            deals: Some(Deals {
                model: deals.into(),
                clock,
            }),
            ..self
        }
    }

    /// Ends every `WatchDoNotContact` stream (with `UNAVAILABLE`) once `shutdown` turns true or
    /// its sender is dropped, so that a graceful server shutdown does not wait for watchers.
    pub fn with_shutdown(self, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            shutdown: Some(shutdown),
            ..self
        }
    }

    fn deals(&self) -> Result<&Deals, Status> {
        self.deals.as_ref().ok_or_else(|| {
            Status::failed_precondition("this process does not serve the deals read model")
        })
    }

    /// The tonic service, ready to be added to a server.
    pub fn into_server(self) -> QueryServer<Self> {
        QueryServer::new(self)
    }
}

fn internal(error: ReadModelError) -> Status {
    tracing::error!(%error, "read model failure");
    Status::internal(format!("read model failure: {error}"))
}

#[tonic::async_trait]
impl Query for Queries {
    type WatchDoNotContactStream = ReceiverStream<Result<v1::DoNotContactUpdate, Status>>;

    async fn get_deal(
        &self,
        request: Request<v1::GetDealRequest>,
    ) -> Result<Response<v1::DealView>, Status> {
        self.get_deal_query(request).await
    }

    async fn list_deals(
        &self,
        request: Request<v1::ListDealsRequest>,
    ) -> Result<Response<v1::ListDealsResponse>, Status> {
        self.list_deals_query(request).await
    }

    async fn collections_funnel(
        &self,
        request: Request<v1::CollectionsFunnelRequest>,
    ) -> Result<Response<v1::CollectionsFunnelResponse>, Status> {
        self.collections_funnel_query(request).await
    }

    async fn ptp_summary(
        &self,
        request: Request<v1::PtpSummaryRequest>,
    ) -> Result<Response<v1::PtpSummaryResponse>, Status> {
        self.ptp_summary_query(request).await
    }

    async fn dpd_buckets(
        &self,
        request: Request<v1::DpdBucketsRequest>,
    ) -> Result<Response<v1::DpdBucketsResponse>, Status> {
        self.dpd_buckets_query(request).await
    }

    async fn watch_do_not_contact(
        &self,
        request: Request<v1::WatchDoNotContactRequest>,
    ) -> Result<Response<Self::WatchDoNotContactStream>, Status> {
        self.watch_do_not_contact_query(request).await
    }

    async fn get_case(
        &self,
        request: Request<v1::GetCaseRequest>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let (tenant, case_id) = (self.reader(&request)?, case_id_of(&request)?);
        let case = self
            .read_model
            .current()
            .case_proto(&tenant, case_id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("case {case_id} not found")))?;
        Ok(Response::new(v1::CaseReply { case: Some(case) }))
    }

    async fn list_cases(
        &self,
        request: Request<v1::ListCasesRequest>,
    ) -> Result<Response<v1::ListCasesResponse>, Status> {
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        let state = match r.state {
            0 => None,
            n => Some(state_from_proto(n).ok_or_else(|| {
                Status::invalid_argument(format!("state {n} is not a case state"))
            })?),
        };
        let page_size = page_size(r.page_size)?;
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(decode_page_token(token)?),
        };
        // One more than asked tells whether another page follows.
        let mut cases = self
            .read_model
            .current()
            .list_cases(&tenant, state, after.as_deref(), page_size + 1)
            .map_err(internal)?;
        let next_page_token = if cases.len() > page_size {
            cases.truncate(page_size);
            cases
                .last()
                .map(|c| encode_page_token(&c.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListCasesResponse {
            cases: cases.iter().map(case_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_discrepancies(
        &self,
        request: Request<v1::ListDiscrepanciesRequest>,
    ) -> Result<Response<v1::ListDiscrepanciesResponse>, Status> {
        self.list_discrepancies_query(request).await
    }

    async fn get_case_history(
        &self,
        request: Request<v1::GetCaseHistoryRequest>,
    ) -> Result<Response<v1::GetCaseHistoryResponse>, Status> {
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        let case_id = required_case_id(&r.case_id)?;
        let page_size = page_size(r.page_size)?;
        let after = match r.page_token.as_str() {
            "" => 0,
            token => token
                .strip_prefix(HISTORY_TOKEN_PREFIX)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(not_issued)?,
        };
        let mut entries = self
            .read_model
            .current()
            .history(&tenant, case_id, after, page_size + 1)
            .map_err(internal)?;
        // A case applied before the read model kept histories has none, but it exists.
        if entries.is_empty()
            && after == 0
            && self
                .read_model
                .current()
                .applied_version(&tenant, case_id)
                .map_err(internal)?
                == 0
        {
            return Err(Status::not_found(format!("case {case_id} not found")));
        }
        let next_page_token = if entries.len() > page_size {
            entries.truncate(page_size);
            entries
                .last()
                .map(|e| format!("{HISTORY_TOKEN_PREFIX}{}", e.version))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::GetCaseHistoryResponse {
            entries,
            next_page_token,
        }))
    }

    async fn case_stats(
        &self,
        request: Request<v1::CaseStatsRequest>,
    ) -> Result<Response<v1::CaseStatsResponse>, Status> {
        let tenant = self.reader(&request)?;
        let rows = self.read_model.current().stats(&tenant).map_err(internal)?;
        let mut states: Vec<v1::StateStats> = Vec::new();
        for (state, currency, totals) in rows {
            let code = state_to_proto(state) as i32;
            if states.last().is_none_or(|s| s.state != code) {
                states.push(v1::StateStats {
                    state: code,
                    count: 0,
                    totals: Vec::new(),
                });
            }
            if let Some(s) = states.last_mut() {
                s.count = s.count.saturating_add(wire_count(totals.count));
                let of = |what| format!("{what} in {currency} of state {}", state.as_str());
                s.totals.push(v1::CurrencyTotal {
                    amount_minor: wire_total(totals.amount_minor, of("amount"))?,
                    collected_minor: wire_total(totals.collected_minor, of("collected"))?,
                    currency,
                });
            }
        }
        Ok(Response::new(v1::CaseStatsResponse { states }))
    }

    async fn get_account(
        &self,
        request: Request<v1::GetAccountRequest>,
    ) -> Result<Response<v1::AccountSnapshot>, Status> {
        let tenant = self.reader(&request)?;
        let uid = &request.get_ref().account_uid;
        if uid.is_empty() {
            return Err(Status::invalid_argument("account_uid is required"));
        }
        let snapshot = self
            .accounts
            .current()
            .account(&tenant, uid)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("account {uid} not found")))?;
        Ok(Response::new(snapshot))
    }

    async fn list_account_snapshots(
        &self,
        request: Request<v1::ListAccountSnapshotsRequest>,
    ) -> Result<Response<v1::ListAccountSnapshotsResponse>, Status> {
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        if r.account_uid.is_empty() {
            return Err(Status::invalid_argument("account_uid is required"));
        }
        let page_size = page_size(r.page_size)?;
        let mut from = optional_date("from", &r.from)?;
        if !r.page_token.is_empty() {
            let after = r
                .page_token
                .strip_prefix(PAGE_TOKEN_PREFIX)
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| {
                    Status::invalid_argument("page_token is not one this service issued")
                })?;
            from = after.succ_opt();
        }
        let to = optional_date("to", &r.to)?;
        let mut series = self
            .accounts
            .current()
            .series(&tenant, &r.account_uid, from, to, page_size + 1)
            .map_err(internal)?;
        let next_page_token = if series.len() > page_size {
            series.truncate(page_size);
            series
                .last()
                .map(|(date, _)| format!("{PAGE_TOKEN_PREFIX}{}", date.format("%Y-%m-%d")))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListAccountSnapshotsResponse {
            snapshots: series.into_iter().map(|(_, s)| s).collect(),
            next_page_token,
        }))
    }

    async fn portfolio_par(
        &self,
        request: Request<v1::PortfolioParRequest>,
    ) -> Result<Response<v1::PortfolioParResponse>, Status> {
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        let date = optional_date("snapshot_date", &r.snapshot_date)?
            .ok_or_else(|| Status::invalid_argument("snapshot_date is required (YYYY-MM-DD)"))?;
        let basis = accounts::par_basis(r.basis)?;
        let day = accounts::par_day(&self.accounts.current(), &tenant, date, basis)?;
        Ok(Response::new(day))
    }

    async fn portfolio_par_series(
        &self,
        request: Request<v1::PortfolioParSeriesRequest>,
    ) -> Result<Response<v1::PortfolioParSeriesResponse>, Status> {
        let tenant = self.reader(&request)?;
        let series = accounts::par_series(&self.accounts.current(), &tenant, request.get_ref())?;
        Ok(Response::new(series))
    }
}

fn page_size(asked: u32) -> Result<usize, Status> {
    Ok(match asked {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(Status::invalid_argument(format!(
                "page_size must be at most {MAX_PAGE_SIZE}, got {n}"
            )));
        }
        n => n,
    } as usize)
}

fn optional_date(field: &str, text: &str) -> Result<Option<NaiveDate>, Status> {
    if text.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| {
            Status::invalid_argument(format!("{field} {text:?} is not a date (YYYY-MM-DD)"))
        })
}

const PAGE_TOKEN_PREFIX: &str = "after:";
/// A history page token: the last version listed.
const HISTORY_TOKEN_PREFIX: &str = "version:";

fn encode_page_token(case_id: &str) -> String {
    format!("{PAGE_TOKEN_PREFIX}{case_id}")
}

fn decode_page_token(token: &str) -> Result<String, Status> {
    token
        .strip_prefix(PAGE_TOKEN_PREFIX)
        .filter(|id| !id.is_empty() && !id.contains('\0'))
        .map(str::to_owned)
        .ok_or_else(|| Status::invalid_argument("page_token is not one this service issued"))
}

fn not_issued() -> Status {
    Status::invalid_argument("page_token is not one this service issued")
}
