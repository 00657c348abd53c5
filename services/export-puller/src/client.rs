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

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use reqwest::header::RETRY_AFTER;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::dataset::Dataset;

/// The vendor's bounds of `limit` (docs/domain.md §1).
pub const MAX_LIMIT: u32 = 1000;
pub const DEFAULT_LIMIT: u32 = 500;

/// A value that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per page, the first included (at least 1).
    pub max_attempts: u32,
    /// The first backoff; each further one doubles, up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a server asking for more ends the retries.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts, 250 ms doubling to 30 s, `Retry-After` up to 10 minutes.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry): a random point in the upper
    /// half of `base · 2^retry` (capped at `max_backoff`), and never less than `retry_after`.
    pub fn backoff(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        jitter: &mut Jitter,
    ) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_backoff);
        let half = exp / 2;
        let jittered = half + half.mul_f64(jitter.unit());
        retry_after.map_or(jittered, |after| after.max(jittered))
    }
}

/// A small generator for backoff jitter (xorshift64*), seeded per client so that pullers
/// restarted together do not retry in step.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// Seeded from the process's hash keys (random per process).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x6a69_7474_6572);
        Self::new(hasher.finish())
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Where and as whom the client talks to the API.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://api.example.com` (no trailing slash needed).
    pub host: String,
    /// The lender's slug in the auth paths: `/admin/auth/{lender}/login`.
    pub lender: String,
    /// The `lenderPublicId` this client expects login to answer; `None` takes whatever it says.
    pub lender_public_id: Option<String>,
    pub email: String,
    pub password: Secret,
    /// Longest wait for one answer, body included.
    pub request_timeout: Duration,
    /// Requests per second to this lender's API, all datasets together (at least 1).
    pub requests_per_second: NonZeroU32,
    pub retry: RetryPolicy,
}

impl ClientConfig {
    /// A configuration with the defaults: 30 s per request, 10 requests per second, the default
    /// [`RetryPolicy`].
    pub fn new(host: &str, lender: &str, email: &str, password: Secret) -> Self {
        Self {
            host: host.trim_end_matches('/').to_owned(),
            lender: lender.to_owned(),
            lender_public_id: None,
            email: email.to_owned(),
            password,
            request_timeout: Duration::from_secs(30),
            requests_per_second: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            retry: RetryPolicy::default(),
        }
    }
}

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
    pub rows: Vec<Value>,
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

#[derive(Deserialize)]
struct LoginAnswer {
    #[serde(rename = "lenderPublicId")]
    lender_public_id: String,
    token: String,
    #[serde(rename = "refreshToken")]
    refresh_token: String,
}

#[derive(Deserialize)]
struct RefreshAnswer {
    token: String,
}

#[derive(Deserialize)]
struct PageEnvelope {
    body: PageBody,
}

#[derive(Deserialize)]
struct PageBody {
    rows: Vec<Value>,
    pagination: Pagination,
}

#[derive(Deserialize)]
struct Pagination {
    #[serde(default, rename = "nextCursor")]
    next_cursor: Option<String>,
    #[serde(default)]
    total: Option<u64>,
}

#[derive(Clone)]
struct Session {
    lender_public_id: String,
    token: String,
    refresh_token: String,
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

    async fn attempt(&self, session: &Session, request: &PageRequest<'_>) -> Attempt {
        let dataset = request.dataset;
        let url = format!(
            "{}/admin/v3/lenders/{}/exports/{}/{}",
            self.config.host, session.lender_public_id, dataset.section, dataset.code
        );
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
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
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
            return match serde_json::from_slice::<PageEnvelope>(&body) {
                Ok(envelope) => Attempt::Page(Page {
                    rows: envelope.body.rows,
                    next_cursor: envelope.body.pagination.next_cursor,
                    total: envelope.body.pagination.total,
                    request_id,
                    attempts: 1,
                }),
                // A cut or garbled answer: the next try usually gets the whole of it.
                Err(error) => Attempt::Retry {
                    reason: format!("200 with a body that is not an export page: {error}"),
                    retry_after: None,
                },
            };
        }
        let message = describe(status, &body, request_id.as_deref());
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
            StatusCode::INTERNAL_SERVER_ERROR if is_invalid_cursor(&body) => {
                Attempt::Fail(FetchError::InvalidCursor(message))
            }
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => Attempt::Retry {
                reason: message,
                retry_after,
            },
            _ => Attempt::Fail(FetchError::Unexpected(message)),
        }
    }

    /// The current session, logging in if there is none.
    async fn session(&self) -> Result<Session, FetchError> {
        let mut session = self.session.lock().await;
        if let Some(s) = session.as_ref() {
            return Ok(s.clone());
        }
        let fresh = self.login().await?;
        *session = Some(fresh.clone());
        Ok(fresh)
    }

    /// Replaces the session `stale` with a refreshed one (or a new login if the refresh token is
    /// refused). Another task may have renewed it meanwhile: then that session is kept.
    async fn renew(&self, stale: &Session) -> Result<(), FetchError> {
        let mut session = self.session.lock().await;
        if session.as_ref().is_some_and(|s| s.token != stale.token) {
            return Ok(());
        }
        let renewed = match self.refresh(stale).await {
            Ok(token) => Session {
                token,
                ..stale.clone()
            },
            Err(reason) => {
                tracing::info!(lender = %self.config.lender, %reason, "refresh refused; logging in again");
                self.login().await?
            }
        };
        *session = Some(renewed);
        Ok(())
    }

    async fn login(&self) -> Result<Session, FetchError> {
        let url = format!(
            "{}/admin/auth/{}/login",
            self.config.host, self.config.lender
        );
        let body = serde_json::json!({
            "email": self.config.email,
            "password": self.config.password.expose(),
        });
        let answer: LoginAnswer = self
            .post_auth(&url, &body, |message| FetchError::LoginRefused {
                lender: self.config.lender.clone(),
                message,
            })
            .await?;
        if let Some(expected) = &self.config.lender_public_id
            && *expected != answer.lender_public_id
        {
            return Err(FetchError::LenderMismatch {
                expected: expected.clone(),
                actual: answer.lender_public_id,
            });
        }
        tracing::info!(lender = %self.config.lender, lender_public_id = %answer.lender_public_id, "logged in");
        Ok(Session {
            lender_public_id: answer.lender_public_id,
            token: answer.token,
            refresh_token: answer.refresh_token,
        })
    }

    /// A new access token, or why the refresh token was refused.
    async fn refresh(&self, session: &Session) -> Result<String, String> {
        let url = format!(
            "{}/admin/auth/{}/refresh-token",
            self.config.host, self.config.lender
        );
        let body = serde_json::json!({ "refreshToken": session.refresh_token });
        self.post_auth::<RefreshAnswer>(&url, &body, FetchError::Unauthorized)
            .await
            .map(|answer| answer.token)
            .map_err(|e| e.to_string())
    }

    /// POSTs to an auth endpoint, retrying what is worth retrying; a 401 becomes `refused`.
    async fn post_auth<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        body: &Value,
        refused: impl Fn(String) -> FetchError,
    ) -> Result<T, FetchError> {
        let policy = &self.config.retry;
        let mut failures = 0u32;
        loop {
            self.limiter.until_ready().await;
            let (reason, retry_after) = match self.http.post(url).json(body).send().await {
                Err(error) => (format!("request failed: {}", error_chain(&error)), None),
                Ok(response) => {
                    let status = response.status();
                    let retry_after = retry_after(response.headers());
                    let request_id = response
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match response.bytes().await {
                        Err(error) => (
                            format!("{status}: the body broke off: {}", error_chain(&error)),
                            None,
                        ),
                        Ok(bytes) if status.is_success() => match serde_json::from_slice(&bytes) {
                            Ok(answer) => return Ok(answer),
                            Err(error) => {
                                (format!("{status} with an unexpected body: {error}"), None)
                            }
                        },
                        Ok(bytes) => {
                            let message = describe(status, &bytes, request_id.as_deref());
                            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                                (message, retry_after)
                            } else if matches!(
                                status,
                                StatusCode::UNAUTHORIZED
                                    | StatusCode::FORBIDDEN
                                    | StatusCode::NOT_FOUND
                            ) {
                                // Wrong credentials, or no such (active) lender.
                                return Err(refused(message));
                            } else if status == StatusCode::BAD_REQUEST {
                                return Err(FetchError::BadRequest(message));
                            } else {
                                return Err(FetchError::Unexpected(message));
                            }
                        }
                    }
                }
            };
            failures += 1;
            if failures >= policy.max_attempts.max(1)
                || retry_after.is_some_and(|after| after > policy.max_retry_after)
            {
                return Err(FetchError::Exhausted {
                    attempts: failures,
                    last: reason,
                });
            }
            let wait = {
                let mut jitter = self.jitter.lock().unwrap_or_else(|e| e.into_inner());
                policy.backoff(failures - 1, retry_after, &mut jitter)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// An instant as the API takes it: RFC 3339 in UTC (`Z`), with microseconds.
pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `Retry-After` in seconds or as an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_cap_and_honours_retry_after() {
        let policy = RetryPolicy {
            max_attempts: 8,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
        };
        let mut jitter = Jitter::new(7);
        for retry in 0..12 {
            let exp = Duration::from_millis(100)
                .saturating_mul(1 << retry.min(20))
                .min(Duration::from_secs(1));
            let wait = policy.backoff(retry, None, &mut jitter);
            assert!(
                wait >= exp / 2 && wait <= exp,
                "retry {retry}: {wait:?} within {exp:?}"
            );
        }
        let wait = policy.backoff(0, Some(Duration::from_secs(5)), &mut jitter);
        assert_eq!(wait, Duration::from_secs(5));
    }

    #[test]
    fn secrets_do_not_print() {
        let config = ClientConfig::new("http://h/", "acme", "a@b.c", Secret::new("hunter2"));
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
        assert_eq!(config.host, "http://h");
    }
}
