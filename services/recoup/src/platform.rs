//! Composition root: starts the services of one process against the embedded or an external
//! Kafka, serves them on one gRPC address, and shuts them down in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use case_lifecycle::grpc::CaseCommands;
use case_lifecycle::relay::OutboxRelay;
use case_lifecycle::{EventStore, StoreSettings, timeouts};
use chrono::{DateTime, Utc};
use debt_cases::CollectorConfigurations;
use event_backbone::consumer::EventConsumer;
use event_backbone::flow::{EMBEDDED_BUDGET_BYTES, FlowGate};
use event_backbone::producer::{EventProducer, ProducerSettings};
use event_backbone::topics::PAYGO_SNAPSHOTS;
use event_backbone::topics::{self, DEBT_CASES};
use event_backbone::{EmbeddedKafka, KafkaConfig};
use projection::grpc::Queries;
use projection::{AccountReadModel, ProjectionError, Projector, ReadModel};
use recoup_proto::v1::debt_collection_cases_server::DebtCollectionCasesServer;
use recoup_proto::v1::query_server::QueryServer;
use recoup_proto::v1::snapshot_imports_server::SnapshotImportsServer;
use snapshot_importer::grpc::ImportService;
use snapshot_importer::import::{ImportSettings, Importer};
use snapshot_importer::store::ImportStore;
use snapshot_importer::upload::DEFAULT_MAX_UPLOAD_BYTES;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The clock every decision reads; tests pass their own.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub case_lifecycle: bool,
    pub projection: bool,
    pub snapshot_importer: bool,
}

impl Services {
    /// Every service (`recoup up`).
    pub const ALL: Services = Services {
        case_lifecycle: true,
        projection: true,
        snapshot_importer: true,
    };
    /// No service; set the ones wanted.
    pub const NONE: Services = Services {
        case_lifecycle: false,
        projection: false,
        snapshot_importer: false,
    };
}

/// Everything a process needs to start.
#[derive(Clone)]
pub struct PlatformConfig {
    /// Each service keeps its files in a directory of its own below this one.
    pub data_dir: PathBuf,
    /// Where gRPC is served; port 0 picks a free one.
    pub grpc_addr: SocketAddr,
    /// `None` starts the embedded Kafka cluster.
    pub kafka_brokers: Option<String>,
    /// librdkafka properties passed through (SASL, TLS, ...).
    pub kafka_properties: Vec<(String, String)>,
    pub collectors: CollectorConfigurations,
    /// How often processing timeouts are checked.
    pub timeout_check_interval: Duration,
    pub services: Services,
    /// False keeps the outbox relay stopped (used to prove the outbox survives a crash).
    pub relay_enabled: bool,
    /// Largest file the snapshot importer takes in one upload.
    pub max_upload_bytes: u64,
    pub clock: Clock,
}

impl PlatformConfig {
    /// Defaults of `recoup up`: `./data`, `127.0.0.1:50051`, embedded Kafka, every service.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            kafka_brokers: None,
            kafka_properties: Vec::new(),
            collectors: CollectorConfigurations::default(),
            timeout_check_interval: Duration::from_secs(5),
            services: Services::ALL,
            relay_enabled: true,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            clock: Arc::new(Utc::now),
        }
    }
}

/// A started process; [`RunningPlatform::shutdown`] stops it cleanly.
pub struct RunningPlatform {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The Kafka bootstrap servers in use (the embedded cluster's when embedded).
    pub kafka_bootstrap: String,
    shutdown: watch::Sender<bool>,
    /// Stops the projection, which runs until the relay has drained.
    stop_projection: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    relay: Option<JoinHandle<()>>,
    timeouts: Option<JoinHandle<()>>,
    projectors: Vec<JoinHandle<Result<(), ProjectionError>>>,
    store: Option<EventStore>,
    gate: Option<Arc<FlowGate>>,
    read_model: Option<ReadModel>,
    accounts: Option<AccountReadModel>,
    importer: Option<Importer>,
    embedded: Option<EmbeddedKafka>,
}

impl RunningPlatform {
    /// The line printed when every service serves.
    pub fn ready_line(&self) -> String {
        format!(
            "recoup ready grpc={} kafka={}",
            self.grpc_addr, self.kafka_bootstrap
        )
    }

    /// The event store, when this process runs case-lifecycle.
    pub fn store(&self) -> Option<&EventStore> {
        self.store.as_ref()
    }

    /// The read model, when this process runs the projection.
    pub fn read_model(&self) -> Option<&ReadModel> {
        self.read_model.as_ref()
    }

    /// The account read models, when this process runs the projection.
    pub fn accounts(&self) -> Option<&AccountReadModel> {
        self.accounts.as_ref()
    }

    /// The snapshot importer, when this process runs it.
    pub fn importer(&self) -> Option<&Importer> {
        self.importer.as_ref()
    }

    /// Stops accepting requests, drains the outbox, lets the projection catch up (embedded mode),
    /// flushes everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await??;
        if let Some(t) = self.timeouts.take() {
            t.await?;
        }
        // The relay drains the outbox after it saw the signal.
        if let Some(r) = self.relay.take() {
            r.await?;
        }
        if let (Some(gate), false) = (&self.gate, self.projectors.is_empty()) {
            // Embedded: the broker dies with us, so give the projection a moment to take it all.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while gate.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.stop_projection.send(true);
        for p in self.projectors.drain(..) {
            // A projector exits at the next batch boundary once the signal is seen.
            p.await??;
        }
        if let Some(store) = &self.store {
            store.flush()?;
        }
        if let Some(importer) = &self.importer {
            importer.store().flush().await?;
        }
        drop(self.embedded.take());
        Ok(())
    }
}

/// Starts the configured services and serves gRPC; returns once every service is serving.
pub async fn start(config: PlatformConfig) -> anyhow::Result<RunningPlatform> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stop_projection_tx, stop_projection_rx) = watch::channel(false);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;

    let (kafka, embedded, gate, cluster_id) = match &config.kafka_brokers {
        None => {
            let embedded = EmbeddedKafka::start(topics::ALL).context("embedded Kafka")?;
            if config.services != Services::ALL {
                bail!(
                    "the embedded Kafka lives inside one process: run every service together \
                     (recoup up) or pass --kafka-brokers"
                );
            }
            let gate = Arc::new(FlowGate::new(EMBEDDED_BUDGET_BYTES));
            let kafka = embedded.kafka_config();
            let cluster = embedded.cluster_id().to_owned();
            (kafka, Some(embedded), Some(gate), Some(cluster))
        }
        Some(brokers) => {
            let mut kafka = KafkaConfig::external(brokers.clone());
            kafka.properties = config.kafka_properties.clone();
            (kafka, None, None, None)
        }
    };
    tracing::info!(
        brokers = %kafka.brokers,
        embedded = kafka.embedded,
        properties = ?kafka.masked_properties(),
        data_dir = %config.data_dir.display(),
        "starting"
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(health_service);
    // Clients in the field speak both reflection versions.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(recoup_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes.add_service(reflection().build_v1()?);
    routes.add_service(reflection().build_v1alpha()?);

    let mut store = None;
    let mut relay = None;
    let mut timeouts_task = None;
    if config.services.case_lifecycle {
        let s = EventStore::open(
            &config.data_dir.join("case-lifecycle"),
            StoreSettings {
                collectors: config.collectors.clone(),
            },
            config.clock.clone(),
        )
        .context("opening the case event store")?;
        if config.relay_enabled {
            let producer = EventProducer::new(&kafka, &ProducerSettings::default(), gate.clone())
                .context("kafka producer")?;
            let r = OutboxRelay::new(s.clone(), Arc::new(producer));
            relay = Some(tokio::spawn(
                r.run(shutdown_rx.clone(), Duration::from_secs(30)),
            ));
        }
        timeouts_task = Some(tokio::spawn(timeouts::run(
            s.clone(),
            config.clock.clone(),
            config.timeout_check_interval,
            shutdown_rx.clone(),
        )));
        routes.add_service(CaseCommands::new(s.clone()).into_server());
        health
            .set_serving::<DebtCollectionCasesServer<CaseCommands>>()
            .await;
        store = Some(s);
    }

    let mut importer = None;
    if config.services.snapshot_importer {
        let dir = config.data_dir.join("snapshot-importer");
        let import_store =
            ImportStore::open(&dir).context("opening the snapshot importer store")?;
        let spool_dir = dir.join("uploads");
        // Uploads of a process that died are of no use: their senders got no answer.
        let _ = std::fs::remove_dir_all(&spool_dir);
        let producer = EventProducer::new(
            &kafka,
            &ProducerSettings {
                // Imports are batches: a little more lingering fills Kafka batches better.
                linger: Duration::from_millis(5),
                ..ProducerSettings::default()
            },
            gate.clone(),
        )
        .context("kafka producer")?;
        let i = Importer::new(
            import_store,
            Arc::new(producer),
            config.clock.clone(),
            ImportSettings::default(),
        );
        routes.add_service(
            ImportService::new(i.clone(), spool_dir, config.max_upload_bytes).into_server(),
        );
        health
            .set_serving::<SnapshotImportsServer<ImportService>>()
            .await;
        importer = Some(i);
    }

    let mut read_model = None;
    let mut accounts = None;
    let mut projectors = Vec::new();
    if config.services.projection {
        let rm = ReadModel::open(&config.data_dir.join("projection"))
            .context("opening the projection read model")?;
        let consumer =
            EventConsumer::new(&kafka, "recoup-projection", DEBT_CASES.name, gate.clone())
                .context("kafka consumer")?;
        let cluster = match &cluster_id {
            Some(c) => c.clone(),
            None => consumer
                .cluster_id(Duration::from_secs(10))
                .context("the Kafka cluster did not tell its id")?,
        };
        if let Some(s) = &store
            && embedded.is_some()
        {
            // The embedded broker lost whatever was in flight when the last run ended: send
            // again every event the read model has not applied.
            let requeued = resync(s, &rm).await?;
            if requeued > 0 {
                tracing::info!(events = requeued, "re-queued events the read model missed");
            }
        }
        let account_model = AccountReadModel::open(&rm)?;
        let account_consumer = EventConsumer::new(
            &kafka,
            "recoup-projection-accounts",
            PAYGO_SNAPSHOTS.name,
            gate.clone(),
        )
        .context("kafka consumer")?;
        let cases = Projector::start(rm.clone(), consumer, cluster.clone(), DEBT_CASES.name)?;
        let snapshots = Projector::start(
            account_model.clone(),
            account_consumer,
            cluster,
            PAYGO_SNAPSHOTS.name,
        )?;
        let reporter = health.clone();
        let stop = stop_projection_rx.clone();
        projectors.push(tokio::spawn(async move {
            let result = cases.run(stop).await;
            if let Err(error) = &result {
                // The read model stops moving: say so to health checks, not only in the log.
                tracing::error!(%error, "case projection stopped");
                reporter.set_not_serving::<QueryServer<Queries>>().await;
            }
            result
        }));
        let reporter = health.clone();
        projectors.push(tokio::spawn(async move {
            let result = snapshots.run(stop_projection_rx).await;
            if let Err(error) = &result {
                tracing::error!(%error, "account projection stopped");
                reporter.set_not_serving::<QueryServer<Queries>>().await;
            }
            result
        }));
        routes.add_service(Queries::new(rm.clone(), account_model.clone()).into_server());
        health.set_serving::<QueryServer<Queries>>().await;
        read_model = Some(rm);
        accounts = Some(account_model);
    }

    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let mut server_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY small replies wait for delayed ACKs (~40 ms each).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = server_shutdown.wait_for(|stop| *stop).await;
                },
            ),
    );
    Ok(RunningPlatform {
        grpc_addr,
        kafka_bootstrap: kafka.brokers.clone(),
        shutdown: shutdown_tx,
        stop_projection: stop_projection_tx,
        server,
        relay,
        timeouts: timeouts_task,
        projectors,
        store,
        gate,
        read_model,
        accounts,
        importer,
        embedded,
    })
}

/// Re-queues every stored event the read model has not applied; returns how many.
async fn resync(store: &EventStore, read_model: &ReadModel) -> anyhow::Result<usize> {
    let mut requeued = 0;
    for head in store.heads() {
        let (tenant, case_id, version) = head?;
        let applied = read_model.applied_version(&tenant, &case_id)?;
        if applied < version {
            requeued += store.republish_after(&tenant, &case_id, applied).await?;
        }
    }
    Ok(requeued)
}
