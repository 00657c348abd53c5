//! `recoup accounts ...`: the PAYGo portfolio as a person at a terminal reads it — PAR on the
//! CRM's or recoup's numbers, and the accounts where the two disagree — as aligned tables, or as
//! JSON for scripts.

use clap::{Args, Subcommand, ValueEnum};
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use serde_json::json;

use crate::client::request;
use crate::credential::{Link, ServerArgs};

#[derive(Args)]
pub struct AccountsArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Tenant sent as x-recoup-tenant; unset: the first tenant of the API key.
    #[arg(long, global = true, env = "RECOUP_TENANT")]
    tenant: Option<String>,
    /// Print JSON (one document) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AccountsCommand,
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Portfolio at risk on one snapshot day: accounts and outstanding per arrears bucket,
    /// PAR30 and PAR90.
    Par {
        /// The snapshot day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// Whose numbers: the CRM's (`source`) or recoup's credit model on its forgiving or
        /// non-forgiving clock. On recoup's numbers an account without the plan values the
        /// model needs counts as unknown.
        #[arg(long, value_enum, default_value_t = Basis::Source)]
        basis: Basis,
    },
    /// The accounts whose CRM value (`<field>_source`) differs from recoup's calculated one
    /// beyond a tolerance, on one snapshot day.
    Discrepancies {
        /// The snapshot day, YYYY-MM-DD.
        #[arg(long)]
        date: String,
        /// The column's name without `_source`, e.g. days_arrears_consecutive, days_to_cutoff,
        /// amt_remaining_installment.
        #[arg(long)]
        field: String,
        /// For figures recoup computes on two clocks (arrears, paid until): which one.
        #[arg(long, value_enum, default_value_t = ClockArg::NonForgiving)]
        clock: ClockArg,
        /// Differences up to this (absolute) count as agreement.
        #[arg(long, default_value_t = 0.0)]
        tolerance: f64,
        /// Print at most this many accounts; 0: every one.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Basis {
    Source,
    Forgiving,
    NonForgiving,
}

impl Basis {
    fn proto(self) -> v1::ParBasis {
        match self {
            Basis::Source => v1::ParBasis::Source,
            Basis::Forgiving => v1::ParBasis::Forgiving,
            Basis::NonForgiving => v1::ParBasis::NonForgiving,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockArg {
    NonForgiving,
    Forgiving,
}

/// A basis as a person or a script reads it: `source`, `forgiving`, `non_forgiving`.
fn basis_name(basis: i32) -> String {
    v1::ParBasis::try_from(basis)
        .map(|b| b.as_str_name().trim_start_matches("PAR_BASIS_"))
        .unwrap_or("?")
        .to_ascii_lowercase()
}

pub async fn run(args: AccountsArgs) -> anyhow::Result<()> {
    let channel = args.server.connect().await?;
    let mut query = QueryClient::new(channel);
    let tenant = args.tenant.as_deref();
    match args.command {
        AccountsCommand::Par { date, basis } => {
            let r = v1::PortfolioParRequest {
                snapshot_date: date,
                basis: basis.proto() as i32,
            };
            let par = query.portfolio_par(request(tenant, r)?).await?.into_inner();
            if args.json {
                println!("{}", par_json(&par));
            } else {
                print!("{}", par_table(&par));
            }
        }
        AccountsCommand::Discrepancies {
            date,
            field,
            clock,
            tolerance,
            limit,
        } => {
            let clock = match clock {
                ClockArg::NonForgiving => v1::Clock::NonForgiving,
                ClockArg::Forgiving => v1::Clock::Forgiving,
            };
            let r = v1::ListDiscrepanciesRequest {
                snapshot_date: date,
                field,
                clock: clock as i32,
                tolerance,
                page_size: 0,
                page_token: String::new(),
            };
            let found = discrepancies(&mut query, tenant, r, limit).await?;
            if args.json {
                println!("{}", found.json());
            } else {
                print!("{}", found.table());
            }
        }
    }
    Ok(())
}

fn par_json(par: &v1::PortfolioParResponse) -> serde_json::Value {
    let buckets: Vec<_> = par
        .buckets
        .iter()
        .map(|b| {
            json!({
                "bucket": b.bucket,
                "min_days": b.min_days,
                "max_days": (b.max_days > 0 || b.min_days == 0).then_some(b.max_days),
                "accounts": b.accounts,
                "outstanding": b.outstanding,
            })
        })
        .collect();
    json!({
        "snapshot_date": par.snapshot_date,
        "basis": basis_name(par.basis),
        "accounts": par.accounts,
        "outstanding": par.outstanding,
        "par30_ratio": par.par30_ratio,
        "par90_ratio": par.par90_ratio,
        "buckets": buckets,
    })
}

fn par_table(par: &v1::PortfolioParResponse) -> String {
    let mut rows = vec![vec![
        "bucket".to_owned(),
        "accounts".to_owned(),
        "outstanding".to_owned(),
        "share".to_owned(),
    ]];
    for b in &par.buckets {
        rows.push(vec![
            b.bucket.clone(),
            b.accounts.to_string(),
            format!("{:.2}", b.outstanding),
            percent(b.outstanding, par.outstanding),
        ]);
    }
    rows.push(vec![
        "total".to_owned(),
        par.accounts.to_string(),
        format!("{:.2}", par.outstanding),
        percent(par.outstanding, par.outstanding),
    ]);
    format!(
        "PAR on {} ({} basis)\n{}PAR30 {:.2}%  PAR90 {:.2}%\n",
        par.snapshot_date,
        basis_name(par.basis).replace('_', "-"),
        aligned(&rows),
        par.par30_ratio * 100.0,
        par.par90_ratio * 100.0
    )
}

/// `part` of `whole` as a percentage; `-` when nothing is outstanding.
fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.2}%", part / whole * 100.0)
    } else {
        "-".to_owned()
    }
}

/// The discrepancies of one day, as far as `--limit` asked.
struct Found {
    source_field: String,
    calculated_field: String,
    rows: Vec<v1::Discrepancy>,
    /// Whether the server holds more than were printed.
    more: bool,
}

/// Pages through ListDiscrepancies until `limit` discrepancies (0: all) are found.
async fn discrepancies(
    query: &mut QueryClient<Link>,
    tenant: Option<&str>,
    mut r: v1::ListDiscrepanciesRequest,
    limit: usize,
) -> anyhow::Result<Found> {
    let mut found = Found {
        source_field: String::new(),
        calculated_field: String::new(),
        rows: Vec::new(),
        more: false,
    };
    loop {
        let page = query
            .list_discrepancies(request(tenant, r.clone())?)
            .await?
            .into_inner();
        found.source_field = page.source_field;
        found.calculated_field = page.calculated_field;
        found.rows.extend(page.discrepancies);
        if limit > 0 && found.rows.len() >= limit {
            found.more = found.rows.len() > limit || !page.next_page_token.is_empty();
            found.rows.truncate(limit);
            return Ok(found);
        }
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        r.page_token = page.next_page_token;
    }
}

impl Found {
    fn json(&self) -> serde_json::Value {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|d| {
                json!({
                    "account_uid": d.account_uid,
                    "source": d.source,
                    "calculated": d.calculated,
                    "difference": d.difference,
                })
            })
            .collect();
        json!({
            "source_field": self.source_field,
            "calculated_field": self.calculated_field,
            "discrepancies": rows,
            "truncated": self.more,
        })
    }

    fn table(&self) -> String {
        let mut rows = vec![vec![
            "account_uid".to_owned(),
            self.source_field.clone(),
            self.calculated_field.clone(),
            "difference".to_owned(),
        ]];
        for d in &self.rows {
            rows.push(vec![
                d.account_uid.clone(),
                number(d.source),
                number(d.calculated),
                number(d.difference),
            ]);
        }
        let mut out = aligned(&rows);
        out.push_str(&format!("{} accounts disagree", self.rows.len()));
        if self.more {
            out.push_str(" (more on the server: --limit 0 prints every one)");
        }
        out.push('\n');
        out
    }
}

/// A figure without noise: whole numbers as such, others to 4 decimals.
fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        format!("{x:.4}")
    }
}

/// Rows as columns two spaces apart: the first column left-aligned, the others right-aligned.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            let cells = rows.iter().filter_map(|r| r.get(c));
            cells.map(|s| s.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                if c == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
