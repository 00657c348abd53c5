//! One pull cycle of one stream (a tenant's dataset): follow cursor chains from the committed
//! `since` until a chain ends with `nextCursor: null`, publishing every new or changed row and
//! committing the checkpoint only after Kafka acknowledged the page.
//!
//! ```text
//! fetch page N ──▶ (fetch page N+1 meanwhile) ──▶ classify on a blocking thread: normalise,
//! compare with the stored fingerprint ──▶ enqueue deals and rejects ──▶ await every ack ──▶
//! one sled batch: fingerprints, reject hashes, checkpoint (since, next cursor), read-back marks
//! ```
//!
//! Faults (DOMAIN.md §1): an invalid cursor is never retried; the chain starts again from the
//! committed `since` (which moves with every committed page, so little is fetched twice). A
//! gateway timeout halves the page size and, once a `since` is known, narrows the chain to a
//! window `[since, since + w)` that halves with every further timeout and doubles back with
//! every completed window. Retries of everything else are the client's ([`crate::client`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use event_backbone::KafkaConfig;
use event_backbone::envelope::EventMetadata;
use event_backbone::producer::{EventProducer, OutgoingEvent, PendingDelivery, PublishError};
use event_backbone::topics::{COLLECTIONS_DEALS, REJECTS};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{ExportClient, FetchError, MAX_LIMIT, Page, PageRequest};
use crate::dataset::Dataset;
use crate::page::{ClassifiedPage, ClassifiedPart, PageContext, Pending, classify_part, merge};
use crate::readback::{ReadBackError, read_back};
use crate::store::{Chain, Checkpoint, Marks, PageCommit, PullStore, StoreError, StreamId};

/// The clock the puller reads (fetch times, "now" for windows).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Bounds of the fault handling.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// The smallest page size a gateway timeout narrows to.
    pub min_limit: u32,
    /// The narrowest window a gateway timeout narrows to.
    pub min_window: Duration,
    /// "Invalid cursor" answers in a row (no page committed between) before the cycle fails.
    pub max_cursor_restarts: u32,
    /// Gateway timeouts in a row before the cycle fails.
    pub max_gateway_timeouts: u32,
    /// Longest wait for the broker while reading the stream's events back at start.
    pub readback_timeout: Duration,
}

impl Default for PullSettings {
    /// Pages down to 50 rows, windows down to 1 minute, 5 cursor restarts, 8 gateway timeouts,
    /// 30 s read-back waits.
    fn default() -> Self {
        Self {
            min_limit: 50,
            min_window: Duration::from_secs(60),
            max_cursor_restarts: 5,
            max_gateway_timeouts: 8,
            readback_timeout: Duration::from_secs(30),
        }
    }
}

/// One dataset of one tenant, and the client of the lender it comes from.
#[derive(Debug, Clone)]
pub struct Stream {
    pub tenant: String,
    pub dataset: Arc<Dataset>,
    pub client: Arc<ExportClient>,
    /// Rows per page, 1–1000.
    pub limit: u32,
}

impl Stream {
    pub fn id(&self) -> StreamId {
        StreamId::new(&self.tenant, &self.dataset.path())
    }
}

/// What one cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    /// Pages committed.
    pub pages: u64,
    /// Rows in them.
    pub rows: u64,
    /// Deals published (new or changed content).
    pub published: u64,
    /// Rows whose content was published before.
    pub unchanged: u64,
    /// Rejected rows published to the rejects topic.
    pub rejected: u64,
    /// Rejected rows already published before (the same raw row again).
    pub rejects_repeated: u64,
    /// Cursor chains completed.
    pub chains: u64,
    /// Chains started again after an "invalid cursor".
    pub cursor_restarts: u64,
    pub gateway_timeouts: u64,
    /// Contents found on the topic by the read-back at start, unknown to the store.
    pub recovered: u64,
    /// The committed `since` at the end.
    pub since: Option<DateTime<Utc>>,
    /// The cycle stopped for a shutdown before its chain ended (it resumes where it stopped).
    pub stopped: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("kafka did not take the page's events (those it acknowledged are remembered): {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    ReadBack(#[from] ReadBackError),
    #[error(
        "the API answered \"invalid cursor\" {0} times in a row, also for chains started afresh"
    )]
    CursorRestarts(u32),
    #[error("{count} gateway timeouts in a row, the last at limit {limit} and window {window:?}")]
    GatewayTimeouts {
        count: u32,
        limit: u32,
        window: Option<Duration>,
    },
    #[error("internal: {0}")]
    Task(String),
}

impl PullError {
    /// A configuration or credentials problem: pulling again without a change cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PullError::Fetch(
                FetchError::LoginRefused { .. }
                    | FetchError::Forbidden { .. }
                    | FetchError::DatasetNotFound { .. }
                    | FetchError::LenderMismatch { .. }
                    | FetchError::BadRequest(_)
                    | FetchError::Unexpected(_)
            )
        )
    }
}

/// Pulls streams into Kafka. One per process; share it between the streams' tasks.
pub struct Puller {
    store: PullStore,
    deals: Arc<EventProducer>,
    rejects: EventProducer,
    kafka: KafkaConfig,
    cluster_id: String,
    clock: Clock,
    settings: PullSettings,
    /// Streams whose events were read back in this process.
    prepared: Mutex<HashSet<StreamId>>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("cluster_id", &self.cluster_id)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Puller {
    /// `deals` publishes to the deals topic (flow-controlled in embedded mode); rejects go
    /// through the same producer without flow control. `cluster_id` names the Kafka cluster the
    /// read-back marks belong to.
    pub fn new(
        store: PullStore,
        deals: Arc<EventProducer>,
        kafka: KafkaConfig,
        cluster_id: String,
        clock: Clock,
        settings: PullSettings,
    ) -> Self {
        let rejects = deals.unmetered();
        Self {
            store,
            deals,
            rejects,
            kafka,
            cluster_id,
            clock,
            settings,
            prepared: Mutex::new(HashSet::new()),
        }
    }

    pub fn store(&self) -> &PullStore {
        &self.store
    }

    /// One cycle of `stream`: resumes the chain in flight or starts one from the committed
    /// `since`, and follows chains until one that is not narrowed to a window ends. Stops
    /// between pages (or abandons a request) once `stop` turns true.
    ///
    /// On an error, whatever Kafka acknowledged is still remembered (the checkpoint stays where
    /// it was), and the stream's next cycle reads its events back from the topic first, as
    /// after a restart: a delivery reported failed may have been written all the same.
    pub async fn pull(
        &self,
        stream: &Stream,
        stop: &watch::Receiver<bool>,
    ) -> Result<CycleReport, PullError> {
        let id = stream.id();
        let mut state = CycleState::default();
        match self.cycle(stream, &id, stop, &mut state).await {
            Ok(()) => Ok(state.report),
            Err(error) => {
                // A page after the one that failed must not move the checkpoint past it.
                if let Some(mut page) = state.in_flight.take()
                    && let Err(also) = {
                        page.complete = false;
                        self.settle(&id, page, &mut state.marks, &mut state.report)
                            .await
                    }
                {
                    tracing::warn!(stream = %id, error = %also, "while keeping what Kafka acknowledged");
                }
                self.prepared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(error)
            }
        }
    }

    async fn cycle(
        &self,
        stream: &Stream,
        id: &StreamId,
        stop: &watch::Receiver<bool>,
        state: &mut CycleState,
    ) -> Result<(), PullError> {
        let Some(lender) = until_stopped(stop, stream.client.lender_public_id()).await else {
            state.report.stopped = true;
            return Ok(());
        };
        let lender = lender?;
        state.report.recovered = self.prepare(id, &lender).await? as u64;

        let mut cp = self.store.checkpoint(id)?;
        state.marks = self.store.marks(&self.cluster_id, id)?.unwrap_or_default();
        let configured = stream.limit.clamp(1, MAX_LIMIT);
        let min_limit = self.settings.min_limit.clamp(1, configured);
        let mut limit = cp.limit.unwrap_or(configured).clamp(min_limit, configured);
        let mut chain = match &cp.chain {
            Some(c) => ChainState {
                since: c.since,
                until: c.until,
                cursor: Some(c.cursor.clone()),
                pages: c.pages,
            },
            None => self.new_chain(&cp),
        };
        let metadata = EventMetadata {
            correlation_id: format!("pull-{}", uuid::Uuid::now_v7()),
            causation_id: String::new(),
        };
        let mut prefetch: Option<Prefetch> = None;
        // Chains started again in a row without the committed `since` moving.
        let mut cursor_restarts = 0u32;
        let mut timeouts = 0u32;
        loop {
            if *stop.borrow() {
                state.report.stopped = true;
                break;
            }
            let request = chain.request(limit);
            let fetching = async {
                match prefetch.take() {
                    Some(p) if p.request == request => p.join().await,
                    _ => fetch(stream.clone(), request.clone()).await,
                }
            };
            let Some(fetched) = until_stopped(stop, fetching).await else {
                state.report.stopped = true;
                break;
            };
            let fetched = match fetched {
                Ok(page) if page.next_cursor.is_some() && page.next_cursor == request.cursor => {
                    Err(FetchError::InvalidCursor(
                        "the API answered the cursor it was asked for as the next one".to_owned(),
                    ))
                }
                other => other,
            };
            let page = match fetched {
                Ok(page) => page,
                Err(error) => {
                    // What to do next starts from the committed state.
                    if let Some(page) = state.in_flight.take() {
                        self.settle(id, page, &mut state.marks, &mut state.report)
                            .await?;
                    }
                    match error {
                        // A cursor is never sent again once the API refused it: the chain starts
                        // again from the committed `since`.
                        error @ (FetchError::InvalidCursor(_) | FetchError::BadRequest(_))
                            if request.cursor.is_some()
                                || matches!(error, FetchError::InvalidCursor(_)) =>
                        {
                            let message = error.to_string();
                            cursor_restarts += 1;
                            state.report.cursor_restarts += 1;
                            if cursor_restarts > self.settings.max_cursor_restarts {
                                return Err(PullError::CursorRestarts(cursor_restarts));
                            }
                            tracing::warn!(stream = %id, %message, since = ?cp.since, "the cursor was refused: the chain starts again from the committed since");
                            cp.chain = None;
                            self.store.set_checkpoint(id, &cp)?;
                            chain = self.new_chain(&cp);
                            continue;
                        }
                        FetchError::GatewayTimeout(message) => {
                            timeouts += 1;
                            state.report.gateway_timeouts += 1;
                            if timeouts > self.settings.max_gateway_timeouts {
                                return Err(PullError::GatewayTimeouts {
                                    count: timeouts,
                                    limit,
                                    window: cp
                                        .window_secs
                                        .map(|s| Duration::from_secs(s.max(0) as u64)),
                                });
                            }
                            limit = (limit / 2).max(min_limit);
                            cp.limit = (limit < configured).then_some(limit);
                            if let Some(since) = cp.since {
                                let min_window = self.min_window_secs();
                                let span = cp.window_secs.unwrap_or_else(|| {
                                    ((self.clock)() - since).num_seconds().max(min_window)
                                });
                                cp.window_secs = Some((span / 2).max(min_window));
                                cp.chain = None;
                                chain = self.new_chain(&cp);
                            }
                            tracing::warn!(stream = %id, %message, limit, window_secs = ?cp.window_secs, "gateway timeout: narrowing");
                            self.store.set_checkpoint(id, &cp)?;
                            let wait = stream.client.backoff(timeouts - 1);
                            if until_stopped(stop, tokio::time::sleep(wait))
                                .await
                                .is_none()
                            {
                                state.report.stopped = true;
                                break;
                            }
                            continue;
                        }
                        error => return Err(error.into()),
                    }
                }
            };
            timeouts = 0;
            if let Some(next) = &page.next_cursor {
                let mut ahead = chain.clone();
                ahead.cursor = Some(next.clone());
                prefetch = Some(Prefetch::start(stream, ahead.request(limit)));
            }

            let fetched_at = (self.clock)();
            let classified = {
                // What the page still with Kafka publishes counts as published.
                let pending = Arc::new(
                    state
                        .in_flight
                        .as_ref()
                        .map(InFlight::pending)
                        .unwrap_or_default(),
                );
                let work = Classify {
                    store: self.store.clone(),
                    dataset: stream.dataset.clone(),
                    stream: id.clone(),
                    lender: lender.clone(),
                    metadata: metadata.clone(),
                    rejects_before: cp.rejects,
                    fetched_at,
                    pending,
                    rows: Arc::new(page.rows),
                };
                let rows = work.rows.len();
                (work.run().await?, rows)
            };
            let (classified, rows) = classified;
            // The producer may wait for room (embedded mode): a stop must not wait with it.
            let mut stopper = stop.clone();
            let (deals, rejects, refused, interrupted) = tokio::select! {
                (deals, rejects, refused) = self.enqueue(&classified) => (deals, rejects, refused, false),
                _ = stopped(&mut stopper) => (Vec::new(), Vec::new(), None, true),
            };

            let since_before = cp.since;
            // Not past the fetch time: one row stamped in the future must not hide every later
            // change (rows up to it come again and are found unchanged).
            let seen = classified.max_cursor.map(|at| at.min(fetched_at));
            if classified
                .max_cursor
                .is_some_and(|at| at > fetched_at + TimeDelta::days(1))
            {
                tracing::warn!(stream = %id, updated_at = ?classified.max_cursor, "a row's cursor field lies more than a day in the future");
            }
            cp.since = cp.since.max(seen);
            cp.rejects += classified.rejects.len() as u64;
            let mut done = false;
            match &page.next_cursor {
                Some(next) => {
                    chain.cursor = Some(next.clone());
                    chain.pages += 1;
                    cp.chain = Some(Chain {
                        since: chain.since,
                        until: chain.until,
                        cursor: next.clone(),
                        pages: chain.pages,
                    });
                }
                None => {
                    cp.chain = None;
                    // A completed chain lets the page size grow back.
                    limit = limit.saturating_mul(2).min(configured);
                    cp.limit = (limit < configured).then_some(limit);
                    if chain.until.is_some() {
                        // A window is done: the next one is twice as wide (open-ended once it
                        // would reach now).
                        cp.window_secs = cp.window_secs.map(|w| w.saturating_mul(2));
                    } else {
                        cp.window_secs = None;
                        cp.cycles += 1;
                        done = true;
                    }
                    chain = self.new_chain(&cp);
                }
            }
            let complete = refused.is_none() && !interrupted;
            let page = InFlight {
                classified,
                rows,
                deals,
                rejects,
                checkpoint: cp.clone(),
                chain_done: page.next_cursor.is_none(),
                complete,
            };
            // The page before goes to the store once Kafka has it all.
            if let Some(before) = state.in_flight.replace(page) {
                self.settle(id, before, &mut state.marks, &mut state.report)
                    .await?;
            }
            if !complete {
                if let Some(page) = state.in_flight.take() {
                    self.settle(id, page, &mut state.marks, &mut state.report)
                        .await?;
                }
                return match refused {
                    Some(error) => Err(error.into()),
                    None => {
                        // Stopped while the producer waited: the page is fetched again.
                        state.report.stopped = true;
                        state.report.since = self.store.checkpoint(id)?.since;
                        Ok(())
                    }
                };
            }
            if cp.since > since_before {
                cursor_restarts = 0;
            }
            if done {
                break;
            }
        }
        if let Some(page) = state.in_flight.take() {
            self.settle(id, page, &mut state.marks, &mut state.report)
                .await?;
        }
        if !state.report.stopped {
            self.advance_marks(id, &state.marks).await;
        }
        state.report.since = cp.since;
        Ok(())
    }

    /// After a cycle that committed everything it published: the stream's marks move to the
    /// partitions' ends, so that a later read-back reads only what came after (best effort).
    async fn advance_marks(&self, id: &StreamId, marks: &Marks) {
        let known = marks.clone();
        let kafka = self.kafka.clone();
        let store = self.store.clone();
        let cluster = self.cluster_id.clone();
        let id = id.clone();
        let timeout = self.settings.readback_timeout;
        let result = tokio::task::spawn_blocking(move || {
            let ends =
                crate::readback::partition_ends(&kafka, timeout).map_err(|e| e.to_string())?;
            // Never back: a broker may name an end before its last records.
            let mut marks = known;
            for (partition, (_, high)) in ends {
                let mark = marks.entry(partition).or_insert(high);
                *mark = (*mark).max(high);
            }
            store
                .commit(
                    &id,
                    &PageCommit {
                        marks: Some((&cluster, &marks)),
                        ..PageCommit::default()
                    },
                )
                .map_err(|e| e.to_string())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(%error, "the read-back marks stay where they were"),
            Err(error) => tracing::debug!(%error, "the read-back marks stay where they were"),
        }
    }

    fn min_window_secs(&self) -> i64 {
        i64::try_from(self.settings.min_window.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// A chain from the committed `since`, narrowed to the window in force unless that reaches
    /// past now.
    fn new_chain(&self, cp: &Checkpoint) -> ChainState {
        let until = match (cp.since, cp.window_secs) {
            (Some(since), Some(secs)) => since
                .checked_add_signed(TimeDelta::seconds(secs))
                .filter(|until| *until < (self.clock)()),
            _ => None,
        };
        ChainState {
            since: cp.since,
            until,
            cursor: None,
            pages: 0,
        }
    }

    /// The first time a stream is pulled in this process: its events at or after its marks
    /// are read back from the topic. Returns how many contents that recovered.
    async fn prepare(&self, id: &StreamId, lender: &str) -> Result<usize, PullError> {
        let done = self
            .prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id);
        if done {
            return Ok(0);
        }
        let found = read_back(
            &self.kafka,
            &self.store,
            &self.cluster_id,
            id,
            lender,
            self.settings.readback_timeout,
        )
        .await?;
        if found.recovered > 0 {
            tracing::info!(stream = %id, recovered = found.recovered, read = found.messages, "read back contents published before the last process ended");
        }
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone());
        Ok(found.recovered)
    }

    /// Hands every event of the page to the producer, in page order; stops at the first
    /// refusal.
    async fn enqueue(
        &self,
        page: &ClassifiedPage,
    ) -> (
        Vec<(usize, PendingDelivery)>,
        Vec<(usize, PendingDelivery)>,
        Option<PublishError>,
    ) {
        let mut deals = Vec::with_capacity(page.deals.len());
        let mut rejects = Vec::with_capacity(page.rejects.len());
        for (i, deal) in page.deals.iter().enumerate() {
            match self
                .deals
                .enqueue(outgoing(COLLECTIONS_DEALS.name, &deal.event))
                .await
            {
                Ok(pending) => deals.push((i, pending)),
                Err(error) => return (deals, rejects, Some(error)),
            }
        }
        for (i, reject) in page.rejects.iter().enumerate() {
            match self
                .rejects
                .enqueue(outgoing(REJECTS.name, &reject.event))
                .await
            {
                Ok(pending) => rejects.push((i, pending)),
                Err(error) => return (deals, rejects, Some(error)),
            }
        }
        (deals, rejects, None)
    }

    /// Awaits every acknowledgement of a page and commits it: fingerprints, reject hashes,
    /// its checkpoint and the read-back marks. If Kafka refused an event, what it acknowledged
    /// is remembered, the checkpoint is not moved, and the refusal is returned.
    async fn settle(
        &self,
        id: &StreamId,
        page: InFlight,
        marks: &mut Marks,
        report: &mut CycleReport,
    ) -> Result<(), PullError> {
        let mut refused = None;
        let mut acked_deals = Vec::with_capacity(page.deals.len());
        let mut landed: Vec<(i32, i64)> = Vec::with_capacity(page.deals.len());
        for (i, pending) in page.deals {
            match pending.acknowledged().await {
                Ok(ack) => {
                    landed.push((ack.partition, ack.offset));
                    acked_deals.push(i);
                }
                Err(error) => {
                    refused.get_or_insert(error);
                }
            }
        }
        // A delivery reported failed may still have been written, anywhere: then the marks stay
        // where they were, so the next read-back finds it.
        if refused.is_none() {
            for (partition, offset) in landed {
                let next = offset + 1;
                let mark = marks.entry(partition).or_insert(next);
                *mark = (*mark).max(next);
            }
        }
        let mut acked_rejects = Vec::with_capacity(page.rejects.len());
        for (i, pending) in page.rejects {
            match pending.acknowledged().await {
                Ok(_) => acked_rejects.push(i),
                Err(error) => {
                    refused.get_or_insert(error);
                }
            }
        }
        let whole = refused.is_none() && page.complete;
        let store = self.store.clone();
        let id = id.clone();
        let cluster = self.cluster_id.clone();
        let marks_now = marks.clone();
        let classified = page.classified;
        let checkpoint = page.checkpoint;
        let committed = tokio::task::spawn_blocking(move || {
            let commit = PageCommit {
                fingerprints: acked_deals
                    .iter()
                    .map(|i| {
                        let deal = &classified.deals[*i];
                        (deal.row_key.as_str(), deal.fingerprint)
                    })
                    .collect(),
                rejects: acked_rejects
                    .iter()
                    .map(|i| classified.rejects[*i].hash)
                    .collect(),
                // A page only partly acknowledged is fetched again: its checkpoint waits.
                checkpoint: whole.then_some(&checkpoint),
                marks: Some((&cluster, &marks_now)),
            };
            store.commit(&id, &commit).map(|()| classified)
        })
        .await
        .map_err(|e| PullError::Task(e.to_string()))??;
        if let Some(error) = refused {
            return Err(error.into());
        }
        if !whole {
            // Not all of it was enqueued: the caller has the refusal.
            return Ok(());
        }
        report.pages += 1;
        report.rows += page.rows as u64;
        report.published += committed.deals.len() as u64;
        report.unchanged += committed.unchanged as u64;
        report.rejected += committed.rejects.len() as u64;
        let rows = &recoup_metrics::metrics().pull_rows;
        for (outcome, n) in [
            ("published", committed.deals.len() as u64),
            ("unchanged", committed.unchanged as u64),
            ("rejected", committed.rejects.len() as u64),
        ] {
            rows.get_or_create(&recoup_metrics::OutcomeLabel { outcome })
                .inc_by(n);
        }
        report.rejects_repeated += committed.rejects_repeated as u64;
        if page.chain_done {
            report.chains += 1;
        }
        Ok(())
    }
}

/// Rows of a page to classify, and what they are classified against. A page of more than
/// [`PARALLEL_ROWS`] rows is classified in two halves at once (classification is most of the
/// puller's CPU), and whole if the halves turn out to share a row key.
struct Classify {
    store: PullStore,
    dataset: Arc<Dataset>,
    stream: StreamId,
    lender: String,
    metadata: EventMetadata,
    rejects_before: u64,
    fetched_at: DateTime<Utc>,
    pending: Arc<Pending>,
    rows: Arc<Vec<serde_json::Value>>,
}

/// Pages with more rows than this are classified in two halves at once.
const PARALLEL_ROWS: usize = 200;

impl Classify {
    fn context(&self) -> PageContext<'_> {
        PageContext {
            stream: &self.stream,
            dataset: &self.dataset,
            lender_public_id: &self.lender,
            fetched_at: self.fetched_at,
            metadata: &self.metadata,
            rejects_before: self.rejects_before,
        }
    }

    async fn run(self) -> Result<ClassifiedPage, PullError> {
        let work = Arc::new(self);
        let task = |range: std::ops::Range<usize>| {
            let work = work.clone();
            tokio::task::spawn_blocking(move || {
                classify_part(
                    &work.context(),
                    &work.store,
                    &work.pending,
                    &work.rows[range],
                )
            })
        };
        let joined = |r: Result<Result<ClassifiedPart, StoreError>, tokio::task::JoinError>| {
            r.map_err(|e| PullError::Task(e.to_string()))?
                .map_err(PullError::from)
        };
        let rows = work.rows.len();
        if rows > PARALLEL_ROWS {
            let (first, second) = tokio::join!(task(0..rows / 2), task(rows / 2..rows));
            let parts = vec![joined(first)?, joined(second)?];
            if let Some(page) = merge(&work.context(), parts) {
                return Ok(page);
            }
        }
        let whole = joined(task(0..rows).await)?;
        merge(&work.context(), vec![whole])
            .ok_or_else(|| PullError::Task("one part collided with itself".to_owned()))
    }
}

/// What a cycle carries between its steps, and hands back when it fails.
#[derive(Default)]
struct CycleState {
    /// The page whose events are with Kafka while the next one is fetched and classified.
    in_flight: Option<InFlight>,
    marks: Marks,
    report: CycleReport,
}

/// A page whose events were handed to the producer, not yet committed.
struct InFlight {
    classified: ClassifiedPage,
    rows: usize,
    deals: Vec<(usize, PendingDelivery)>,
    rejects: Vec<(usize, PendingDelivery)>,
    /// The stream's checkpoint once this page is committed.
    checkpoint: Checkpoint,
    /// Its chain ended with it.
    chain_done: bool,
    /// Every event of the page was handed to the producer and no page before it failed: only
    /// then may its checkpoint be committed.
    complete: bool,
}

impl InFlight {
    /// The page's contents by row key, for classifying the next page before this one is
    /// committed.
    fn pending(&self) -> Pending {
        Pending {
            deals: self
                .classified
                .deals
                .iter()
                .map(|d| (d.row_key.clone(), d.fingerprint))
                .collect(),
            rejects: self.classified.rejects.iter().map(|r| r.hash).collect(),
        }
    }
}

fn outgoing<'a>(topic: &'a str, event: &'a crate::page::EncodedEvent) -> OutgoingEvent<'a> {
    OutgoingEvent {
        topic,
        key: &event.key,
        value: &event.value,
        event_id: &event.event_id,
        event_type: event.event_type,
    }
}

/// The chain being followed.
#[derive(Debug, Clone)]
struct ChainState {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// `None`: the chain's first page.
    cursor: Option<String>,
    pages: u64,
}

impl ChainState {
    fn request(&self, limit: u32) -> Request {
        Request {
            since: self.since,
            until: self.until,
            cursor: self.cursor.clone(),
            limit,
        }
    }
}

/// A page request that can be sent to another task.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: u32,
}

async fn fetch(stream: Stream, request: Request) -> Result<Page, FetchError> {
    stream
        .client
        .fetch_page(PageRequest {
            dataset: &stream.dataset,
            since: request.since,
            until: request.until,
            cursor: request.cursor.as_deref(),
            limit: request.limit,
        })
        .await
}

/// The next page, asked for while the current one is published; dropped, it is abandoned.
struct Prefetch {
    request: Request,
    task: Option<JoinHandle<Result<Page, FetchError>>>,
}

impl Prefetch {
    fn start(stream: &Stream, request: Request) -> Self {
        let task = tokio::spawn(fetch(stream.clone(), request.clone()));
        Self {
            request,
            task: Some(task),
        }
    }

    async fn join(mut self) -> Result<Page, FetchError> {
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(FetchError::Exhausted {
                    attempts: 0,
                    last: format!("the page request's task failed: {e}"),
                })
            }),
            None => Err(FetchError::Exhausted {
                attempts: 0,
                last: "the page request was already taken".to_owned(),
            }),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `future`'s output, or `None` if `stop` turned true first.
async fn until_stopped<F: std::future::Future>(
    stop: &watch::Receiver<bool>,
    future: F,
) -> Option<F::Output> {
    let mut stop = stop.clone();
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        output = future => Some(output),
        _ = stopped(&mut stop) => None,
    }
}

/// Completes once `stop` is true; never, if its sender is gone without saying so.
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}
