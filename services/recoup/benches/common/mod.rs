//! What the benchmarks through gRPC share.
#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use recoup_proto::v1;
use tonic::metadata::AsciiMetadataValue;

/// A count from the environment, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The content of case `i`: external id `{tag}-{i}`, reference `{TAG}-{i:08}`, one line item.
pub fn content(tag: &str, i: usize) -> v1::CaseContent {
    v1::CaseContent {
        external_id: format!("{tag}-{i}"),
        reference: format!("{}-{i:08}", tag.to_uppercase()),
        environment: v1::Environment::Test as i32,
        currency: "EUR".into(),
        line_items: vec![v1::LineItem {
            unique_id: "1".into(),
            name: "installments".into(),
            quantity: 1,
            amount_minor: 10_000 + i as i64,
        }],
        due_date: (Utc::now() - chrono::Duration::days(30))
            .format("%Y-%m-%d")
            .to_string(),
        language: "en".into(),
        ..Default::default()
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// A request with the API key, when there is one.
pub fn request<T>(message: T, key: &Option<AsciiMetadataValue>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", key.clone());
    }
    request
}
