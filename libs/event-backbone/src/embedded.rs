//! The embedded Kafka cluster: librdkafka's mock cluster, run in process when no brokers are
//! configured. Its brokers are real TCP listeners on 127.0.0.1, so kcat and other clients can
//! attach. It keeps data in memory only (about 5 MiB per partition): recoup treats it as a
//! transient pipe and keeps the durable truth in sled.

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use uuid::Uuid;

use crate::config::KafkaConfig;
use crate::topics::TopicSpec;

/// What the cluster's thread is asked to do.
enum Control {
    /// Take the broker down (`true`: it closes its connections and takes no new ones, keeping
    /// its data) or up again.
    BrokerDown(bool, mpsc::Sender<Result<(), KafkaError>>),
}

/// A running embedded cluster; dropping it stops the brokers.
pub struct EmbeddedKafka {
    bootstrap: String,
    cluster_id: String,
    control: Option<mpsc::Sender<Control>>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster with the given topics.
    pub fn start(topics: &[TopicSpec]) -> Result<Self, KafkaError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let (control_tx, control_rx) = mpsc::channel::<Control>();
        let topics = topics.to_vec();
        // MockCluster is !Send: it lives and dies on this thread.
        let thread = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || {
                let cluster = match MockCluster::new(1) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for topic in &topics {
                    if let Err(e) = cluster.create_topic(topic.name, topic.partitions, 1) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                // Runs until the owner is gone.
                while let Ok(control) = control_rx.recv() {
                    match control {
                        Control::BrokerDown(down, done) => {
                            let result = if down {
                                cluster.broker_down(1)
                            } else {
                                cluster.broker_up(1)
                            };
                            let _ = done.send(result);
                        }
                    }
                }
                drop(cluster);
            })
            .map_err(|_| KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail))??;
        Ok(Self {
            bootstrap,
            // The mock broker's own id derives from a heap address and can repeat across runs;
            // a fresh id per start keeps consumer offsets of an old cluster from being reused.
            cluster_id: format!("embedded-{}", Uuid::now_v7()),
            control: Some(control_tx),
            thread: Some(thread),
        })
    }

    /// The `host:port` bootstrap servers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Takes the broker down (`true`) or brings it back (`false`), keeping its data: a broker
    /// outage, for tests.
    pub fn set_broker_down(&self, down: bool) -> Result<(), KafkaError> {
        let failed = || KafkaError::MockCluster(rdkafka::types::RDKafkaErrorCode::Fail);
        let (done_tx, done_rx) = mpsc::channel();
        self.control
            .as_ref()
            .ok_or_else(failed)?
            .send(Control::BrokerDown(down, done_tx))
            .map_err(|_| failed())?;
        done_rx.recv().map_err(|_| failed())?
    }

    /// This run's cluster identity, unique per start.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Connection settings for clients of this cluster.
    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig {
            brokers: self.bootstrap.clone(),
            embedded: true,
            properties: Vec::new(),
        }
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.control.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
