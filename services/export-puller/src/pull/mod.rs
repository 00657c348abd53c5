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
//! Faults (docs/domain.md §1): an invalid cursor is never retried; the chain starts again from the
//! committed `since` (which moves with every committed page, so little is fetched twice). A
//! gateway timeout halves the page size and, once a `since` is known, narrows the chain to a
//! window `[since, since + w)` that halves with every further timeout and doubles back with
//! every completed window. Retries of everything else are the client's ([`crate::client`]).

mod chain;
mod classify;
mod commit;
mod fetch;
mod outcome;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use event_backbone::KafkaConfig;
use event_backbone::envelope::EventMetadata;
use event_backbone::finalizer::AckFinalizer;
use event_backbone::producer::EventProducer;
use recoup_runtime::Clock;
use recoup_runtime::shutdown::until_stopped;
use tokio::sync::watch;

use self::chain::{ChainState, PageSize, Request, narrowed_window};
use self::classify::Classify;
use self::commit::InFlight;
use self::fetch::Prefetch;
pub use self::outcome::{CycleReport, PullError, PullSettings};
use crate::client::{ExportClient, FetchError, MAX_LIMIT, Page};
use crate::dataset::Dataset;
use crate::page::ClassifiedPage;
use crate::readback::read_back;
use crate::store::{Checkpoint, Marks, PullStore, StreamId};

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
        state.marks = self.store.marks(&self.cluster_id, id)?.unwrap_or_default();
        let mut cycle = Cycle::begin(self, stream, id, stop, lender)?;
        loop {
            match cycle.step(state).await? {
                Next::Page => {}
                Next::Stop | Next::Finished => break,
                Next::Halted => return Ok(()),
            }
        }
        if let Some(page) = state.in_flight.take() {
            self.settle(id, page, &mut state.marks, &mut state.report)
                .await?;
        }
        if !state.report.stopped {
            self.advance_marks(id, &state.marks).await;
        }
        state.report.since = cycle.cp.since;
        Ok(())
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
}

/// What a cycle carries between its steps, and hands back when it fails.
#[derive(Default)]
struct CycleState {
    /// The page whose events are with Kafka while the next one is fetched and classified.
    in_flight: Option<InFlight>,
    marks: Marks,
    report: CycleReport,
}

/// What a cycle does after a step.
enum Next {
    /// Ask for the next page.
    Page,
    /// Told to stop (`report.stopped` is set): commit what is in flight and end.
    Stop,
    /// The last chain ended.
    Finished,
    /// A page could not be handed to Kafka whole; it was settled and the report is final.
    Halted,
}

/// One cycle's working state: the checkpoint as the next committed page will leave it, the
/// chain followed, the page size, and the faults in a row.
struct Cycle<'a> {
    puller: &'a Puller,
    stream: &'a Stream,
    id: &'a StreamId,
    stop: &'a watch::Receiver<bool>,
    lender: String,
    metadata: EventMetadata,
    cp: Checkpoint,
    chain: ChainState,
    size: PageSize,
    prefetch: Option<Prefetch>,
    /// Chains started again in a row without the committed `since` moving.
    cursor_restarts: u32,
    /// Gateway timeouts in a row.
    timeouts: u32,
}

impl<'a> Cycle<'a> {
    /// Resumes the chain in flight, or starts one from the committed `since`.
    fn begin(
        puller: &'a Puller,
        stream: &'a Stream,
        id: &'a StreamId,
        stop: &'a watch::Receiver<bool>,
        lender: String,
    ) -> Result<Self, PullError> {
        let cp = puller.store.checkpoint(id)?;
        let size = PageSize::of(&cp, stream.limit, puller.settings.min_limit, MAX_LIMIT);
        Ok(Self {
            chain: ChainState::resume(&cp, (puller.clock)()),
            metadata: EventMetadata {
                correlation_id: format!("pull-{}", uuid::Uuid::now_v7()),
                causation_id: String::new(),
                actor: recoup_proto::contract::actor::EXPORT_PULLER.to_owned(),
            },
            puller,
            stream,
            id,
            stop,
            lender,
            cp,
            size,
            prefetch: None,
            cursor_restarts: 0,
            timeouts: 0,
        })
    }

    fn now(&self) -> DateTime<Utc> {
        (self.puller.clock)()
    }

    /// Fetches the chain's next page and publishes it, or handles why it could not be fetched.
    async fn step(&mut self, state: &mut CycleState) -> Result<Next, PullError> {
        if *self.stop.borrow() {
            state.report.stopped = true;
            return Ok(Next::Stop);
        }
        let request = self.chain.request(self.size.current);
        let ahead = self.prefetch.take();
        let fetching = Prefetch::take_or_fetch(ahead, self.stream, &request);
        let Some(fetched) = until_stopped(self.stop, fetching).await else {
            state.report.stopped = true;
            return Ok(Next::Stop);
        };
        match fetched {
            Ok(page) if page.next_cursor.is_some() && page.next_cursor == request.cursor => {
                let error = FetchError::InvalidCursor(
                    "the API answered the cursor it was asked for as the next one".to_owned(),
                );
                self.after_failure(error, &request, state).await
            }
            Ok(page) => {
                self.timeouts = 0;
                self.page(page, state).await
            }
            Err(error) => self.after_failure(error, &request, state).await,
        }
    }

    /// A page request failed: what comes next starts from the committed state.
    async fn after_failure(
        &mut self,
        error: FetchError,
        request: &Request,
        state: &mut CycleState,
    ) -> Result<Next, PullError> {
        if let Some(page) = state.in_flight.take() {
            self.puller
                .settle(self.id, page, &mut state.marks, &mut state.report)
                .await?;
        }
        match error {
            // A cursor is never sent again once the API refused it.
            error @ (FetchError::InvalidCursor(_) | FetchError::BadRequest(_))
                if request.cursor.is_some() || matches!(error, FetchError::InvalidCursor(_)) =>
            {
                self.restart_chain(&error.to_string(), state)?;
                Ok(Next::Page)
            }
            FetchError::GatewayTimeout(message) => self.narrow(&message, state).await,
            error => Err(error.into()),
        }
    }

    /// After an invalid cursor: the chain starts again from the committed `since`.
    fn restart_chain(&mut self, message: &str, state: &mut CycleState) -> Result<(), PullError> {
        self.cursor_restarts += 1;
        state.report.cursor_restarts += 1;
        if self.cursor_restarts > self.puller.settings.max_cursor_restarts {
            return Err(PullError::CursorRestarts(self.cursor_restarts));
        }
        tracing::warn!(stream = %self.id, %message, since = ?self.cp.since, "the cursor was refused: the chain starts again from the committed since");
        self.cp.chain = None;
        self.puller.store.set_checkpoint(self.id, &self.cp)?;
        self.chain = ChainState::fresh(&self.cp, self.now());
        Ok(())
    }

    /// After a gateway timeout: smaller pages, a narrower window, a pause.
    async fn narrow(&mut self, message: &str, state: &mut CycleState) -> Result<Next, PullError> {
        self.timeouts += 1;
        state.report.gateway_timeouts += 1;
        let settings = &self.puller.settings;
        if self.timeouts > settings.max_gateway_timeouts {
            return Err(PullError::GatewayTimeouts {
                count: self.timeouts,
                limit: self.size.current,
                window: self
                    .cp
                    .window_secs
                    .map(|s| Duration::from_secs(s.max(0) as u64)),
            });
        }
        self.cp.limit = self.size.halve();
        if let Some(window) = narrowed_window(&self.cp, self.now(), settings.min_window) {
            self.cp.window_secs = Some(window);
            self.cp.chain = None;
            self.chain = ChainState::fresh(&self.cp, self.now());
        }
        tracing::warn!(stream = %self.id, %message, limit = self.size.current, window_secs = ?self.cp.window_secs, "gateway timeout: narrowing");
        self.puller.store.set_checkpoint(self.id, &self.cp)?;
        let wait = self.stream.client.backoff(self.timeouts - 1);
        if until_stopped(self.stop, tokio::time::sleep(wait))
            .await
            .is_none()
        {
            state.report.stopped = true;
            return Ok(Next::Stop);
        }
        Ok(Next::Page)
    }

    /// Classifies a fetched page and hands its events to Kafka while the page before is
    /// committed and the next one fetched.
    async fn page(&mut self, page: Page, state: &mut CycleState) -> Result<Next, PullError> {
        if let Some(next) = &page.next_cursor {
            let ahead = self.chain.request_after(next, self.size.current);
            self.prefetch = Some(Prefetch::start(self.stream, ahead));
        }
        let fetched_at = self.now();
        let rows = page.rows.len();
        let classified = self.classify(page.rows, fetched_at, state).await?;
        let mut finalizer = AckFinalizer::with_capacity(classified.deals.len());
        // The producer may wait for room (embedded mode): a stop must not wait with it.
        let publishing = self.puller.publish(&classified, &mut finalizer);
        let interrupted = until_stopped(self.stop, publishing).await.is_none();
        if interrupted {
            // Nothing of an interrupted page is committed: it is fetched again.
            finalizer = AckFinalizer::default();
        }
        let halted = interrupted || finalizer.is_refused();
        let since_before = self.cp.since;
        let chain_done = page.next_cursor.is_none();
        let finished = self.advance(&classified, page.next_cursor.as_deref(), fetched_at);
        let page = InFlight {
            classified,
            rows,
            finalizer,
            checkpoint: self.cp.clone(),
            chain_done,
            complete: !interrupted,
        };
        // The page before goes to the store once Kafka has it all.
        if let Some(before) = state.in_flight.replace(page) {
            self.puller
                .settle(self.id, before, &mut state.marks, &mut state.report)
                .await?;
        }
        if halted {
            if let Some(page) = state.in_flight.take() {
                // Answers Kafka's refusal, if that is what halted the page.
                self.puller
                    .settle(self.id, page, &mut state.marks, &mut state.report)
                    .await?;
            }
            // Stopped while the producer waited: the page is fetched again.
            state.report.stopped = true;
            state.report.since = self.puller.store.checkpoint(self.id)?.since;
            return Ok(Next::Halted);
        }
        if self.cp.since > since_before {
            self.cursor_restarts = 0;
        }
        Ok(if finished { Next::Finished } else { Next::Page })
    }

    async fn classify(
        &self,
        rows: Vec<Box<serde_json::value::RawValue>>,
        fetched_at: DateTime<Utc>,
        state: &CycleState,
    ) -> Result<ClassifiedPage, PullError> {
        // What the page still with Kafka publishes counts as published.
        let pending = state
            .in_flight
            .as_ref()
            .map(InFlight::pending)
            .unwrap_or_default();
        Classify {
            store: self.puller.store.clone(),
            dataset: self.stream.dataset.clone(),
            stream: self.id.clone(),
            lender: self.lender.clone(),
            metadata: self.metadata.clone(),
            rejects_before: self.cp.rejects,
            fetched_at,
            pending: Arc::new(pending),
            rows: Arc::new(rows),
        }
        .run()
        .await
    }

    /// Moves the checkpoint past a page: its `since`, the chain or its end, the page size and
    /// the window. True when the cycle's last chain ended with it.
    fn advance(
        &mut self,
        page: &ClassifiedPage,
        next: Option<&str>,
        fetched_at: DateTime<Utc>,
    ) -> bool {
        // Not past the fetch time: one row stamped in the future must not hide every later
        // change (rows up to it come again and are found unchanged).
        let seen = page.max_cursor.map(|at| at.min(fetched_at));
        if page
            .max_cursor
            .is_some_and(|at| at > fetched_at + TimeDelta::days(1))
        {
            tracing::warn!(stream = %self.id, updated_at = ?page.max_cursor, "a row's cursor field lies more than a day in the future");
        }
        self.cp.since = self.cp.since.max(seen);
        self.cp.rejects += page.rejects.len() as u64;
        let Some(next) = next else {
            self.cp.chain = None;
            // A completed chain lets the page size grow back.
            self.cp.limit = self.size.double();
            let done = if self.chain.until.is_some() {
                // A window is done: the next one is twice as wide (open-ended once it would
                // reach now).
                self.cp.window_secs = self.cp.window_secs.map(|w| w.saturating_mul(2));
                false
            } else {
                self.cp.window_secs = None;
                self.cp.cycles += 1;
                true
            };
            self.chain = ChainState::fresh(&self.cp, self.now());
            return done;
        };
        self.cp.chain = Some(self.chain.advance(next));
        false
    }
}
