//! The HTTP face of the simulator: routes, handlers, envelopes.

use std::io;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::Simulator;
use super::auth::TokenCheck;
use super::cursor::ExportCursor;
use super::store::Order;

/// The only dataset the simulator serves.
const SECTION: &str = "S3";
const DATASET: &str = "D16";
/// `limit` bounds and default (docs/domain.md §1).
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 500;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The endpoints [`super::SimStats`] counts requests by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Login,
    Refresh,
    Export,
    Other,
}

impl Endpoint {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Endpoint::Login => "login",
            Endpoint::Refresh => "refresh",
            Endpoint::Export => "export",
            Endpoint::Other => "other",
        }
    }
}

/// An error answer: the envelope `{success: false, message, requestId}`.
#[derive(Debug)]
struct ApiError {
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

    fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    fn invalid_cursor() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Invalid cursor")
    }

    fn into_response(self, request_id: &str) -> Response {
        let body = json!({"success": false, "message": self.message, "requestId": request_id});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// What an export request gets when it is not an error.
enum ExportReply {
    Page {
        /// The envelope as JSON text.
        body: Vec<u8>,
        rows: usize,
    },
    /// The connection is cut mid-answer.
    Dropped,
}

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/admin/auth/{lender}/login", post(login))
        .route("/admin/auth/{lender}/refresh-token", post(refresh))
        .route(
            "/admin/v3/lenders/{lender_public_id}/exports/{section}/{dataset}",
            get(export),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(sim)
}

async fn login(State(sim): State<Simulator>, Path(lender): Path<String>, body: Bytes) -> Response {
    let result = sim.answer_login(&lender, &body);
    sim.respond(Endpoint::Login, result)
}

async fn refresh(
    State(sim): State<Simulator>,
    Path(lender): Path<String>,
    body: Bytes,
) -> Response {
    let result = sim.answer_refresh(&lender, &body);
    sim.respond(Endpoint::Refresh, result)
}

async fn export(
    State(sim): State<Simulator>,
    Path((lender_public_id, section, dataset)): Path<(String, String, String)>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let request_id = sim.next_request_id();
    let result = sim
        .answer_export(&lender_public_id, &section, &dataset, &headers, query)
        .await;
    let mut stats = sim.lock_stats();
    stats.count(Endpoint::Export);
    let mut response = match result {
        Ok(ExportReply::Page { body, rows }) => {
            stats.rows_served += rows as u64;
            stats.pages_served += 1;
            stats.status(StatusCode::OK);
            ([(CONTENT_TYPE, "application/json")], body).into_response()
        }
        Ok(ExportReply::Dropped) => {
            stats.dropped_connections += 1;
            dropped_response()
        }
        Err(error) => {
            stats.status(error.status);
            error.into_response(&request_id)
        }
    };
    drop(stats);
    with_request_id(&mut response, &request_id);
    response
}

async fn not_found(State(sim): State<Simulator>) -> Response {
    sim.respond(
        Endpoint::Other,
        Err(ApiError::new(StatusCode::NOT_FOUND, "Not found")),
    )
}

async fn method_not_allowed(State(sim): State<Simulator>) -> Response {
    sim.respond(
        Endpoint::Other,
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
        )),
    )
}

/// A 200 whose body breaks off after its first bytes: hyper aborts the connection, the client
/// sees an incomplete response.
fn dropped_response() -> Response {
    let chunks: [Result<Bytes, io::Error>; 2] = [
        Ok(Bytes::from_static(
            b"{\"code\":200,\"message\":\"OK\",\"body\":{\"rows\":[",
        )),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "simulated dropped connection",
        )),
    ];
    let mut response = Response::new(Body::from_stream(futures::stream::iter(chunks)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn with_request_id(response: &mut Response, request_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
}

/// The query of an export request.
struct ExportQuery {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: usize,
    order: Option<Order>,
    include_total: bool,
}

impl ExportQuery {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut query = ExportQuery {
            since: None,
            until: None,
            cursor: None,
            limit: DEFAULT_LIMIT,
            order: None,
            include_total: false,
        };
        for (name, value) in pairs {
            match name.as_str() {
                "since" => query.since = Some(parse_instant("since", &value)?),
                "until" => query.until = Some(parse_instant("until", &value)?),
                "cursor" => query.cursor = Some(value),
                "limit" => query.limit = parse_limit(&value)?,
                "sort" => {
                    query.order = Some(match value.to_ascii_lowercase().as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "sort must be asc or desc, got {value:?}"
                            )));
                        }
                    });
                }
                "includeTotal" => {
                    query.include_total = match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "includeTotal must be true or false, got {value:?}"
                            )));
                        }
                    };
                }
                // Parameters it does not know are ignored.
                _ => {}
            }
        }
        Ok(query)
    }
}

/// An integer, clamped to `1..=1000`; anything else is refused.
fn parse_limit(text: &str) -> Result<usize, ApiError> {
    let text = text.trim();
    if let Ok(limit) = text.parse::<i64>() {
        return Ok(limit.clamp(1, MAX_LIMIT as i64) as usize);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // An integer too large for i64 is still an integer: clamp it.
        return Ok(if text.starts_with('-') { 1 } else { MAX_LIMIT });
    }
    Err(ApiError::bad_request(format!(
        "limit must be an integer, got {text:?}"
    )))
}

/// ISO-8601: RFC 3339, or a date-time without offset (UTC), or a date (midnight UTC).
fn parse_instant(name: &str, text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                .ok()
                .map(|at| at.and_utc())
        })
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be an ISO-8601 instant, e.g. 2026-05-01T00:00:00.000Z, got {text:?}"
            ))
        })
}

fn read_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|_| ApiError::bad_request("Invalid JSON body"))
}

fn text_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    body.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
}

impl Simulator {
    fn answer_login(&self, lender: &str, body: &[u8]) -> Result<Response, ApiError> {
        let config = &self.inner.config;
        if lender != config.lender {
            return Err(ApiError::unauthorized("Lender not found or inactive"));
        }
        let body = read_json(body)?;
        let email = text_field(&body, "email")?;
        let password = text_field(&body, "password")?;
        if !email.eq_ignore_ascii_case(&config.email) || password != config.password {
            return Err(ApiError::unauthorized("Invalid email or password"));
        }
        let (token, refresh_token) = self.lock_sessions().login(Instant::now());
        self.lock_stats().logins += 1;
        Ok(Json(json!({
            "lenderPublicId": config.lender_public_id,
            "token": token,
            "refreshToken": refresh_token,
        }))
        .into_response())
    }

    fn answer_refresh(&self, lender: &str, body: &[u8]) -> Result<Response, ApiError> {
        if lender != self.inner.config.lender {
            return Err(ApiError::unauthorized("Lender not found or inactive"));
        }
        let body = read_json(body)?;
        let refresh_token = text_field(&body, "refreshToken")?;
        let token = self
            .lock_sessions()
            .refresh(refresh_token, Instant::now())
            .ok_or_else(|| ApiError::unauthorized("Invalid refresh token"))?;
        self.lock_stats().refreshes += 1;
        Ok(Json(json!({ "token": token })).into_response())
    }

    async fn answer_export(
        &self,
        lender_public_id: &str,
        section: &str,
        dataset: &str,
        headers: &HeaderMap,
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    ) -> Result<ExportReply, ApiError> {
        self.authorise(headers)?;
        // One lender per simulator: the token's lender is the configured one.
        if lender_public_id != self.inner.config.lender_public_id {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "Access denied: the token belongs to another lender",
            ));
        }
        if section != SECTION || dataset != DATASET {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "Dataset not found"));
        }
        let Query(pairs) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
        let query = ExportQuery::parse(pairs)?;
        let cursor = match &query.cursor {
            Some(text) => Some(
                self.inner
                    .cursor_key
                    .decode(text)
                    .ok_or_else(ApiError::invalid_cursor)?,
            ),
            None => None,
        };
        if let Some(cursor) = &cursor {
            let differs = query.since.is_some_and(|since| Some(since) != cursor.since)
                || query.until.is_some_and(|until| Some(until) != cursor.until)
                || query.order.is_some_and(|order| order != cursor.order);
            if differs {
                return Err(ApiError::bad_request(
                    "since, until and sort must stay as they were when the cursor chain began",
                ));
            }
        }
        if let Some(dropped) = self.inject_faults(&query).await? {
            return Ok(dropped);
        }
        self.page(&query, cursor)
    }

    /// Casts the fault dice for a request that would otherwise succeed: an error, a dropped
    /// connection, or (after a delay, if `slow` came up) nothing.
    async fn inject_faults(&self, query: &ExportQuery) -> Result<Option<ExportReply>, ApiError> {
        let (roll, plan) = {
            let mut dice = self.lock_faults();
            (dice.roll(), dice.plan.clone())
        };
        if roll.slow {
            self.count_fault("slow");
            tokio::time::sleep(plan.slow_delay).await;
        }
        if roll.drop_connection {
            self.count_fault("drop_connection");
            return Ok(Some(ExportReply::Dropped));
        }
        if roll.too_many_requests {
            self.count_fault("too_many_requests");
            let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
            error.retry_after_secs = Some(plan.retry_after_secs);
            return Err(error);
        }
        if roll.server_error {
            self.count_fault("server_error");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ));
        }
        if roll.invalid_cursor && query.cursor.is_some() {
            self.count_fault("invalid_cursor");
            return Err(ApiError::invalid_cursor());
        }
        if roll.gateway_timeout && query.limit > plan.gateway_timeout_above_limit as usize {
            self.count_fault("gateway_timeout");
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Gateway timeout",
            ));
        }
        Ok(None)
    }

    /// The next page of the chain `cursor` continues, or the first of a new chain.
    fn page(
        &self,
        query: &ExportQuery,
        cursor: Option<ExportCursor>,
    ) -> Result<ExportReply, ApiError> {
        let store = self.read_store();
        let chain = match cursor {
            Some(cursor) => cursor,
            None => {
                let snapshot = store.version();
                let order = query.order.unwrap_or(Order::Asc);
                let window = store
                    .window(snapshot, query.since, query.until)
                    .ok_or_else(ApiError::invalid_cursor)?;
                ExportCursor {
                    snapshot,
                    position: match order {
                        Order::Asc => window.start,
                        Order::Desc => window.end,
                    } as u64,
                    total: store.count_current(&window),
                    order,
                    since: query.since,
                    until: query.until,
                }
            }
        };
        // A signed cursor names a snapshot and position that exist; checked all the same.
        let window = store
            .window(chain.snapshot, chain.since, chain.until)
            .ok_or_else(ApiError::invalid_cursor)?;
        let position = usize::try_from(chain.position)
            .ok()
            .filter(|p| (window.start..=window.end).contains(p))
            .ok_or_else(ApiError::invalid_cursor)?;
        let mut body = Vec::with_capacity(query.limit * 640 + 256);
        body.extend_from_slice(br#"{"code":200,"message":"OK","body":{"rows":["#);
        let (count, next) = {
            let page = store.page(chain.snapshot, &window, chain.order, position, query.limit);
            for (i, deal) in page.rows.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                deal.write_json(&mut body);
            }
            (page.rows.len(), page.next)
        };
        drop(store);

        let next_cursor = next.map(|position| {
            self.inner.cursor_key.encode(&ExportCursor {
                position: position as u64,
                ..chain.clone()
            })
        });
        let mut pagination = json!({ "nextCursor": next_cursor });
        if query.include_total {
            pagination["total"] = chain.total.into();
        }
        body.extend_from_slice(br#"],"pagination":"#);
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, &pagination);
        body.extend_from_slice(br#"},"errors":null}"#);
        Ok(ExportReply::Page { body, rows: count })
    }

    fn authorise(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Missing bearer token"))?;
        match self.lock_sessions().check(token, Instant::now()) {
            TokenCheck::Valid => Ok(()),
            TokenCheck::Expired => Err(ApiError::unauthorized("Token expired")),
            TokenCheck::Unknown => Err(ApiError::unauthorized("Invalid token")),
        }
    }

    fn count_fault(&self, kind: &str) {
        *self
            .lock_stats()
            .faults_injected
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    /// Counts and finishes an answer of a login, refresh or unknown route.
    fn respond(&self, endpoint: Endpoint, result: Result<Response, ApiError>) -> Response {
        let request_id = self.next_request_id();
        let mut response = match result {
            Ok(response) => response,
            Err(error) => error.into_response(&request_id),
        };
        let mut stats = self.lock_stats();
        stats.count(endpoint);
        stats.status(response.status());
        drop(stats);
        with_request_id(&mut response, &request_id);
        response
    }
}
