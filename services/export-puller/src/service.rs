//! The export puller as a service of a process (`recoup up` with sources, `recoup pull`):
//! its store, the recovery at start, a puller shared by every stream, and the schedule.

use std::sync::Arc;
use std::time::Duration;

use event_backbone::producer::ProducerSettings;
use event_backbone::topics::COLLECTIONS_DEALS;
use recoup_runtime::{Context, StartError, Starting};
use tokio::task::{JoinError, JoinHandle};

use crate::client::ExportClient;
use crate::pull::{PullError, PullSettings, Puller, Stream};
use crate::recovery::{AppliedDeals, rewind_unprojected};
use crate::schedule::{self, Mode, StreamOutcome};
use crate::sources::Sources;
use crate::store::{PullStore, StoreError, StreamId};

/// What the puller pulls and how.
#[derive(Debug, Clone)]
pub struct Settings {
    pub sources: Sources,
    /// One pass over every stream (`recoup pull --once`) instead of one every
    /// `sources.poll_interval`.
    pub once: bool,
    pub pull: PullSettings,
}

/// A started puller.
pub struct Running {
    puller: Arc<Puller>,
    streams: Vec<StreamId>,
    /// Kept until the schedule ended, so that a wait cut short still leaves it to stop.
    schedule: Option<JoinHandle<Vec<StreamOutcome>>>,
    outcomes: Vec<StreamOutcome>,
}

/// Embedded, without a puller in this run: the deal stream's record kept by an earlier run's
/// store is registered all the same, so that the deals read model can be rebuilt from it.
pub fn register_record(ctx: &Context) -> Result<(), StartError> {
    let dir = ctx.service_dir("export-puller");
    if !ctx.kafka.embedded() || !dir.exists() {
        return Ok(());
    }
    let store = PullStore::open_with(&dir, ctx.store)
        .and_then(PullStore::keep_record)
        .starting("opening the deal record")?;
    if let Some(record) = store.record() {
        ctx.records
            .register(COLLECTIONS_DEALS.name, Arc::new(record));
    }
    Ok(())
}

/// Opens the puller's store in `{data_dir}/export-puller` and starts pulling every stream of
/// the sources. `applied` (embedded mode) is what the deals read model holds: after a run that
/// did not end cleanly, deals that never reached it are pulled again.
pub async fn start(
    ctx: &Context,
    settings: Settings,
    applied: Option<&dyn AppliedDeals>,
) -> Result<Running, StartError> {
    let dir = ctx.service_dir("export-puller");
    std::fs::create_dir_all(&dir).starting("creating the puller's data dir")?;
    let mut store =
        PullStore::open_with(&dir, ctx.store).starting("opening the export puller's store")?;
    // Embedded, the broker keeps only the newest events: the store keeps every one published,
    // the deal stream's record. On external Kafka the topic is the record.
    if ctx.kafka.embedded() {
        store = store.keep_record().starting("opening the deal record")?;
        if let Some(record) = store.record() {
            ctx.records
                .register(COLLECTIONS_DEALS.name, Arc::new(record));
        }
    }
    if let Some(applied) = applied {
        rewind_unprojected(&store, applied).starting("comparing with the deals read model")?;
    }
    let producer = ctx
        .kafka
        .producer(&ProducerSettings::bulk())
        .starting("kafka producer")?;
    let puller = Arc::new(Puller::new(
        store,
        Arc::new(producer),
        ctx.kafka.config.clone(),
        ctx.kafka.cluster_id.clone(),
        ctx.clock.clone(),
        settings.pull,
    ));
    let streams = streams(&settings.sources)?;
    let ids: Vec<StreamId> = streams.iter().map(|s| s.id()).collect();
    let sources = &settings.sources;
    let mode = if settings.once {
        Mode::Once
    } else {
        Mode::Every(sources.poll_interval)
    };
    tracing::info!(
        streams = ?ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ?mode,
        sources = ?sources.sources.iter().map(|s| (&s.tenant, &s.client)).collect::<Vec<_>>(),
        "export puller started"
    );
    let schedule = tokio::spawn(schedule::run(
        puller.clone(),
        streams,
        mode,
        sources.max_concurrent,
        ctx.shutdown.clone(),
    ));
    Ok(Running {
        puller,
        streams: ids,
        schedule: Some(schedule),
        outcomes: Vec::new(),
    })
}

/// The streams of `sources`: one per source and dataset, the datasets of a source sharing its
/// client (one session, one request budget per lender).
pub fn streams(sources: &Sources) -> Result<Vec<Stream>, StartError> {
    let mut streams = Vec::new();
    for source in &sources.sources {
        let client = Arc::new(
            ExportClient::new(source.client.clone())
                .starting(&format!("HTTP client for {}", source.client.host))?,
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

impl Running {
    pub fn puller(&self) -> &Puller {
        &self.puller
    }

    pub fn store(&self) -> &PullStore {
        self.puller.store()
    }

    /// Waits until the schedule ended by itself: every stream pulled once ([`Settings::once`]).
    /// Cancel-safe: cut short, the schedule is still there for [`Running::stop`].
    pub async fn finished(&mut self) {
        if let Some(schedule) = &mut self.schedule {
            let ended = schedule.await;
            self.schedule = None;
            self.outcomes = self.ended(ended);
        }
    }

    /// After the process's shutdown signal: every pull stops after the page in flight
    /// (committed once acknowledged); a pull stuck on a broker that takes nothing is abandoned
    /// after `timeout` (its page is fetched again next time). Returns how each stream's last
    /// cycle ended; when the schedule failed or was abandoned, every stream's outcome is that
    /// error.
    pub async fn stop(&mut self, timeout: Duration) -> Vec<StreamOutcome> {
        if let Some(mut schedule) = self.schedule.take() {
            self.outcomes = match tokio::time::timeout(timeout, &mut schedule).await {
                Ok(ended) => self.ended(ended),
                Err(_) => {
                    schedule.abort();
                    let error = PullError::Abandoned(timeout);
                    tracing::warn!(%error, "stopping the export puller");
                    self.each_failed(|| PullError::Abandoned(timeout))
                }
            };
        }
        std::mem::take(&mut self.outcomes)
    }

    fn ended(&self, ended: Result<Vec<StreamOutcome>, JoinError>) -> Vec<StreamOutcome> {
        ended.unwrap_or_else(|error| {
            tracing::error!(%error, "the pull schedule failed");
            self.each_failed(|| PullError::Task(format!("the pull schedule failed: {error}")))
        })
    }

    fn each_failed(&self, error: impl Fn() -> PullError) -> Vec<StreamOutcome> {
        self.streams
            .iter()
            .map(|stream| StreamOutcome {
                stream: stream.clone(),
                result: Err(error()),
            })
            .collect()
    }

    /// Flushes the store, and marks it clean when `everything_projected` (every deal it
    /// remembers reached the read models).
    pub fn close(self, everything_projected: bool) -> Result<(), StoreError> {
        let store = self.puller.store();
        store.flush()?;
        if everything_projected {
            store.mark_clean()?;
        }
        Ok(())
    }
}
