//! The web console for collections teams, served on recoup's HTTP listener at `/`.
//!
//! Pages are HTML rendered on the server ([`maud`]: escaped by construction) from the answers
//! of the gRPC services of this process, called in process through the gRPC router
//! ([`backend`]): the console holds no data and has no path to it that the API lacks. Forms
//! work without JavaScript; one small script of our own and one stylesheet are compiled into
//! the binary, so nothing is fetched at run time.
//!
//! Sign-in takes an API key or a token and starts a [`session`]; every form that changes
//! something carries the session's form token.

mod account;
mod assets;
pub mod backend;
mod cases;
mod collections;
mod health;
mod import_errors;
mod imports;
mod pages;
mod portfolio;
pub mod session;
mod sign_in;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use recoup_access::Access;

use crate::backend::Backend;
pub use crate::session::SessionLimits;
use crate::session::{Session, Sessions};

/// The largest form the console takes.
const FORM_LIMIT: usize = 64 * 1024;

/// How the console runs.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleConfig {
    /// Cookies marked `Secure`: the browser reaches recoup over TLS (served, or terminated in
    /// front).
    pub secure_cookies: bool,
    pub sessions: SessionLimits,
    /// The importer's upload limit (`--max-upload-bytes`): a larger upload is refused before
    /// the console reads it.
    pub max_upload_bytes: u64,
}

#[derive(Clone)]
pub(crate) struct Console {
    backend: Backend,
    sessions: Arc<Sessions>,
    access: Access,
    config: ConsoleConfig,
}

/// The console's routes, calling the services through `grpc` (this process's gRPC router),
/// signing in against `access`.
pub fn router(grpc: Router, access: Access, config: ConsoleConfig) -> Router {
    let console = Console {
        backend: Backend::new(grpc),
        sessions: Arc::new(Sessions::new(config.sessions)),
        access,
        config,
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/cases") }))
        .route("/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/cases", get(cases::list).post(cases::create))
        .route("/cases/{id}", get(cases::show))
        .route("/cases/{id}/{command}", post(cases::command))
        .route(
            "/imports",
            get(imports::list)
                .post(imports::upload)
                // The importer limits uploads; the console passes them on a chunk at a time.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/imports/{id}", get(imports::show))
        .route("/imports/{id}/errors.csv", get(import_errors::errors_csv))
        .route("/collections", get(collections::show))
        .route("/portfolio", get(portfolio::show))
        .route("/accounts", get(account::show))
        .route("/health", get(health::show))
        .route(
            "/collections/do-not-contact/events",
            get(collections::events),
        )
        .route("/assets/{file}", get(assets::serve))
        .layer(DefaultBodyLimit::max(FORM_LIMIT))
        .layer(axum::middleware::map_response(protect))
        .with_state(console)
}

/// What every console answer carries: no framing, no script or style from elsewhere, no
/// sniffing, no caching of pages that hold a tenant's data.
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; \
         base-uri 'none'",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

/// Why a request gets no page of its own.
pub(crate) enum Refusal {
    /// No live session: to the sign-in page.
    SignIn,
    /// A form without the session's form token.
    ForeignForm(Box<Session>),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => Redirect::to("/sign-in").into_response(),
            Refusal::ForeignForm(session) => pages::refused(
                Some(&session),
                "This form is not from this session (it may be from an older page or another \
                 site). Reload the page and try again.",
            ),
        }
    }
}

/// The session of a page's request: handlers that take it are for signed-in browsers only.
pub(crate) struct SignedIn(pub Session);

impl FromRequestParts<Console> for SignedIn {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Refusal> {
        console.session(&parts.headers).map(SignedIn)
    }
}

impl Console {
    /// The session of the request's cookie.
    fn session(&self, headers: &HeaderMap) -> Result<Session, Refusal> {
        let now = std::time::Instant::now();
        let name = session::session_cookie(self.config.secure_cookies);
        session::cookie_of(headers, name)
            .and_then(|id| self.sessions.get(id, now))
            .ok_or(Refusal::SignIn)
    }

    /// Ends `session` and sends the browser to the sign-in page, its cookie removed.
    fn sign_out(&self, session: &Session) -> Response {
        self.sessions.end(&session.id);
        let secure = self.config.secure_cookies;
        let cookie = session::set_cookie(
            session::session_cookie(secure),
            "",
            std::time::Duration::ZERO,
            secure,
        );
        let mut response = Redirect::to("/sign-in").into_response();
        if let Ok(value) = cookie.parse() {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
        response
    }

    /// The page for a service's refusal: a credential the services no longer take (revoked,
    /// expired) ends the session and leads to the sign-in; anything else is explained.
    fn refused_by_service(&self, session: &Session, status: &tonic::Status) -> Response {
        if status.code() == tonic::Code::Unauthenticated {
            tracing::info!(who = %session.who, reason = %status.message(), "console session ended: the credential is refused");
            return self.sign_out(session);
        }
        pages::failed(
            session,
            pages::http_status(status.code()),
            &backend::explain(status),
        )
    }

    /// The session, when the form carries its form token.
    fn session_for_form(&self, headers: &HeaderMap, token: &str) -> Result<Session, Refusal> {
        let session = self.session(headers)?;
        if !session.form_token_is(token) {
            return Err(Refusal::ForeignForm(Box::new(session)));
        }
        Ok(session)
    }
}
