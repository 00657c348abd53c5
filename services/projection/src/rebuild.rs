//! Rebuilding a read model, blue/green: a new generation ([`crate::generations`]) is filled
//! beside the live one while the live one keeps answering and applying, then takes its place
//! between two of the projector's batches.
//!
//! 1. **The record.** Every event of the stream's system of record (`Context::records`: the
//!    case event store; in embedded mode the importer's and the puller's stores), in order.
//! 2. **The topic**, from the first offset the broker holds to where the live generation is:
//!    what the record may lack (events published but not yet remembered by their producer), and
//!    on external Kafka, where the topic is the record, everything. The read models skip what
//!    they applied already (case versions, snapshot and deal revisions), so reading an event
//!    twice changes nothing.
//! 3. **The switch**, holding the projector's turn: the rest of the topic up to the live
//!    generation's offsets, those offsets written, what the live generation hands on (the
//!    metrics outbox not yet published), the generation recorded as live, the handle replaced.
//!    The old generation is dropped after that.
//!
//! A process stopped mid-rebuild leaves the live generation as it was; the next start drops the
//! half-built tree and rebuilds again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_backbone::KafkaConfig;
use event_backbone::consumer::{EventConsumer, ReceivedEvent};
use recoup_keys::record::Record;
use recoup_runtime::Clock;
use recoup_runtime::context::Records;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::accounts::AccountReadModel;
use crate::cases::CaseReadModel;
use crate::deals::DealReadModel;
use crate::generations::{Generations, Live, ReadModelName};
use crate::kernel::{
    BatchOutcome, Projection, ReadModelError, apply_recorded_batches, write_offsets,
};

/// Messages applied per batch while rebuilding.
const BATCH: usize = 2000;
/// The consumer group a rebuild reads the topic with (it assigns partitions itself).
const REBUILD_GROUP: &str = "recoup-rebuild";
/// How long an old generation is kept after the switch, for requests that took it just before.
const DROP_DELAY: Duration = Duration::from_secs(2);

/// A read model that can be built as a new generation.
pub trait Generational: Projection + Clone {
    const NAME: ReadModelName;

    /// An empty generation in tree `tree` of `db`, sharing with this one what must outlive a
    /// switch.
    fn next_generation(&self, db: &sled::Db, tree: &str) -> Result<Self, ReadModelError>;

    /// At the switch, holding the turn: what this generation hands on to `next`.
    fn hand_over(&self, _next: &Self) -> Result<(), ReadModelError> {
        Ok(())
    }

    /// After the switch: tells whoever follows this generation that it was replaced.
    fn retire(&self) {}
}

impl Generational for CaseReadModel {
    const NAME: ReadModelName = ReadModelName::Cases;

    fn next_generation(&self, db: &sled::Db, tree: &str) -> Result<Self, ReadModelError> {
        CaseReadModel::open_in(db, tree)
    }
}

impl Generational for AccountReadModel {
    const NAME: ReadModelName = ReadModelName::Accounts;

    /// The metrics published so far come along, so that only results that come out different
    /// are published again (with the next revision).
    fn next_generation(&self, db: &sled::Db, tree: &str) -> Result<Self, ReadModelError> {
        let next = AccountReadModel::open_in(db, tree, Some(self.metrics().appended_notify()))?;
        self.metrics().seed(next.metrics())?;
        Ok(next)
    }

    fn hand_over(&self, next: &Self) -> Result<(), ReadModelError> {
        self.metrics().hand_over(next.metrics())
    }
}

impl Generational for DealReadModel {
    const NAME: ReadModelName = ReadModelName::Deals;

    /// A feed of its own: nothing built before the switch reaches a watcher.
    fn next_generation(&self, db: &sled::Db, tree: &str) -> Result<Self, ReadModelError> {
        DealReadModel::open_in(db, tree, self.feed_capacity())
    }

    /// Every watcher takes a fresh snapshot, from the new generation.
    fn retire(&self) {
        DealReadModel::retire(self);
    }
}

/// Where a rebuild stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildState {
    /// None since the process started.
    Idle,
    Running,
    Done,
    Failed,
}

/// A read model's last rebuild in this process.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildStatus {
    pub read_model: ReadModelName,
    pub state: RebuildState,
    /// The tree being built, or built.
    pub generation: String,
    /// Events applied from the stream's record.
    pub from_record: u64,
    /// Messages applied from the topic.
    pub from_topic: u64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Why a rebuild ended early; the live generation is as it was.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    #[error("the record: {0}")]
    Record(#[from] sled::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the process is stopping")]
    Stopped,
    #[error(
        "{topic} is the record of this read model, but partition {partition} begins at offset {first}: \
         the events before it are gone (retention), and a rebuild would lose them. The topic must keep \
         everything (retention.ms=-1, as `recoup topics ensure` creates it)"
    )]
    HistoryGone {
        topic: &'static str,
        partition: i32,
        first: i64,
    },
    #[error("the rebuild task failed: {0}")]
    Task(String),
}

/// A rebuild of one read model, started on demand.
pub trait Rebuild: Send + Sync {
    /// Starts a rebuild, or returns the status of the one running (`Err`).
    fn start(self: Arc<Self>) -> Result<RebuildStatus, RebuildStatus>;
    fn status(&self) -> RebuildStatus;
    /// The task of the rebuild running, to wait for at shutdown.
    fn take_task(&self) -> Option<JoinHandle<()>>;
}

/// The rebuilds of a projection, by read model.
#[derive(Clone, Default)]
pub struct Rebuilds {
    by_model: HashMap<ReadModelName, Arc<dyn Rebuild>>,
}

impl Rebuilds {
    pub fn add(&mut self, name: ReadModelName, rebuild: Arc<dyn Rebuild>) {
        self.by_model.insert(name, rebuild);
    }

    /// The rebuild of `name`; `None` when that read model does not run in this process.
    pub fn of(&self, name: ReadModelName) -> Option<Arc<dyn Rebuild>> {
        self.by_model.get(&name).cloned()
    }

    /// Waits for the rebuilds running (they stop at the process's shutdown signal).
    pub async fn join(&self) {
        for rebuild in self.by_model.values() {
            if let Some(task) = rebuild.take_task() {
                let _ = task.await;
            }
        }
    }
}

/// What a rebuild of read model `P` works with.
pub struct Rebuilder<P: Generational> {
    pub live: Live<P>,
    pub generations: Generations,
    pub records: Records,
    /// The process's Kafka, read without flow control (the live projector gives the room back).
    pub kafka: KafkaConfig,
    pub cluster: String,
    pub clock: Clock,
    pub shutdown: watch::Receiver<bool>,
    status: Mutex<RebuildStatus>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl<P: Generational> Rebuilder<P> {
    pub fn new(
        live: Live<P>,
        generations: Generations,
        records: Records,
        kafka: KafkaConfig,
        cluster: String,
        clock: Clock,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let generation = live.current().tree().name();
        Self {
            live,
            generations,
            records,
            kafka,
            cluster,
            clock,
            shutdown,
            status: Mutex::new(RebuildStatus {
                read_model: P::NAME,
                state: RebuildState::Idle,
                generation: String::from_utf8_lossy(&generation).into_owned(),
                from_record: 0,
                from_topic: 0,
                started_at: None,
                finished_at: None,
                error: None,
            }),
            task: Mutex::new(None),
        }
    }

    fn update(&self, change: impl FnOnce(&mut RebuildStatus)) {
        change(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Builds and switches; the tree of the generation replaced is returned, to drop.
    async fn run(self: &Arc<Self>) -> Result<String, RebuildError> {
        let name = P::NAME;
        let target = self.generations.begin(name)?;
        let next = self
            .live
            .current()
            .next_generation(self.generations.db(), &target)?;
        self.update(|s| s.generation = target.clone());
        tracing::info!(read_model = %name, generation = %target, "rebuild started");
        let record = self.records.of(name.topic());
        if let Some(record) = &record {
            self.apply_record(record.clone(), &next).await?;
        }
        let consumer = EventConsumer::new(&self.kafka, REBUILD_GROUP, name.topic(), None)?;
        let partitions = consumer.partitions(Duration::from_secs(10))?;
        let start: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
        consumer.assign(&start)?;
        let mut read = BTreeMap::new();
        for partition in &partitions {
            let (low, _) = consumer.watermarks(*partition, Duration::from_secs(10))?;
            // Where the topic is the record, a rebuild without its beginning would lose events.
            if record.is_none() && low > 0 {
                return Err(RebuildError::HistoryGone {
                    topic: name.topic(),
                    partition: *partition,
                    first: low,
                });
            }
            read.insert(*partition, low);
        }
        let targets = self.live_offsets(&self.live.current(), &partitions)?;
        self.apply_topic(&consumer, &next, &mut read, &targets, false)
            .await?;
        let turn = self.live.turn().await;
        let live = self.live.current();
        let targets = self.live_offsets(&live, &partitions)?;
        self.apply_topic(&consumer, &next, &mut read, &targets, true)
            .await?;
        write_offsets(next.tree(), &self.cluster, name.topic(), &targets)?;
        live.hand_over(&next)?;
        self.generations.switch(name, &target)?;
        let old = self.live.replace(next);
        drop(turn);
        old.retire();
        let old_tree = String::from_utf8_lossy(&old.tree().name()).into_owned();
        drop((old, live));
        tracing::info!(read_model = %name, generation = %target, "rebuilt generation is live");
        Ok(old_tree)
    }

    /// Drops a replaced generation once the requests that took it just before the switch are
    /// answered (at once when the process stops).
    async fn drop_later(&self, tree: String) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(DROP_DELAY) => {}
            _ = shutdown.changed() => {}
        }
        if let Err(error) = self.generations.drop_generation(&tree) {
            tracing::warn!(%error, %tree, "the replaced generation stays; it is dropped at the next start");
        }
    }

    /// The next offset the live generation reads, per partition (0: none read).
    fn live_offsets(
        &self,
        live: &P,
        partitions: &[i32],
    ) -> Result<BTreeMap<i32, i64>, ReadModelError> {
        Ok(live
            .offsets(&self.cluster, P::NAME.topic(), partitions)?
            .into_iter()
            .map(|(p, next)| (p, next.unwrap_or(0)))
            .collect())
    }

    /// Applies the whole record to `next`, off the async threads.
    async fn apply_record(
        self: &Arc<Self>,
        record: Arc<dyn Record>,
        next: &P,
    ) -> Result<(), RebuildError> {
        let (this, next) = (self.clone(), next.clone());
        tokio::task::spawn_blocking(move || {
            apply_whole_record(
                record.as_ref(),
                &next,
                || *this.shutdown.borrow(),
                |n| this.update(|s| s.from_record += n as u64),
            )?;
            Ok(())
        })
        .await
        .map_err(|e| RebuildError::Task(e.to_string()))?
    }

    /// Applies the topic to `next` until every partition reached its target. `exact`: nothing
    /// at or past a target is applied (the projector applies it, to the new generation).
    async fn apply_topic(
        &self,
        consumer: &EventConsumer,
        next: &P,
        read: &mut BTreeMap<i32, i64>,
        targets: &BTreeMap<i32, i64>,
        exact: bool,
    ) -> Result<(), RebuildError> {
        let topic = P::NAME.topic();
        let mut shutdown = self.shutdown.clone();
        loop {
            let reached = targets
                .iter()
                .all(|(p, target)| read.get(p).copied().unwrap_or(0) >= *target);
            if reached {
                return Ok(());
            }
            if *shutdown.borrow() {
                return Err(RebuildError::Stopped);
            }
            let received = tokio::select! {
                received = tokio::time::timeout(Duration::from_millis(500), consumer.recv_batch(BATCH)) => received,
                _ = shutdown.changed() => continue,
            };
            let Ok(received) = received else { continue };
            let mut messages = received?;
            for m in &messages {
                let at = read.entry(m.partition).or_insert(0);
                *at = (*at).max(m.offset + 1);
            }
            if exact {
                messages.retain(|m| m.offset < targets.get(&m.partition).copied().unwrap_or(0));
            }
            next.apply_batch(&self.cluster, topic, &messages)?;
            self.update(|s| s.from_topic += messages.len() as u64);
        }
    }
}

/// A rebuild's first phase: every event of `record`, in its order, applied to `model` (a
/// generation nobody reads yet) in batches through [`apply_recorded_batches`], until the
/// record ends or `stopped` says so; `progress` hears how many events each batch staged.
pub fn apply_whole_record<P: Generational>(
    record: &dyn Record,
    model: &P,
    stopped: impl Fn() -> bool,
    progress: impl FnMut(usize),
) -> Result<BatchOutcome, RebuildError> {
    let mut after: Option<sled::IVec> = None;
    let mut offset = 0i64;
    let next_batch = || -> Result<Option<Vec<ReceivedEvent>>, RebuildError> {
        if stopped() {
            return Err(RebuildError::Stopped);
        }
        let page = record.read_after(after.as_deref(), BATCH)?;
        let Some((last, _)) = page.last() else {
            return Ok(None);
        };
        after = Some(last.clone());
        let messages = page
            .into_iter()
            .map(|(_, value)| {
                offset += 1;
                ReceivedEvent {
                    partition: -1,
                    offset,
                    key: Vec::new(),
                    value: value.to_vec(),
                }
            })
            .collect();
        Ok(Some(messages))
    };
    apply_recorded_batches(model, P::NAME.topic(), next_batch, progress)
}

impl<P: Generational> Rebuild for Rebuilder<P> {
    fn start(self: Arc<Self>) -> Result<RebuildStatus, RebuildStatus> {
        let started = {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            if status.state == RebuildState::Running {
                return Err(status.clone());
            }
            *status = RebuildStatus {
                read_model: P::NAME,
                state: RebuildState::Running,
                generation: status.generation.clone(),
                from_record: 0,
                from_topic: 0,
                started_at: Some((self.clock)()),
                finished_at: None,
                error: None,
            };
            status.clone()
        };
        let this = self.clone();
        let task = tokio::spawn(async move {
            let result = this.run().await;
            let now = (this.clock)();
            if let Err(error) = &result {
                tracing::error!(read_model = %P::NAME, %error, "rebuild failed; the live generation is unchanged");
            }
            let replaced = match result {
                Ok(tree) => Some(tree),
                Err(error) => {
                    this.update(|s| {
                        s.state = RebuildState::Failed;
                        s.error = Some(error.to_string());
                    });
                    None
                }
            };
            this.update(|s| {
                s.finished_at = Some(now);
                if replaced.is_some() {
                    s.state = RebuildState::Done;
                }
            });
            if let Some(tree) = replaced {
                this.drop_later(tree).await;
            }
        });
        *self.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
        Ok(started)
    }

    fn status(&self) -> RebuildStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn take_task(&self) -> Option<JoinHandle<()>> {
        self.task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}
