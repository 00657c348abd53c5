//! Collections: the funnel by pipeline and stage, promises to pay per channel and deals per DPD
//! bucket on a day, and the do-not-contact list, which the page keeps current without
//! reloading: the browser follows `/collections/do-not-contact/events` (server-sent events
//! relaying `WatchDoNotContact`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use maud::{Markup, html};
use recoup_proto::v1;
use recoup_proto::v1::do_not_contact_update::Kind;
use serde::Deserialize;

use crate::backend::{explain, request};
use crate::pages::{amount, answer, http_status, page};
use crate::session::{Session, Sessions, StreamSlot};
use crate::{Console, SignedIn};

/// Borrowers of the do-not-contact list the page shows before its live updates take over.
const DNC_SHOWN: usize = 1000;
/// How long the page waits for the do-not-contact snapshot.
const DNC_WAIT: Duration = Duration::from_secs(5);
/// How often a live-update stream checks that its session is still live (signed out, ended
/// idle or past its lifetime, the stream ends).
const SESSION_CHECK: Duration = Duration::from_secs(5);

#[derive(Deserialize, Default)]
pub struct Params {
    /// YYYY-MM-DD of the promises and the DPD buckets; empty: today (UTC).
    #[serde(default)]
    as_of: String,
}

pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Query(params): Query<Params>,
) -> Response {
    // The four answers are independent: asked at once.
    let query = || console.backend.query();
    let (mut funnels, mut promises, mut days) = (query(), query(), query());
    let as_of = params.as_of.trim().to_owned();
    let ptp_asked = v1::PtpSummaryRequest {
        as_of: as_of.clone(),
    };
    let (funnel, ptp, dpd, dnc) = tokio::join!(
        funnels.collections_funnel(request(&session, &browser, v1::CollectionsFunnelRequest {})),
        promises.ptp_summary(request(&session, &browser, ptp_asked)),
        days.dpd_buckets(request(&session, &browser, v1::DpdBucketsRequest { as_of })),
        do_not_contact(&console, &session, &browser),
    );
    let funnel = match funnel {
        Ok(r) => r.into_inner(),
        Err(status) => return console.refused_by_service(&session, &status),
    };
    // Each table of the day, or why it is missing; the page's status is the first failure's.
    let status = [ptp.as_ref().err(), dpd.as_ref().err()]
        .into_iter()
        .flatten()
        .next()
        .map_or(StatusCode::OK, |s| http_status(s.code()));
    let ptp = ptp.map(|r| r.into_inner()).map_err(|s| explain(&s));
    let dpd = dpd.map(|r| r.into_inner()).map_err(|s| explain(&s));
    let body = html! {
        h2 { "Funnel" }
        (funnel_table(&funnel))
        form.filter method="get" action="/collections" {
            label for="as_of" { "Promises and days past due on" }
            input id="as_of" name="as_of" type="date" value=(params.as_of);
            button type="submit" { "Show" }
        }
        h2 id="ptp" { "Promises to pay" }
        @match &ptp {
            Ok(ptp) => (ptp_table(ptp)),
            Err(why) => p.error role="alert" { (why) },
        }
        h2 id="dpd" { "Days past due" }
        @match &dpd {
            Ok(dpd) => (dpd_table(dpd)),
            Err(why) => p.error role="alert" { (why) },
        }
        h2 id="dnc-title" { "Do not contact" }
        (dnc_list(&dnc))
    };
    answer(status, page("Collections", Some(&session), body))
}

fn funnel_table(funnel: &v1::CollectionsFunnelResponse) -> Markup {
    let named = |s: &str| {
        if s.is_empty() {
            "(none)".to_owned()
        } else {
            s.to_owned()
        }
    };
    html! {
        table {
            caption.visually-hidden { "Deals per pipeline and stage" }
            thead { tr { th scope="col" { "Pipeline" } th scope="col" { "Stage" } th.num scope="col" { "Deals" } th.num scope="col" { "Amount" } } }
            tbody {
                @for s in &funnel.stages {
                    tr { td { (named(&s.pipeline)) } td { (named(&s.deal_stage_id)) } td.num { (s.deals) } td.num { (amount(s.amount_minor)) } }
                }
            }
            tfoot { tr { th scope="row" colspan="2" { "All deals" } td.num { (funnel.deals) } td.num { (amount(funnel.amount_minor)) } } }
        }
    }
}

fn ptp_table(ptp: &v1::PtpSummaryResponse) -> Markup {
    html! {
        table {
            caption { "On " (ptp.as_of) }
            thead { tr { th scope="col" { "Channel" } th.num scope="col" { "Open" } th.num scope="col" { "Kept" } th.num scope="col" { "Broken" } } }
            tbody {
                @for c in &ptp.channels {
                    tr {
                        th scope="row" { (if c.channel == "ai" { "AI calls" } else { "Agents" }) }
                        td.num { (c.open) " · " (amount(c.open_amount_minor)) }
                        td.num { (c.kept) " · " (amount(c.kept_amount_minor)) }
                        td.num { (c.broken) " · " (amount(c.broken_amount_minor)) }
                    }
                }
            }
        }
    }
}

fn dpd_table(dpd: &v1::DpdBucketsResponse) -> Markup {
    let named = |b: &str| match b {
        "current" => "Current (not yet due)".to_owned(),
        "unknown" => "No due date".to_owned(),
        days => format!("{days} days"),
    };
    html! {
        table {
            caption { "On " (dpd.as_of) }
            thead { tr { th scope="col" { "Past due" } th.num scope="col" { "Deals" } th.num scope="col" { "Amount" } } }
            tbody {
                @for b in &dpd.buckets {
                    tr data-bucket=(b.bucket) { th scope="row" { (named(&b.bucket)) } td.num { (b.deals) } td.num { (amount(b.amount_minor)) } }
                }
            }
        }
    }
}

/// The list now: the watch's snapshot, read up to [`DNC_SHOWN`] borrowers.
struct DoNotContact {
    borrowers: Vec<String>,
    /// More are listed than shown.
    more: bool,
    error: Option<String>,
}

async fn do_not_contact(
    console: &Console,
    session: &Session,
    browser: &Extensions,
) -> DoNotContact {
    let mut list = DoNotContact {
        borrowers: Vec::new(),
        more: false,
        error: None,
    };
    let asked = request(session, browser, v1::WatchDoNotContactRequest {});
    let read = async {
        let mut stream = console
            .backend
            .query()
            .watch_do_not_contact(asked)
            .await?
            .into_inner();
        while let Some(update) = stream.message().await? {
            match Kind::try_from(update.kind) {
                Ok(Kind::SnapshotBegin) => list.borrowers.clear(),
                Ok(Kind::Listed) if list.borrowers.len() < DNC_SHOWN => {
                    list.borrowers.push(update.public_id);
                }
                // Enough for the page: the script shows the rest once it follows the list.
                Ok(Kind::Listed) => {
                    list.more = true;
                    break;
                }
                Ok(Kind::SnapshotEnd) => break,
                _ => {}
            }
        }
        Ok::<(), tonic::Status>(())
    };
    match tokio::time::timeout(DNC_WAIT, read).await {
        Ok(Ok(())) => {}
        Ok(Err(status)) => list.error = Some(explain(&status)),
        Err(_) => list.error = Some("the list did not come in time".to_owned()),
    }
    list
}

fn dnc_list(dnc: &DoNotContact) -> Markup {
    html! {
        @if let Some(error) = &dnc.error {
            p.error role="alert" { "The do-not-contact list is not available: " (error) }
        } @else {
            p id="dnc-status" aria-live="polite" {
                span id="dnc-count" { @if dnc.more { "More than " } (dnc.borrowers.len()) } " borrowers. The list follows changes as they are pulled."
                span id="dnc-live" {}
            }
            ul.dnc id="dnc" tabindex="0" aria-labelledby="dnc-title" data-live="/collections/do-not-contact/events" {
                @for b in &dnc.borrowers { li data-id=(b) { (b) } }
            }
            @if dnc.more { p id="dnc-more" { "… and more: the page shows them once it follows the list." } }
        }
    }
}

/// The do-not-contact watch relayed as server-sent events: one JSON object per update
/// (`kind`, `public_id`, `sequence`), as `WatchDoNotContact` sends them. Ends with the watch
/// (the browser reconnects and gets a fresh snapshot), and when the session ends. A session
/// holds a few such streams at once.
pub async fn events(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
) -> Response {
    let Some(slot) = console.sessions.stream_slot(&session.id) else {
        let why = "this session follows the list in too many tabs already";
        return (StatusCode::TOO_MANY_REQUESTS, why).into_response();
    };
    let asked = request(&session, &browser, v1::WatchDoNotContactRequest {});
    match console.backend.query().watch_do_not_contact(asked).await {
        Ok(stream) => {
            let watch = Watch {
                stream: stream.into_inner(),
                ticks: tokio::time::interval(SESSION_CHECK),
                sessions: console.sessions.clone(),
                session: session.id,
                _slot: slot,
            };
            Sse::new(relay(watch))
                .keep_alive(KeepAlive::default())
                .into_response()
        }
        Err(status) => (http_status(status.code()), explain(&status)).into_response(),
    }
}

/// What a relayed stream holds: the watch, and how it checks its session.
struct Watch {
    stream: tonic::Streaming<v1::DoNotContactUpdate>,
    ticks: tokio::time::Interval,
    sessions: Arc<Sessions>,
    session: String,
    _slot: StreamSlot,
}

fn relay(watch: Watch) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(watch, |mut watch| async move {
        loop {
            tokio::select! {
                update = watch.stream.message() => {
                    // The watch ended or failed: so does the stream.
                    let update = update.ok()??;
                    if let Some(event) = event_of(&update) {
                        return Some((Ok(event), watch));
                    }
                }
                _ = watch.ticks.tick() => {
                    if !watch.sessions.alive(&watch.session, Instant::now()) {
                        return None;
                    }
                }
            }
        }
    })
}

fn event_of(update: &v1::DoNotContactUpdate) -> Option<Event> {
    let kind = Kind::try_from(update.kind).ok()?.as_str_name();
    let data = serde_json::json!({
        "kind": kind,
        "public_id": update.public_id,
        "sequence": update.sequence,
    });
    Some(Event::default().data(data.to_string()))
}
