//! `recoup cases ...`: a small gRPC client for people at a terminal.

use anyhow::Context;
use chrono::{Duration, Utc};
use clap::{Args, Subcommand};
use recoup_proto::tenant::TENANT_METADATA_KEY;
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;

use crate::credential::{Link, ServerArgs};

#[derive(Args)]
pub struct CasesArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Tenant sent as x-recoup-tenant; unset: the first tenant of the API key (the tenant
    /// "default" when the server runs with --insecure).
    #[arg(long, global = true, env = "RECOUP_TENANT")]
    tenant: Option<String>,
    #[command(subcommand)]
    command: CasesCommand,
}

#[derive(Subcommand)]
enum CasesCommand {
    /// Create a case with one line item.
    Create {
        #[arg(long)]
        reference: String,
        /// Amount in minor units (cents).
        #[arg(long)]
        amount_minor: i64,
        #[arg(long, default_value = "EUR")]
        currency: String,
        /// YYYY-MM-DD, in the past; default: yesterday.
        #[arg(long)]
        due_date: Option<String>,
        /// Idempotency key; default: a new UUID.
        #[arg(long)]
        external_id: Option<String>,
        /// PRODUCTION or TEST.
        #[arg(long, default_value = "TEST")]
        environment: String,
    },
    /// Show a case; from the event store (read-your-writes) unless --projection.
    Get {
        case_id: String,
        /// Read the projection's read model instead.
        #[arg(long)]
        projection: bool,
    },
    /// List cases from the read model, in creation order.
    List {
        /// REVIEWING, PREPARING, PENDING, PROCESSING, CLOSED or FAILED.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    /// Count and totals per state from the read model.
    Stats,
    /// The case's audit trail from the read model: every event with its time, who caused it
    /// and the request's correlation id, oldest first.
    History { case_id: String },
    /// REVIEWING → PREPARING.
    Review(Versioned),
    /// PREPARING → PENDING.
    Prepare(Versioned),
    /// PENDING → PROCESSING.
    Start(Versioned),
    /// Record money collected (PROCESSING).
    Receipt {
        #[command(flatten)]
        case: Versioned,
        /// The collector's receipt id (idempotency key).
        #[arg(long)]
        receipt_id: String,
        #[arg(long)]
        amount_minor: i64,
    },
    /// Close the case.
    Close(Versioned),
    /// Fail the case with a reason.
    Fail {
        #[command(flatten)]
        case: Versioned,
        #[arg(long)]
        reason: String,
    },
    /// Delete a case still in review.
    Delete(Versioned),
}

#[derive(Args)]
struct Versioned {
    case_id: String,
    /// The version you last read.
    #[arg(long)]
    version: u64,
}

impl Versioned {
    fn command(&self) -> v1::CaseCommand {
        v1::CaseCommand {
            case_id: self.case_id.clone(),
            expected_version: self.version,
        }
    }
}

/// A request of `tenant` (metadata `x-recoup-tenant`; `None`: the credential's tenant).
pub(crate) fn request<T>(tenant: Option<&str>, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(tenant) = tenant {
        request
            .metadata_mut()
            .insert(TENANT_METADATA_KEY, tenant.parse().context("tenant")?);
    }
    Ok(request)
}

fn state_name(state: i32) -> &'static str {
    v1::CaseState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("CASE_STATE_"))
        .unwrap_or("?")
}

fn print_case(case: &v1::DebtCase) {
    let mut line = format!(
        "{}\t{}\tversion={}\tamount={} {}\tcollected={}\treference={}\tcreator={}",
        case.id,
        state_name(case.state),
        case.version,
        case.amount_minor,
        case.currency,
        case.collected_minor,
        case.reference,
        or_unknown(&case.creator),
    );
    if case.reviewed_on.is_some() {
        line.push_str(&format!("\treviewer={}", or_unknown(&case.reviewer)));
    }
    println!("{line}");
}

/// An actor as a person reads it: `?` where recoup did not record one.
fn or_unknown(actor: &str) -> &str {
    if actor.is_empty() { "?" } else { actor }
}

pub async fn run(args: CasesArgs) -> anyhow::Result<()> {
    let channel = args.server.connect().await?;
    let mut cases = DebtCollectionCasesClient::new(channel.clone());
    let mut query = QueryClient::new(channel);
    let t = args.tenant.as_deref();
    let reply = match args.command {
        CasesCommand::Create {
            reference,
            amount_minor,
            currency,
            due_date,
            external_id,
            environment,
        } => {
            let content = case_content(
                reference,
                amount_minor,
                currency,
                due_date,
                external_id,
                &environment,
            )?;
            let create = v1::CreateCaseRequest {
                content: Some(content),
            };
            cases.create_case(request(t, create)?).await?
        }
        CasesCommand::Get {
            case_id,
            projection,
        } => {
            let r = v1::GetCaseRequest { case_id };
            if projection {
                query.get_case(request(t, r)?).await?
            } else {
                cases.get_case(request(t, r)?).await?
            }
        }
        CasesCommand::List {
            state,
            page_size,
            page_token,
        } => return list(&mut query, t, state, page_size, page_token).await,
        CasesCommand::Stats => return stats(&mut query, t).await,
        CasesCommand::History { case_id } => return history(&mut query, t, case_id).await,
        CasesCommand::Review(v) => cases.mark_reviewed(request(t, v.command())?).await?,
        CasesCommand::Prepare(v) => cases.mark_prepared(request(t, v.command())?).await?,
        CasesCommand::Start(v) => cases.start_processing(request(t, v.command())?).await?,
        CasesCommand::Receipt {
            case,
            receipt_id,
            amount_minor,
        } => {
            let r = v1::AddPaymentReceiptRequest {
                case_id: case.case_id,
                expected_version: case.version,
                receipt_external_id: receipt_id,
                amount_minor,
            };
            cases.add_payment_receipt(request(t, r)?).await?
        }
        CasesCommand::Close(v) => cases.close_case(request(t, v.command())?).await?,
        CasesCommand::Fail { case, reason } => {
            let r = v1::FailCaseRequest {
                case_id: case.case_id,
                expected_version: case.version,
                reason,
            };
            cases.fail_case(request(t, r)?).await?
        }
        CasesCommand::Delete(v) => cases.delete_case(request(t, v.command())?).await?,
    };
    if let Some(case) = &reply.get_ref().case {
        print_case(case);
    }
    Ok(())
}

/// The content of `cases create`: one line item of the whole amount.
fn case_content(
    reference: String,
    amount_minor: i64,
    currency: String,
    due_date: Option<String>,
    external_id: Option<String>,
    environment: &str,
) -> anyhow::Result<v1::CaseContent> {
    let environment = match environment {
        "PRODUCTION" => v1::Environment::Production,
        "TEST" => v1::Environment::Test,
        other => anyhow::bail!("--environment must be PRODUCTION or TEST, got {other}"),
    };
    Ok(v1::CaseContent {
        external_id: external_id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        reference,
        environment: environment as i32,
        currency,
        line_items: vec![v1::LineItem {
            unique_id: "1".into(),
            name: "debt".into(),
            quantity: 1,
            amount_minor,
        }],
        due_date: due_date.unwrap_or_else(|| {
            (Utc::now() - Duration::days(1))
                .format("%Y-%m-%d")
                .to_string()
        }),
        ..Default::default()
    })
}

/// `cases list`: one page of cases from the read model, and the token of the next.
async fn list(
    query: &mut QueryClient<Link>,
    tenant: Option<&str>,
    state: Option<String>,
    page_size: u32,
    page_token: String,
) -> anyhow::Result<()> {
    let state = match state {
        None => v1::CaseState::Unspecified,
        Some(s) => v1::CaseState::from_str_name(&format!("CASE_STATE_{s}"))
            .with_context(|| format!("unknown state {s}"))?,
    };
    let list = v1::ListCasesRequest {
        state: state as i32,
        page_size,
        page_token,
    };
    let page = query.list_cases(request(tenant, list)?).await?.into_inner();
    for case in &page.cases {
        print_case(case);
    }
    if !page.next_page_token.is_empty() {
        println!("next page: --page-token {}", page.next_page_token);
    }
    Ok(())
}

/// `cases history`: every page of a case's audit trail, one event per line.
async fn history(
    query: &mut QueryClient<Link>,
    tenant: Option<&str>,
    case_id: String,
) -> anyhow::Result<()> {
    let mut page_token = String::new();
    loop {
        let r = v1::GetCaseHistoryRequest {
            case_id: case_id.clone(),
            page_size: 0,
            page_token,
        };
        let page = query
            .get_case_history(request(tenant, r)?)
            .await?
            .into_inner();
        for e in &page.entries {
            let at = e
                .occurred_at
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "?".into());
            println!(
                "{}\t{at}\t{}\tactor={}\tcorrelation={}",
                e.version,
                e.event_type,
                or_unknown(&e.actor),
                e.correlation_id
            );
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// `cases stats`: count and totals per state and currency.
async fn stats(query: &mut QueryClient<Link>, tenant: Option<&str>) -> anyhow::Result<()> {
    let stats = query
        .case_stats(request(tenant, v1::CaseStatsRequest {})?)
        .await?
        .into_inner();
    for s in stats.states {
        let totals: Vec<String> = s
            .totals
            .iter()
            .map(|c| {
                format!(
                    "{} {} (collected {})",
                    c.amount_minor, c.currency, c.collected_minor
                )
            })
            .collect();
        println!(
            "{}\t{}\t{}",
            state_name(s.state),
            s.count,
            totals.join(", ")
        );
    }
    Ok(())
}
