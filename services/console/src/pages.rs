//! The frame every page shares, and the pages of refusals.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use recoup_proto::v1::CaseState;

use crate::session::Session;

/// A whole page: the navigation, who is signed in (and the sign-out), then `body` under `title`.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · recoup" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header {
                    span.brand { "recoup" }
                    @if let Some(session) = session {
                        nav aria-label="Main" {
                            a href="/cases" { "Cases" }
                            a href="/imports" { "Imports" }
                            a href="/portfolio" { "Portfolio" }
                            a href="/collections" { "Collections" }
                            a href="/health" { "Health" }
                        }
                        div.who {
                            span { (session.who) " · tenant " strong { (session.tenant) } }
                            form method="post" action="/sign-out" {
                                input type="hidden" name="form_token" value=(session.form_token);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page with `status`.
pub fn answer(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// 403: the session may not do this, or the form is not its own.
pub fn refused(session: Option<&Session>, why: &str) -> Response {
    let body =
        html! { p.error role="alert" { (why) } p { a href="/cases" { "Back to the cases" } } };
    answer(StatusCode::FORBIDDEN, page("Not allowed", session, body))
}

/// A service's failure that leaves nothing to show.
pub fn failed(session: &Session, status: StatusCode, why: &str) -> Response {
    let body =
        html! { p.error role="alert" { (why) } p { a href="/cases" { "Back to the cases" } } };
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Signed out",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::NOT_IMPLEMENTED => "Not available",
        _ => "Something went wrong",
    };
    answer(status, page(title, Some(session), body))
}

/// The HTTP status of a service's refusal.
pub fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Minor units as the amount people read: 1234500 EUR is "12,345.00 EUR".
pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    let whole = (abs / 100).to_string();
    let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}.{:02} {currency}", abs % 100)
}

/// Minor units without a currency (a deal's amount): 12500 is "125.00".
pub fn amount(minor: i64) -> String {
    money(minor, "").trim_end().to_owned()
}

/// A decimal amount as people read it, to the cent: 77700 is "77,700.00".
pub fn decimal(value: f64) -> String {
    // Beyond ±9e16 (no portfolio's outstanding) the cast saturates.
    amount((value * 100.0).round() as i64)
}

/// A case state's name as the pages show it ("REVIEWING").
pub fn state_name(state: i32) -> &'static str {
    CaseState::try_from(state)
        .map(|s| s.as_str_name().trim_start_matches("CASE_STATE_"))
        .unwrap_or("UNKNOWN")
}

/// `text` as one query-string value.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An instant as the pages show it, in UTC ("2026-12-07 11:38:55"); empty when absent.
pub fn when(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(recoup_proto::from_timestamp)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// The status and the message of a page shown with a notice (an action refused, shown above the
/// page), or 200 and none.
pub fn with_notice(notice: Option<(StatusCode, String)>) -> (StatusCode, Option<String>) {
    notice.map_or((StatusCode::OK, None), |(status, error)| {
        (status, Some(error))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_reads_as_major_units() {
        assert_eq!(money(12500, "EUR"), "125.00 EUR");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-101, "USD"), "-1.01 USD");
        assert_eq!(money(123_456_789, "EUR"), "1,234,567.89 EUR");
        assert_eq!(money(100_000, "EUR"), "1,000.00 EUR");
        assert_eq!(amount(-29_460_663_201), "-294,606,632.01");
        assert_eq!(decimal(77_700.0), "77,700.00");
        assert_eq!(decimal(0.125), "0.13");
        assert_eq!(state_name(CaseState::Reviewing as i32), "REVIEWING");
        assert_eq!(state_name(99), "UNKNOWN");
    }

    #[test]
    fn what_a_page_shows_is_escaped() {
        let html = page("<script>x</script>", None, html! { p { ("a&b<i>") } }).into_string();
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(html.contains("a&amp;b&lt;i&gt;"), "{html}");
    }
}
