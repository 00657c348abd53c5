//! HTTP front end (axum) of the snapshot importer, beside gRPC in the same process:
//!
//! - `POST /v1/paygo_snapshots_ts`: a file as the body (CSV, XLSX, JSON array or NDJSON, by
//!   `Content-Type`), imported like gRPC's `Upload`; answers the report as JSON.
//! - `GET /v1/imports`: the tenant's imports, the most recent first, paged (`page_size`,
//!   `page_token`).
//! - `GET /v1/imports/{id}`: a report, its errors paged (`errors_page_size`, `errors_page_token`).
//! - `GET /v1/imports/{id}/errors.csv`: every error of an import as CSV, streamed page by page.
//!
//! The tenant is header `x-recoup-tenant` (default `default`); every request counts against the
//! tenant's rate limit, shared with gRPC. Every error answers JSON `{"error": "..."}`.

use std::io;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::SecondsFormat;
use futures::StreamExt;
use recoup_access::{AccessError, Action};
use recoup_proto::contract::metadata::AUTHORIZATION;
use recoup_proto::snapshots::{ERRORS_CSV_HEADER, error_csv_record};
use recoup_proto::tenant::TENANT_METADATA_KEY;
use recoup_proto::{from_timestamp, v1};
use serde::{Deserialize, Serialize};

use crate::admission::{Admission, Admitted, Refused};
use crate::import::ImportError;
use crate::limits::RateLimited;
use crate::reports::{ErrorsPage, ImportsPage, list_imports};
use crate::store::{ImportStore, StoreError};
use crate::upload::{FileUpload, SpoolError, UploadError, Uploads};

/// `Content-Type` of CSV uploads.
pub const CSV_CONTENT_TYPE: &str = "text/csv";
/// `Content-Type` of XLSX uploads.
pub const XLSX_CONTENT_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
/// `Content-Type`s of JSON uploads: an array of objects, or one object per line.
pub const JSON_CONTENT_TYPES: [&str; 2] = ["application/json", "application/x-ndjson"];

/// Seconds a client should wait before sending an upload again after Kafka refused it.
const PUBLISH_RETRY_AFTER_SECS: u64 = 5;
/// Errors per store read while streaming the errors CSV.
const CSV_ERRORS_PAGE: usize = 1000;

/// The HTTP API; [`HttpApi::router`] serves it.
#[derive(Clone)]
pub struct HttpApi {
    uploads: Uploads,
    admission: Admission,
}

impl HttpApi {
    /// Imports through `uploads` (the same as gRPC's); every request passes `admission` first.
    pub fn new(uploads: Uploads, admission: Admission) -> Self {
        Self { uploads, admission }
    }

    /// The routes. Bodies are limited by the upload limit alone (axum's default of 2 MB is off).
    pub fn router(self) -> Router {
        Router::new()
            .route("/v1/paygo_snapshots_ts", post(upload))
            .route("/v1/imports", get(list))
            .route("/v1/imports/{id}", get(report))
            .route("/v1/imports/{id}/errors.csv", get(errors_csv))
            .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed on this endpoint",
                )
            })
            .layer(DefaultBodyLimit::disable())
            .with_state(self)
    }
}

/// A refusal or failure as HTTP: a status, JSON `{"error": message}` and maybe `Retry-After`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "snapshot importer HTTP request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<RateLimited> for ApiError {
    fn from(refused: RateLimited) -> Self {
        let secs = refused.retry_after_secs();
        Self::new(StatusCode::TOO_MANY_REQUESTS, refused.to_string()).retry_after(secs)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        Self::internal(&error)
    }
}

/// The one place import errors become HTTP statuses.
impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        match error {
            // The broker may come back: the client should send the same upload again.
            ImportError::Publish(_) | ImportError::KafkaUnreachable => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
                    .retry_after(PUBLISH_RETRY_AFTER_SECS)
            }
            ImportError::Store(_) | ImportError::Reader(_) => Self::internal(&error),
            ImportError::Busy {
                retry_after_secs, ..
            } => Self::new(StatusCode::TOO_MANY_REQUESTS, error.to_string())
                .retry_after(retry_after_secs),
            // The client may send the same upload again (later, or to the next server).
            ImportError::Stopped(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
                    .retry_after(PUBLISH_RETRY_AFTER_SECS)
            }
        }
    }
}

impl From<SpoolError> for ApiError {
    fn from(error: SpoolError) -> Self {
        match error {
            SpoolError::TooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, error.to_string())
            }
            SpoolError::Io(_) => Self::internal(&error),
        }
    }
}

impl From<UploadError<axum::Error>> for ApiError {
    fn from(error: UploadError<axum::Error>) -> Self {
        match error {
            UploadError::Body(_) => Self::bad_request(error.to_string()),
            UploadError::Invalid(why) => Self::bad_request(why),
            UploadError::Idle { .. } => Self::new(StatusCode::REQUEST_TIMEOUT, error.to_string()),
            UploadError::Spool(error) => error.into(),
            UploadError::Import(error) => error.into(),
        }
    }
}

/// The request's tenant, once its caller may act there (an upload needs the importer role,
/// a report any role) and its rate limit admits it. Extract it first, so that a refused
/// request costs nothing else.
struct Tenant(Admitted);

impl FromRequestParts<HttpApi> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &HttpApi) -> Result<Self, ApiError> {
        let action = if parts.method == Method::POST {
            Action::Import
        } else {
            Action::Read
        };
        // A tenant or credential header sent twice is refused, never guessed between.
        let value = |key: &str| {
            let mut values = parts.headers.get_all(key).iter();
            let first = values.next().map(|v| v.as_bytes());
            match values.next() {
                Some(_) => Err(ApiError::bad_request(format!(
                    "header {key} is sent more than once"
                ))),
                None => Ok(first),
            }
        };
        let admitted = api
            .admission
            .admit(
                value(AUTHORIZATION)?,
                value(TENANT_METADATA_KEY)?,
                "header",
                action,
            )
            .map_err(|refused| match refused {
                Refused::Tenant(why) => ApiError::bad_request(why),
                Refused::Access(error) => error.into(),
                Refused::Limited(limited) => limited.into(),
            })?;
        Ok(Self(admitted))
    }
}

impl From<AccessError> for ApiError {
    fn from(error: AccessError) -> Self {
        let status = match error {
            AccessError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AccessError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        };
        Self::new(status, error.to_string())
    }
}

/// Query of `POST /v1/paygo_snapshots_ts`.
#[derive(Debug, Default, Deserialize)]
struct UploadParams {
    /// Blank: `generic`.
    #[serde(default)]
    data_origin: String,
    #[serde(default)]
    file_name: String,
    /// The XLSX sheet; blank: the first.
    #[serde(default)]
    sheet: String,
}

/// Query of `GET /v1/imports/{id}`.
#[derive(Debug, Default, Deserialize)]
struct PageParams {
    #[serde(default)]
    errors_page_size: u32,
    #[serde(default)]
    errors_page_token: String,
}

/// Query of `GET /v1/imports`.
#[derive(Debug, Default, Deserialize)]
struct ListParams {
    #[serde(default)]
    page_size: u32,
    #[serde(default)]
    page_token: String,
}

/// The answer of `GET /v1/imports`: `next_page_token` is `null` on the last page.
#[derive(Debug, Serialize)]
pub struct ImportListJson {
    pub imports: Vec<ImportReportJson>,
    pub next_page_token: Option<String>,
}

/// The file format a `Content-Type` names (parameters such as `charset` are ignored).
fn format_of(headers: &HeaderMap) -> Result<v1::FileFormat, ApiError> {
    let accepted = format!(
        "{}, {CSV_CONTENT_TYPE} or {XLSX_CONTENT_TYPE}",
        JSON_CONTENT_TYPES.join(", ")
    );
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("a Content-Type is required: {accepted}"),
        ));
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match essence.as_str() {
        t if JSON_CONTENT_TYPES.contains(&t) => Ok(v1::FileFormat::Json),
        CSV_CONTENT_TYPE => Ok(v1::FileFormat::Csv),
        XLSX_CONTENT_TYPE => Ok(v1::FileFormat::Xlsx),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type {value:?} is not accepted; send one of {accepted}"),
        )),
    }
}

/// `POST /v1/paygo_snapshots_ts`: the body streamed to the spool, then imported.
async fn upload(
    State(api): State<HttpApi>,
    Tenant(admitted): Tenant,
    params: Result<Query<UploadParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ImportReportJson>, ApiError> {
    let Query(params) = params.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let format = format_of(&headers)?;
    // A body announced too large is refused before a byte of it is read.
    let limit = api.uploads.max_bytes();
    if let Some(length) = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit
    {
        return Err(SpoolError::TooLarge { limit }.into());
    }
    let upload = FileUpload::new(
        format,
        &params.data_origin,
        &params.file_name,
        &params.sheet,
    );
    let report = api
        .uploads
        .import(admitted, upload, body.into_data_stream())
        .await?;
    Ok(Json(ImportReportJson::from(report)))
}

/// `GET /v1/imports/{id}`: the report with one page of its errors.
async fn report(
    State(api): State<HttpApi>,
    Tenant(Admitted { tenant, .. }): Tenant,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<ImportReportJson>, ApiError> {
    let Path(id) = id.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let Query(params) = params.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let page = ErrorsPage::parse(params.errors_page_size, &params.errors_page_token)
        .map_err(ApiError::bad_request)?;
    let report = api
        .uploads
        .importer()
        .report(&tenant, &id, page.from, page.size)?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(ImportReportJson::from(report)))
}

/// `GET /v1/imports`: a page of the tenant's imports (reports without errors).
async fn list(
    State(api): State<HttpApi>,
    Tenant(Admitted { tenant, .. }): Tenant,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ImportListJson>, ApiError> {
    let Query(params) = params.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let page =
        ImportsPage::parse(params.page_size, &params.page_token).map_err(ApiError::bad_request)?;
    let listed = list_imports(api.uploads.importer().store(), &tenant, &page)?;
    Ok(Json(ImportListJson {
        imports: listed.imports.into_iter().map(Into::into).collect(),
        next_page_token: Some(listed.next_page_token).filter(|t| !t.is_empty()),
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("import {id} not found"))
}

/// `GET /v1/imports/{id}/errors.csv`: every error, read from the store a page at a time while
/// the answer is sent.
async fn errors_csv(
    State(api): State<HttpApi>,
    Tenant(Admitted { tenant, .. }): Tenant,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(|r| ApiError::bad_request(r.body_text()))?;
    let store = api.uploads.importer().store().clone();
    if store.report(&tenant, &id)?.is_none() {
        return Err(not_found(&id));
    }
    let header = csv_records(&[], true).map_err(|e| ApiError::internal(&e))?;
    let pages = futures::stream::try_unfold(Some(0u64), move |from| {
        let (store, tenant, id) = (store.clone(), tenant.clone(), id.clone());
        async move {
            let Some(from) = from else {
                return Ok(None);
            };
            let (errors, next) = errors_page(store, tenant, id, from).await?;
            Ok::<_, io::Error>(Some((csv_records(&errors, false)?, next)))
        }
    });
    let body = futures::stream::once(async { Ok::<_, io::Error>(header) })
        .chain(pages)
        .inspect(|chunk| {
            if let Err(error) = chunk {
                // The client sees a truncated answer; the log says why.
                tracing::error!(%error, "errors CSV stopped");
            }
        });
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

async fn errors_page(
    store: ImportStore,
    tenant: String,
    id: String,
    from: u64,
) -> io::Result<(Vec<v1::RowError>, Option<u64>)> {
    tokio::task::spawn_blocking(move || store.errors(&tenant, &id, from, CSV_ERRORS_PAGE))
        .await
        .map_err(io::Error::other)?
        .map_err(io::Error::other)
}

/// Errors as CSV records (`row,column,value,rule,message`), with the header line first if asked.
fn csv_records(errors: &[v1::RowError], header: bool) -> io::Result<Bytes> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(64 + errors.len() * 96));
    if header {
        writer
            .write_record(ERRORS_CSV_HEADER)
            .map_err(io::Error::other)?;
    }
    for e in errors {
        writer
            .write_record(error_csv_record(e))
            .map_err(io::Error::other)?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(Bytes::from(bytes))
}

/// An import report as JSON: the fields of `recoup.v1.ImportReport` in snake case, the format
/// in lower case (`csv`, `xlsx`, `json`, `rows`), times in RFC 3339 (UTC), and `null` for an
/// absent file error or a last page.
#[derive(Debug, Serialize)]
pub struct ImportReportJson {
    pub import_id: String,
    pub format: String,
    pub data_origin: String,
    pub file_name: String,
    pub rows_read: u64,
    pub accepted: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub file_error: Option<String>,
    pub duplicate: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error_count: u64,
    pub errors: Vec<RowErrorJson>,
    pub next_errors_page_token: Option<String>,
}

fn rfc3339(t: &prost_types::Timestamp) -> Option<String> {
    from_timestamp(t).map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// One error of a rejected row.
#[derive(Debug, Serialize)]
pub struct RowErrorJson {
    pub row: u64,
    pub column: String,
    pub value: String,
    pub rule: String,
    pub message: String,
}

impl From<v1::ImportReport> for ImportReportJson {
    fn from(r: v1::ImportReport) -> Self {
        let format = v1::FileFormat::try_from(r.format)
            .unwrap_or(v1::FileFormat::Unspecified)
            .as_str_name()
            .trim_start_matches("FILE_FORMAT_")
            .to_ascii_lowercase();
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Self {
            import_id: r.import_id,
            format,
            data_origin: r.data_origin,
            file_name: r.file_name,
            rows_read: r.rows_read,
            accepted: r.accepted,
            unchanged: r.unchanged,
            rejected: r.rejected,
            file_error: non_empty(r.file_error),
            duplicate: r.duplicate,
            started_at: r.started_at.as_ref().and_then(rfc3339),
            finished_at: r.finished_at.as_ref().and_then(rfc3339),
            error_count: r.error_count,
            errors: r
                .errors
                .into_iter()
                .map(|e| RowErrorJson {
                    row: e.row,
                    column: e.column,
                    value: e.value,
                    rule: e.rule,
                    message: e.message,
                })
                .collect(),
            next_errors_page_token: non_empty(r.next_errors_page_token),
        }
    }
}
