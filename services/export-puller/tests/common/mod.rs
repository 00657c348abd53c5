//! What the puller's tests share: a simulator on loopback, the embedded Kafka cluster, a
//! puller on a store in a temp dir, and a reader of whole topics.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use event_backbone::consumer::{EventConsumer, ReceivedEvent};
use event_backbone::envelope::decode_envelope;
use event_backbone::producer::{EventProducer, ProducerSettings};
use event_backbone::{EmbeddedKafka, KafkaConfig};
use export_puller::client::{ClientConfig, ExportClient, RetryPolicy, Secret};
use export_puller::dataset;
use export_puller::pull::{PullSettings, Puller, Stream};
use export_puller::store::PullStore;
use export_sim::{RunningSim, SimConfig, Simulator};
use prost::Message;
use recoup_proto::v1;

pub const TENANT: &str = "acme";

pub fn sim_config(rows: usize) -> SimConfig {
    SimConfig {
        rows,
        lender: "acme".to_owned(),
        lender_public_id: "lender-acme-0001".to_owned(),
        email: "ops@acme.example".to_owned(),
        password: "s3cret".to_owned(),
        ..SimConfig::default()
    }
}

pub async fn serve(config: SimConfig) -> (Simulator, RunningSim) {
    let sim = Simulator::new(config);
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    (sim, running)
}

/// Quick retries: tests run against a local simulator.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 12,
        base_backoff: Duration::from_millis(2),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn client_config(running: &RunningSim, config: &SimConfig) -> ClientConfig {
    let mut c = ClientConfig::new(
        &running.base_url(),
        &config.lender,
        &config.email,
        Secret::new(config.password.clone()),
    );
    c.requests_per_second = std::num::NonZeroU32::new(10_000).unwrap();
    c.request_timeout = Duration::from_secs(5);
    c.retry = fast_retries();
    c
}

pub fn stream(client: ClientConfig, limit: u32) -> Stream {
    Stream {
        tenant: TENANT.to_owned(),
        dataset: Arc::new(dataset::d16()),
        client: Arc::new(ExportClient::new(client).unwrap()),
        limit,
    }
}

pub fn settings() -> PullSettings {
    PullSettings {
        readback_timeout: Duration::from_secs(10),
        ..PullSettings::default()
    }
}

pub fn kafka() -> EmbeddedKafka {
    EmbeddedKafka::start(event_backbone::topics::ALL).unwrap()
}

pub fn puller(kafka: &KafkaConfig, cluster: &str, dir: &Path) -> Puller {
    let store = PullStore::open(dir).unwrap();
    let producer = EventProducer::new(kafka, &ProducerSettings::default(), None).unwrap();
    Puller::new(
        store,
        Arc::new(producer),
        kafka.clone(),
        cluster.to_owned(),
        Arc::new(chrono::Utc::now),
        settings(),
    )
}

/// A simulator, the embedded Kafka, a puller on a store in a temp dir and a stream of the
/// simulator's D16 at `limit` rows a page: what most tests start from.
pub struct Setup {
    pub sim: Simulator,
    pub running: RunningSim,
    pub kafka: EmbeddedKafka,
    pub dir: tempfile::TempDir,
    pub puller: Puller,
    pub stream: Stream,
}

pub async fn setup(config: &SimConfig, limit: u32) -> Setup {
    let (sim, running) = serve(config.clone()).await;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), dir.path());
    let stream = stream(client_config(&running, config), limit);
    Setup {
        sim,
        running,
        kafka,
        dir,
        puller,
        stream,
    }
}

/// Every message of `topic`, up to the partitions' ends as they are now.
pub async fn topic(kafka: &KafkaConfig, topic: &str) -> Vec<ReceivedEvent> {
    let consumer = EventConsumer::new(kafka, "test-reader", topic, None).unwrap();
    let partitions = consumer.partitions(Duration::from_secs(5)).unwrap();
    let mut ends = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer.watermarks(*p, Duration::from_secs(5)).unwrap();
        if high > low {
            ends.insert(*p, high - 1);
        }
    }
    let start: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    consumer.assign(&start).unwrap();
    let mut out = Vec::new();
    while !ends.is_empty() {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.recv_batch(5000))
            .await
            .expect("the topic's messages arrive")
            .unwrap();
        for message in batch {
            if ends
                .get(&message.partition)
                .is_some_and(|last| message.offset >= *last)
            {
                ends.remove(&message.partition);
            }
            out.push(message);
        }
    }
    out
}

/// The deals on the deals topic, in topic order per partition, with their envelopes' aggregate
/// ids and versions.
pub async fn deals(kafka: &KafkaConfig) -> Vec<(String, u64, v1::CollectionsDealObserved)> {
    topic(kafka, event_backbone::topics::COLLECTIONS_DEALS.name)
        .await
        .into_iter()
        .map(|m| {
            let envelope = decode_envelope(&m.value).unwrap();
            let deal = v1::CollectionsDealObserved::decode(envelope.payload.as_slice()).unwrap();
            assert_eq!(envelope.aggregate_version, deal.revision);
            assert_eq!(
                m.key,
                format!("{}/{}", envelope.tenant, deal.public_id).into_bytes()
            );
            (envelope.aggregate_id, envelope.aggregate_version, deal)
        })
        .collect()
}

/// The export rejects on the rejects topic.
pub async fn rejects(kafka: &KafkaConfig) -> Vec<v1::ExportRowRejected> {
    topic(kafka, event_backbone::topics::REJECTS.name)
        .await
        .into_iter()
        .map(|m| {
            let envelope = decode_envelope(&m.value).unwrap();
            assert_eq!(envelope.event_type, "ExportRowRejected");
            v1::ExportRowRejected::decode(envelope.payload.as_slice()).unwrap()
        })
        .collect()
}

/// The row key `public_id|created_at` of a deal, as the puller builds it.
pub fn row_key_of(deal: &v1::CollectionsDealObserved) -> String {
    let created = deal.created_at.as_ref().unwrap();
    let at = chrono::DateTime::from_timestamp(created.seconds, created.nanos as u32).unwrap();
    format!(
        "{}|{}",
        deal.public_id,
        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}
