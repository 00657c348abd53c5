//! `GET /metrics` (Prometheus text format) and the gRPC request timer, on the gRPC address.

use std::time::Instant;

use axum::extract::Request;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The process's metrics.
pub async fn serve() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, recoup_metrics::CONTENT_TYPE)],
        recoup_metrics::render(),
    )
}

/// Times each gRPC request to its response headers, by method and status code. A handler's
/// refusal is answered with headers only, carrying `grpc-status`; a reply without one is OK
/// (its status follows in the trailers). Methods nobody serves count as `unknown`.
pub async fn time_grpc(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // Only recoup's own and the standard gRPC services: unknown paths would grow the labels.
    let method = if path.starts_with("/recoup.v1.") || path.starts_with("/grpc.") {
        path.trim_start_matches('/').to_owned()
    } else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let code = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_owned();
    // UNIMPLEMENTED: a method nobody serves; one label for all of them.
    let method = if code == "12" {
        "unknown".to_owned()
    } else {
        method
    };
    recoup_metrics::metrics()
        .grpc_duration
        .get_or_create(&recoup_metrics::GrpcLabel { method, code })
        .observe(started.elapsed().as_secs_f64());
    response
}
