//! One PAYGo account: its latest snapshot (`GetAccount`) and its days over a range
//! (`ListAccountSnapshots`, one page of up to 366 days), charted on the server — days in
//! arrears by the CRM's clock and by recoup's forgiving and non-forgiving ones — with the last
//! weeks as a table.

use axum::extract::{Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::Response;
use chrono::{Duration, NaiveDate};
use maud::{Markup, html};
use recoup_proto::v1;
use serde::Deserialize;

use crate::backend::request;
use crate::pages::{answer, decimal, page};
use crate::{Console, SignedIn};

/// Days the page charts unless asked: a year up to the latest snapshot.
const DEFAULT_DAYS: i64 = 365;
/// Most days the page asks for (one page of `ListAccountSnapshots`).
const MAX_DAYS: u32 = 366;
/// Days of the table under the chart, the latest first.
const TABLE_DAYS: usize = 31;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// The lines of the chart: a class, a colour, a dash pattern, a name and the day's value.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    fn(&v1::AccountSnapshot) -> Option<i64>,
);

const LINES: [Series; 3] = [
    ("source", "#0a58ca", "", "CRM (source)", |s| {
        s.days_arrears_consecutive_source
    }),
    ("forgiving", "#2e7d32", "6 4", "Forgiving (recoup)", |s| {
        s.days_arrears_consecutive_f_calculated
    }),
    (
        "non-forgiving",
        "#b42318",
        "2 3",
        "Non-forgiving (recoup)",
        |s| s.days_arrears_consecutive_nf_calculated,
    ),
];

#[derive(Deserialize, Default)]
pub struct Params {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Query(params): Query<Params>,
) -> Response {
    let uid = params.uid.trim();
    if uid.is_empty() {
        let body = lookup_form("", "", "");
        return answer(StatusCode::OK, page("Account", Some(&session), body));
    }
    let mut query = console.backend.query();
    let asked = v1::GetAccountRequest {
        account_uid: uid.to_owned(),
    };
    let latest = match query.get_account(request(&session, &browser, asked)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return console.refused_by_service(&session, &status),
    };
    let last_day = latest.snapshot_date.clone().unwrap_or_default();
    let to = match params.to.trim() {
        "" => last_day.clone(),
        to => to.to_owned(),
    };
    let from = match params.from.trim() {
        "" => NaiveDate::parse_from_str(&to, "%Y-%m-%d")
            .map(|t| (t - Duration::days(DEFAULT_DAYS - 1)).to_string())
            .unwrap_or_default(),
        from => from.to_owned(),
    };
    let asked = v1::ListAccountSnapshotsRequest {
        account_uid: uid.to_owned(),
        from: from.clone(),
        to: to.clone(),
        page_size: MAX_DAYS,
        page_token: String::new(),
    };
    let days = match query
        .list_account_snapshots(request(&session, &browser, asked))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return console.refused_by_service(&session, &status),
    };
    let body = html! {
        (lookup_form(uid, &from, &to))
        (latest_fields(&latest))
        h2 id="series" { "Days in arrears" }
        @if days.snapshots.is_empty() {
            p { "No snapshot of this account in this range." }
        } @else {
            (chart(&days.snapshots))
            (legend())
            @if !days.next_page_token.is_empty() {
                p.help { "The chart shows the first " (MAX_DAYS) " days of the range." }
            }
            (day_table(&days.snapshots))
        }
    };
    let title = format!(
        "Account {}",
        latest.account_external_id.as_deref().unwrap_or(uid)
    );
    answer(StatusCode::OK, page(&title, Some(&session), body))
}

fn lookup_form(uid: &str, from: &str, to: &str) -> Markup {
    html! {
        form.filter method="get" action="/accounts" {
            label for="uid" { "Account id" }
            input id="uid" name="uid" value=(uid) required size="32" placeholder="tenant_origin_external-id";
            label for="from" { "From" }
            input id="from" name="from" type="date" value=(from);
            label for="to" { "To" }
            input id="to" name="to" type="date" value=(to);
            button type="submit" { "Show" }
        }
    }
}

fn latest_fields(s: &v1::AccountSnapshot) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".to_owned());
    let days = |v: Option<i64>| v.map_or_else(|| "—".to_owned(), |d| d.to_string());
    let amount = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), decimal);
    html! {
        h2 { "Latest snapshot" }
        dl.fields {
            dt { "Account id" } dd { code { (text(&s.account_uid)) } }
            dt { "Data origin" } dd { (text(&s.data_origin)) }
            dt { "Day" } dd { (text(&s.snapshot_date)) }
            dt { "Days in arrears (CRM · forgiving · non-forgiving)" }
            dd { (days(s.days_arrears_consecutive_source)) " · " (days(s.days_arrears_consecutive_f_calculated)) " · " (days(s.days_arrears_consecutive_nf_calculated)) }
            dt { "Remaining (CRM · recoup)" }
            dd { (amount(s.amt_remaining_installment_source)) " · " (amount(s.amt_remaining_installment_calculated)) }
            dt { "Paid on the plan, in all" } dd { (amount(s.amt_paid_payment_plan_cumulative_source)) }
            dt { "PAR status (CRM)" } dd { (text(&s.days_par_status_source)) }
            dt { "Expected maturity" } dd { (text(&s.expected_maturity_date_source)) }
        }
    }
}

/// Days in arrears per day, a line per clock; a day without the value breaks its line.
fn chart(days: &[v1::AccountSnapshot]) -> Markup {
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let n = days.len();
    // Days placed by their date: a day without a snapshot leaves a gap.
    let day_of = |d: &v1::AccountSnapshot| {
        d.snapshot_date
            .as_deref()
            .and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
    };
    let first = days.first().and_then(day_of);
    let offset = |d: &v1::AccountSnapshot| match (first, day_of(d)) {
        (Some(first), Some(day)) => (day - first).num_days(),
        _ => 0,
    };
    let span = days.last().map_or(0, offset).max(1);
    let x = |d: &v1::AccountSnapshot| {
        LEFT + if n <= 1 {
            plot_w / 2.0
        } else {
            plot_w * offset(d) as f64 / span as f64
        }
    };
    let max = days
        .iter()
        .flat_map(|d| LINES.iter().filter_map(|line| (line.4)(d)))
        .max()
        .unwrap_or(0)
        .max(1);
    let y = |v: i64| TOP + plot_h - plot_h * v as f64 / max as f64;
    // Each line as runs of consecutive days that have its value.
    let runs = |value: fn(&v1::AccountSnapshot) -> Option<i64>| {
        let mut runs: Vec<String> = Vec::new();
        let mut run = String::new();
        let mut previous: Option<i64> = None;
        for day in days {
            let at = offset(day);
            let follows = previous.is_some_and(|p| at == p + 1);
            if !follows && !run.is_empty() {
                runs.push(std::mem::take(&mut run));
            }
            match value(day) {
                Some(v) => {
                    run.push_str(&format!("{:.1},{:.1} ", x(day), y(v)));
                    previous = Some(at);
                }
                None => previous = None,
            }
        }
        if !run.is_empty() {
            runs.push(run);
        }
        runs
    };
    let date = |i: usize| {
        days.get(i)
            .and_then(|d| d.snapshot_date.as_deref())
            .unwrap_or("")
    };
    let last = days.last();
    let summary = format!(
        "Days in arrears from {} to {}; on the last day {} by the CRM, {} forgiving, {} non-forgiving.",
        date(0),
        date(n.saturating_sub(1)),
        last.and_then(|d| d.days_arrears_consecutive_source)
            .map_or("unknown".to_owned(), |v| v.to_string()),
        last.and_then(|d| d.days_arrears_consecutive_f_calculated)
            .map_or("unknown".to_owned(), |v| v.to_string()),
        last.and_then(|d| d.days_arrears_consecutive_nf_calculated)
            .map_or("unknown".to_owned(), |v| v.to_string()),
    );
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby="dpd-title dpd-desc" {
                title id="dpd-title" { "Days in arrears by day" }
                desc id="dpd-desc" { (summary) }
                line x1=(LEFT) y1=(TOP + plot_h) x2=(LEFT + plot_w) y2=(TOP + plot_h) stroke="#57606a" {}
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) stroke="#57606a" {}
                text x=(LEFT - 8.0) y=(TOP + 4.0) text-anchor="end" font-size="12" { (max) }
                text x=(LEFT - 8.0) y=(TOP + plot_h) text-anchor="end" font-size="12" { "0" }
                text x=(LEFT) y=(HEIGHT - 14.0) font-size="12" text-anchor="start" { (date(0)) }
                text x=(LEFT + plot_w) y=(HEIGHT - 14.0) font-size="12" text-anchor="end" { (date(n.saturating_sub(1))) }
                @for (class, colour, dash, _, value) in LINES {
                    @for points in runs(value) {
                        polyline class=(class) points=(points.trim_end()) fill="none" stroke=(colour) stroke-width="2" stroke-dasharray=(dash) {}
                    }
                }
            }
        }
    }
}

fn legend() -> Markup {
    html! {
        ul.legend aria-label="Legend" {
            @for (_, colour, dash, name, _) in LINES {
                li { svg width="22" height="14" aria-hidden="true" { line x1="0" y1="7" x2="22" y2="7" stroke=(colour) stroke-width="2" stroke-dasharray=(dash) {} } " " (name) }
            }
        }
    }
}

fn day_table(days: &[v1::AccountSnapshot]) -> Markup {
    let days_of = |v: Option<i64>| v.map_or_else(String::new, |d| d.to_string());
    let amount = |v: Option<f64>| v.map_or_else(String::new, decimal);
    html! {
        table id="account-days" {
            caption { "The last " (days.len().min(TABLE_DAYS)) " days charted, the latest first" }
            thead { tr {
                th scope="col" { "Day" } th.num scope="col" { "Arrears, CRM" } th.num scope="col" { "Forgiving" } th.num scope="col" { "Non-forgiving" }
                th.num scope="col" { "Remaining" } th.num scope="col" { "Paid that day" }
            } }
            tbody {
                @for d in days.iter().rev().take(TABLE_DAYS) {
                    tr {
                        th scope="row" { (d.snapshot_date.as_deref().unwrap_or("")) }
                        td.num { (days_of(d.days_arrears_consecutive_source)) }
                        td.num { (days_of(d.days_arrears_consecutive_f_calculated)) }
                        td.num { (days_of(d.days_arrears_consecutive_nf_calculated)) }
                        td.num { (amount(d.amt_remaining_installment_source)) }
                        td.num { (amount(d.amt_payments_daily_source)) }
                    }
                }
            }
        }
    }
}
