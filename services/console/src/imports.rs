//! Imports: a file (CSV, XLSX, JSON) uploaded through a form, its report and its errors, the
//! errors as CSV, and the tenant's recent imports. The file goes on to the importer's `Upload`
//! as the browser sends it, a chunk at a time: the console holds no more of it than a chunk,
//! and the importer's limits (size, time, rate) decide as for any upload. The script shows the
//! upload's progress; without it the form still works.

use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, Multipart, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryFutureExt};
use maud::{Markup, html};
use recoup_access::Action;
use recoup_proto::snapshots::{ERRORS_CSV_HEADER, error_csv_record};
use recoup_proto::v1;
use serde::Deserialize;
use tonic::Status;

use crate::backend::{explain, request};
use crate::pages::{answer, http_status, page, query_escape, when};
use crate::session::Session;
use crate::{Console, Refusal, SignedIn};

/// Imports per page of the list.
const LIST_SIZE: u32 = 20;
/// Errors per page of a report.
const ERRORS_SIZE: u32 = 50;
/// Errors per call while the errors CSV is written.
const CSV_PAGE: u32 = 1000;
/// Bytes of one text field of the upload form, at most.
const FIELD_LIMIT: usize = 1024;
/// Fields the upload form may send before its file.
const FIELDS_BEFORE_FILE: usize = 8;
/// Bytes the console gathers into one message to the importer.
const CHUNK: usize = 256 * 1024;

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
    let (status, error) = match notice {
        Some((status, error)) => (status, Some(error)),
        None => (StatusCode::OK, None),
    };
    let body = html! {
        @if let Some(error) = &error { p.error role="alert" id="upload-refused" { (error) } }
        @if session.may(Action::Import) { (upload_form(session)) }
        h2 id="recent" { "Recent imports" }
        (import_table(&listed.imports))
        @if !listed.next_page_token.is_empty() {
            p { a href={ "/imports?page=" (query_escape(&listed.next_page_token)) } { "Older imports" } }
        }
    };
    answer(status, page("Imports", Some(session), body))
}

fn upload_form(session: &Session) -> Markup {
    html! {
        section aria-labelledby="upload" {
            h2 id="upload" { "Upload snapshots" }
            // The file comes last: the console checks the fields above it before it reads the
            // file.
            form.stacked method="post" action="/imports" enctype="multipart/form-data" data-upload {
                input type="hidden" name="form_token" value=(session.form_token);
                label for="data_origin" { "Data origin" }
                p.help id="data_origin-help" { "The name the source gives itself (part of every account's id); empty means “generic”." }
                input id="data_origin" name="data_origin" maxlength="100" aria-describedby="data_origin-help";
                label for="sheet" { "Sheet (XLSX)" }
                input id="sheet" name="sheet" maxlength="100" placeholder="the first";
                label for="file" { "File" }
                p.help id="file-help" { "CSV, XLSX, JSON (an array of objects) or NDJSON, by the file's name: .csv, .xlsx, .json, .ndjson." }
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
pub async fn upload(
    State(console): State<Console>,
    headers: HeaderMap,
    browser: Extensions,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let session = match console.session(&headers) {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    let outcome = match multipart {
        Ok(mut multipart) => send(&console, &session, &browser, &mut multipart).await,
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
    list_page(&console, &session, &browser, "", Some((status, why))).await
}

/// What [`Failed::Form`] says of a form without the session's form token.
const FOREIGN_FORM: &str = "foreign form";

/// Reads the form up to its file, then sends the file to the importer as it arrives. A file
/// cut off on the way cancels the upload: nothing of it is imported.
async fn send(
    console: &Console,
    session: &Session,
    browser: &Extensions,
    multipart: &mut Multipart,
) -> Result<v1::ImportReport, Failed> {
    let form = |e: axum::extract::multipart::MultipartError| Failed::Form(e.body_text());
    let mut fields = UploadFields::default();
    let mut seen = 0;
    let file = loop {
        let Some(field) = multipart.next_field().await.map_err(form)? else {
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
        let value = small_text(field).await?;
        match name.as_str() {
            "form_token" => fields.form_token = value,
            "data_origin" => fields.data_origin = value,
            "sheet" => fields.sheet = value,
            _ => {}
        }
    };
    if !session.form_token_is(&fields.form_token) {
        return Err(Failed::Form(FOREIGN_FORM.to_owned()));
    }
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
        .upload(request(session, browser, received))
        .map_ok(tonic::Response::into_inner)
        .map_err(Failed::Service);
    let (_, report) = futures::future::try_join(pump(file, parts), call).await?;
    Ok(report)
}

/// The file's bytes to the importer, [`CHUNK`] at a time. The importer stopping to read (it
/// answered: a refusal) ends the pump quietly: its answer says why.
async fn pump(
    mut file: Field<'_>,
    mut parts: mpsc::Sender<v1::UploadRequest>,
) -> Result<(), Failed> {
    let mut buffer = Vec::with_capacity(CHUNK);
    loop {
        let chunk = file
            .chunk()
            .await
            .map_err(|e| Failed::Form(format!("the upload was cut off: {}", e.body_text())))?;
        let done = chunk.is_none();
        if let Some(bytes) = chunk {
            buffer.extend_from_slice(&bytes);
        }
        if !buffer.is_empty() && (done || buffer.len() >= CHUNK) {
            let part = v1::upload_request::Part::Chunk(std::mem::take(&mut buffer));
            let sent = parts.send(v1::UploadRequest { part: Some(part) }).await;
            if sent.is_err() {
                return Ok(());
            }
            buffer.reserve(CHUNK);
        }
        if done {
            return Ok(());
        }
    }
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

/// `GET /imports/{id}/errors.csv`: every error of the import, asked for a page at a time while
/// the answer is sent.
pub async fn errors_csv(
    State(console): State<Console>,
    SignedIn(session): SignedIn,
    browser: Extensions,
    Path(id): Path<String>,
) -> Response {
    let first = errors_after(&console, &session, &browser, &id, String::new()).await;
    let (errors, next) = match first {
        Ok(page) => page,
        Err(status) => return console.refused_by_service(&session, &status),
    };
    let header = csv_records(&[], true);
    let state = (console, session, browser, id.clone(), Some(next));
    let rest = futures::stream::unfold(state, |(console, session, browser, id, next)| async move {
        let token = next.filter(|t| !t.is_empty())?;
        match errors_after(&console, &session, &browser, &id, token).await {
            Ok((errors, next)) => {
                let chunk = csv_records(&errors, false);
                Some((Ok(chunk), (console, session, browser, id, Some(next))))
            }
            Err(status) => {
                // The browser sees a cut-off file; the log says why.
                tracing::warn!(import = %id, reason = %status.message(), "errors CSV stopped");
                let failed = std::io::Error::other(status.message().to_owned());
                Some((Err(failed), (console, session, browser, id, None)))
            }
        }
    });
    let body = futures::stream::iter([
        Ok::<_, std::io::Error>(header),
        Ok(csv_records(&errors, false)),
    ])
    .chain(rest);
    let file: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(64)
        .collect();
    let disposition = format!("attachment; filename=\"import-{file}-errors.csv\"");
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// One page of an import's errors, and the token of the next (empty: the last).
async fn errors_after(
    console: &Console,
    session: &Session,
    browser: &Extensions,
    id: &str,
    token: String,
) -> Result<(Vec<v1::RowError>, String), Status> {
    let asked = v1::GetImportRequest {
        import_id: id.to_owned(),
        errors_page_size: CSV_PAGE,
        errors_page_token: token,
    };
    let report = console
        .backend
        .imports()
        .get_import(request(session, browser, asked))
        .await?
        .into_inner();
    Ok((report.errors, report.next_errors_page_token))
}

/// Errors as CSV records, the header line first if asked.
fn csv_records(errors: &[v1::RowError], header: bool) -> Bytes {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    // Writing into memory fails only on a broken record, which these are not.
    if header {
        let _ = writer.write_record(ERRORS_CSV_HEADER);
    }
    for error in errors {
        let _ = writer.write_record(error_csv_record(error));
    }
    Bytes::from(writer.into_inner().unwrap_or_default())
}
