//! Composition root: starts the services of one process against the embedded or an external
//! Kafka, serves them on one gRPC address (and the snapshot importer's HTTP API on another), and
//! shuts them down in order.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use case_lifecycle::grpc::CaseCommands;
use case_lifecycle::relay::OutboxRelay;
use case_lifecycle::{EventStore, StoreSettings, timeouts};
use chrono::{DateTime, Utc};
use debt_cases::CollectorConfigurations;
use event_backbone::consumer::EventConsumer;
use event_backbone::flow::{EMBEDDED_BUDGET_BYTES, FlowGate};
use event_backbone::producer::{EventProducer, ProducerSettings};
use event_backbone::reachability::ProbeSettings;
use event_backbone::topics::{self, COLLECTIONS_DEALS, DEBT_CASES, PAYGO_SNAPSHOTS};
use event_backbone::{EmbeddedKafka, KafkaConfig};
use export_puller::client::ExportClient;
use export_puller::pull::{PullSettings, Puller, Stream};
use export_puller::schedule::{self, Mode, StreamOutcome};
use export_puller::sources::Sources;
use export_puller::store::{PullStore, StreamId};
use projection::deals::DealReadModel;
use projection::grpc::Queries;
use projection::{AccountReadModel, CaseReadModel, ProjectionError, Projector};
use recoup_proto::v1::debt_collection_cases_server::DebtCollectionCasesServer;
use recoup_proto::v1::query_server::QueryServer;
use recoup_proto::v1::snapshot_imports_server::SnapshotImportsServer;
use snapshot_importer::grpc::ImportService;
use snapshot_importer::http::HttpApi;
use snapshot_importer::import::{ImportSettings, Importer};
use snapshot_importer::limits::{DEFAULT_REQUESTS_PER_MINUTE, LimiterClock, TenantLimiter};
use snapshot_importer::store::ImportStore;
use snapshot_importer::upload::{DEFAULT_MAX_UPLOAD_BYTES, Uploads};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The projection's consumer group unless configured.
pub const DEFAULT_CONSUMER_GROUP: &str = "recoup-projection";

use recoup_runtime::Clock;

/// Which services this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Services {
    pub case_lifecycle: bool,
    pub projection: bool,
    pub snapshot_importer: bool,
    /// Runs only when sources to pull are configured ([`PlatformConfig::pull`]).
    pub export_puller: bool,
}

impl Services {
    /// Every service (`recoup up`).
    pub const ALL: Services = Services {
        case_lifecycle: true,
        projection: true,
        snapshot_importer: true,
        export_puller: true,
    };
    /// No service; set the ones wanted.
    pub const NONE: Services = Services {
        case_lifecycle: false,
        projection: false,
        snapshot_importer: false,
        export_puller: false,
    };

    /// The topics these services write or read.
    pub fn topics(&self) -> Vec<event_backbone::TopicSpec> {
        let mut needed = Vec::new();
        for topic in topics::ALL {
            let used = match topic.name {
                n if n == DEBT_CASES.name => self.case_lifecycle || self.projection,
                n if n == PAYGO_SNAPSHOTS.name => self.snapshot_importer || self.projection,
                n if n == COLLECTIONS_DEALS.name => self.export_puller || self.projection,
                _ => self.snapshot_importer || self.export_puller,
            };
            if used {
                needed.push(*topic);
            }
        }
        needed
    }
}

/// Everything a process needs to start.
#[derive(Clone)]
pub struct PlatformConfig {
    /// Each service keeps its files in a directory of its own below this one.
    pub data_dir: PathBuf,
    /// Where gRPC is served; port 0 picks a free one.
    pub grpc_addr: SocketAddr,
    /// Where the snapshot importer's HTTP API is served when this process runs the importer;
    /// port 0 picks a free one, `None` serves no HTTP.
    pub http_addr: Option<SocketAddr>,
    /// `None` starts the embedded Kafka cluster.
    pub kafka_brokers: Option<String>,
    /// librdkafka properties passed through (SASL, TLS, ...).
    pub kafka_properties: Vec<(String, String)>,
    /// External Kafka: the consumer group the projection joins (its three read models use
    /// `{group}`, `{group}-accounts` and `{group}-deals`). Processes with the same group share
    /// the partitions.
    pub consumer_group: String,
    pub collectors: CollectorConfigurations,
    /// How often processing timeouts are checked.
    pub timeout_check_interval: Duration,
    pub services: Services,
    /// False keeps the outbox relay stopped (used to prove the outbox survives a crash).
    pub relay_enabled: bool,
    /// False leaves the account projection stopped (used to prove that snapshots lost with the
    /// embedded broker are imported again).
    pub account_projection_enabled: bool,
    /// False leaves the deal projection stopped (used to prove that deals lost with the
    /// embedded broker are pulled again).
    pub deal_projection_enabled: bool,
    /// Embedded mode: how long shutdown waits for the projection to take what is in flight.
    pub drain_timeout: Duration,
    /// Largest file the snapshot importer takes in one upload, in bytes.
    pub max_upload_bytes: u64,
    /// Requests per minute each tenant may make to the snapshot importer, gRPC and HTTP
    /// together (at least 1).
    pub rate_limit_per_minute: u32,
    /// The time the rate limits read (tests stop it).
    pub rate_limit_clock: LimiterClock,
    /// What the export puller pulls, continuously; `None` runs no puller.
    pub pull: Option<Sources>,
    pub pull_settings: PullSettings,
    /// External Kafka: how often it is asked whether it answers (health, imports).
    pub kafka_probe: ProbeSettings,
    pub clock: Clock,
}

impl PlatformConfig {
    /// Defaults of `recoup up`: `./data`, gRPC on `127.0.0.1:50051`, HTTP on `127.0.0.1:8080`,
    /// embedded Kafka, every service, 300 import requests per minute and tenant.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            kafka_brokers: None,
            kafka_properties: Vec::new(),
            consumer_group: DEFAULT_CONSUMER_GROUP.to_owned(),
            collectors: CollectorConfigurations::default(),
            timeout_check_interval: Duration::from_secs(5),
            services: Services::ALL,
            relay_enabled: true,
            account_projection_enabled: true,
            deal_projection_enabled: true,
            drain_timeout: Duration::from_secs(10),
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            rate_limit_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            rate_limit_clock: LimiterClock::real(),
            pull: None,
            pull_settings: PullSettings::default(),
            kafka_probe: ProbeSettings::default(),
            clock: Arc::new(Utc::now),
        }
    }
}

/// A started process; [`RunningPlatform::shutdown`] stops it cleanly.
pub struct RunningPlatform {
    /// The bound gRPC address.
    pub grpc_addr: SocketAddr,
    /// The bound HTTP address, when HTTP is served.
    pub http_addr: Option<SocketAddr>,
    /// The Kafka bootstrap servers in use (the embedded cluster's when embedded).
    pub kafka_bootstrap: String,
    shutdown: watch::Sender<bool>,
    /// Stops the projection, which runs until the relay has drained.
    stop_projection: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    http_server: Option<JoinHandle<std::io::Result<()>>>,
    relay: Option<JoinHandle<()>>,
    timeouts: Option<JoinHandle<()>>,
    projectors: Vec<JoinHandle<Result<(), ProjectionError>>>,
    drain_timeout: Duration,
    store: Option<EventStore>,
    gate: Option<Arc<FlowGate>>,
    read_model: Option<CaseReadModel>,
    accounts: Option<AccountReadModel>,
    deals: Option<DealReadModel>,
    importer: Option<Importer>,
    puller: Option<(Arc<Puller>, JoinHandle<Vec<StreamOutcome>>)>,
    /// The Kafka probe and the health it drives; they end with the shutdown signal.
    background: Vec<JoinHandle<()>>,
    /// The event store as the outbox-depth gauge reads it; emptied at shutdown.
    outbox_gauge: Option<Arc<std::sync::Mutex<Option<EventStore>>>>,
    embedded: Option<EmbeddedKafka>,
}

impl RunningPlatform {
    /// The line printed when every service serves (`http=` only when HTTP is served).
    pub fn ready_line(&self) -> String {
        let http = self
            .http_addr
            .map(|addr| format!(" http={addr}"))
            .unwrap_or_default();
        format!(
            "recoup ready grpc={}{http} kafka={}",
            self.grpc_addr, self.kafka_bootstrap
        )
    }

    /// The event store, when this process runs case-lifecycle.
    pub fn store(&self) -> Option<&EventStore> {
        self.store.as_ref()
    }

    /// The read model, when this process runs the projection.
    pub fn read_model(&self) -> Option<&CaseReadModel> {
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

    /// The collections deals read models, when this process runs the projection.
    pub fn deals(&self) -> Option<&DealReadModel> {
        self.deals.as_ref()
    }

    /// The export puller's store, when this process pulls.
    pub fn pull_store(&self) -> Option<&PullStore> {
        self.puller.as_ref().map(|(p, _)| p.store())
    }

    /// Stops accepting requests, drains the outbox, lets the projection catch up (embedded mode),
    /// flushes everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        // Both servers finish the requests they are answering, then stop.
        let grpc = self.server.await;
        if let Some(http) = self.http_server.take() {
            http.await?.context("HTTP server")?;
        }
        grpc??;
        if let Some(t) = self.timeouts.take() {
            t.await?;
        }
        for task in self.background.drain(..) {
            // The health follower ends when the probe drops its sender.
            task.await?;
        }
        // Pulls stop after the page in flight (committed once acknowledged); a pull stuck on
        // a broker that takes nothing is abandoned (its page is fetched again next time).
        let puller = match self.puller.take() {
            Some((puller, mut task)) => {
                if tokio::time::timeout(self.drain_timeout, &mut task)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "the export puller did not stop in time; its pages in flight are pulled again next time"
                    );
                    task.abort();
                }
                Some(puller)
            }
            None => None,
        };
        // The relay drains the outbox after it saw the signal.
        if let Some(r) = self.relay.take() {
            r.await?;
        }
        let mut drained = false;
        if let (Some(gate), false) = (&self.gate, self.projectors.is_empty()) {
            // Embedded: the broker dies with us, so give the projection a moment to take it all.
            let deadline = tokio::time::Instant::now() + self.drain_timeout;
            while gate.in_flight() > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            drained = gate.in_flight() == 0;
        }
        let _ = self.stop_projection.send(true);
        for p in self.projectors.drain(..) {
            // A projector exits at the next batch boundary once the signal is seen.
            p.await??;
        }
        if let Some(gauge) = self.outbox_gauge.take() {
            gauge
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
        if let Some(store) = self.store.take() {
            store.flush()?;
            // Every other handle is gone with the tasks above; wait for the writer thread to let
            // go of the files, so that a restart finds them unlocked.
            if !store.close(Duration::from_secs(10)) {
                tracing::warn!("the event store's writer did not end within 10 s");
            }
        }
        if let Some(importer) = &self.importer {
            importer.store().flush().await?;
            if drained {
                // Every snapshot the importer remembers reached the read models.
                importer.store().mark_clean()?;
            }
        }
        if let Some(puller) = &puller {
            puller.store().flush()?;
            if drained {
                // Every deal the puller remembers reached the read models.
                puller.store().mark_clean()?;
            }
        }
        drop(puller);
        // Kafka clients go before the embedded cluster, or librdkafka reports its brokers down.
        drop(self.importer.take());
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
            // In process, the embedded cluster is always there.
            recoup_metrics::metrics().kafka_up.set(1);
            (kafka, Some(embedded), Some(gate), Some(cluster))
        }
        Some(brokers) => {
            let mut kafka = KafkaConfig::external(brokers.clone());
            kafka.properties = config.kafka_properties.clone();
            require_topics(&kafka, config.services).await?;
            (kafka, None, None, None)
        }
    };
    tracing::info!(
        brokers = %kafka.brokers,
        embedded = kafka.embedded,
        properties = ?kafka.masked_properties(),
        data_dir = %config.data_dir.display(),
        http = ?config.http_addr,
        rate_limit_per_minute = config.rate_limit_per_minute,
        "starting"
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    // External Kafka can go away and come back: health says so while it lasts.
    let mut kafka_up = None;
    let mut probe = None;
    if embedded.is_none()
        && let Some(topic) = config.services.topics().first()
    {
        let (up, task) = event_backbone::reachability::watch_cluster(
            &kafka,
            topic.name,
            config.kafka_probe,
            shutdown_rx.clone(),
        )
        .context("kafka client")?;
        kafka_up = Some(up);
        probe = Some(task);
    }
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
    let mut outbox_gauge = None;
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
        // The gauge reads the store at scrape time, until shutdown lets go of it (the files
        // must be unlocked for a restart in the same process).
        let depth = Arc::new(std::sync::Mutex::new(Some(s.clone())));
        let reader = depth.clone();
        recoup_metrics::before_render(move || {
            let store = reader
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(store) = store.as_ref() {
                recoup_metrics::metrics()
                    .outbox_depth
                    .set(store.outbox_len() as i64);
            }
        });
        outbox_gauge = Some(depth);
        routes.add_service(CaseCommands::new(s.clone()).into_server());
        health
            .set_serving::<DebtCollectionCasesServer<CaseCommands>>()
            .await;
        store = Some(s);
    }

    let mut importer = None;
    let mut http_api = None;
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
        let mut i = Importer::new(
            import_store,
            Arc::new(producer),
            config.clock.clone(),
            ImportSettings::default(),
        );
        if let Some(up) = &kafka_up {
            i = i.with_reachability(up.clone());
        }
        let per_minute = NonZeroU32::new(config.rate_limit_per_minute)
            .context("the rate limit must allow at least 1 request per minute")?;
        // One budget per tenant, whether it speaks gRPC or HTTP.
        let limiter = TenantLimiter::with_clock(per_minute, config.rate_limit_clock.clone());
        let uploads = Uploads::new(i.clone(), spool_dir, config.max_upload_bytes);
        routes.add_service(ImportService::new(uploads.clone(), limiter.clone()).into_server());
        http_api = Some(HttpApi::new(uploads, limiter));
        health
            .set_serving::<SnapshotImportsServer<ImportService>>()
            .await;
        importer = Some(i);
    }

    let mut read_model = None;
    let mut accounts = None;
    let mut deals = None;
    let mut projectors = Vec::new();
    if config.services.projection {
        let rm = CaseReadModel::open(&config.data_dir.join("projection"))
            .context("opening the projection read model")?;
        let group = &config.consumer_group;
        let consumer = EventConsumer::new(&kafka, group, DEBT_CASES.name, gate.clone())
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
        if let Some(i) = &importer
            && embedded.is_some()
        {
            forget_unprojected(i.store(), &account_model)?;
        }
        let account_consumer = EventConsumer::new(
            &kafka,
            &format!("{group}-accounts"),
            PAYGO_SNAPSHOTS.name,
            gate.clone(),
        )
        .context("kafka consumer")?;
        let deal_model = DealReadModel::open(&rm)?;
        let deal_consumer = EventConsumer::new(
            &kafka,
            &format!("{group}-deals"),
            COLLECTIONS_DEALS.name,
            gate.clone(),
        )
        .context("kafka consumer")?;
        // Embedded: one process reads every partition. External: the consumer group shares
        // them among the projection processes.
        let (cases, snapshots, deal_projector) = if embedded.is_some() {
            (
                Projector::start(rm.clone(), consumer, cluster.clone(), DEBT_CASES.name)?,
                Projector::start(
                    account_model.clone(),
                    account_consumer,
                    cluster.clone(),
                    PAYGO_SNAPSHOTS.name,
                )?,
                Projector::start(
                    deal_model.clone(),
                    deal_consumer,
                    cluster,
                    COLLECTIONS_DEALS.name,
                )?,
            )
        } else {
            (
                Projector::start_in_group(rm.clone(), consumer, cluster.clone(), DEBT_CASES.name)?,
                Projector::start_in_group(
                    account_model.clone(),
                    account_consumer,
                    cluster.clone(),
                    PAYGO_SNAPSHOTS.name,
                )?,
                Projector::start_in_group(
                    deal_model.clone(),
                    deal_consumer,
                    cluster,
                    COLLECTIONS_DEALS.name,
                )?,
            )
        };
        projectors.push(spawn_projection(
            "case",
            cases,
            stop_projection_rx.clone(),
            health.clone(),
        ));
        if config.account_projection_enabled {
            projectors.push(spawn_projection(
                "account",
                snapshots,
                stop_projection_rx.clone(),
                health.clone(),
            ));
        }
        if config.deal_projection_enabled {
            projectors.push(spawn_projection(
                "deal",
                deal_projector,
                stop_projection_rx.clone(),
                health.clone(),
            ));
        }
        let queries = Queries::new(rm.clone(), account_model.clone())
            .with_deals(deal_model.clone(), config.clock.clone())
            // Do-not-contact watchers end with the server, rather than holding it open.
            .with_shutdown(shutdown_rx.clone());
        routes.add_service(queries.into_server());
        health.set_serving::<QueryServer<Queries>>().await;
        read_model = Some(rm);
        accounts = Some(account_model);
        deals = Some(deal_model);
    }

    let mut puller = None;
    if let (true, Some(sources)) = (config.services.export_puller, &config.pull) {
        let pull_store = PullStore::open(&config.data_dir.join("export-puller"))
            .context("opening the export puller's store")?;
        if let (Some(deals), true) = (&deals, embedded.is_some()) {
            rewind_unprojected(&pull_store, deals)?;
        }
        let cluster = match &cluster_id {
            Some(c) => c.clone(),
            None => cluster_id_of(&kafka).await?,
        };
        let producer = EventProducer::new(
            &kafka,
            &ProducerSettings {
                linger: Duration::from_millis(5),
                ..ProducerSettings::default()
            },
            gate.clone(),
        )
        .context("kafka producer")?;
        let p = Arc::new(Puller::new(
            pull_store,
            Arc::new(producer),
            kafka.clone(),
            cluster,
            config.clock.clone(),
            config.pull_settings.clone(),
        ));
        let streams = streams(sources)?;
        tracing::info!(
            streams = ?streams.iter().map(Stream::id).map(|id| id.to_string()).collect::<Vec<_>>(),
            poll_interval = ?sources.poll_interval,
            "export puller started"
        );
        let task = tokio::spawn(schedule::run(
            p.clone(),
            streams,
            Mode::Every(sources.poll_interval),
            sources.max_concurrent,
            shutdown_rx.clone(),
        ));
        puller = Some((p, task));
    }

    let health_task = kafka_up.map(|up| {
        tokio::spawn(follow_kafka(
            up,
            health.clone(),
            config.services,
            kafka.brokers.clone(),
        ))
    });

    let listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.grpc_addr))?;
    let grpc_addr = listener.local_addr()?;
    let http_listener = match (http_api.is_some(), config.http_addr) {
        (true, Some(addr)) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (HTTP)"))?,
        ),
        _ => None,
    };
    let http_addr = http_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let mut server_shutdown = shutdown_rx.clone();
    // Prometheus scrapes `GET /metrics` over HTTP/1.1 on the gRPC address.
    let router = routes
        .routes()
        .into_axum_router()
        .layer(axum::middleware::from_fn(crate::metrics::time_grpc))
        .route("/metrics", axum::routing::get(crate::metrics::serve));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(router))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY small replies wait for delayed ACKs (~40 ms each).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = server_shutdown.wait_for(|stop| *stop).await;
                },
            ),
    );
    let http_server = match (http_listener, http_api) {
        (Some(listener), Some(api)) => {
            let mut http_shutdown = shutdown_rx.clone();
            let listener = listener.tap_io(|tcp| {
                // As for gRPC: small answers should not wait for delayed ACKs.
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(listener, api.router()).with_graceful_shutdown(async move {
                let _ = http_shutdown.wait_for(|stop| *stop).await;
            });
            Some(tokio::spawn(serve.into_future()))
        }
        _ => None,
    };
    Ok(RunningPlatform {
        grpc_addr,
        http_addr,
        kafka_bootstrap: kafka.brokers.clone(),
        shutdown: shutdown_tx,
        stop_projection: stop_projection_tx,
        server,
        http_server,
        relay,
        timeouts: timeouts_task,
        projectors,
        drain_timeout: config.drain_timeout,
        store,
        gate,
        read_model,
        accounts,
        deals,
        importer,
        puller,
        background: probe.into_iter().chain(health_task).collect(),
        outbox_gauge,
        embedded,
    })
}

/// Turns health to NOT_SERVING for what cannot work while Kafka does not answer, and back:
/// the process as a whole (`""`) and the snapshot importer, which refuses imports meanwhile.
/// Commands stay SERVING (their events wait in the outbox), queries too (they answer from the
/// read models, which stand still).
async fn follow_kafka(
    mut up: watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    services: Services,
    brokers: String,
) {
    loop {
        let answering = *up.borrow_and_update();
        let status = if answering {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        if services.snapshot_importer {
            if answering {
                health
                    .set_serving::<SnapshotImportsServer<ImportService>>()
                    .await;
            } else {
                health
                    .set_not_serving::<SnapshotImportsServer<ImportService>>()
                    .await;
            }
        }
        if !answering {
            let mut held = Vec::new();
            if services.case_lifecycle {
                held.push("commands are kept in the outbox");
            }
            if services.snapshot_importer {
                held.push("imports are refused");
            }
            if services.projection {
                held.push("the read models stand still");
            }
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

/// Runs a projector until the stop signal; if it fails, the read models stop moving, which
/// health checks hear of (NOT_SERVING), not only the log.
fn spawn_projection<P: projection::Projection>(
    name: &'static str,
    projector: Projector<P>,
    stop: watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
) -> JoinHandle<Result<(), ProjectionError>> {
    tokio::spawn(async move {
        let result = projector.run(stop).await;
        if let Err(error) = &result {
            tracing::error!(%error, projection = name, "projection stopped");
            health.set_not_serving::<QueryServer<Queries>>().await;
        }
        result
    })
}

/// Fails, naming them, when the cluster lacks topics the services use.
pub async fn require_topics(kafka: &KafkaConfig, services: Services) -> anyhow::Result<()> {
    let needed = services.topics();
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        event_backbone::admin::check_topics(&kafka, &needed, Duration::from_secs(10))
    })
    .await??;
    Ok(())
}

/// The id of the cluster `kafka` reaches, asked of the broker.
pub async fn cluster_id_of(kafka: &KafkaConfig) -> anyhow::Result<String> {
    let consumer = EventConsumer::new(kafka, "recoup-export-puller", COLLECTIONS_DEALS.name, None)
        .context("kafka consumer")?;
    tokio::task::spawn_blocking(move || consumer.cluster_id(Duration::from_secs(10)))
        .await?
        .context("the Kafka cluster did not tell its id")
}

/// The streams of `sources`: one per source and dataset, the datasets of a source sharing its
/// client (one session, one request budget per lender).
pub fn streams(sources: &Sources) -> anyhow::Result<Vec<Stream>> {
    let mut streams = Vec::new();
    for source in &sources.sources {
        let client = Arc::new(
            ExportClient::new(source.client.clone())
                .with_context(|| format!("HTTP client for {}", source.client.host))?,
        );
        for dataset in &source.datasets {
            streams.push(Stream {
                tenant: source.tenant.clone(),
                dataset: dataset.clone(),
                client: client.clone(),
                limit: source.limit,
            });
        }
    }
    Ok(streams)
}

/// Embedded mode after a run that did not end cleanly: deals acknowledged by the dead in-memory
/// broker but never projected are forgotten and their streams' `since` moved back before them,
/// so the next pull fetches and publishes them again. Deals the read model holds at a later
/// revision than the store keep counting from there.
fn rewind_unprojected(store: &PullStore, deals: &DealReadModel) -> anyhow::Result<()> {
    if store.take_clean_mark()? {
        return Ok(());
    }
    let streams: Vec<StreamId> = store.streams().collect::<Result<_, _>>()?;
    for stream in streams {
        if stream.dataset != export_puller::dataset::d16().path() {
            continue;
        }
        let mut forget = Vec::new();
        let mut raise = Vec::new();
        // Deals the read model lacks, or has at an older revision than the store.
        let mut lost = 0usize;
        let mut earliest_lost: Option<DateTime<Utc>> = None;
        for (row_key, fingerprint) in store.fingerprints(&stream)? {
            let Some((public_id, created_at)) = row_key
                .rsplit_once('|')
                .and_then(|(id, at)| Some((id, DateTime::parse_from_rfc3339(at).ok()?)))
            else {
                continue;
            };
            let applied = deals.applied_revision(
                &stream.tenant,
                public_id,
                created_at.with_timezone(&Utc),
            )?;
            match applied {
                Some(applied) if applied == fingerprint.revision => {}
                // The read model is ahead: count on from there.
                Some(applied) if applied > fingerprint.revision => raise.push((row_key, applied)),
                _ => {
                    lost += 1;
                    earliest_lost = match (earliest_lost, fingerprint.cursor()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    // Pulled again, counting on from what the read model has: a revision it
                    // already applied would be skipped there.
                    match applied {
                        Some(applied) => raise.push((row_key, applied)),
                        None => forget.push(row_key),
                    }
                }
            }
        }
        // Deals the read model has that the store forgot (a crash took the commit of their
        // page): their next content must count on from the applied revision.
        let known: std::collections::HashSet<u128> = store
            .fingerprints(&stream)?
            .iter()
            .map(|(key, _)| export_puller::store::row_key_hash(key))
            .collect();
        let mut after = None;
        loop {
            let page = deals
                .list_deals(
                    &stream.tenant,
                    &projection::deals::DealFilter::default(),
                    Utc::now().date_naive(),
                    after.as_ref(),
                    1000,
                )
                .map_err(|e| anyhow::anyhow!("listing the deals read model: {e}"))?;
            for deal in &page.deals {
                let Some(created_at) = deal
                    .created_at
                    .as_ref()
                    .and_then(recoup_proto::from_timestamp)
                else {
                    continue;
                };
                let row_key = format!(
                    "{}|{}",
                    deal.public_id,
                    created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                );
                if !known.contains(&export_puller::store::row_key_hash(&row_key)) {
                    raise.push((row_key, deal.revision));
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if lost == 0 && raise.is_empty() {
            continue;
        }
        let since = if lost == 0 {
            store.checkpoint(&stream)?.since
        } else {
            earliest_lost
        };
        store.rewind(&stream, &forget, &raise, since)?;
        tracing::warn!(
            stream = %stream,
            deals = lost,
            since = ?earliest_lost,
            "the last run ended before these deals reached the read models; they are pulled again"
        );
    }
    Ok(())
}

/// Embedded mode after a run that did not end cleanly: snapshots acknowledged by the dead
/// in-memory broker but never projected are forgotten by the importer, with the reports of their
/// imports, so that the same uploads sent again import them (the importer keeps fingerprints,
/// not rows, so it cannot send them itself).
fn forget_unprojected(store: &ImportStore, accounts: &AccountReadModel) -> anyhow::Result<()> {
    if store.take_clean_mark()? {
        return Ok(());
    }
    let mut stale = Vec::new();
    let mut ahead = Vec::new();
    for entry in store.snapshots() {
        let (parts, stored) = entry?;
        match accounts.applied_revision(&parts.tenant, &parts.account_uid, parts.date)? {
            Some(applied) if applied > stored.revision => ahead.push((parts, stored, applied)),
            Some(applied) if applied == stored.revision => {}
            _ => stale.push((parts, stored)),
        }
    }
    if !ahead.is_empty() {
        // The read model got events whose fingerprints the crash took: count on above them.
        store.raise_revisions(&ahead)?;
    }
    if stale.is_empty() {
        return Ok(());
    }
    let imports = store.forget(&stale)?;
    tracing::warn!(
        snapshots = stale.len(),
        imports = ?imports,
        "the last run ended before these imports reached the read models; send the same \
         uploads again to import the missing rows"
    );
    Ok(())
}

/// Re-queues every stored event the read model has not applied; returns how many.
async fn resync(store: &EventStore, read_model: &CaseReadModel) -> anyhow::Result<usize> {
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
