//! The projection as a service of a process: the three read models, a projector per topic
//! (every partition in embedded mode, a consumer-group share on external Kafka), the PAYGo
//! metrics stage with the relay of its outbox, and the query API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use event_backbone::consumer::EventConsumer;
use event_backbone::outbox::OutboxRelay;
use event_backbone::producer::ProducerSettings;
use event_backbone::topics::{COLLECTIONS_DEALS, DEBT_CASES, PAYGO_SNAPSHOTS};
use recoup_keys::store::StoreOptions;
use recoup_proto::v1::query_server::QueryServer;
use recoup_runtime::shutdown::join;
use recoup_runtime::{Context, StartError, Starting};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic_health::server::HealthReporter;

use crate::accounts::AccountReadModel;
use crate::cases::CaseReadModel;
use crate::consumer::{ProjectionError, Projector};
use crate::deals::DealReadModel;
use crate::grpc::Queries;
use crate::kernel::Projection;
use crate::metrics::MetricsStage;

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
    cases: CaseReadModel,
    accounts: AccountReadModel,
    deals: DealReadModel,
    projectors: Vec<JoinHandle<Result<(), ProjectionError>>>,
    /// Publishes the metrics stage's outbox until the process's shutdown signal, then drains it.
    relay: Option<JoinHandle<()>>,
    /// Stops the projectors, which run on after the process's shutdown signal until what is in
    /// flight was taken.
    stop: watch::Sender<bool>,
}

/// Opens the read models in `{data_dir}/projection`, starts their projectors and serves
/// `recoup.v1.Query`.
pub async fn start(ctx: &Context, settings: Settings) -> Result<Running, StartError> {
    let (cases, accounts, deals) = open(&ctx.service_dir("projection"), ctx.store)?;
    let (stop, stopping) = watch::channel(false);
    let group = &settings.consumer_group;
    let mut projectors = vec![spawn(
        "case",
        projector(ctx, cases.clone(), group, DEBT_CASES.name)?,
        stopping.clone(),
        ctx.health.clone(),
    )];
    let mut relay = None;
    if settings.accounts {
        let group = format!("{group}-accounts");
        let projector = projector(ctx, accounts.clone(), &group, PAYGO_SNAPSHOTS.name)?;
        projectors.push(spawn(
            "account",
            projector,
            stopping.clone(),
            ctx.health.clone(),
        ));
        // The account projection computes PAYGo metrics into an outbox: publish it. No
        // in-process consumer reads them, so without flow control (in embedded mode the oldest
        // fall out of the mock broker's retention; the topic is for consumers downstream).
        let producer = ctx
            .kafka
            .producer(&ProducerSettings::bulk())
            .starting("kafka producer")?
            .unmetered();
        let outbox = OutboxRelay::new(accounts.metrics().clone(), Arc::new(producer));
        relay = Some(tokio::spawn(
            outbox.run(ctx.shutdown.clone(), settings.relay_drain_timeout),
        ));
    }
    if settings.deals {
        let group = format!("{group}-deals");
        let projector = projector(ctx, deals.clone(), &group, COLLECTIONS_DEALS.name)?;
        projectors.push(spawn("deal", projector, stopping, ctx.health.clone()));
    }
    let queries = Queries::new(cases.clone(), accounts.clone())
        .with_access(ctx.access.clone())
        .with_deals(deals.clone(), ctx.clock.clone())
        // Do-not-contact watchers end with the server, rather than holding it open.
        .with_shutdown(ctx.shutdown.clone());
    ctx.grpc().add_service(queries.into_server());
    ctx.health.set_serving::<QueryServer<Queries>>().await;
    Ok(Running {
        cases,
        accounts,
        deals,
        projectors,
        relay,
        stop,
    })
}

/// The three read models of the database in `dir`.
pub fn open(
    dir: &Path,
    store: StoreOptions,
) -> Result<(CaseReadModel, AccountReadModel, DealReadModel), StartError> {
    let cases =
        CaseReadModel::open_with(dir, store).starting("opening the projection read model")?;
    let accounts = AccountReadModel::open(&cases).starting("opening the account read model")?;
    let deals = DealReadModel::open(&cases).starting("opening the deal read model")?;
    Ok((cases, accounts, deals))
}

/// Embedded: one process reads every partition. External: the consumer group shares them
/// among the projection processes.
fn projector<P: Projection + Clone>(
    ctx: &Context,
    model: P,
    group: &str,
    topic: &str,
) -> Result<Projector<P>, StartError> {
    let consumer: EventConsumer = ctx
        .kafka
        .consumer(group, topic)
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
fn spawn<P: Projection>(
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
    pub fn cases(&self) -> &CaseReadModel {
        &self.cases
    }

    pub fn accounts(&self) -> &AccountReadModel {
        &self.accounts
    }

    pub fn deals(&self) -> &DealReadModel {
        &self.deals
    }

    pub fn metrics(&self) -> &MetricsStage {
        self.accounts.metrics()
    }

    /// Stops every projector at its next batch boundary (its offsets are in its last batch)
    /// and flushes the read models.
    /// A projector that failed or panicked makes this an error (after every other projector
    /// stopped): its read model may lack events, so the process must not count as drained.
    pub async fn shutdown(self) -> Result<(), ProjectionError> {
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
