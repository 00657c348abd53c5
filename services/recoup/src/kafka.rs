//! The process's Kafka: the embedded cluster, or an external one checked at start and probed
//! while the process runs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use event_backbone::consumer::EventConsumer;
use event_backbone::flow::{EMBEDDED_BUDGET_BYTES, FlowGate};
use event_backbone::reachability::{ProbeSettings, watch_cluster};
use event_backbone::topics::{self, COLLECTIONS_DEALS};
use event_backbone::{EmbeddedKafka, KafkaConfig, TopicSpec};
use recoup_runtime::KafkaLink;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::services::Services;

/// The link the services use, and what keeps it alive.
pub struct Connected {
    pub link: KafkaLink,
    /// The embedded cluster; it stops when dropped, after every client of it.
    pub embedded: Option<EmbeddedKafka>,
    /// External Kafka: the reachability probe, until shutdown.
    pub probe: Option<JoinHandle<()>>,
}

/// Starts the embedded cluster (`brokers` `None`; only with every service in the process) or
/// checks the external one: every topic the process uses (`topics`) must exist.
pub async fn connect(
    brokers: Option<&str>,
    properties: &[(String, String)],
    services: Services,
    topics: Vec<TopicSpec>,
    probe: ProbeSettings,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Connected> {
    let Some(brokers) = brokers else {
        if services != Services::ALL {
            bail!(
                "the embedded Kafka lives inside one process: run every service together \
                 (recoup up) or pass --kafka-brokers"
            );
        }
        let embedded = EmbeddedKafka::start(topics::ALL).context("embedded Kafka")?;
        // In process, the embedded cluster is always there.
        recoup_metrics::metrics().kafka_up.set(1);
        let link = KafkaLink {
            config: embedded.kafka_config(),
            gate: Some(Arc::new(FlowGate::new(EMBEDDED_BUDGET_BYTES))),
            cluster_id: embedded.cluster_id().to_owned(),
            up: None,
        };
        return Ok(Connected {
            link,
            embedded: Some(embedded),
            probe: None,
        });
    };
    let mut config = KafkaConfig::external(brokers);
    config.properties = properties.to_vec();
    let topic = topics.first().map_or(COLLECTIONS_DEALS.name, |t| t.name);
    require_topics(&config, topics.clone()).await?;
    let cluster_id = cluster_id_of(&config).await?;
    // External Kafka can go away and come back: health says so while it lasts.
    let (up, probe) = watch_cluster(&config, topic, probe, shutdown).context("kafka client")?;
    Ok(Connected {
        link: KafkaLink {
            config,
            gate: None,
            cluster_id,
            up: Some(up),
        },
        embedded: None,
        probe: Some(probe),
    })
}

/// Fails, naming them, when the cluster lacks topics the process uses.
async fn require_topics(kafka: &KafkaConfig, needed: Vec<TopicSpec>) -> anyhow::Result<()> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        event_backbone::admin::check_topics(&kafka, &needed, Duration::from_secs(10))
    })
    .await??;
    Ok(())
}

/// The id of the cluster `kafka` reaches, asked of the broker.
async fn cluster_id_of(kafka: &KafkaConfig) -> anyhow::Result<String> {
    let consumer = EventConsumer::new(kafka, "recoup-cluster-id", COLLECTIONS_DEALS.name, None)
        .context("kafka consumer")?;
    tokio::task::spawn_blocking(move || consumer.cluster_id(Duration::from_secs(10)))
        .await?
        .context("the Kafka cluster did not tell its id")
}

/// The process as a whole (`""`) is NOT_SERVING while Kafka does not answer, and the log says
/// what that holds up. Commands stay SERVING (their events wait in the outbox), queries too
/// (they answer from the read models, which stand still); the importer follows it itself.
pub async fn follow(
    mut up: watch::Receiver<bool>,
    health: HealthReporter,
    services: Services,
    brokers: String,
) {
    loop {
        let answering = *up.borrow_and_update();
        let status = if answering {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        if !answering {
            let held: Vec<&str> = [
                (services.case_lifecycle, "commands are kept in the outbox"),
                (services.snapshot_importer, "imports are refused"),
                (services.projection, "the read models stand still"),
            ]
            .into_iter()
            .filter_map(|(runs, what)| runs.then_some(what))
            .collect();
            tracing::warn!(
                %brokers,
                "Kafka does not answer: {} until it answers again",
                held.join(", ")
            );
        }
        if up.changed().await.is_err() {
            return;
        }
    }
}
