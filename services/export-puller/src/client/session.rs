//! The client's session: login, token refresh, and the retries of the auth endpoints.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{ExportClient, FetchError, describe, error_chain, request_id, retry_after};

/// What login answers.
#[derive(Deserialize)]
struct LoginAnswer {
    #[serde(rename = "lenderPublicId")]
    lender_public_id: String,
    token: String,
    #[serde(rename = "refreshToken")]
    refresh_token: String,
}

/// What a token refresh answers.
#[derive(Deserialize)]
struct RefreshAnswer {
    token: String,
}

/// A logged-in session: whose it is and its tokens.
#[derive(Clone)]
pub(super) struct Session {
    pub(super) lender_public_id: String,
    pub(super) token: String,
    refresh_token: String,
}

/// What one POST to an auth endpoint came to.
enum AuthAttempt<T> {
    Answer(T),
    /// Worth another try after a wait.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    Fail(FetchError),
}

impl ExportClient {
    /// The current session, logging in if there is none.
    pub(super) async fn session(&self) -> Result<Session, FetchError> {
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
    pub(super) async fn renew(&self, stale: &Session) -> Result<(), FetchError> {
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

    /// A new session from the configured credentials, checked against the expected lender.
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
            let (reason, retry_after) = match self.auth_attempt(url, body, &refused).await {
                AuthAttempt::Answer(answer) => return Ok(answer),
                AuthAttempt::Fail(error) => return Err(error),
                AuthAttempt::Retry {
                    reason,
                    retry_after,
                } => (reason, retry_after),
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

    /// One POST to an auth endpoint, its answer classified: 429 and 5xx are retried, 401, 403
    /// and 404 are `refused` (wrong credentials, or no such active lender).
    async fn auth_attempt<T: for<'de> Deserialize<'de>>(
        &self,
        url: &str,
        body: &Value,
        refused: &impl Fn(String) -> FetchError,
    ) -> AuthAttempt<T> {
        let response = match self.http.post(url).json(body).send().await {
            Ok(response) => response,
            Err(error) => {
                return AuthAttempt::Retry {
                    reason: format!("request failed: {}", error_chain(&error)),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let request_id = request_id(response.headers());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                return AuthAttempt::Retry {
                    reason: format!("{status}: the body broke off: {}", error_chain(&error)),
                    retry_after: None,
                };
            }
        };
        if status.is_success() {
            return match serde_json::from_slice(&bytes) {
                Ok(answer) => AuthAttempt::Answer(answer),
                Err(error) => AuthAttempt::Retry {
                    reason: format!("{status} with an unexpected body: {error}"),
                    retry_after: None,
                },
            };
        }
        let message = describe(status, &bytes, request_id.as_deref());
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            AuthAttempt::Retry {
                reason: message,
                retry_after,
            }
        } else if matches!(
            status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
        ) {
            // Wrong credentials, or no such (active) lender.
            AuthAttempt::Fail(refused(message))
        } else if status == StatusCode::BAD_REQUEST {
            AuthAttempt::Fail(FetchError::BadRequest(message))
        } else {
            AuthAttempt::Fail(FetchError::Unexpected(message))
        }
    }
}
