//! An import's errors as CSV (`GET /imports/{id}/errors.csv`): `GetImport` asked a page at a
//! time while the answer is sent, as long as the session lasts.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use recoup_proto::snapshots::{ERRORS_CSV_HEADER, error_csv_record};
use recoup_proto::v1;
use tonic::Status;

use crate::backend::request;
use crate::session::Session;
use crate::{Console, SignedIn};

/// Errors per call while the errors CSV is written.
const CSV_PAGE: u32 = 1000;

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
        if !console.sessions.alive(&session.id, Instant::now()) {
            // Signed out meanwhile: the file ends here, cut off.
            let ended = std::io::Error::other("the session ended");
            return Some((Err(ended), (console, session, browser, id, None)));
        }
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
