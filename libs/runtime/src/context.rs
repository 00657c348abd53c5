//! The shared settings a service starts from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use event_backbone::consumer::EventConsumer;
use event_backbone::producer::{EventProducer, ProducerSettings};
use event_backbone::{FlowGate, KafkaConfig};
use rdkafka::error::KafkaError;
use recoup_access::Access;
use recoup_keys::record::Record;
use recoup_keys::store::StoreOptions;
use tokio::sync::watch;
use tonic::service::RoutesBuilder;
use tonic_health::server::HealthReporter;

use crate::clock::Clock;

/// The process's link to Kafka, shared by its services.
#[derive(Clone)]
pub struct KafkaLink {
    pub config: KafkaConfig,
    /// Embedded mode: producers wait for room in this budget, the in-process consumers give
    /// it back, so the mock broker never drops what a projection has not read.
    pub gate: Option<Arc<FlowGate>>,
    /// The cluster's id: read models keep their offsets per cluster, the export puller its
    /// read-back marks.
    pub cluster_id: String,
    /// External Kafka: whether the cluster answers the process's probe (see
    /// `event_backbone::reachability`); `None` on the embedded cluster, which always does.
    pub up: Option<watch::Receiver<bool>>,
}

impl KafkaLink {
    /// True on the embedded cluster.
    pub fn embedded(&self) -> bool {
        self.config.embedded
    }

    /// A producer of this process, flow-controlled in embedded mode.
    pub fn producer(&self, settings: &ProducerSettings) -> Result<EventProducer, KafkaError> {
        EventProducer::new(&self.config, settings, self.gate.clone())
    }

    /// A consumer of `topic` in consumer group `group`, giving back flow-control room in
    /// embedded mode.
    pub fn consumer(&self, group: &str, topic: &str) -> Result<EventConsumer, KafkaError> {
        EventConsumer::new(&self.config, group, topic, self.gate.clone())
    }

    /// [`KafkaLink::consumer`] for a consumer whose latency users see
    /// (`EventConsumer::new_eager`).
    pub fn eager_consumer(&self, group: &str, topic: &str) -> Result<EventConsumer, KafkaError> {
        EventConsumer::new_eager(&self.config, group, topic, self.gate.clone())
    }

    /// Embedded mode: waits up to `timeout` until every event produced was received by the
    /// process's consumers; true when that happened. Always false on external Kafka, where
    /// nothing is lost when the process ends.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let Some(gate) = &self.gate else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while gate.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.in_flight() == 0
    }
}

/// What every service is started with.
pub struct Context {
    data_dir: PathBuf,
    pub kafka: KafkaLink,
    pub clock: Clock,
    /// Turns true when the process stops taking work: servers stop accepting, loops end at
    /// their next boundary.
    pub shutdown: watch::Receiver<bool>,
    /// Turns true when the grace period after `shutdown` ran out: work still in flight (an
    /// import, an upload being received) stops at once, keeping what was acknowledged.
    pub cancel: watch::Receiver<bool>,
    /// The process's `grpc.health.v1` statuses; each service sets its own.
    pub health: HealthReporter,
    /// Who may call the services' APIs; [`Access::Open`] unless set.
    pub access: Access,
    /// How the services open their databases: the page cache, compression.
    pub store: StoreOptions,
    /// The system of record of each stream a service of this process keeps.
    pub records: Records,
    routes: Mutex<RoutesBuilder>,
}

impl Context {
    pub fn new(
        data_dir: &Path,
        kafka: KafkaLink,
        clock: Clock,
        shutdown: watch::Receiver<bool>,
        cancel: watch::Receiver<bool>,
        health: HealthReporter,
    ) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            kafka,
            clock,
            shutdown,
            cancel,
            health,
            access: Access::Open,
            store: StoreOptions::default(),
            records: Records::default(),
            routes: Mutex::new(RoutesBuilder::default()),
        }
    }

    /// The directory a service keeps its files in: `{data_dir}/{service}`.
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.data_dir.join(service)
    }

    /// The gRPC services of the process's server: a service adds its own
    /// (`ctx.grpc().add_service(...)`).
    pub fn grpc(&self) -> MutexGuard<'_, RoutesBuilder> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The gRPC services added so far, for the process's server.
    pub fn take_routes(&self) -> RoutesBuilder {
        std::mem::take(&mut *self.routes.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The records of the streams this process's services publish, by topic: a service that keeps
/// the events it published registers them, a read model rebuilt reads them.
#[derive(Clone, Default)]
pub struct Records {
    by_topic: Arc<Mutex<HashMap<String, Arc<dyn Record>>>>,
}

impl Records {
    /// `record` is the system of record of `topic` in this process.
    pub fn register(&self, topic: &str, record: Arc<dyn Record>) {
        self.lock().insert(topic.to_owned(), record);
    }

    /// The record of `topic`, when a service of this process keeps it.
    pub fn of(&self, topic: &str) -> Option<Arc<dyn Record>> {
        self.lock().get(topic).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<dyn Record>>> {
        self.by_topic.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A service could not start: what it was doing, and why.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub struct StartError {
    doing: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl StartError {
    pub fn new(
        doing: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            doing: doing.into(),
            source: source.into(),
        }
    }
}

/// Names what a service was doing when a step of its start failed.
pub trait Starting<T> {
    fn starting(self, doing: &str) -> Result<T, StartError>;
}

impl<T, E> Starting<T> for Result<T, E>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn starting(self, doing: &str) -> Result<T, StartError> {
        self.map_err(|e| StartError::new(doing, e))
    }
}
