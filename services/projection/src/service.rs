//! The projection as a service of a process: the three read models, a projector per topic
//! (every partition in embedded mode, a consumer-group share on external Kafka), the PAYGo
//! metrics stage with the relay of its outbox, and the query API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use event_backbone::consumer::EventConsumer;
use event_backbone::outbox::{Outbox, OutboxRecord, OutboxRelay};
use event_backbone::producer::ProducerSettings;
use event_backbone::topics::{COLLECTIONS_DEALS, DEBT_CASES, PAYGO_SNAPSHOTS};
use recoup_keys::store::StoreOptions;
use recoup_proto::v1::query_server::QueryServer;
use recoup_runtime::shutdown::join;
use recoup_runtime::{Context, StartError, Starting};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use crate::accounts::AccountReadModel;
use crate::cases::CaseReadModel;
use crate::consumer::{ProjectionError, Projector};
use crate::deals::DealReadModel;
use crate::generations::{Generations, Live, ReadModelName};
use crate::grpc::Queries;
use crate::grpc::read_models::{Lags, ReadModelsApi};
use crate::kernel::{Projection, ReadModelError};
use crate::metrics::MetricsStage;
use crate::rebuild::{Generational, Rebuild, Rebuilder, Rebuilds};

/// The projection's consumer group unless configured.
pub const DEFAULT_CONSUMER_GROUP: &str = "recoup-projection";

/// How the projection runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// External Kafka: the consumer group of the case read model; the account and deal read
    /// models use `{group}-accounts` and `{group}-deals`. Processes with the same group share
    /// the partitions.
    pub consumer_group: String,
    /// False leaves the account projection, and with it the PAYGo metrics stage, stopped (tests
    /// prove with it that snapshots lost with the embedded broker are imported again).
    pub accounts: bool,
    /// False leaves the deal projection stopped (likewise for pulled deals).
    pub deals: bool,
    /// How long the metrics outbox may take to drain at shutdown (the rest is sent at the next
    /// start).
    pub relay_drain_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            consumer_group: DEFAULT_CONSUMER_GROUP.to_owned(),
            accounts: true,
            deals: true,
            relay_drain_timeout: Duration::from_secs(5),
        }
    }
}

/// A started projection.
pub struct Running {
    cases: Live<CaseReadModel>,
    accounts: Live<AccountReadModel>,
    deals: Live<DealReadModel>,
    rebuilds: Rebuilds,
    /// Read models to build once the services that keep the streams' records started.
    to_build: Vec<ReadModelName>,
    embedded: bool,
    records: recoup_runtime::context::Records,
    generations: Generations,
    projectors: Vec<JoinHandle<Result<(), ProjectionError>>>,
    /// Publishes the metrics stage's outbox until the process's shutdown signal, then drains it.
    relay: Option<JoinHandle<()>>,
    /// Stops the projectors, which run on after the process's shutdown signal until what is in
    /// flight was taken.
    stop: watch::Sender<bool>,
}

/// The live generations of the three read models, and the generations' record.
pub struct Opened {
    pub cases: Live<CaseReadModel>,
    pub accounts: Live<AccountReadModel>,
    pub deals: Live<DealReadModel>,
    pub generations: Generations,
    /// Read models to build at start: new ones, and rebuilds a stop interrupted.
    pub to_build: Vec<ReadModelName>,
}

/// Opens the read models in `{data_dir}/projection`, starts their projectors and serves
/// `recoup.v1.Query` and `recoup.v1.ReadModels`.
pub async fn start(ctx: &Context, settings: Settings) -> Result<Running, StartError> {
    let opened = open(&ctx.service_dir("projection"), ctx.store)?;
    let (cases, accounts, deals) = (
        opened.cases.clone(),
        opened.accounts.clone(),
        opened.deals.clone(),
    );
    let (stop, stopping) = watch::channel(false);
    let group = &settings.consumer_group;
    let mut started = Projectors {
        ctx,
        opened: &opened,
        stopping,
        tasks: Vec::new(),
        lags: Lags::default(),
        rebuilds: Rebuilds::default(),
    };
    started.run("case", &cases, group, DEBT_CASES.name)?;
    let mut relay = None;
    if settings.accounts {
        let group = format!("{group}-accounts");
        started.run("account", &accounts, &group, PAYGO_SNAPSHOTS.name)?;
        // The account projection computes PAYGo metrics into an outbox: publish it. No
        // in-process consumer reads them, so without flow control (in embedded mode the oldest
        // fall out of the mock broker's retention; the topic is for consumers downstream).
        let producer = ctx
            .kafka
            .producer(&ProducerSettings::bulk())
            .starting("kafka producer")?
            .unmetered();
        let outbox = OutboxRelay::new(LiveMetrics(accounts.clone()), Arc::new(producer));
        relay = Some(tokio::spawn(
            outbox.run(ctx.shutdown.clone(), settings.relay_drain_timeout),
        ));
    }
    if settings.deals {
        let group = format!("{group}-deals");
        started.run("deal", &deals, &group, COLLECTIONS_DEALS.name)?;
    }
    let Projectors {
        tasks: projectors,
        lags,
        rebuilds,
        ..
    } = started;
    let queries = Queries::new(cases.clone(), accounts.clone())
        .with_access(ctx.access.clone())
        .with_deals(deals.clone(), ctx.clock.clone())
        // Do-not-contact watchers end with the server, rather than holding it open.
        .with_shutdown(ctx.shutdown.clone());
    ctx.grpc().add_service(queries.into_server());
    ctx.grpc()
        .add_service(ReadModelsApi::new(rebuilds.clone(), lags, ctx.access.clone()).into_server());
    ctx.health.set_serving::<QueryServer<Queries>>().await;
    Ok(Running {
        cases,
        accounts,
        deals,
        to_build: opened.to_build.clone(),
        embedded: ctx.kafka.embedded(),
        records: ctx.records.clone(),
        generations: opened.generations.clone(),
        rebuilds,
        projectors,
        relay,
        stop,
    })
}

/// What `start` gathers as it starts the projector of each read model.
struct Projectors<'a> {
    ctx: &'a Context,
    opened: &'a Opened,
    stopping: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<Result<(), ProjectionError>>>,
    lags: Lags,
    rebuilds: Rebuilds,
}

impl Projectors<'_> {
    /// Starts the projector of `live` from `topic` in consumer group `group`, and registers its
    /// consumer's lag and its rebuild.
    fn run<P: Generational>(
        &mut self,
        label: &'static str,
        live: &Live<P>,
        group: &str,
        topic: &str,
    ) -> Result<(), StartError> {
        let projector = projector(self.ctx, live.clone(), group, topic)?;
        self.lags.add(P::NAME, topic, projector.lag());
        let health = self.ctx.health.clone();
        self.tasks
            .push(spawn(label, projector, self.stopping.clone(), health));
        self.rebuilds
            .add(P::NAME, rebuilder(self.ctx, self.opened, live));
        Ok(())
    }
}

fn rebuilder<P: Generational>(ctx: &Context, opened: &Opened, live: &Live<P>) -> Arc<dyn Rebuild> {
    Arc::new(Rebuilder::new(
        live.clone(),
        opened.generations.clone(),
        ctx.records.clone(),
        ctx.kafka.config.clone(),
        ctx.kafka.cluster_id.clone(),
        ctx.clock.clone(),
        ctx.shutdown.clone(),
    ))
}

/// The metrics outbox of whichever generation of the account read model is live.
struct LiveMetrics(Live<AccountReadModel>);

impl Outbox for LiveMetrics {
    type Error = ReadModelError;

    fn pending(&self, max: usize) -> Result<Vec<(Vec<u8>, OutboxRecord)>, ReadModelError> {
        self.0.current().metrics().pending(max)
    }

    fn remove(&self, keys: &[Vec<u8>]) -> Result<(), ReadModelError> {
        self.0.current().metrics().remove(keys)
    }

    fn appended(&self) -> Arc<Notify> {
        self.0.current().metrics().appended()
    }

    fn len(&self) -> usize {
        self.0.current().metrics().len()
    }
}

/// The live generations of the read models of the database in `dir`.
pub fn open(dir: &Path, store: StoreOptions) -> Result<Opened, StartError> {
    let doing = "opening the projection read models";
    let db = recoup_keys::store::open(dir, store).starting(doing)?;
    let generations = Generations::open(&db).starting(doing)?;
    let mut to_build = Vec::new();
    let mut live_tree = |name: ReadModelName| -> Result<String, StartError> {
        let live = generations.live(name).starting(doing)?;
        if live.fresh || live.interrupted.is_some() {
            to_build.push(name);
        }
        Ok(live.tree)
    };
    let cases = CaseReadModel::open_in(&db, &live_tree(ReadModelName::Cases)?).starting(doing)?;
    let accounts = AccountReadModel::open_in(&db, &live_tree(ReadModelName::Accounts)?, None)
        .starting(doing)?;
    let deals = DealReadModel::open_in(
        &db,
        &live_tree(ReadModelName::Deals)?,
        crate::deals::DEFAULT_FEED_CAPACITY,
    )
    .starting(doing)?;
    for tree in generations.drop_orphans().starting(doing)? {
        tracing::info!(%tree, "dropped a generation a rebuild replaced");
    }
    Ok(Opened {
        cases: Live::new(cases),
        accounts: Live::new(accounts),
        deals: Live::new(deals),
        generations,
        to_build,
    })
}

/// Embedded: one process reads every partition. External: the consumer group shares them
/// among the projection processes.
fn projector<P: Projection + Clone>(
    ctx: &Context,
    model: Live<P>,
    group: &str,
    topic: &str,
) -> Result<Projector<P>, StartError> {
    // A command's answer to its visibility in Query: the case projection asks eagerly.
    let consumer: EventConsumer = if topic == DEBT_CASES.name {
        ctx.kafka.eager_consumer(group, topic)
    } else {
        ctx.kafka.consumer(group, topic)
    }
    .starting("kafka consumer")?;
    let cluster = ctx.kafka.cluster_id.clone();
    let started = if ctx.kafka.embedded() {
        Projector::start(model, consumer, cluster, topic)
    } else {
        Projector::start_in_group(model, consumer, cluster, topic)
    };
    started.starting("starting a projector")
}

/// Runs a projector until the stop signal; if it fails, the read models stop moving, which
/// health checks hear of (NOT_SERVING), not only the log.
fn spawn<P: Projection + Clone>(
    name: &'static str,
    projector: Projector<P>,
    stop: watch::Receiver<bool>,
    health: HealthReporter,
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

impl Running {
    /// The case read model's live generation.
    pub fn cases(&self) -> CaseReadModel {
        self.cases.current()
    }

    pub fn accounts(&self) -> AccountReadModel {
        self.accounts.current()
    }

    pub fn deals(&self) -> DealReadModel {
        self.deals.current()
    }

    pub fn metrics(&self) -> MetricsStage {
        self.accounts.current().metrics().clone()
    }

    /// Builds the read models that need it, once every service of the process registered its
    /// stream's record: a rebuild a stop interrupted, and, embedded (where the broker starts
    /// empty), a new read model. On external Kafka a new read model's projector reads the
    /// topic from its beginning anyway.
    pub fn build_pending(&self) {
        for name in &self.to_build {
            let interrupted = self
                .generations
                .live(*name)
                .map(|l| l.interrupted.is_some())
                .unwrap_or(false);
            // A new data dir has no history to build from.
            let history = self.records.of(name.topic()).is_some_and(|record| {
                record
                    .read_after(None, 1)
                    .map_or(true, |first| !first.is_empty())
            });
            if (interrupted || (self.embedded && history))
                && let Some(rebuild) = self.rebuilds.of(*name)
            {
                tracing::info!(read_model = %name, "building the read model from its stream's record");
                let _ = rebuild.start();
            }
        }
    }

    /// The rebuilds of this projection's read models.
    pub fn rebuilds(&self) -> &Rebuilds {
        &self.rebuilds
    }

    /// Stops every projector at its next batch boundary (its offsets are in its last batch)
    /// and flushes the read models.
    /// A projector that failed or panicked makes this an error (after every other projector
    /// stopped): its read model may lack events, so the process must not count as drained.
    pub async fn shutdown(self) -> Result<(), ProjectionError> {
        // A rebuild stops at the process's shutdown signal; its tree is dropped at the next start.
        self.rebuilds.join().await;
        let _ = self.stop.send(true);
        let mut first_error = None;
        for projector in self.projectors {
            let result = match join("projector", projector).await {
                Ok(result) => result,
                Err(failed) => Err(failed.into()),
            };
            if let Err(error) = result {
                tracing::error!(%error, "a projector did not stop cleanly");
                first_error.get_or_insert(error);
            }
        }
        if let Some(relay) = self.relay
            && let Err(failed) = join("metrics outbox relay", relay).await
        {
            tracing::error!(error = %failed, "the metrics outbox relay did not stop cleanly");
            first_error.get_or_insert(failed.into());
        }
        first_error.map_or(Ok(()), Err)
    }
}
