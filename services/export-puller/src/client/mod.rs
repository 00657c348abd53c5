//! A client of the export API (docs/domain.md §1): login and token refresh, one page of an export
//! per call, and the vendor's error policy.
//!
//! | answer | what [`ExportClient::fetch_page`] does |
//! |---|---|
//! | 401 on an export | refreshes the token (or logs in again if the refresh is refused) and retries once; a second 401 is [`FetchError::Unauthorized`] |
//! | 401 on login | [`FetchError::LoginRefused`] (wrong credentials, lender unknown or inactive): no retry |
//! | 403 | [`FetchError::Forbidden`]: no retry |
//! | 404 | [`FetchError::DatasetNotFound`]: no retry |
//! | 400 | [`FetchError::BadRequest`]: no retry (a request this client should not have built) |
//! | 500 "Invalid cursor" | [`FetchError::InvalidCursor`]: never retried; the caller restarts the chain |
//! | 504 | [`FetchError::GatewayTimeout`]: the caller narrows window and limit, then asks again |
//! | 429, 500, 502, 503, timeouts, broken connections, truncated bodies | retried with exponential backoff and jitter, at least `Retry-After` apart, at most [`RetryPolicy::max_attempts`] times, then [`FetchError::Exhausted`] |
//!
//! Every request waits for the lender's request budget ([`ClientConfig::requests_per_second`]).
//! Credentials are never logged: [`Secret`] prints as `***`.

mod config;
mod session;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

pub use self::config::{ClientConfig, Jitter, RetryPolicy, Secret};
use self::session::Session;
use crate::dataset::Dataset;

/// The vendor's bounds of `limit` (docs/domain.md §1).
pub const MAX_LIMIT: u32 = 1000;
pub const DEFAULT_LIMIT: u32 = 500;

/// One page to ask for.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest<'a> {
    pub dataset: &'a Dataset,
    /// Inclusive lower bound on the cursor field.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on the cursor field.
    pub until: Option<DateTime<Utc>>,
    /// The `nextCursor` of the previous page of this chain; `None` starts a chain.
    pub cursor: Option<&'a str>,
    /// Rows per page, 1–1000.
    pub limit: u32,
}

/// One page as the API answered it.
#[derive(Debug, Clone)]
pub struct Page {
    /// Each row's JSON text, as the answer gave it: read once, by the normaliser
    /// ([`crate::normalise::Normaliser::row_json`]).
    pub rows: Vec<Box<RawValue>>,
    /// `None`: the chain is complete.
    pub next_cursor: Option<String>,
    pub total: Option<u64>,
    /// The answer's `x-request-id`, for the vendor's support.
    pub request_id: Option<String>,
    /// Attempts this page took (1 when the first succeeded).
    pub attempts: u32,
}

/// Why a page could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("login refused (check email, password and lender `{lender}`): {message}")]
    LoginRefused { lender: String, message: String },
    #[error("unauthorized even after logging in again: {0}")]
    Unauthorized(String),
    #[error(
        "forbidden: the credentials do not give access to lender {lender_public_id}: {message}"
    )]
    Forbidden {
        lender_public_id: String,
        message: String,
    },
    #[error("dataset {dataset} does not exist or is not available to this lender: {message}")]
    DatasetNotFound { dataset: String, message: String },
    #[error("the API refused the request as malformed: {0}")]
    BadRequest(String),
    #[error("the API does not know the cursor: {0}")]
    InvalidCursor(String),
    #[error("gateway timeout: {0}")]
    GatewayTimeout(String),
    #[error(
        "login answered {expected:?} is not the lender this puller is configured for ({actual})"
    )]
    LenderMismatch { expected: String, actual: String },
    #[error("gave up after {attempts} attempts; last: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("the API answered what it does not document: {0}")]
    Unexpected(String),
}

impl FetchError {
    /// Whether trying the same stream later can help (as opposed to a configuration error).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::InvalidCursor(_)
                | FetchError::GatewayTimeout(_)
                | FetchError::Exhausted { .. }
        )
    }
}

/// The error envelope `{success: false, message, requestId}`.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "requestId")]
    request_id: Option<String>,
}

/// A page's answer: `{body: {rows, pagination}}`.
#[derive(Deserialize)]
struct PageEnvelope {
    body: PageBody,
}

/// The rows of a page and where its chain goes on.
#[derive(Deserialize)]
struct PageBody {
    rows: Vec<Box<RawValue>>,
    pagination: Pagination,
}

/// `{nextCursor, total}` of a page.
#[derive(Deserialize)]
struct Pagination {
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
    #[serde(default)]
    total: Option<u64>,
}

/// What one attempt came to.
enum Attempt {
    Page(Page),
    /// 401 on an export: the token is no good.
    Unauthorized(String),
    /// Worth another try after a wait.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Fail(FetchError),
}

/// A logged-in client of one lender's export API. Share it (`Arc`) between the datasets of
/// that lender: they share its session and its request budget.
pub struct ExportClient {
    http: reqwest::Client,
    config: ClientConfig,
    session: Mutex<Option<Session>>,
    limiter: DefaultDirectRateLimiter,
    jitter: std::sync::Mutex<Jitter>,
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExportClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ExportClient {
    pub fn new(config: ClientConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .tcp_nodelay(true)
            .build()?;
        let limiter = RateLimiter::direct(Quota::per_second(config.requests_per_second));
        Ok(Self {
            http,
            config,
            session: Mutex::new(None),
            limiter,
            jitter: std::sync::Mutex::new(Jitter::random()),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The lender's public id, logging in first if needed.
    pub async fn lender_public_id(&self) -> Result<String, FetchError> {
        Ok(self.session().await?.lender_public_id)
    }

    /// One page, with the error policy of the module documentation.
    pub async fn fetch_page(&self, request: PageRequest<'_>) -> Result<Page, FetchError> {
        let policy = &self.config.retry;
        let mut reauthenticated = false;
        let mut failures = 0u32;
        loop {
            let session = self.session().await?;
            match self.attempt(&session, &request).await {
                Attempt::Page(mut page) => {
                    page.attempts = failures + 1;
                    return Ok(page);
                }
                Attempt::Unauthorized(message) => {
                    if reauthenticated {
                        return Err(FetchError::Unauthorized(message));
                    }
                    reauthenticated = true;
                    tracing::info!(lender = %self.config.lender, "token refused; refreshing");
                    self.renew(&session).await?;
                }
                Attempt::Retry {
                    reason,
                    retry_after,
                } => {
                    failures += 1;
                    if failures >= policy.max_attempts.max(1) {
                        return Err(FetchError::Exhausted {
                            attempts: failures,
                            last: reason,
                        });
                    }
                    if retry_after.is_some_and(|after| after > policy.max_retry_after) {
                        return Err(FetchError::Exhausted {
                            attempts: failures,
                            last: format!(
                                "{reason} (Retry-After beyond {:?})",
                                policy.max_retry_after
                            ),
                        });
                    }
                    let wait = {
                        let mut jitter = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
                        policy.backoff(failures - 1, retry_after, &mut jitter)
                    };
                    tracing::debug!(%reason, ?wait, attempt = failures, "retrying export request");
                    tokio::time::sleep(wait).await;
                }
                Attempt::Fail(error) => return Err(error),
            }
        }
    }

    /// A wait between two requests after a 504, from the same policy as other retries.
    pub fn backoff(&self, retry: u32) -> Duration {
        let mut jitter = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
        self.config.retry.backoff(retry, None, &mut jitter)
    }

    /// One request for a page, its answer classified by the error policy.
    async fn attempt(&self, session: &Session, request: &PageRequest<'_>) -> Attempt {
        let dataset = request.dataset;
        let url = format!(
            "{}/admin/v3/lenders/{}/exports/{}/{}",
            self.config.host, session.lender_public_id, dataset.section, dataset.code
        );
        let query = page_query(request);
        self.limiter.until_ready().await;
        let response = match self
            .http
            .get(&url)
            .bearer_auth(&session.token)
            .query(&query)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) => {
                count_page("error");
                return Attempt::Retry {
                    reason: format!("request failed: {}", error_chain(&error)),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        count_page(status.as_str());
        let request_id = request_id(response.headers());
        let retry_after = retry_after(response.headers());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return Attempt::Retry {
                    reason: format!("{status}: the body broke off: {}", error_chain(&error)),
                    retry_after: None,
                };
            }
        };
        if status == StatusCode::OK {
            return read_page(&body, request_id);
        }
        let message = describe(status, &body, request_id.as_deref());
        refusal(status, &body, message, retry_after, session, dataset)
    }
}

/// The query of a page request: `limit` (clamped to the vendor's bounds), `sort`, and the
/// `since`, `until` and `cursor` given.
fn page_query(request: &PageRequest<'_>) -> Vec<(&'static str, String)> {
    let mut query: Vec<(&str, String)> = vec![
        ("limit", request.limit.clamp(1, MAX_LIMIT).to_string()),
        ("sort", "asc".to_owned()),
    ];
    if let Some(since) = request.since {
        query.push(("since", iso(since)));
    }
    if let Some(until) = request.until {
        query.push(("until", iso(until)));
    }
    if let Some(cursor) = request.cursor {
        query.push(("cursor", cursor.to_owned()));
    }
    query
}

/// A 200's body as a page; a cut or garbled one is retried (the next try usually gets the whole
/// of it).
fn read_page(body: &[u8], request_id: Option<String>) -> Attempt {
    match serde_json::from_slice::<PageEnvelope>(body) {
        Ok(envelope) => Attempt::Page(Page {
            rows: envelope.body.rows,
            next_cursor: envelope.body.pagination.next_cursor,
            total: envelope.body.pagination.total,
            request_id,
            attempts: 1,
        }),
        Err(error) => Attempt::Retry {
            reason: format!("200 with a body that is not an export page: {error}"),
            retry_after: None,
        },
    }
}

/// What an export answer other than 200 means, by the error policy of the module documentation.
fn refusal(
    status: StatusCode,
    body: &[u8],
    message: String,
    retry_after: Option<Duration>,
    session: &Session,
    dataset: &Dataset,
) -> Attempt {
    match status {
        StatusCode::UNAUTHORIZED => Attempt::Unauthorized(message),
        StatusCode::FORBIDDEN => Attempt::Fail(FetchError::Forbidden {
            lender_public_id: session.lender_public_id.clone(),
            message,
        }),
        StatusCode::NOT_FOUND => Attempt::Fail(FetchError::DatasetNotFound {
            dataset: dataset.path(),
            message,
        }),
        StatusCode::BAD_REQUEST => Attempt::Fail(FetchError::BadRequest(message)),
        StatusCode::GATEWAY_TIMEOUT => Attempt::Fail(FetchError::GatewayTimeout(message)),
        StatusCode::INTERNAL_SERVER_ERROR if is_invalid_cursor(body) => {
            Attempt::Fail(FetchError::InvalidCursor(message))
        }
        s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => Attempt::Retry {
            reason: message,
            retry_after,
        },
        _ => Attempt::Fail(FetchError::Unexpected(message)),
    }
}

/// An instant as the API takes it: RFC 3339 in UTC (`Z`), with microseconds.
pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The answer's `x-request-id`, for the vendor's support.
fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

/// Whether a 500's error envelope says the cursor is unknown (`Invalid cursor`).
fn is_invalid_cursor(body: &[u8]) -> bool {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message)
        .is_some_and(|m| m.to_ascii_lowercase().contains("invalid cursor"))
}

/// `403 Forbidden: Access denied (request req-0000002a)`.
fn describe(status: StatusCode, body: &[u8], request_id: Option<&str>) -> String {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.message.clone())
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        });
    let request_id = parsed
        .and_then(|b| b.request_id)
        .or_else(|| request_id.map(str::to_owned));
    match request_id {
        Some(id) => format!("{status}: {message} (request {id})"),
        None => format!("{status}: {message}"),
    }
}

/// An error with its sources, on one line (reqwest's own text hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Counts one export API answer by its status (`error`: none came).
fn count_page(status: &str) {
    recoup_metrics::metrics()
        .pull_pages
        .get_or_create(&recoup_metrics::StatusLabel {
            status: status.to_owned(),
        })
        .inc();
}
