//! Imports: a file (CSV, XLSX, JSON) uploaded through a form, its report and its errors, the
//! errors as CSV, and the tenant's recent imports. The file goes on to the importer's `Upload`
//! as the browser sends it, a chunk at a time: the console keeps none of it, and the
//! importer's limits (size, time, rate) decide as for any upload. The script shows the
//! upload's progress; without it the form still works.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, Multipart};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{Extensions, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryFutureExt};
use maud::{Markup, html};
use recoup_access::Action;
use recoup_proto::v1;
use serde::Deserialize;
use tonic::Status;

use crate::backend::{explain, request};
use crate::pages::{answer, http_status, page, query_escape, when, with_notice};
use crate::session::Session;
use crate::{Console, Refusal, SignedIn};

/// Imports per page of the list.
const LIST_SIZE: u32 = 20;
/// Errors per page of a report.
const ERRORS_SIZE: u32 = 50;
/// Bytes of one text field of the upload form, at most.
const FIELD_LIMIT: usize = 1024;
/// Fields the upload form may send before its file.
const FIELDS_BEFORE_FILE: usize = 8;
/// Bytes of the form before its file, at most: its fields, and every part's headers.
const BEFORE_FILE_BYTES: u64 = 64 * 1024;
/// How long the form may take to reach its file; the importer's idle limit then applies.
const BEFORE_FILE_WAIT: Duration = Duration::from_secs(30);

#[derive(Deserialize, Default)]
pub struct ListParams {
    #[serde(default)]
    page: String,
}

pub async fn list(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Query(params): Query<ListParams>,
) -> Response {
    list_page(&console, &session, &browser, &params.page, None).await
}

/// The upload form and a page of the tenant's imports, with `notice` (a refused upload) above.
async fn list_page(
    console: &Console,
    session: &Session,
    browser: &Extensions,
    page_token: &str,
    notice: Option<(StatusCode, String)>,
) -> Response {
    let asked = v1::ListImportsRequest {
        page_size: LIST_SIZE,
        page_token: page_token.to_owned(),
    };
    let listed = console
        .backend
        .imports()
        .list_imports(request(session, browser, asked))
        .await;
    let listed = match listed {
        Ok(r) => r.into_inner(),
        Err(status) => return console.refused_by_service(session, &status),
    };
    let (status, error) = with_notice(notice);
    let body = html! {
        @if let Some(error) = &error { p.error role="alert" id="upload-refused" { (error) } }
        @if session.may(Action::Import) { (upload_form(session, console.config.max_upload_bytes)) }
        h2 id="recent" { "Recent imports" }
        (import_table(&listed.imports))
        @if !listed.next_page_token.is_empty() {
            p { a href={ "/imports?page=" (query_escape(&listed.next_page_token)) } { "Older imports" } }
        }
    };
    answer(status, page("Imports", Some(session), body))
}

fn upload_form(session: &Session, max_bytes: u64) -> Markup {
    html! {
        section aria-labelledby="upload" {
            h2 id="upload" { "Upload snapshots" }
            // The file comes last: the console checks the fields above it before it reads the
            // file.
            form.stacked method="post" action="/imports" enctype="multipart/form-data" data-upload data-max-bytes=(max_bytes) {
                input type="hidden" name="form_token" value=(session.form_token);
                label for="data_origin" { "Data origin" }
                p.help id="data_origin-help" { "The name the source gives itself (part of every account's id); empty means “generic”." }
                input id="data_origin" name="data_origin" maxlength="100" aria-describedby="data_origin-help";
                label for="sheet" { "Sheet (XLSX)" }
                input id="sheet" name="sheet" maxlength="100" placeholder="the first";
                label for="file" { "File" }
                p.help id="file-help" { "CSV, XLSX, JSON (an array of objects) or NDJSON, by the file's name: .csv, .xlsx, .json, .ndjson; at most " (size(max_bytes)) "." }
                input id="file" name="file" type="file" required accept=".csv,.xlsx,.json,.ndjson,.jsonl" aria-describedby="file-help";
                div.progress hidden {
                    label for="upload-progress" { "Sent" }
                    progress id="upload-progress" max="100" value="0" {}
                    span id="upload-status" aria-live="polite" {}
                }
                button type="submit" { "Import" }
            }
        }
    }
}

fn import_table(imports: &[v1::ImportReport]) -> Markup {
    html! {
        @if imports.is_empty() {
            p { "No imports yet." }
        } @else {
            table {
                caption.visually-hidden { "Recent imports, the latest first" }
                thead { tr {
                    th scope="col" { "Finished (UTC)" } th scope="col" { "File" } th scope="col" { "Origin" }
                    th.num scope="col" { "Read" } th.num scope="col" { "Accepted" } th.num scope="col" { "Unchanged" } th.num scope="col" { "Rejected" }
                } }
                tbody {
                    @for r in imports {
                        tr {
                            td { a href={ "/imports/" (r.import_id) } { (when(r.finished_at.as_ref())) } }
                            td { (file_label(r)) }
                            td { (r.data_origin) }
                            td.num { (r.rows_read) }
                            td.num { (r.accepted) }
                            td.num { (r.unchanged) }
                            td.num { (r.rejected) }
                        }
                    }
                }
            }
        }
    }
}

/// A number of bytes as people read it: "100 MiB", "64 KiB", "900 bytes".
fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// The file's name, or what was imported when there was none.
fn file_label(report: &v1::ImportReport) -> String {
    match (report.file_name.as_str(), report.format()) {
        ("", v1::FileFormat::Rows) => "(rows sent through the API)".to_owned(),
        ("", _) => "(no name)".to_owned(),
        (name, _) => name.to_owned(),
    }
}

/// The upload form's fields before its file.
#[derive(Default)]
struct UploadFields {
    form_token: String,
    data_origin: String,
    sheet: String,
}

/// Why an upload did not give a report.
enum Failed {
    /// The browser's request: its form, or its body cut off.
    Form(String),
    Service(Status),
}

/// `POST /imports`: the form's fields, then its file, streamed to the importer's `Upload`.
/// What the browser may send is bounded before any of it is read: a role that may not import,
/// or a body announced over the upload limit, is refused at once; the fields before the file
/// may take [`BEFORE_FILE_BYTES`] and [`BEFORE_FILE_WAIT`]; the whole body the upload limit and
/// a little more for the form around the file.
pub async fn upload(State(console): State<Console>, browser: Request) -> Response {
    let session = match console.session(browser.headers()) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    if !session.may(Action::Import) {
        return crate::pages::refused(Some(&session), "Your role may not import files.");
    }
    let limit = console.config.max_upload_bytes;
    let announced = browser
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > limit.saturating_add(BEFORE_FILE_BYTES)) {
        let why = format!(
            "The file is larger than this recoup takes ({}).",
            size(limit)
        );
        return list_page(
            &console,
            &session,
            browser.extensions(),
            "",
            Some((StatusCode::PAYLOAD_TOO_LARGE, why)),
        )
        .await;
    }
    let (parts, body) = browser.into_parts();
    let extensions = parts.extensions.clone();
    let budget = Arc::new(AtomicU64::new(BEFORE_FILE_BYTES));
    let body = Body::from_stream(bounded(body, budget.clone()));
    let multipart = Multipart::from_request(Request::from_parts(parts, body), &console).await;
    let outcome = match multipart {
        Ok(mut multipart) => {
            let form = Form {
                session: &session,
                browser: &extensions,
                budget,
                limit,
            };
            send(&console, form, &mut multipart).await
        }
        Err(rejection) => Err(Failed::Form(rejection.body_text())),
    };
    let (status, why) = match outcome {
        Ok(report) => {
            let duplicate = if report.duplicate { "?duplicate=1" } else { "" };
            let to = format!("/imports/{}{duplicate}", report.import_id);
            return Redirect::to(&to).into_response();
        }
        Err(Failed::Form(why)) if why == FOREIGN_FORM => {
            return Refusal::ForeignForm(Box::new(session)).into_response();
        }
        Err(Failed::Form(why)) => (StatusCode::BAD_REQUEST, why),
        Err(Failed::Service(status)) if status.code() == tonic::Code::Unauthenticated => {
            return console.refused_by_service(&session, &status);
        }
        Err(Failed::Service(status)) => (
            http_status(status.code()),
            format!("The import was refused: {}", explain(&status)),
        ),
    };
    list_page(&console, &session, &extensions, "", Some((status, why))).await
}

/// The body, refused past `budget` bytes (which grows once the file begins).
fn bounded(
    body: Body,
    budget: Arc<AtomicU64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let mut total = 0u64;
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        total = total.saturating_add(chunk.len() as u64);
        if total > budget.load(Ordering::Relaxed) {
            return Err(std::io::Error::other(
                "the form is larger than the console takes",
            ));
        }
        Ok(chunk)
    })
}

/// What [`Failed::Form`] says of a form without the session's form token.
const FOREIGN_FORM: &str = "foreign form";

/// An upload form being read: whose, from where, and the body's budget.
struct Form<'a> {
    session: &'a Session,
    browser: &'a Extensions,
    budget: Arc<AtomicU64>,
    /// The importer's upload limit.
    limit: u64,
}

/// Reads the form up to its file, then sends the file to the importer as it arrives. A file
/// cut off on the way cancels the upload: nothing of it is imported.
async fn send(
    console: &Console,
    form: Form<'_>,
    multipart: &mut Multipart,
) -> Result<v1::ImportReport, Failed> {
    // Each wait of the form before its file ends at one deadline.
    let deadline = tokio::time::Instant::now() + BEFORE_FILE_WAIT;
    let late = || Failed::Form("the form did not arrive in time".to_owned());
    let mut fields = UploadFields::default();
    let mut seen = 0;
    let file = loop {
        let next = tokio::time::timeout_at(deadline, multipart.next_field()).await;
        let next = next
            .map_err(|_| late())?
            .map_err(|e| Failed::Form(e.body_text()))?;
        let Some(field) = next else {
            return Err(Failed::Form("the form has no file".to_owned()));
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            break field;
        }
        seen += 1;
        if seen > FIELDS_BEFORE_FILE {
            return Err(Failed::Form("the form has too many fields".to_owned()));
        }
        let value = tokio::time::timeout_at(deadline, small_text(field))
            .await
            .map_err(|_| late())??;
        match name.as_str() {
            "form_token" => fields.form_token = value,
            "data_origin" => fields.data_origin = value,
            "sheet" => fields.sheet = value,
            _ => {}
        }
    };
    if !form.session.form_token_is(&fields.form_token) {
        return Err(Failed::Form(FOREIGN_FORM.to_owned()));
    }
    form.budget.store(
        form.limit.saturating_add(BEFORE_FILE_BYTES),
        Ordering::Relaxed,
    );
    let file_name = file.file_name().unwrap_or_default().to_owned();
    let format = format_of(&file_name).ok_or_else(|| {
        Failed::Form(format!(
            "{file_name:?} is not a file the importer reads: its name must end in .csv, .xlsx, \
             .json or .ndjson"
        ))
    })?;
    let header = v1::UploadHeader {
        format: format as i32,
        data_origin: fields.data_origin.trim().to_owned(),
        file_name,
        sheet: fields.sheet.trim().to_owned(),
    };
    let (mut parts, received) = mpsc::channel(2);
    let first = v1::UploadRequest {
        part: Some(v1::upload_request::Part::Header(header)),
    };
    // The channel holds the header before the call starts.
    parts
        .try_send(first)
        .map_err(|_| Failed::Form("the upload could not start".to_owned()))?;
    let mut imports = console.backend.imports();
    let call = imports
        .upload(request(form.session, form.browser, received))
        .map_ok(tonic::Response::into_inner)
        .map_err(Failed::Service);
    let (_, report) = futures::future::try_join(pump(file, parts), call).await?;
    Ok(report)
}

/// The file's bytes to the importer as they arrive (the importer drops an upload that sends
/// nothing for a while: the console keeps nothing back). The importer stopping to read (it
/// answered: a refusal) ends the pump quietly: its answer says why.
async fn pump(
    mut file: Field<'_>,
    mut parts: mpsc::Sender<v1::UploadRequest>,
) -> Result<(), Failed> {
    while let Some(bytes) = file
        .chunk()
        .await
        .map_err(|e| Failed::Form(format!("the upload was cut off: {}", e.body_text())))?
    {
        let part = v1::upload_request::Part::Chunk(bytes.to_vec());
        if parts
            .send(v1::UploadRequest { part: Some(part) })
            .await
            .is_err()
        {
            return Ok(());
        }
    }
    Ok(())
}

/// A text field of at most [`FIELD_LIMIT`] bytes.
async fn small_text(mut field: Field<'_>) -> Result<String, Failed> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Failed::Form(e.body_text()))?
    {
        if bytes.len() + chunk.len() > FIELD_LIMIT {
            return Err(Failed::Form(format!(
                "the form's field {name:?} is longer than {FIELD_LIMIT} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map_err(|_| Failed::Form(format!("the form's field {name:?} is not UTF-8")))
}

/// The format a file's name says.
fn format_of(file_name: &str) -> Option<v1::FileFormat> {
    let extension = file_name.rsplit_once('.')?.1.to_ascii_lowercase();
    match extension.as_str() {
        "csv" => Some(v1::FileFormat::Csv),
        "xlsx" => Some(v1::FileFormat::Xlsx),
        "json" | "ndjson" | "jsonl" => Some(v1::FileFormat::Json),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
pub struct ReportParams {
    /// The page of errors (the previous page's token); empty: the first.
    #[serde(default)]
    errors: String,
    /// Set by the upload: this file was imported before.
    #[serde(default)]
    duplicate: String,
}

/// `GET /imports/{id}`: the report, a page of its errors.
pub async fn show(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Path(id): Path<String>,
    Query(params): Query<ReportParams>,
) -> Response {
    let asked = v1::GetImportRequest {
        import_id: id,
        errors_page_size: ERRORS_SIZE,
        errors_page_token: params.errors.clone(),
    };
    let report = console
        .backend
        .imports()
        .get_import(request(&session, &browser, asked))
        .await;
    let report = match report {
        Ok(r) => r.into_inner(),
        Err(status) => return console.refused_by_service(&session, &status),
    };
    let body = html! {
        @if !params.duplicate.is_empty() {
            p.notice role="status" { "This file was imported before: nothing was imported again. Its report:" }
        }
        (summary(&report))
        @if !report.file_error.is_empty() {
            p.error role="alert" { "The rest of the file could not be read: " (report.file_error) }
        }
        h2 id="errors" { "Errors" }
        (errors_table(&report, !params.errors.is_empty()))
    };
    answer(
        StatusCode::OK,
        page(
            &format!("Import of {}", file_label(&report)),
            Some(&session),
            body,
        ),
    )
}

fn summary(r: &v1::ImportReport) -> Markup {
    let format = r.format().as_str_name().trim_start_matches("FILE_FORMAT_");
    html! {
        table.counts {
            caption.visually-hidden { "Rows of the import" }
            thead { tr { th.num scope="col" { "Read" } th.num scope="col" { "Accepted" } th.num scope="col" { "Unchanged" } th.num scope="col" { "Rejected" } } }
            tbody { tr {
                td.num data-count="read" { (r.rows_read) }
                td.num data-count="accepted" { (r.accepted) }
                td.num data-count="unchanged" { (r.unchanged) }
                td.num data-count="rejected" { (r.rejected) }
            } }
        }
        dl.fields {
            dt { "Format" } dd { (format) }
            dt { "Data origin" } dd { @if r.data_origin.is_empty() { "generic" } @else { (r.data_origin) } }
            dt { "Started (UTC)" } dd { (when(r.started_at.as_ref())) }
            dt { "Finished (UTC)" } dd { (when(r.finished_at.as_ref())) }
            dt { "Import id" } dd { code { (r.import_id) } }
        }
    }
}

fn errors_table(r: &v1::ImportReport, later_page: bool) -> Markup {
    let id = &r.import_id;
    html! {
        @if r.error_count == 0 {
            p { "No errors." }
        } @else {
            p {
                (r.error_count) " in all. "
                a href={ "/imports/" (id) "/errors.csv" } download { "Download every error as CSV" }
            }
            table id="error-table" {
                caption.visually-hidden { "Errors by row" }
                thead { tr { th.num scope="col" { "Row" } th scope="col" { "Column" } th scope="col" { "Value" } th scope="col" { "Rule" } th scope="col" { "Message" } } }
                tbody {
                    @for e in &r.errors {
                        tr { td.num { (e.row) } td { (e.column) } td { code { (e.value) } } td { (e.rule) } td { (e.message) } }
                    }
                }
            }
            p {
                @if later_page { a href={ "/imports/" (id) "#errors" } { "First errors" } " " }
                @if !r.next_errors_page_token.is_empty() {
                    a href={ "/imports/" (id) "?errors=" (query_escape(&r.next_errors_page_token)) "#errors" } { "Next errors" }
                }
            }
        }
    }
}
