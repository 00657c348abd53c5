//! `Query.PortfolioPar` and `PortfolioParSeries`: portfolio at risk by day;
//! `Query.ListDiscrepancies`: where the lender's CRM and recoup's credit model disagree.

use chrono::NaiveDate;
use paygo_snapshots::par::PAR_BUCKETS;
use paygo_snapshots::{FieldType, field};
use recoup_proto::snapshots::field_number;
use recoup_proto::v1;
use tonic::{Request, Response, Status};

use super::{Queries, internal, optional_date, page_size};
use crate::accounts::AccountReadModel;
use crate::kernel::wire_count;
use crate::metrics::Basis;

/// Days one `PortfolioParSeries` call covers at most.
pub const MAX_SERIES_DAYS: i64 = 366;

pub(super) fn par_basis(asked: i32) -> Result<v1::ParBasis, Status> {
    v1::ParBasis::try_from(asked)
        .map_err(|_| Status::invalid_argument(format!("basis {asked} is no ParBasis")))
}

/// Portfolio at risk on `date`, on `basis`.
pub(super) fn par_day(
    accounts: &AccountReadModel,
    tenant: &str,
    date: NaiveDate,
    basis: v1::ParBasis,
) -> Result<v1::PortfolioParResponse, Status> {
    let metrics = accounts.metrics();
    let totals = match basis {
        v1::ParBasis::Source => accounts.par(tenant, date),
        v1::ParBasis::Forgiving => metrics.par(tenant, date, Basis::Forgiving),
        v1::ParBasis::NonForgiving => metrics.par(tenant, date, Basis::NonForgiving),
    }
    .map_err(internal)?;
    let mut response = v1::PortfolioParResponse {
        snapshot_date: date.format("%Y-%m-%d").to_string(),
        basis: basis as i32,
        ..Default::default()
    };
    let (mut over_30, mut over_90) = (0i128, 0i128);
    let mut outstanding = 0i128;
    for ((name, min, max), t) in PAR_BUCKETS.iter().zip(&totals) {
        response.buckets.push(v1::ParBucket {
            bucket: (*name).to_owned(),
            min_days: *min,
            max_days: max.unwrap_or(0),
            accounts: wire_count(t.accounts),
            outstanding: t.outstanding(),
        });
        response.accounts = response.accounts.saturating_add(wire_count(t.accounts));
        outstanding += t.outstanding_units;
        if *min > 30 && *name != "unknown" {
            over_30 += t.outstanding_units;
        }
        if *min > 90 && *name != "unknown" {
            over_90 += t.outstanding_units;
        }
    }
    response.outstanding = outstanding as f64 / 10_000.0;
    let ratio = |part: i128| {
        if outstanding > 0 {
            part as f64 / outstanding as f64
        } else {
            0.0
        }
    };
    response.par30_ratio = ratio(over_30);
    response.par90_ratio = ratio(over_90);
    Ok(response)
}

/// Every day of the range asked, each as [`par_day`] gives it.
pub(super) fn par_series(
    accounts: &AccountReadModel,
    tenant: &str,
    asked: &v1::PortfolioParSeriesRequest,
) -> Result<v1::PortfolioParSeriesResponse, Status> {
    let required = |field: &str, text: &str| {
        optional_date(field, text)?
            .ok_or_else(|| Status::invalid_argument(format!("{field} is required (YYYY-MM-DD)")))
    };
    let from = required("from_date", &asked.from_date)?;
    let to = required("to_date", &asked.to_date)?;
    let days = (to - from).num_days() + 1;
    if days < 1 {
        return Err(Status::invalid_argument(format!(
            "to_date {to} is before from_date {from}"
        )));
    }
    if days > MAX_SERIES_DAYS {
        return Err(Status::invalid_argument(format!(
            "{days} days asked: a series covers at most {MAX_SERIES_DAYS}"
        )));
    }
    let basis = par_basis(asked.basis)?;
    let days = from
        .iter_days()
        .take_while(|d| *d <= to)
        .map(|date| par_day(accounts, tenant, date, basis))
        .collect::<Result<_, _>>()?;
    Ok(v1::PortfolioParSeriesResponse { days })
}

/// Accounts one page compares at most.
pub const MAX_EXAMINED: usize = 10_000;

const PAGE_TOKEN_PREFIX: &str = "account:";

/// The numeric column `name`'s proto field number, or why it cannot be compared.
fn numeric(name: &str) -> Result<u32, Status> {
    match field(name) {
        Some((index, f)) if matches!(f.ty, FieldType::Integer | FieldType::Float) => {
            Ok(field_number(index))
        }
        Some(_) => Err(Status::invalid_argument(format!(
            "{name} is not numeric: only numbers can be compared"
        ))),
        None => Err(Status::invalid_argument(format!("no column {name}"))),
    }
}

/// The columns a field stem compares: `{stem}_source` and recoup's figure for `clock`.
fn columns(stem: &str, clock: v1::Clock) -> Result<(String, String), Status> {
    if stem.is_empty() {
        return Err(Status::invalid_argument(
            "field is required, e.g. days_arrears_consecutive",
        ));
    }
    let source = format!("{stem}_source");
    let variant = match clock {
        v1::Clock::NonForgiving => "nf",
        v1::Clock::Forgiving => "f",
    };
    let calculated = [
        format!("{stem}_calculated"),
        format!("{stem}_{variant}_calculated"),
    ]
    .into_iter()
    .find(|name| field(name).is_some())
    .ok_or_else(|| Status::invalid_argument(format!("recoup computes no figure for {stem}")))?;
    if field(&source).is_none() {
        return Err(Status::invalid_argument(format!(
            "the CRM has no column {source}"
        )));
    }
    Ok((source, calculated))
}

impl Queries {
    pub(super) async fn list_discrepancies_query(
        &self,
        request: Request<v1::ListDiscrepanciesRequest>,
    ) -> Result<Response<v1::ListDiscrepanciesResponse>, Status> {
        let tenant = self.reader(&request)?;
        let r = request.get_ref();
        let date = optional_date("snapshot_date", &r.snapshot_date)?
            .ok_or_else(|| Status::invalid_argument("snapshot_date is required (YYYY-MM-DD)"))?;
        let clock = v1::Clock::try_from(r.clock)
            .map_err(|_| Status::invalid_argument(format!("clock {} is no Clock", r.clock)))?;
        let (source, calculated) = columns(&r.field, clock)?;
        let tags = (numeric(&source)?, numeric(&calculated)?);
        if !(r.tolerance >= 0.0 && r.tolerance.is_finite()) {
            return Err(Status::invalid_argument(format!(
                "tolerance must be a number >= 0, got {}",
                r.tolerance
            )));
        }
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(
                token
                    .strip_prefix(PAGE_TOKEN_PREFIX)
                    .filter(|uid| !uid.is_empty())
                    .ok_or_else(super::not_issued)?,
            ),
        };
        let limit = page_size(r.page_size)?;
        let (found, last) = self
            .accounts
            .current()
            .discrepancies(
                &tenant,
                date,
                tags,
                r.tolerance,
                after,
                (limit, MAX_EXAMINED),
            )
            .map_err(internal)?;
        Ok(Response::new(v1::ListDiscrepanciesResponse {
            source_field: source,
            calculated_field: calculated,
            discrepancies: found
                .into_iter()
                .map(|(account_uid, source, calculated)| v1::Discrepancy {
                    account_uid,
                    source,
                    calculated,
                    difference: calculated - source,
                })
                .collect(),
            next_page_token: last
                .map(|uid| format!("{PAGE_TOKEN_PREFIX}{uid}"))
                .unwrap_or_default(),
        }))
    }
}
