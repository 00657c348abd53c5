//! Portfolio at risk: outstanding per arrears bucket for every day of a range, drawn on the
//! server as one SVG (stacked areas, with the PAR30 and PAR90 ratios as lines on their own
//! scale), from one `PortfolioParSeries` call; and the bucket table of one day.

use axum::extract::{Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::Response;
use chrono::{Duration, NaiveDate, Utc};
use maud::{Markup, html};
use recoup_proto::v1;
use serde::Deserialize;

use crate::backend::request;
use crate::pages::{answer, decimal, failed, page};
use crate::{Console, SignedIn};

/// Days the page shows unless asked.
const DEFAULT_DAYS: i64 = 90;

/// The chart's size and margins, in SVG units.
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 40.0;

/// A colour per bucket, from current to lost; `unknown` grey.
const COLOURS: [(&str, &str); 8] = [
    ("0", "#2e7d32"),
    ("1-7", "#9ccc65"),
    ("8-30", "#fbc02d"),
    ("31-60", "#fb8c00"),
    ("61-90", "#e64a19"),
    ("91-180", "#c62828"),
    ("180+", "#6a1b1a"),
    ("unknown", "#9e9e9e"),
];

#[derive(Deserialize, Default)]
pub struct Params {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    basis: String,
    /// The day of the bucket table; the range's last day with accounts unless given.
    #[serde(default)]
    day: String,
}

fn basis_of(name: &str) -> Option<v1::ParBasis> {
    match name {
        "" | "source" => Some(v1::ParBasis::Source),
        "forgiving" => Some(v1::ParBasis::Forgiving),
        "non_forgiving" => Some(v1::ParBasis::NonForgiving),
        _ => None,
    }
}

pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Query(params): Query<Params>,
) -> Response {
    let today = Utc::now().date_naive();
    let to = params.to.trim().to_owned();
    let to = if to.is_empty() { today.to_string() } else { to };
    let from = match params.from.trim() {
        "" => NaiveDate::parse_from_str(&to, "%Y-%m-%d")
            .map(|t| (t - Duration::days(DEFAULT_DAYS - 1)).to_string())
            .unwrap_or_default(),
        f => f.to_owned(),
    };
    let Some(basis) = basis_of(params.basis.trim()) else {
        let why = format!(
            "basis {:?}: source, forgiving or non_forgiving",
            params.basis
        );
        return failed(&session, StatusCode::BAD_REQUEST, &why);
    };
    let asked = v1::PortfolioParSeriesRequest {
        from_date: from.clone(),
        to_date: to.clone(),
        basis: basis as i32,
    };
    let series = console
        .backend
        .query()
        .portfolio_par_series(request(&session, &browser, asked))
        .await;
    let days = match series {
        Ok(r) => r.into_inner().days,
        Err(status) => return console.refused_by_service(&session, &status),
    };
    let day = days
        .iter()
        .rev()
        .find(|d| d.snapshot_date == params.day || (params.day.is_empty() && d.accounts > 0))
        .or(days.last());
    let body = html! {
        (range_form(&from, &to, params.basis.trim()))
        (chart(&days))
        (legend())
        @if let Some(day) = day { (bucket_table(day)) }
        p { a href="/accounts" { "Look up one account" } " — its days in arrears by each clock, day by day." }
    };
    answer(
        StatusCode::OK,
        page("Portfolio at risk", Some(&session), body),
    )
}

fn range_form(from: &str, to: &str, basis: &str) -> Markup {
    let bases = [
        ("source", "Source (the CRM's figures)"),
        ("forgiving", "Forgiving (recoup's clock)"),
        ("non_forgiving", "Non-forgiving (recoup's clock)"),
    ];
    let basis = if basis.is_empty() { "source" } else { basis };
    html! {
        form.filter method="get" action="/portfolio" {
            label for="from" { "From" }
            input id="from" name="from" type="date" value=(from);
            label for="to" { "To" }
            input id="to" name="to" type="date" value=(to);
            label for="basis" { "Basis" }
            select id="basis" name="basis" {
                @for (value, name) in bases { option value=(value) selected[value == basis] { (name) } }
            }
            button type="submit" { "Show" }
        }
    }
}

/// The stacked areas of outstanding per bucket, and the PAR lines (right-hand scale, 0–100 %).
fn chart(days: &[v1::PortfolioParResponse]) -> Markup {
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let n = days.len().max(1);
    let x = |i: usize| {
        LEFT + if n == 1 {
            plot_w / 2.0
        } else {
            plot_w * i as f64 / (n - 1) as f64
        }
    };
    let max = days.iter().map(|d| d.outstanding).fold(0.0, f64::max);
    let scale = if max > 0.0 { plot_h / max } else { 0.0 };
    let y = |v: f64| TOP + plot_h - v * scale;
    let ratio_y = |r: f64| TOP + plot_h - r.clamp(0.0, 1.0) * plot_h;
    // Cumulative outstanding below and up to each bucket, per day.
    let mut below = vec![0.0f64; days.len()];
    let mut areas = Vec::with_capacity(COLOURS.len());
    for (name, colour) in COLOURS {
        let of_bucket = |d: &v1::PortfolioParResponse| {
            d.buckets
                .iter()
                .find(|b| b.bucket == name)
                .map_or(0.0, |b| b.outstanding)
        };
        let upper: Vec<f64> = days
            .iter()
            .zip(&below)
            .map(|(d, low)| low + of_bucket(d))
            .collect();
        let mut points = String::new();
        for (i, v) in upper.iter().enumerate() {
            points.push_str(&format!("{:.1},{:.1} ", x(i), y(*v)));
        }
        for (i, v) in below.iter().enumerate().rev() {
            points.push_str(&format!("{:.1},{:.1} ", x(i), y(*v)));
        }
        areas.push((points, colour));
        below = upper;
    }
    let line = |ratio: fn(&v1::PortfolioParResponse) -> f64| {
        days.iter()
            .enumerate()
            .map(|(i, d)| format!("{:.1},{:.1}", x(i), ratio_y(ratio(d))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (par30, par90) = (line(|d| d.par30_ratio), line(|d| d.par90_ratio));
    let last = days.iter().rev().find(|d| d.accounts > 0);
    let summary = match last {
        Some(d) => format!(
            "Outstanding per arrears bucket from {} to {}, with PAR30 and PAR90. On {}: {} outstanding over {} accounts, PAR30 {:.1} %, PAR90 {:.1} %.",
            days.first().map_or("", |d| d.snapshot_date.as_str()),
            days.last().map_or("", |d| d.snapshot_date.as_str()),
            d.snapshot_date,
            d.outstanding,
            d.accounts,
            d.par30_ratio * 100.0,
            d.par90_ratio * 100.0
        ),
        None => "No account has a snapshot in this range.".to_owned(),
    };
    let label_at = |i: usize| days.get(i).map_or("", |d| d.snapshot_date.as_str());
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-labelledby="par-title par-desc" {
                title id="par-title" { "Portfolio at risk by day" }
                desc id="par-desc" { (summary) }
                line x1=(LEFT) y1=(TOP + plot_h) x2=(LEFT + plot_w) y2=(TOP + plot_h) stroke="#57606a" {}
                line x1=(LEFT) y1=(TOP) x2=(LEFT) y2=(TOP + plot_h) stroke="#57606a" {}
                text x=(LEFT - 8.0) y=(TOP + 4.0) text-anchor="end" font-size="12" { (decimal(max)) }
                text x=(LEFT - 8.0) y=(TOP + plot_h) text-anchor="end" font-size="12" { "0" }
                text x=(LEFT + plot_w + 8.0) y=(TOP + 4.0) font-size="12" { "100 %" }
                text x=(LEFT + plot_w + 8.0) y=(TOP + plot_h) font-size="12" { "0 %" }
                text x=(x(0)) y=(HEIGHT - 14.0) font-size="12" text-anchor="start" { (label_at(0)) }
                text x=(x(n - 1)) y=(HEIGHT - 14.0) font-size="12" text-anchor="end" { (label_at(n - 1)) }
                @for (points, colour) in &areas {
                    polygon.bucket points=(points) fill=(colour) fill-opacity="0.85" {}
                }
                polyline.par30 points=(par30) fill="none" stroke="#0a58ca" stroke-width="2" {}
                polyline.par90 points=(par90) fill="none" stroke="#1b1f24" stroke-width="2" stroke-dasharray="6 4" {}
            }
        }
    }
}

fn legend() -> Markup {
    html! {
        ul.legend aria-label="Legend" {
            @for (name, colour) in COLOURS {
                li { svg width="14" height="14" aria-hidden="true" { rect width="14" height="14" fill=(colour) {} } " " (name) " days" }
            }
            li { svg width="22" height="14" aria-hidden="true" { line x1="0" y1="7" x2="22" y2="7" stroke="#0a58ca" stroke-width="2" {} } " PAR30" }
            li { svg width="22" height="14" aria-hidden="true" { line x1="0" y1="7" x2="22" y2="7" stroke="#1b1f24" stroke-width="2" stroke-dasharray="6 4" {} } " PAR90" }
        }
    }
}

fn bucket_table(day: &v1::PortfolioParResponse) -> Markup {
    html! {
        h2 id="day" { "On " (day.snapshot_date) }
        table {
            caption.visually-hidden { "Accounts and outstanding per arrears bucket on " (day.snapshot_date) }
            thead { tr { th scope="col" { "Days in arrears" } th.num scope="col" { "Accounts" } th.num scope="col" { "Outstanding" } } }
            tbody {
                @for b in &day.buckets {
                    tr { th scope="row" { (b.bucket) } td.num { (b.accounts) } td.num { (decimal(b.outstanding)) } }
                }
            }
            tfoot {
                tr { th scope="row" { "All" } td.num { (day.accounts) } td.num { (decimal(day.outstanding)) } }
                tr { th scope="row" { "PAR30 · PAR90" } td.num colspan="2" { (format!("{:.1} % · {:.1} %", day.par30_ratio * 100.0, day.par90_ratio * 100.0)) } }
            }
        }
    }
}
