//! Whether the Kafka cluster answers: a probe that asks for metadata at an interval, so that
//! health checks and front ends can tell a broker outage while it lasts.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::KafkaConfig;

/// How often the cluster is asked, and how long an answer may take.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSettings {
    pub every: Duration,
    pub timeout: Duration,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Starts probing `kafka` until `stop` turns true. The receiver says whether the last probe
/// was answered; it starts `true` (the services checked their topics at start). Each probe
/// also sets `recoup_kafka_up`.
pub fn watch_cluster(
    kafka: &KafkaConfig,
    topic: &'static str,
    settings: ProbeSettings,
    mut stop: watch::Receiver<bool>,
) -> Result<(watch::Receiver<bool>, JoinHandle<()>), KafkaError> {
    // A request that times out drops its connection, so that a broker that stopped answering
    // on an open connection is dialled again rather than waited for (60 s by default).
    let client: Arc<BaseConsumer> = Arc::new(
        kafka
            .client_config()
            .set(
                "socket.timeout.ms",
                settings.timeout.as_millis().to_string(),
            )
            .create()?,
    );
    let brokers = kafka.brokers.clone();
    let (tx, rx) = watch::channel(true);
    let task = tokio::spawn(async move {
        loop {
            let probe = client.clone();
            let answered = tokio::task::spawn_blocking(move || {
                probe.fetch_metadata(Some(topic), settings.timeout)
            })
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
            recoup_metrics::metrics().kafka_up.set(i64::from(answered));
            let changed = tx.send_if_modified(|up| {
                let changed = *up != answered;
                *up = answered;
                changed
            });
            if changed && answered {
                tracing::info!(%brokers, "the Kafka cluster answers again");
            } else if changed {
                tracing::warn!(%brokers, "the Kafka cluster does not answer");
            }
            tokio::select! {
                _ = tokio::time::sleep(settings.every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    });
    Ok((rx, task))
}
