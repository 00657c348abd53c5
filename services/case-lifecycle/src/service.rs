//! case-lifecycle as a service of a process: the event store, the outbox relay, the processing
//! timeouts and the command API, started from the process's [`Context`] and stopped in order.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use debt_cases::CollectorConfigurations;
use event_backbone::producer::ProducerSettings;
use event_backbone::topics::DEBT_CASES;
use recoup_proto::v1::debt_collection_cases_server::DebtCollectionCasesServer;
use recoup_runtime::shutdown::{TaskFailed, join};
use recoup_runtime::{Context, StartError, Starting};
use tokio::task::JoinHandle;

use crate::grpc::CaseCommands;
use crate::relay::OutboxRelay;
use crate::store::{EventStore, StoreError, StoreSettings};
use crate::timeouts;

/// How case-lifecycle runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub collectors: CollectorConfigurations,
    /// How often processing timeouts are checked.
    pub timeout_check_interval: Duration,
    /// False keeps the outbox relay stopped (tests prove with it that the outbox survives).
    pub relay: bool,
    /// How long the relay may take at shutdown to publish what is left in the outbox.
    pub relay_drain_timeout: Duration,
}

impl Default for Settings {
    /// The default collector configuration, timeouts checked every 5 s, the relay on with 30 s
    /// to drain.
    fn default() -> Self {
        Self {
            collectors: CollectorConfigurations::default(),
            timeout_check_interval: Duration::from_secs(5),
            relay: true,
            relay_drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Why case-lifecycle did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Task(#[from] TaskFailed),
}

/// A started case-lifecycle.
pub struct Running {
    store: EventStore,
    relay: Option<JoinHandle<()>>,
    timeouts: JoinHandle<()>,
    /// The event store as the outbox-depth gauge reads it; emptied at shutdown so that the
    /// store's files are let go of.
    gauge: Arc<Mutex<Option<EventStore>>>,
}

/// Opens the event store in `{data_dir}/case-lifecycle`, starts the relay and the timeout
/// checks, and serves `recoup.v1.DebtCollectionCases`.
pub async fn start(ctx: &Context, settings: Settings) -> Result<Running, StartError> {
    let store = EventStore::open(
        &ctx.service_dir("case-lifecycle"),
        StoreSettings {
            collectors: settings.collectors,
            store: ctx.store,
        },
        ctx.clock.clone(),
    )
    .starting("opening the case event store")?;
    // The store is the system of record of the case stream, embedded or not.
    ctx.records
        .register(DEBT_CASES.name, Arc::new(store.record()));
    let relay = if settings.relay {
        let producer = ctx
            .kafka
            .producer(&ProducerSettings::default())
            .starting("kafka producer")?;
        let relay = OutboxRelay::new(store.clone(), Arc::new(producer));
        Some(tokio::spawn(
            relay.run(ctx.shutdown.clone(), settings.relay_drain_timeout),
        ))
    } else {
        None
    };
    let timeouts = tokio::spawn(timeouts::run(
        store.clone(),
        ctx.clock.clone(),
        settings.timeout_check_interval,
        ctx.shutdown.clone(),
    ));
    let gauge = register_outbox_gauge(&store);
    ctx.grpc().add_service(
        CaseCommands::new(store.clone())
            .with_access(ctx.access.clone())
            .into_server(),
    );
    ctx.health
        .set_serving::<DebtCollectionCasesServer<CaseCommands>>()
        .await;
    Ok(Running {
        store,
        relay,
        timeouts,
        gauge,
    })
}

/// `recoup_outbox_depth` reads the store at scrape time, until shutdown lets go of it.
fn register_outbox_gauge(store: &EventStore) -> Arc<Mutex<Option<EventStore>>> {
    let gauge = Arc::new(Mutex::new(Some(store.clone())));
    let reader = gauge.clone();
    recoup_metrics::before_render(move || {
        let store = reader.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(store) = store.as_ref() {
            recoup_metrics::metrics()
                .outbox_depth
                .set(store.outbox_len() as i64);
        }
    });
    gauge
}

impl Running {
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// Embedded mode, at start: the broker of the last run died with every event in flight, so
    /// every stored event a read model has not applied is queued again. `applied` names the
    /// version the read model applied of a case (0: none). Returns how many were queued.
    pub async fn resync<E>(
        &self,
        applied: impl Fn(&str, &str) -> Result<u64, E>,
    ) -> Result<usize, StartError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let mut requeued = 0;
        for head in self.store.heads() {
            let (tenant, case_id, version) = head.starting("reading the event store")?;
            let applied = applied(&tenant, &case_id).starting("reading the case read model")?;
            if applied < version {
                requeued += self
                    .store
                    .republish_after(&tenant, &case_id, applied)
                    .await
                    .starting("queueing events again")?;
            }
        }
        if requeued > 0 {
            tracing::info!(events = requeued, "re-queued events the read model missed");
        }
        Ok(requeued)
    }

    /// After the process's shutdown signal: waits for the timeout checks to end and the relay
    /// to drain the outbox (bounded), then flushes the store and waits until its writer let go
    /// of its files. A task that panicked is reported after the store was flushed (what the
    /// relay did not publish stays in the outbox).
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        let timeouts = join("processing timeouts", self.timeouts).await;
        let relay = match self.relay {
            Some(relay) => join("outbox relay", relay).await,
            None => Ok(()),
        };
        self.gauge
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.store.flush()?;
        // Every other handle is gone with the tasks above; a restart must find the files
        // unlocked.
        if !self.store.close(Duration::from_secs(10)) {
            tracing::warn!("the event store's writer did not end within 10 s");
        }
        timeouts?;
        relay?;
        Ok(())
    }
}
