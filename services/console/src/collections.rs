//! Collections: the funnel by pipeline and stage, promises to pay per channel on a day, and the
//! do-not-contact list, which the page keeps current without reloading: the browser follows
//! `/collections/do-not-contact/events` (server-sent events relaying `WatchDoNotContact`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{Extensions, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use maud::{Markup, html};
use recoup_proto::v1;
use recoup_proto::v1::do_not_contact_update::Kind;
use serde::Deserialize;

use crate::backend::{explain, request};
use crate::pages::{amount, answer, failed, http_status, page};
use crate::session::Session;
use crate::{Console, SignedIn};

/// Borrowers of the do-not-contact list the page shows before its live updates take over.
const DNC_SHOWN: usize = 1000;
/// How long the page waits for the do-not-contact snapshot.
const DNC_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize, Default)]
pub struct Params {
    /// YYYY-MM-DD of the promises; empty: today (UTC).
    #[serde(default)]
    as_of: String,
}

pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Query(params): Query<Params>,
) -> Response {
    let mut query = console.backend.query();
    let funnel = query
        .collections_funnel(request(&session, &browser, v1::CollectionsFunnelRequest {}))
        .await;
    let funnel = match funnel {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(&session, http_status(status.code()), &explain(&status)),
    };
    let asked = v1::PtpSummaryRequest {
        as_of: params.as_of.trim().to_owned(),
    };
    let ptp = query.ptp_summary(request(&session, &browser, asked)).await;
    let (status, ptp) = match ptp {
        Ok(r) => (StatusCode::OK, Ok(r.into_inner())),
        Err(s) => (http_status(s.code()), Err(explain(&s))),
    };
    let dnc = do_not_contact(&console, &session, &browser).await;
    let body = html! {
        h2 { "Funnel" }
        (funnel_table(&funnel))
        h2 id="ptp" { "Promises to pay" }
        form.filter method="get" action="/collections" {
            label for="as_of" { "On" }
            input id="as_of" name="as_of" type="date" value=(params.as_of);
            button type="submit" { "Show" }
        }
        @match &ptp {
            Ok(ptp) => (ptp_table(ptp)),
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

/// The list now: the watch's snapshot, read to its end.
struct DoNotContact {
    borrowers: Vec<String>,
    /// Listed beyond [`DNC_SHOWN`].
    more: usize,
    error: Option<String>,
}

async fn do_not_contact(
    console: &Console,
    session: &Session,
    browser: &Extensions,
) -> DoNotContact {
    let mut list = DoNotContact {
        borrowers: Vec::new(),
        more: 0,
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
                Ok(Kind::SnapshotBegin) => {
                    list.borrowers.clear();
                    list.more = 0;
                }
                Ok(Kind::Listed) if list.borrowers.len() < DNC_SHOWN => {
                    list.borrowers.push(update.public_id);
                }
                Ok(Kind::Listed) => list.more += 1,
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
                span id="dnc-count" { (dnc.borrowers.len() + dnc.more) } " borrowers. The list follows changes as they are pulled."
                span id="dnc-live" {}
            }
            ul.dnc id="dnc" tabindex="0" aria-labelledby="dnc-title" data-live="/collections/do-not-contact/events" {
                @for b in &dnc.borrowers { li data-id=(b) { (b) } }
            }
            @if dnc.more > 0 { p id="dnc-more" { "… and " (dnc.more) " more (all of them once the page follows the list)." } }
        }
    }
}

/// The do-not-contact watch relayed as server-sent events: one JSON object per update
/// (`kind`, `public_id`, `sequence`), as `WatchDoNotContact` sends them. Ends with the watch
/// (the browser reconnects and gets a fresh snapshot).
pub async fn events(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
) -> Response {
    let asked = request(&session, &browser, v1::WatchDoNotContactRequest {});
    match console.backend.query().watch_do_not_contact(asked).await {
        Ok(stream) => Sse::new(relay(stream.into_inner()))
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(status) => (http_status(status.code()), explain(&status)).into_response(),
    }
}

fn relay(
    stream: tonic::Streaming<v1::DoNotContactUpdate>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream
        .take_while(|update| std::future::ready(update.is_ok()))
        .filter_map(|update| async move {
            let update = update.ok()?;
            let kind = Kind::try_from(update.kind).ok()?.as_str_name();
            let data = serde_json::json!({
                "kind": kind,
                "public_id": update.public_id,
                "sequence": update.sequence,
            });
            Some(Ok(Event::default().data(data.to_string())))
        })
}
