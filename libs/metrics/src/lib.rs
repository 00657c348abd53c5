//! recoup's Prometheus metrics. Every part of a process counts into one registry
//! ([`metrics`]); [`render`] writes it in the text exposition format for `GET /metrics`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `recoup_events_published_total` | counter | `topic` — events Kafka acknowledged |
//! | `recoup_events_publish_failed_total` | counter | `topic` — events Kafka did not take (kept, sent again) |
//! | `recoup_events_consumed_total` | counter | `topic` — messages received by projections |
//! | `recoup_consumer_lag` | gauge | `topic`, `partition` — messages behind the partition's end, per held partition |
//! | `recoup_outbox_depth` | gauge | — events stored but not yet acknowledged by Kafka |
//! | `recoup_import_rows_total` | counter | `outcome` = `accepted`, `unchanged`, `rejected` |
//! | `recoup_pull_pages_total` | counter | `status` — export API answers by HTTP status (`error` when none came) |
//! | `recoup_pull_rows_total` | counter | `outcome` = `published`, `unchanged`, `rejected` |
//! | `recoup_grpc_request_duration_seconds` | histogram | `method`, `code` — time to the response headers |
//! | `recoup_kafka_up` | gauge | — 1 while the cluster answers the probe |

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabel {
    pub method: String,
    pub code: String,
}

/// A refused credential: its kind (`api_key`, `token`, `none`, `other`) and the refusal
/// (`unauthenticated`, `permission_denied`). No tenant, no key id: the labels stay few.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabel {
    pub credential: &'static str,
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of a process.
pub struct Metrics {
    pub events_published: Family<TopicLabel, Counter>,
    pub events_publish_failed: Family<TopicLabel, Counter>,
    pub events_consumed: Family<TopicLabel, Counter>,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub outbox_depth: Gauge,
    pub import_rows: Family<OutcomeLabel, Counter>,
    pub pull_pages: Family<StatusLabel, Counter>,
    pub pull_rows: Family<OutcomeLabel, Counter>,
    pub grpc_duration: HistogramFamily<GrpcLabel>,
    pub kafka_up: Gauge,
    pub auth_failures: Family<AuthLabel, Counter>,
    pub auth_throttled: Counter,
    pub connections_refused: Counter,
    pub imports_refused_busy: Counter,
    registry: Registry,
}

fn grpc_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Registers each named field of `metrics` in `registry` under its name and help text.
macro_rules! register {
    ($registry:ident, $metrics:ident, $($field:ident as $name:literal: $help:literal),* $(,)?) => {
        $( $registry.register($name, $help, $metrics.$field.clone()); )*
    };
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("recoup");
        let m = Self {
            events_published: Family::default(),
            events_publish_failed: Family::default(),
            events_consumed: Family::default(),
            consumer_lag: Family::default(),
            outbox_depth: Gauge::default(),
            import_rows: Family::default(),
            pull_pages: Family::default(),
            pull_rows: Family::default(),
            grpc_duration: Family::new_with_constructor(grpc_histogram),
            kafka_up: Gauge::default(),
            auth_failures: Family::default(),
            auth_throttled: Counter::default(),
            connections_refused: Counter::default(),
            imports_refused_busy: Counter::default(),
            registry: Registry::default(),
        };
        register!(
            registry,
            m,
            events_published as "events_published": "Events Kafka acknowledged",
            events_publish_failed as "events_publish_failed":
                "Events Kafka did not take (kept and sent again)",
            events_consumed as "events_consumed": "Messages received by the projections",
            consumer_lag as "consumer_lag":
                "Messages behind the end of each partition this process holds",
            outbox_depth as "outbox_depth": "Events stored but not yet acknowledged by Kafka",
            import_rows as "import_rows": "Snapshot rows imported, by outcome",
            pull_pages as "pull_pages": "Export API answers, by HTTP status",
            pull_rows as "pull_rows": "Exported rows pulled, by outcome",
            grpc_duration as "grpc_request_duration_seconds":
                "gRPC requests: time to the response headers",
            kafka_up as "kafka_up": "1 while the Kafka cluster answers the probe",
            auth_failures as "auth_failures":
                "Requests refused at the trust boundary, by kind of credential and refusal",
            auth_throttled as "auth_throttled":
                "Requests held back because their peer failed to authenticate again and again",
            connections_refused as "connections_refused":
                "Connections closed at once: over --max-connections or --max-connections-per-peer",
            imports_refused_busy as "imports_refused_busy":
                "Imports refused because --max-running-imports were running",
        );
        Self { registry, ..m }
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The metrics in Prometheus' text format.
pub fn render() -> String {
    for refresh in hooks()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        refresh();
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &metrics().registry);
    out
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counts `n` into a counter of a topic.
pub fn count_topic(family: &Family<TopicLabel, Counter>, topic: &str, n: u64) {
    if n > 0 {
        family
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .inc_by(n);
    }
}

/// The publish counters of one topic, cheap to clone into each delivery.
#[derive(Clone, Debug)]
pub struct TopicCounters {
    pub published: Counter,
    pub failed: Counter,
}

/// The publish counters of `topic`, found without allocating once the topic was seen.
pub fn topic_counters(topic: &str) -> TopicCounters {
    static SEEN: std::sync::RwLock<Vec<(String, TopicCounters)>> =
        std::sync::RwLock::new(Vec::new());
    let seen = SEEN
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, counters)) = seen.iter().find(|(t, _)| t == topic) {
        return counters.clone();
    }
    drop(seen);
    let label = TopicLabel {
        topic: topic.to_owned(),
    };
    let counters = TopicCounters {
        published: metrics().events_published.get_or_create(&label).clone(),
        failed: metrics()
            .events_publish_failed
            .get_or_create(&label)
            .clone(),
    };
    SEEN.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((topic.to_owned(), counters.clone()));
    counters
}

type RenderHook = Box<dyn Fn() + Send + Sync>;

fn hooks() -> &'static std::sync::Mutex<Vec<RenderHook>> {
    static HOOKS: OnceLock<std::sync::Mutex<Vec<RenderHook>>> = OnceLock::new();
    HOOKS.get_or_init(Default::default)
}

/// Runs `refresh` before every [`render`]: for gauges read from a store (the outbox depth)
/// rather than kept up to date.
pub fn before_render(refresh: impl Fn() + Send + Sync + 'static) {
    hooks()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(Box::new(refresh));
}
