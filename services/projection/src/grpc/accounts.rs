//! `Query.ListDiscrepancies`: where the lender's CRM and recoup's credit model disagree.

use paygo_snapshots::{FieldType, field};
use recoup_proto::snapshots::field_number;
use recoup_proto::v1;
use tonic::{Request, Response, Status};

use super::{Queries, internal, optional_date, page_size};

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
