//! What the benchmarks through gRPC share.
#![allow(dead_code)]

use std::time::Duration;

use chrono::Utc;
use recoup::platform::{self, PlatformConfig, RunningPlatform, Security};
use recoup_access::{KeySpec, Role};
use recoup_proto::v1;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

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

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `recoup up`'s platform on loopback ports with API keys on (no first admin key), as `tweak`
/// leaves its configuration; a key of tenant `default` with `role`, and a channel to it.
pub async fn platform(
    dir: &std::path::Path,
    role: Role,
    tweak: impl FnOnce(&mut PlatformConfig),
) -> (RunningPlatform, String, Channel) {
    let mut config = PlatformConfig::new(dir.to_path_buf());
    config.grpc_addr = Some("127.0.0.1:0".parse().unwrap());
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    config.security = Security {
        first_admin_key: false,
        ..Security::default()
    };
    tweak(&mut config);
    let p = platform::start(config).await.unwrap();
    let spec = KeySpec {
        name: "bench".to_owned(),
        tenants: vec!["default".to_owned()],
        role,
        expires_at: None,
        created_by: "bench".to_owned(),
    };
    let key = p
        .keys()
        .unwrap()
        .create(&spec, Utc::now())
        .await
        .unwrap()
        .key;
    let channel = Channel::from_shared(format!("http://{}", p.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (p, key, channel)
}
