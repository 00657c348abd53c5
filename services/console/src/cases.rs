//! Cases: the list by state, a case with its audit trail, and the commands its state takes as
//! buttons. A case page reads the case from the case service itself (what a command just did
//! shows at once) and its audit trail from the read model.

use axum::extract::{Form, Path, Query, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use recoup_access::Action;
use recoup_proto::convert::state_from_proto;
use recoup_proto::v1;
use serde::Deserialize;
use tonic::{Code, Status};

use crate::backend::{explain, request};
use crate::pages::{
    answer, failed, http_status, money, page, query_escape, state_name, when, with_notice,
};
use crate::session::{Session, random_token};
use crate::{Console, SignedIn};

/// Cases per page of the list.
const PAGE_SIZE: u32 = 50;
/// Entries of the audit trail a case page shows.
const HISTORY_SIZE: u32 = 200;

#[derive(Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: String,
    /// A prefix of references: the cases found by it instead of the list by state.
    #[serde(default)]
    q: String,
}

pub async fn list(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Query(params): Query<ListParams>,
) -> Response {
    list_page(&console, &session, &browser, &params, None).await
}

/// The list of cases, with `notice` (a refused creation) above it.
async fn list_page(
    console: &Console,
    session: &Session,
    browser: &Extensions,
    params: &ListParams,
    notice: Option<(StatusCode, String)>,
) -> Response {
    let state = v1::CaseState::from_str_name(&format!("CASE_STATE_{}", params.state))
        .filter(|s| *s != v1::CaseState::Unspecified);
    let shown = state.map_or("", |s| state_name(s as i32));
    let search = params.q.trim();
    let listed = if search.is_empty() {
        let asked = v1::ListCasesRequest {
            state: state.map_or(0, |s| s as i32),
            page_size: PAGE_SIZE,
            page_token: params.page.clone(),
        };
        let mut query = console.backend.query();
        query
            .list_cases(request(session, browser, asked))
            .await
            .map(|r| r.into_inner())
            .map(|l| (l.cases, l.next_page_token))
    } else {
        let asked = v1::SearchCasesRequest {
            reference_prefix: search.to_owned(),
            page_size: PAGE_SIZE,
            page_token: params.page.clone(),
        };
        let mut cases = console.backend.cases();
        cases
            .search_cases(request(session, browser, asked))
            .await
            .map(|r| r.into_inner())
            .map(|l| (l.cases, l.next_page_token))
    };
    let (cases, next) = match listed {
        Ok(listed) => listed,
        Err(status) => return console.refused_by_service(session, &status),
    };
    let (status, error) = with_notice(notice);
    let body = html! {
        @if let Some(error) = &error { p.error role="alert" { (error) } }
        @if search.is_empty() { (state_filter(shown)) }
        (search_form(search))
        @if !search.is_empty() {
            p role="status" { "Cases whose reference starts with “" (search) "”, in reference order. " a href="/cases" { "All cases" } }
        }
        (case_table(&cases))
        @if !next.is_empty() {
            @if search.is_empty() {
                p { a href={ "/cases?state=" (shown) "&page=" (query_escape(&next)) } { "Next page" } }
            } @else {
                p { a href={ "/cases?q=" (query_escape(search)) "&page=" (query_escape(&next)) } { "Next page" } }
            }
        }
        @if session.may(Action::CaseCommand) { (create_form(session)) }
    };
    answer(status, page("Cases", Some(session), body))
}

fn state_filter(selected: &str) -> Markup {
    let states = [
        "REVIEWING",
        "PREPARING",
        "PENDING",
        "PROCESSING",
        "CLOSED",
        "FAILED",
    ];
    html! {
        form.filter method="get" action="/cases" {
            label for="state" { "State" }
            select id="state" name="state" {
                option value="" selected[selected.is_empty()] { "All" }
                @for s in states { option value=(s) selected[selected == s] { (s) } }
            }
            button type="submit" { "Show" }
        }
    }
}

fn search_form(search: &str) -> Markup {
    html! {
        form.filter method="get" action="/cases" role="search" {
            label for="q" { "Reference starts with" }
            input id="q" name="q" type="search" value=(search) maxlength="1024";
            button type="submit" { "Search" }
        }
    }
}

fn case_table(cases: &[v1::DebtCase]) -> Markup {
    html! {
        @if cases.is_empty() {
            p { "No cases." }
        } @else {
            table {
                caption.visually-hidden { "Cases" }
                thead { tr { th scope="col" { "Reference" } th scope="col" { "State" } th.num scope="col" { "Amount" } th.num scope="col" { "Collected" } th scope="col" { "Due" } } }
                tbody {
                    @for c in cases {
                        tr {
                            td { a href={ "/cases/" (c.id) } { (c.reference) } }
                            td { (state_name(c.state)) }
                            td.num { (money(c.amount_minor, &c.currency)) }
                            td.num { (money(c.collected_minor, &c.currency)) }
                            td { (c.due_date) }
                        }
                    }
                }
            }
        }
    }
}

/// A new case: one line item. The nonce makes a form sent twice create one case.
fn create_form(session: &Session) -> Markup {
    let nonce = random_token().unwrap_or_default();
    html! {
        section aria-labelledby="new-case" {
            h2 id="new-case" { "New case" }
            form.stacked method="post" action="/cases" {
                input type="hidden" name="form_token" value=(session.form_token);
                input type="hidden" name="external_id" value=(nonce);
                label for="reference" { "Reference" }
                input id="reference" name="reference" required maxlength="200";
                label for="amount_minor" { "Amount, in minor units (cents)" }
                input id="amount_minor" name="amount_minor" required inputmode="numeric" pattern="[0-9]+";
                label for="currency" { "Currency (ISO 4217)" }
                input id="currency" name="currency" required value="EUR" maxlength="3";
                label for="due_date" { "Due date" }
                input id="due_date" name="due_date" type="date" required;
                button type="submit" { "Create case" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct NewCase {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    external_id: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    amount_minor: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    due_date: String,
}

pub async fn create(
    State(console): State<Console>,
    headers: HeaderMap,
    browser: Extensions,
    Form(form): Form<NewCase>,
) -> Response {
    let session = match console.session_for_form(&headers, &form.form_token) {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    let refuse = |status, why: String| (status, why);
    let created = match form.amount_minor.trim().parse::<i64>() {
        Ok(amount) if amount > 0 => {
            let content = v1::CaseContent {
                external_id: form.external_id.clone(),
                reference: form.reference.trim().to_owned(),
                environment: v1::Environment::Production as i32,
                currency: form.currency.trim().to_uppercase(),
                line_items: vec![v1::LineItem {
                    unique_id: "1".into(),
                    name: "amount due".into(),
                    quantity: 1,
                    amount_minor: amount,
                }],
                due_date: form.due_date.trim().to_owned(),
                ..Default::default()
            };
            let asked = v1::CreateCaseRequest {
                content: Some(content),
            };
            let mut cases = console.backend.cases();
            cases
                .create_case(request(&session, &browser, asked))
                .await
                .map_err(|s| refuse(http_status(s.code()), explain(&s)))
        }
        _ => Err(refuse(
            StatusCode::BAD_REQUEST,
            "Amount: a whole number of minor units above 0 (12500 is 125.00 EUR).".to_owned(),
        )),
    };
    match created.map(|r| r.into_inner().case) {
        Ok(Some(case)) => Redirect::to(&format!("/cases/{}", case.id)).into_response(),
        Ok(None) => failed(&session, StatusCode::BAD_GATEWAY, "no case in the answer"),
        Err(notice) => {
            let params = ListParams::default();
            list_page(&console, &session, &browser, &params, Some(notice)).await
        }
    }
}

#[derive(Deserialize, Default)]
pub struct CaseParams {
    /// The audit trail's page token (its later entries).
    #[serde(default)]
    history: String,
}

pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Path(id): Path<String>,
    Query(params): Query<CaseParams>,
) -> Response {
    case_page(&console, &session, &browser, &id, &params.history, None).await
}

/// A case, its commands and its audit trail (from page `history` on), with `notice` (a
/// refused command) above.
async fn case_page(
    console: &Console,
    session: &Session,
    browser: &Extensions,
    id: &str,
    history: &str,
    notice: Option<(StatusCode, String)>,
) -> Response {
    let asked = v1::GetCaseRequest {
        case_id: id.to_owned(),
    };
    let case = console
        .backend
        .cases()
        .get_case(request(session, browser, asked))
        .await
        .map(|r| r.into_inner().case);
    let case = match case {
        Ok(Some(case)) => case,
        Ok(None) => return failed(session, StatusCode::BAD_GATEWAY, "no case in the answer"),
        Err(status) => return console.refused_by_service(session, &status),
    };
    let asked = v1::GetCaseHistoryRequest {
        case_id: id.to_owned(),
        page_size: HISTORY_SIZE,
        page_token: history.to_owned(),
    };
    let history = match console
        .backend
        .query()
        .get_case_history(request(session, browser, asked))
        .await
    {
        Ok(r) => Ok(r.into_inner()),
        // The read model has not applied the case's creation yet.
        Err(s) if s.code() == Code::NotFound => Ok(v1::GetCaseHistoryResponse::default()),
        Err(s) => Err(s),
    };
    let (status, error) = with_notice(notice);
    let body = html! {
        @if let Some(error) = &error { p.error role="alert" { (error) } }
        (case_fields(&case))
        @if session.may(Action::CaseCommand) { (command_forms(session, &case)) }
        h2 { "Audit trail" }
        @match &history {
            Ok(page) => {
                (history_table(&page.entries))
                @if !page.next_page_token.is_empty() {
                    p { a href={ "/cases/" (case.id) "?history=" (query_escape(&page.next_page_token)) } { "Later entries" } }
                }
            }
            Err(status) => p.error { "The audit trail is not available: " (explain(status)) },
        }
    };
    let title = format!("Case {}", case.reference);
    answer(status, page(&title, Some(session), body))
}

fn case_fields(c: &v1::DebtCase) -> Markup {
    html! {
        dl.fields {
            dt { "State" } dd { strong { (state_name(c.state)) } }
            dt { "Version" } dd { (c.version) }
            dt { "Amount" } dd { (money(c.amount_minor, &c.currency)) }
            dt { "Collected" } dd { (money(c.collected_minor, &c.currency)) }
            dt { "Due" } dd { (c.due_date) }
            dt { "Collector configuration" } dd { (c.collector_configuration_id) }
            dt { "Case id" } dd { code { (c.id) } }
        }
    }
}

/// A button per command the case's state takes; each names the version shown.
fn command_forms(session: &Session, c: &v1::DebtCase) -> Markup {
    let commands = state_from_proto(c.state).map_or(&[][..], debt_cases::commands_in);
    html! {
        @if !commands.is_empty() {
            section.commands aria-labelledby="commands" {
                h2 id="commands" { "Actions" }
                @for command in commands {
                    form method="post" action={ "/cases/" (c.id) "/" (command) } {
                        input type="hidden" name="form_token" value=(session.form_token);
                        input type="hidden" name="version" value=(c.version);
                        @if *command == "FailCase" {
                            label for="reason" { "Reason" }
                            input id="reason" name="reason" required maxlength="500";
                        }
                        @if *command == "AddPaymentReceipt" {
                            label for="receipt_id" { "Receipt id" }
                            input id="receipt_id" name="receipt_id" required maxlength="200";
                            label for="receipt_amount" { "Amount, minor units" }
                            input id="receipt_amount" name="amount_minor" required inputmode="numeric" pattern="[0-9]+";
                        }
                        button type="submit" { (label(command)) }
                    }
                }
            }
        }
    }
}

/// A command's button label.
fn label(command: &str) -> &'static str {
    match command {
        "MarkReviewed" => "Mark reviewed",
        "MarkPrepared" => "Mark prepared",
        "StartProcessing" => "Start processing",
        "AddPaymentReceipt" => "Add payment receipt",
        "CloseCase" => "Close case",
        "FailCase" => "Fail case",
        "DeleteCase" => "Delete case",
        _ => "Act",
    }
}

fn history_table(entries: &[v1::CaseHistoryEntry]) -> Markup {
    html! {
        @if entries.is_empty() {
            p { "Nothing yet: the audit trail follows the case within a moment." }
        } @else {
            table {
                caption.visually-hidden { "Audit trail" }
                thead { tr { th.num scope="col" { "Version" } th scope="col" { "What" } th scope="col" { "When (UTC)" } th scope="col" { "Who" } } }
                tbody {
                    @for e in entries {
                        tr {
                            td.num { (e.version) }
                            td { (e.event_type) }
                            td { (when(e.occurred_at.as_ref())) }
                            td { (e.actor) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct CommandForm {
    #[serde(default)]
    form_token: String,
    version: Option<u64>,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    receipt_id: String,
    #[serde(default)]
    amount_minor: String,
}

pub async fn command(
    State(console): State<Console>,
    headers: HeaderMap,
    browser: Extensions,
    Path((id, command)): Path<(String, String)>,
    Form(form): Form<CommandForm>,
) -> Response {
    let session = match console.session_for_form(&headers, &form.form_token) {
        Ok(s) => s,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(version) = form.version else {
        let why = "The form names no version of the case: reload the page.";
        return failed(&session, StatusCode::BAD_REQUEST, why);
    };
    match send(&console, &session, &browser, &id, &command, version, &form).await {
        Ok(()) => Redirect::to(&format!("/cases/{id}")).into_response(),
        Err(status) => {
            let why = match status.code() {
                Code::Aborted => format!(
                    "This case changed since you loaded it ({}). Below is the case as it stands \
                     now: check it and act again.",
                    status.message()
                ),
                _ => format!("{} was refused: {}", label(&command), explain(&status)),
            };
            let notice = (http_status(status.code()), why);
            case_page(&console, &session, &browser, &id, "", Some(notice)).await
        }
    }
}

/// Sends `command` on case `id` at `version`.
async fn send(
    console: &Console,
    session: &Session,
    browser: &Extensions,
    id: &str,
    command: &str,
    version: u64,
    form: &CommandForm,
) -> Result<(), Status> {
    let plain = v1::CaseCommand {
        case_id: id.to_owned(),
        expected_version: version,
    };
    let at = |m| request(session, browser, m);
    let mut cases = console.backend.cases();
    match command {
        "MarkReviewed" => cases.mark_reviewed(at(plain)).await?,
        "MarkPrepared" => cases.mark_prepared(at(plain)).await?,
        "StartProcessing" => cases.start_processing(at(plain)).await?,
        "CloseCase" => cases.close_case(at(plain)).await?,
        "DeleteCase" => cases.delete_case(at(plain)).await?,
        "FailCase" => {
            let asked = v1::FailCaseRequest {
                case_id: id.to_owned(),
                expected_version: version,
                reason: form.reason.trim().to_owned(),
            };
            cases.fail_case(request(session, browser, asked)).await?
        }
        "AddPaymentReceipt" => {
            let amount_minor =
                form.amount_minor.trim().parse::<i64>().map_err(|_| {
                    Status::invalid_argument("amount: a whole number of minor units")
                })?;
            let asked = v1::AddPaymentReceiptRequest {
                case_id: id.to_owned(),
                expected_version: version,
                receipt_external_id: form.receipt_id.trim().to_owned(),
                amount_minor,
            };
            cases
                .add_payment_receipt(request(session, browser, asked))
                .await?
        }
        other => {
            return Err(Status::not_found(format!("no command {other:?}")));
        }
    };
    Ok(())
}
