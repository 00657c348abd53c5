//! Signing in with an API key or a token, and out.
//!
//! The sign-in form is protected like every other form, before any session exists: its token
//! is also in a cookie of its own, and both must match (so another site cannot sign a browser
//! in under the other site's credential).

use std::time::{Duration, Instant};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use recoup_access::{Access, Action, Role};
use serde::Deserialize;

use crate::Console;
use crate::pages::{answer, page};
use crate::session::{
    self, Session, StartError, random_token, session_cookie, set_cookie, sign_in_cookie,
};

/// How long a sign-in form stays good.
const SIGN_IN_FORM_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    credential: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    form_token: String,
}

#[derive(Deserialize)]
pub struct SignOut {
    #[serde(default)]
    form_token: String,
}

pub async fn form(State(console): State<Console>) -> Response {
    sign_in_page(&console, StatusCode::OK, None)
}

/// The form, with a fresh token in it and in its cookie, and `error` above it.
fn sign_in_page(console: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let open = matches!(console.access, Access::Open);
    let body = html! {
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form.sign-in method="post" action="/sign-in" {
            input type="hidden" name="form_token" value=(token);
            @if open {
                p { "This recoup runs without credentials (" code { "--insecure" } "): you act for the tenant you name, with every right." }
            } @else {
                label for="credential" { "API key or token" }
                input id="credential" name="credential" type="password" required autocomplete="off"
                    spellcheck="false" aria-describedby="credential-help";
                p id="credential-help" class="help" { "An API key (rk1_…) or a token of your identity provider." }
            }
            label for="tenant" { "Tenant" }
            input id="tenant" name="tenant" type="text" autocomplete="off"
                placeholder=(if open { "default" } else { "the credential's first tenant" });
            button type="submit" { "Sign in" }
        }
    };
    let secure = console.config.secure_cookies;
    let cookie = set_cookie(sign_in_cookie(secure), &token, SIGN_IN_FORM_TTL, secure);
    let mut response = answer(status, page("Sign in", None, body));
    if let Ok(value) = cookie.parse() {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub async fn submit(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    let secure = console.config.secure_cookies;
    let expected = session::cookie_of(&headers, sign_in_cookie(secure));
    let token_ok = expected.is_some_and(|e| {
        use subtle::ConstantTimeEq as _;
        bool::from(e.as_bytes().ct_eq(form.form_token.as_bytes()))
    });
    if !token_ok {
        return sign_in_page(
            &console,
            StatusCode::FORBIDDEN,
            Some("The sign-in form had expired or came from elsewhere: try again."),
        );
    }
    let session = match who(&console.access, &form) {
        Ok(session) => session,
        Err(why) => return sign_in_page(&console, StatusCode::UNAUTHORIZED, Some(&why)),
    };
    // A browser signing in again leaves its earlier session behind.
    if let Some(old) = session::cookie_of(&headers, session_cookie(secure)) {
        console.sessions.end(old);
    }
    let (who, tenant) = (session.who.clone(), session.tenant.clone());
    let id = match console.sessions.start(session, Instant::now()) {
        Ok(id) => id,
        Err(StartError::Full) => {
            let why = "Too many people are signed in right now: try again in a few minutes.";
            return sign_in_page(&console, StatusCode::SERVICE_UNAVAILABLE, Some(why));
        }
        Err(StartError::Random(e)) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response();
        }
    };
    tracing::info!(%who, %tenant, "signed in to the console");
    let lifetime = console.sessions.limits().lifetime;
    let mut response = Redirect::to("/cases").into_response();
    for cookie in [
        set_cookie(session_cookie(secure), &id, lifetime, secure),
        set_cookie(sign_in_cookie(secure), "", Duration::ZERO, secure),
    ] {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// The session a sign-in form asks for, checked as every request's credential is.
fn who(access: &Access, form: &SignIn) -> Result<Session, String> {
    let tenant = form.tenant.trim();
    if !tenant.is_empty() {
        recoup_proto::tenant::validate_tenant(tenant).map_err(|e| format!("Tenant: {e}"))?;
    }
    let requested = (!tenant.is_empty()).then(|| tenant.to_owned());
    let form_token = random_token()?;
    let credential = form.credential.trim();
    let authorization = match access {
        Access::Open => None,
        Access::Checked(_) if credential.is_empty() => {
            return Err("Give an API key or a token.".to_owned());
        }
        Access::Checked(_) => Some(format!("Bearer {credential}")),
    };
    let acting = access
        .acting(
            authorization.as_deref().map(str::as_bytes),
            requested,
            Action::Read,
        )
        .map_err(|e| format!("Not signed in: {e}"))?;
    let (who, roles) = match &acting.principal {
        Some(p) => (p.id.clone(), p.roles.clone()),
        None => (acting.actor().to_owned(), Role::ALL.to_vec()),
    };
    Ok(Session {
        id: String::new(),
        authorization,
        who,
        tenant: acting.tenant,
        roles,
        form_token,
    })
}

pub async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<SignOut>,
) -> Response {
    match console.session_for_form(&headers, &form.form_token) {
        Ok(session) => console.sign_out(&session),
        Err(refusal) => refusal.into_response(),
    }
}
