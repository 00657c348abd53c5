//! What the end-to-end tests share: a platform in process on loopback, and gRPC clients.
#![allow(dead_code, clippy::unwrap_used)]

pub mod binary;
pub mod browser;
pub mod cluster;
pub mod http;

use std::path::Path;
use std::time::Duration;

use chrono::{Duration as Days, Utc};
use recoup::platform::{self, PlatformConfig, RunningPlatform, Security, Services};
use recoup_proto::tenant::TENANT_METADATA_KEY;
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use tonic::transport::Channel;

pub type Cases = DebtCollectionCasesClient<Channel>;
pub type Query = QueryClient<Channel>;

/// A config for a platform on a free loopback port with its files in `dir`, without
/// credentials (`--insecure`): the tests of credentials (`tests/access.rs`) turn them on.
pub fn config(dir: &Path) -> PlatformConfig {
    let mut c = PlatformConfig::new(dir.to_path_buf());
    c.security = Security::insecure();
    c.grpc_addr = Some("127.0.0.1:0".parse().unwrap());
    c.http_addr = Some("127.0.0.1:0".parse().unwrap());
    c.cases.timeout_check_interval = Duration::from_millis(200);
    c
}

/// A platform with API keys on, as `recoup up` runs by default, without the first admin key,
/// and without holding back a peer that fails (the tests of credentials fail on purpose,
/// many times).
pub fn secured(dir: &Path) -> PlatformConfig {
    let mut cfg = config(dir);
    cfg.security = Security {
        first_admin_key: false,
        throttle: recoup_access::ThrottleSettings {
            free: u32::MAX,
            ..Default::default()
        },
        ..Security::default()
    };
    cfg
}

/// Only the given services, against the brokers given.
pub fn config_for(dir: &Path, brokers: &str, services: Services) -> PlatformConfig {
    let mut c = config(dir);
    c.kafka_brokers = Some(brokers.to_owned());
    c.services = services;
    c
}

/// For the tests that run on either broker: with `RECOUP_TEST_TANSU` set (and no
/// `KAFKA_BROKERS`), a tansu broker of the test's own with recoup's topics, for [`on_broker`];
/// otherwise `None`: the platform runs its embedded broker.
pub fn tansu_if_asked() -> Option<cluster::TestBroker> {
    let asked = std::env::var_os("RECOUP_TEST_TANSU").is_some()
        && std::env::var_os("KAFKA_BROKERS").is_none();
    asked.then(cluster::TestBroker::start)
}

/// `config` on `broker` when there is one, else as it is (the embedded broker).
pub fn on_broker(
    mut config: PlatformConfig,
    broker: Option<&cluster::TestBroker>,
) -> PlatformConfig {
    if let Some(broker) = broker {
        config.kafka_brokers = Some(broker.brokers.clone());
    }
    config
}

/// A key of `role` for `tenants`, made through the platform's registry (the access topic).
pub async fn make_key(
    platform: &RunningPlatform,
    role: recoup_access::Role,
    tenants: &[&str],
) -> String {
    let spec = recoup_access::KeySpec {
        name: format!("{role}-key"),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        role,
        expires_at: None,
        created_by: "test".to_owned(),
    };
    let registry = platform.keys().expect("API keys are on");
    registry.create(&spec, Utc::now()).await.unwrap().key
}

pub async fn start(config: PlatformConfig) -> RunningPlatform {
    platform::start(config).await.expect("platform starts")
}

pub async fn channel(p: &RunningPlatform) -> Channel {
    Channel::from_shared(format!("http://{}", p.grpc_addr.expect("gRPC is served")))
        .unwrap()
        .connect()
        .await
        .expect("connects")
}

pub async fn clients(p: &RunningPlatform) -> (Cases, Query) {
    let ch = channel(p).await;
    (
        DebtCollectionCasesClient::new(ch.clone()),
        QueryClient::new(ch),
    )
}

pub fn req<T>(tenant: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert(TENANT_METADATA_KEY, tenant.parse().unwrap());
    r
}

/// A request of `tenant` with `authorization` (e.g. `Bearer rk1_…`; `None`: no header).
pub fn req_as<T>(tenant: &str, message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut r = req(tenant, message);
    if let Some(value) = authorization {
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    r
}

/// A request with API key or token `credential` and no tenant header: it acts for the
/// credential's tenant.
pub fn bearer<T>(message: T, credential: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    r
}

/// Valid content for a case of `amount_minor` EUR with the given reference.
pub fn content(reference: &str, amount_minor: i64) -> v1::CaseContent {
    v1::CaseContent {
        external_id: format!("ext-{reference}"),
        reference: reference.to_owned(),
        environment: v1::Environment::Test as i32,
        currency: "EUR".into(),
        line_items: vec![v1::LineItem {
            unique_id: "1".into(),
            name: "installments".into(),
            quantity: 1,
            amount_minor,
        }],
        due_date: (Utc::now() - Days::days(30)).format("%Y-%m-%d").to_string(),
        language: "en".into(),
        ..Default::default()
    }
}

pub async fn create(cases: &mut Cases, tenant: &str, reference: &str, amount: i64) -> v1::DebtCase {
    cases
        .create_case(req(
            tenant,
            v1::CreateCaseRequest {
                content: Some(content(reference, amount)),
            },
        ))
        .await
        .expect("create")
        .into_inner()
        .case
        .unwrap()
}

pub fn cmd(case: &v1::DebtCase) -> v1::CaseCommand {
    v1::CaseCommand {
        case_id: case.id.clone(),
        expected_version: case.version,
    }
}

/// The case a command or query answered, or its refusal.
pub fn case_of(
    reply: Result<tonic::Response<v1::CaseReply>, tonic::Status>,
) -> Result<v1::DebtCase, tonic::Status> {
    reply.map(|r| r.into_inner().case.expect("every reply carries the case"))
}

/// The case as the event store holds it (read-your-writes).
pub async fn stored(cases: &mut Cases, tenant: &str, id: &str) -> v1::DebtCase {
    let r = v1::GetCaseRequest {
        case_id: id.to_owned(),
    };
    case_of(cases.get_case(req(tenant, r)).await).unwrap()
}

/// The case as the read model holds it.
pub async fn projected(
    query: &mut Query,
    tenant: &str,
    id: &str,
) -> Result<v1::DebtCase, tonic::Status> {
    let r = v1::GetCaseRequest {
        case_id: id.to_owned(),
    };
    case_of(query.get_case(req(tenant, r)).await)
}

/// Waits until the read model holds the case at `version`.
pub async fn projected_at(query: &Query, tenant: &str, id: &str, version: u64) -> bool {
    eventually(Duration::from_secs(10), || {
        let mut q = query.clone();
        async move {
            projected(&mut q, tenant, id)
                .await
                .is_ok_and(|c| c.version == version)
        }
    })
    .await
}

/// The refusal of a create with this content.
pub async fn refused_create(
    cases: &mut Cases,
    tenant: &str,
    content: v1::CaseContent,
) -> tonic::Status {
    let r = v1::CreateCaseRequest {
        content: Some(content),
    };
    cases.create_case(req(tenant, r)).await.unwrap_err()
}

/// Drives a fresh case through review, preparation, processing and a receipt to CLOSED.
pub async fn drive_to_closed(cases: &mut Cases, tenant: &str, case: v1::DebtCase) -> v1::DebtCase {
    let c = case_of(cases.mark_reviewed(req(tenant, cmd(&case))).await).unwrap();
    let c = case_of(cases.mark_prepared(req(tenant, cmd(&c))).await).unwrap();
    let c = case_of(cases.start_processing(req(tenant, cmd(&c))).await).unwrap();
    let receipt = v1::AddPaymentReceiptRequest {
        case_id: c.id.clone(),
        expected_version: c.version,
        receipt_external_id: "r-1".into(),
        amount_minor: 1,
    };
    let c = case_of(cases.add_payment_receipt(req(tenant, receipt)).await).unwrap();
    case_of(cases.close_case(req(tenant, cmd(&c))).await).unwrap()
}

/// Polls the query side until `check` holds (at most `limit`).
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The read model's count and amount of a state, for one tenant.
pub async fn stats_of(query: &mut Query, tenant: &str, state: v1::CaseState) -> (u64, i64, i64) {
    let stats = query
        .case_stats(req(tenant, v1::CaseStatsRequest {}))
        .await
        .unwrap()
        .into_inner();
    stats
        .states
        .iter()
        .filter(|s| s.state == state as i32)
        .map(|s| {
            (
                s.count,
                s.totals.iter().map(|t| t.amount_minor).sum::<i64>(),
                s.totals.iter().map(|t| t.collected_minor).sum::<i64>(),
            )
        })
        .next()
        .unwrap_or((0, 0, 0))
}

/// The envelopes of the topic `topic` on the platform's embedded broker, `n` of them.
pub async fn envelopes(
    platform: &RunningPlatform,
    topic: &str,
    n: usize,
) -> Vec<v1::EventEnvelope> {
    use event_backbone::{EventConsumer, KafkaConfig};
    use prost::Message;
    let kafka = KafkaConfig::external(platform.kafka_bootstrap.clone());
    let consumer = EventConsumer::new(&kafka, "envelopes-test", topic, None).unwrap();
    let partitions = consumer
        .partitions(std::time::Duration::from_secs(10))
        .unwrap();
    let start: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    consumer.assign(&start).unwrap();
    let mut found = Vec::new();
    while found.len() < n {
        let batch =
            tokio::time::timeout(std::time::Duration::from_secs(20), consumer.recv_batch(100))
                .await
                .expect("the events arrive")
                .unwrap();
        found.extend(
            batch
                .iter()
                .map(|e| v1::EventEnvelope::decode(e.value.as_slice()).unwrap()),
        );
    }
    found
}

/// The puller's settings for the simulator at `base_url`, as tenant `acme`, polling every 100 ms
/// (`once`: one pass).
pub fn pull_settings(
    base_url: &str,
    sim: &export_sim::SimConfig,
    once: bool,
) -> export_puller::service::Settings {
    use export_puller::client::{ClientConfig, RetryPolicy, Secret};
    let mut client = ClientConfig::new(
        base_url,
        &sim.lender,
        &sim.email,
        Secret::new(sim.password.clone()),
    );
    client.requests_per_second = std::num::NonZeroU32::new(10_000).unwrap();
    client.retry = RetryPolicy {
        base_backoff: Duration::from_millis(5),
        ..RetryPolicy::default()
    };
    export_puller::service::Settings {
        sources: export_puller::sources::Sources {
            poll_interval: Duration::from_millis(100),
            max_concurrent: 1,
            sources: vec![export_puller::sources::Source {
                tenant: "acme".to_owned(),
                client,
                datasets: vec![std::sync::Arc::new(export_puller::dataset::d16())],
                limit: 500,
            }],
        },
        once,
        pull: Default::default(),
    }
}
