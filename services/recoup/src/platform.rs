//! Composition root: starts the services of one process on the embedded or an external Kafka,
//! serves them, and stops them in order. Each service starts itself from the shared
//! [`Context`]; this module only wires them together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use event_backbone::reachability::ProbeSettings;
use export_puller::schedule::StreamOutcome;
use recoup_keys::store::StoreOptions;
use recoup_runtime::{Clock, Context, KafkaLink};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::connections::ConnectionLimits;
use crate::kafka::{self, Connected};
use crate::serve::{self, Addresses, Servers};
pub use crate::services::Services;
use crate::tls::TlsFiles;
use recoup_access::ThrottleSettings;

/// Everything a process needs to start.
#[derive(Clone)]
pub struct PlatformConfig {
    /// Each service keeps its files in a directory of its own below this one.
    pub data_dir: PathBuf,
    /// Where gRPC (and `GET /metrics`) is served; port 0 picks a free one, `None` serves none.
    pub grpc_addr: Option<SocketAddr>,
    /// Where the snapshot importer's HTTP API is served when this process runs the importer.
    pub http_addr: Option<SocketAddr>,
    /// Where `GET /metrics` alone is served (a process without gRPC: the export puller).
    pub metrics_addr: Option<SocketAddr>,
    /// `None` starts the embedded Kafka cluster.
    pub kafka_brokers: Option<String>,
    /// librdkafka properties passed through (SASL, TLS, ...).
    pub kafka_properties: Vec<(String, String)>,
    /// External Kafka: how often it is asked whether it answers (health, imports).
    pub kafka_probe: ProbeSettings,
    pub services: Services,
    /// Who may call the APIs (default: API keys, the first admin key made at first start).
    pub security: Security,
    /// Connections the listeners let in, and how long a silent one may stay.
    pub connections: ConnectionLimits,
    /// How the services open their databases: the page cache, compression.
    pub store: StoreOptions,
    pub clock: Clock,
    /// How long requests in flight may go on after SIGTERM before they are cancelled (an
    /// import keeps what Kafka acknowledged; its client gets UNAVAILABLE / 503 and sends it
    /// again).
    pub shutdown_grace: Duration,
    /// After the grace period: how long shutdown waits, all steps together, for the export
    /// puller to stop and, embedded, for the projection to take what is in flight.
    pub drain_timeout: Duration,
    pub cases: case_lifecycle::service::Settings,
    pub projection: projection::service::Settings,
    pub importer: snapshot_importer::service::Settings,
    /// What the export puller pulls; `None` runs no puller.
    pub pull: Option<export_puller::service::Settings>,
    /// The web console's sessions (served at `/` of the HTTP listener, with the importer).
    pub console_sessions: recoup_console::SessionLimits,
}

impl PlatformConfig {
    /// Defaults of `recoup up`: `./data`, gRPC on `127.0.0.1:50051`, HTTP on `127.0.0.1:8080`,
    /// embedded Kafka, every service with its default settings.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            grpc_addr: Some(SocketAddr::from(([127, 0, 0, 1], 50051))),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            metrics_addr: None,
            kafka_brokers: None,
            kafka_properties: Vec::new(),
            kafka_probe: ProbeSettings::default(),
            services: Services::ALL,
            clock: recoup_runtime::clock::system(),
            security: Security::default(),
            connections: ConnectionLimits::default(),
            store: StoreOptions::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            drain_timeout: Duration::from_secs(5),
            cases: Default::default(),
            projection: Default::default(),
            importer: Default::default(),
            pull: None,
            console_sessions: recoup_console::SessionLimits::default(),
        }
    }
}

/// Who may call a process's APIs, and on which addresses it may serve them.
#[derive(Debug, Clone)]
pub struct Security {
    /// False (`--insecure`): no credentials; a request acts for the tenant it names with
    /// every right. Accepted only when every listener is on a loopback address.
    pub authentication: bool,
    /// When no key exists at all, make an admin key for the default tenant and write it to
    /// `{data_dir}/admin.key`, readable only by its owner (`recoup up`).
    pub first_admin_key: bool,
    /// A proxy or mesh in front of the process terminates TLS, so listeners on non-loopback
    /// addresses may serve plaintext (`--tls-terminated-upstream`).
    pub tls_terminated_upstream: bool,
    /// TLS on the gRPC and HTTP listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls: Option<TlsFiles>,
    /// Bearer tokens (JWT) of an identity provider, besides API keys (`--jwt-jwks`, ...).
    pub tokens: Option<api_keys::jwks::Tokens>,
    /// How a peer that keeps failing to authenticate is slowed down.
    pub throttle: ThrottleSettings,
}

impl Default for Security {
    /// Credentials required, the first admin key made when none exists.
    fn default() -> Self {
        Self {
            authentication: true,
            first_admin_key: true,
            tls_terminated_upstream: false,
            tls: None,
            tokens: None,
            throttle: ThrottleSettings::default(),
        }
    }
}

impl Security {
    /// No credentials at all (`--insecure`; loopback listeners only).
    pub fn insecure() -> Self {
        Self {
            authentication: false,
            first_admin_key: false,
            ..Self::default()
        }
    }
}

/// A started process; [`RunningPlatform::shutdown`] stops it cleanly.
pub struct RunningPlatform {
    /// The bound gRPC address, when gRPC is served.
    pub grpc_addr: Option<SocketAddr>,
    /// The bound HTTP address, when HTTP is served.
    pub http_addr: Option<SocketAddr>,
    /// The bound metrics address, when metrics are served alone.
    pub metrics_addr: Option<SocketAddr>,
    /// The Kafka bootstrap servers in use (the embedded cluster's when embedded).
    pub kafka_bootstrap: String,
    stop: watch::Sender<bool>,
    /// Cancels work still in flight once the grace period is over.
    cancel: watch::Sender<bool>,
    shutdown_grace: Duration,
    servers: Servers,
    kafka: KafkaLink,
    drain_timeout: Duration,
    cases: Option<case_lifecycle::service::Running>,
    projection: Option<projection::service::Running>,
    importer: Option<snapshot_importer::service::Running>,
    puller: Option<export_puller::service::Running>,
    keys: Option<api_keys::service::Running>,
    /// The Kafka probe and the health it drives; they end with the shutdown signal.
    background: Vec<JoinHandle<()>>,
    embedded: Option<event_backbone::EmbeddedKafka>,
}

/// Starts the configured services and serves them; returns once every service is serving.
pub async fn start(config: PlatformConfig) -> anyhow::Result<RunningPlatform> {
    check_listeners(&config)?;
    let tls = config
        .security
        .tls
        .as_ref()
        .map(crate::tls::server_config)
        .transpose()?;
    let (stop, shutdown) = watch::channel(false);
    let (cancel, cancelled) = watch::channel(false);
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let Connected {
        link,
        embedded,
        probe,
    } = kafka::connect(
        config.kafka_brokers.as_deref(),
        &config.kafka_properties,
        config.services,
        topics(&config),
        config.kafka_probe,
        shutdown.clone(),
    )
    .await?;
    tracing::info!(
        brokers = %link.config.brokers,
        embedded = link.embedded(),
        properties = ?link.config.masked_properties(),
        data_dir = %config.data_dir.display(),
        grpc = ?config.grpc_addr,
        http = ?config.http_addr,
        "starting"
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut ctx = Context::new(
        &config.data_dir,
        link.clone(),
        config.clock.clone(),
        shutdown.clone(),
        cancelled,
        health.clone(),
    );
    ctx.store = config.store;
    let keys = start_keys(&mut ctx, &config).await?;
    let services = start_services(&ctx, &config).await?;
    let follow = link.up.clone().map(|up| {
        let brokers = link.config.brokers.clone();
        tokio::spawn(kafka::follow(up, health, config.services, brokers))
    });
    let http = services.2.as_ref().map(|importer| serve::Http {
        router: importer.http_router(),
        console: Some((
            ctx.access.clone(),
            recoup_console::ConsoleConfig {
                secure_cookies: config.security.tls.is_some()
                    || config.security.tls_terminated_upstream,
                sessions: config.console_sessions,
                max_upload_bytes: config.importer.max_upload_bytes,
            },
        )),
    });
    let (at, guard) = serving(&config, tls);
    let servers =
        serve::serve(ctx.take_routes(), health_service, http, at, guard, shutdown).await?;
    let (cases, projection, importer, puller) = services;
    Ok(RunningPlatform {
        grpc_addr: servers.bound.grpc,
        http_addr: servers.bound.http,
        metrics_addr: servers.bound.metrics,
        kafka_bootstrap: link.config.brokers.clone(),
        stop,
        cancel,
        shutdown_grace: config.shutdown_grace,
        servers,
        kafka: link,
        drain_timeout: config.drain_timeout,
        cases,
        projection,
        importer,
        puller,
        keys,
        background: probe.into_iter().chain(follow).collect(),
        embedded,
    })
}

/// Where the listeners serve and what stands in front of them.
fn serving(
    config: &PlatformConfig,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> (Addresses, serve::Guard) {
    let at = Addresses {
        grpc: config.grpc_addr,
        http: config.http_addr,
        metrics: config.metrics_addr,
    };
    let guard = serve::Guard {
        tls,
        throttle: config.security.throttle,
        connections: config.connections,
    };
    (at, guard)
}

/// The topics this process uses: its services', and the access topic when it checks keys.
fn topics(config: &PlatformConfig) -> Vec<event_backbone::TopicSpec> {
    let mut topics = config.services.topics();
    if checks_keys(config) {
        topics.push(event_backbone::topics::ACCESS);
    }
    topics
}

/// True when the process checks credentials: keys on, and requests of its own to serve.
fn checks_keys(config: &PlatformConfig) -> bool {
    config.security.authentication && config.services.serves_requests()
}

/// The listeners this process serves requests on: gRPC, and HTTP with the importer.
fn listeners(config: &PlatformConfig) -> Vec<(&'static str, SocketAddr)> {
    let http = config
        .http_addr
        .filter(|_| config.services.snapshot_importer);
    [("gRPC", config.grpc_addr), ("HTTP", http)]
        .into_iter()
        .filter_map(|(name, addr)| addr.map(|a| (name, a)))
        .collect()
}

/// Refuses what would carry credentials or tenants' data in clear over a network: `--insecure`
/// off loopback, and a plaintext listener off loopback unless TLS is terminated in front. TLS
/// with `--insecure` is refused too: it would encrypt requests nobody checks.
fn check_listeners(config: &PlatformConfig) -> anyhow::Result<()> {
    let security = &config.security;
    if !security.authentication && (security.tls.is_some() || security.tokens.is_some()) {
        bail!(
            "--insecure turns authentication and TLS off: it does not go with --tls-cert or \
             --jwt-jwks"
        );
    }
    for (name, addr) in listeners(config) {
        if addr.ip().is_loopback() {
            continue;
        }
        if !security.authentication {
            bail!(
                "--insecure turns authentication off and is accepted only when every listener \
                 is on a loopback address; {name} is on {addr}"
            );
        }
        if security.tls.is_none() && !security.tls_terminated_upstream {
            bail!(
                "{name} on {addr} is not a loopback address, and credentials and borrowers' data \
                 would cross the network in clear: serve TLS (--tls-cert and --tls-key), or, \
                 when a proxy or service mesh terminates TLS in front of recoup, say so with \
                 --tls-terminated-upstream"
            );
        }
    }
    Ok(())
}

/// API keys, before any service that checks them: the ring every request is checked
/// against, followed from the access topic. Not with `--insecure`, nor in a process that
/// serves no requests of its own (the export puller).
async fn start_keys(
    ctx: &mut Context,
    config: &PlatformConfig,
) -> anyhow::Result<Option<api_keys::service::Running>> {
    if !checks_keys(config) {
        return Ok(None);
    }
    let settings = api_keys::service::Settings {
        first_admin_key: config.security.first_admin_key.then(|| {
            config
                .data_dir
                .join(api_keys::service::FIRST_ADMIN_KEY_FILE)
        }),
        tokens: config.security.tokens.clone(),
        ..Default::default()
    };
    let keys = api_keys::service::start(ctx, settings).await?;
    ctx.access = keys.access();
    Ok(Some(keys))
}

type Started = (
    Option<case_lifecycle::service::Running>,
    Option<projection::service::Running>,
    Option<snapshot_importer::service::Running>,
    Option<export_puller::service::Running>,
);

/// Starts each configured service. Embedded, the broker of the last run died with whatever
/// was in flight: each producing service recovers what the read models lack before it serves.
async fn start_services(ctx: &Context, config: &PlatformConfig) -> anyhow::Result<Started> {
    let on = config.services;
    let projection = match on.projection {
        true => Some(projection::service::start(ctx, config.projection.clone()).await?),
        false => None,
    };
    // What the read models applied: only the embedded mode recovers from it.
    let models = projection.as_ref().filter(|_| ctx.kafka.embedded());
    let cases = match on.case_lifecycle {
        true => Some(case_lifecycle::service::start(ctx, config.cases.clone()).await?),
        false => None,
    };
    if let (Some(cases), Some(models)) = (&cases, models) {
        let read_model = models.cases();
        cases
            .resync(|t, c| read_model.applied_version(t, c))
            .await?;
    }
    let importer = match on.snapshot_importer {
        true => Some(snapshot_importer::service::start(ctx, config.importer.clone()).await?),
        false => None,
    };
    if let (Some(importer), Some(models)) = (&importer, models) {
        let accounts = models.accounts();
        importer.forget_unprojected(|t, a, d| accounts.applied_revision(t, a, d))?;
    }
    let puller = match (on.export_puller, &config.pull) {
        (true, Some(pull)) => {
            let deals = models.map(|m| m.deals());
            let applied = deals
                .as_ref()
                .map(|d| move |t: &str| d.applied_revisions(t));
            let applied = applied
                .as_ref()
                .map(|f| f as &dyn export_puller::recovery::AppliedDeals);
            Some(export_puller::service::start(ctx, pull.clone(), applied).await?)
        }
        _ => {
            export_puller::service::register_record(ctx)?;
            None
        }
    };
    if let Some(projection) = &projection {
        projection.build_pending();
    }
    Ok((cases, projection, importer, puller))
}

/// Default grace period of requests in flight at SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long cancelled requests get to answer before their connections are dropped.
const CANCELLED_ANSWER_TIME: Duration = Duration::from_secs(2);

impl RunningPlatform {
    /// The line printed when every service serves (`grpc=` and `http=` when served).
    pub fn ready_line(&self) -> String {
        let at = |name: &str, addr: Option<SocketAddr>| {
            addr.map(|a| format!(" {name}={a}")).unwrap_or_default()
        };
        format!(
            "recoup ready{}{}{} kafka={}",
            at("grpc", self.grpc_addr),
            at("http", self.http_addr),
            at("metrics", self.metrics_addr),
            self.kafka_bootstrap
        )
    }

    /// The process's API keys (`None` with `--insecure`).
    pub fn keys(&self) -> Option<&Arc<api_keys::Registry>> {
        self.keys.as_ref().map(|k| k.registry())
    }

    pub fn store(&self) -> Option<&case_lifecycle::EventStore> {
        self.cases.as_ref().map(|c| c.store())
    }

    pub fn read_model(&self) -> Option<projection::CaseReadModel> {
        self.projection.as_ref().map(|p| p.cases())
    }

    pub fn accounts(&self) -> Option<projection::AccountReadModel> {
        self.projection.as_ref().map(|p| p.accounts())
    }

    pub fn deals(&self) -> Option<projection::DealReadModel> {
        self.projection.as_ref().map(|p| p.deals())
    }

    pub fn metrics(&self) -> Option<projection::MetricsStage> {
        self.projection.as_ref().map(|p| p.metrics())
    }

    /// The process's Kafka configuration (the embedded cluster's when embedded).
    pub fn kafka_config(&self) -> event_backbone::KafkaConfig {
        self.kafka.config.clone()
    }

    /// The Kafka cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.kafka.cluster_id
    }

    /// The projection's rebuilds.
    pub fn rebuilds(&self) -> Option<&projection::rebuild::Rebuilds> {
        self.projection.as_ref().map(|p| p.rebuilds())
    }

    pub fn importer(&self) -> Option<&snapshot_importer::import::Importer> {
        self.importer.as_ref().map(|i| i.importer())
    }

    pub fn pull_store(&self) -> Option<&export_puller::store::PullStore> {
        self.puller.as_ref().map(|p| p.store())
    }

    /// Waits for the listeners to finish their requests, up to the grace period; then cancels
    /// the work in flight, gives it a moment to answer, and drops what is still connected.
    async fn stop_servers(&mut self) -> anyhow::Result<()> {
        let grace = self.shutdown_grace;
        if let Ok(stopped) = tokio::time::timeout(grace, self.servers.stopped()).await {
            return stopped;
        }
        tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "requests still running after the grace period: cancelling them (an import keeps \
             what Kafka acknowledged; its client may send it again)"
        );
        let _ = self.cancel.send(true);
        match tokio::time::timeout(CANCELLED_ANSWER_TIME, self.servers.stopped()).await {
            Ok(stopped) => stopped,
            Err(_) => {
                tracing::warn!("connections still open after cancelling: closing them");
                self.servers.abort();
                Ok(())
            }
        }
    }

    /// Waits until the export puller pulled every stream once (`recoup pull --once`); at once
    /// when this process pulls nothing.
    pub async fn pulls_finished(&mut self) {
        if let Some(puller) = &mut self.puller {
            puller.finished().await;
        }
    }

    /// Stops accepting requests and lets those in flight finish within the grace period, then
    /// cancels what is left; stops the puller after its pages in flight, drains the outbox,
    /// lets the projection take what is in flight (embedded mode) within the drain timeout,
    /// flushes every store. Returns how each pulled stream's last cycle ended.
    pub async fn shutdown(mut self) -> anyhow::Result<Vec<StreamOutcome>> {
        let _ = self.stop.send(true);
        self.stop_servers().await?;
        for task in self.background.drain(..) {
            task.await?;
        }
        let drained_by = tokio::time::Instant::now() + self.drain_timeout;
        let left = || drained_by.saturating_duration_since(tokio::time::Instant::now());
        let mut outcomes = Vec::new();
        if let Some(puller) = &mut self.puller {
            outcomes = puller.stop(left()).await;
        }
        if let Some(cases) = self.cases.take() {
            cases.shutdown().await?;
        }
        // Embedded: the broker dies with us, so give the projection a moment to take it all.
        let projected = match &self.projection {
            Some(_) => self.kafka.wait_drained(left()).await,
            None => false,
        };
        if let Some(projection) = self.projection.take() {
            projection.shutdown().await?;
        }
        if let Some(importer) = self.importer.take() {
            importer.shutdown(projected).await?;
        }
        if let Some(puller) = self.puller.take() {
            puller.close(projected)?;
        }
        if let Some(keys) = self.keys.take() {
            keys.shutdown().await?;
        }
        // Kafka clients go before the embedded cluster, or librdkafka reports its brokers down.
        drop(self.embedded.take());
        Ok(outcomes)
    }
}
