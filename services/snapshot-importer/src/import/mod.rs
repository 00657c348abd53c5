//! One import: rows read and validated on a blocking thread, published by the async side, and
//! remembered only after the broker acknowledged them.
//!
//! ```text
//! reader thread: file → rows → validate ──chunks──▶ classifier thread: against the store
//! (new / changed / unchanged) → envelopes, in batches ──▶ publisher (async): enqueue on the
//! producer (a few batches in flight) → await acks → store fingerprints and errors
//! ```
//! Nothing is remembered before Kafka has it, so a crash or a broker failure loses no row: the
//! same upload sent again publishes what was not acknowledged and counts the rest unchanged.

mod admit;
mod hasher;
mod pipeline;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_backbone::envelope::EventMetadata;
use event_backbone::finalizer::AckFinalizer;
use event_backbone::producer::{EventProducer, OutgoingEvent, PublishError};
use event_backbone::topics::{PAYGO_SNAPSHOTS, REJECTS};
use paygo_snapshots::ImportContext;
use recoup_proto::contract::event_type::{
    ACCOUNT_SNAPSHOT_RECORDED as SNAPSHOT_RECORDED, ROW_REJECTED,
};
use recoup_proto::{to_timestamp, v1};
use recoup_runtime::Clock;
use tokio::sync::mpsc;

pub use self::admit::{BUSY_RETRY_AFTER_SECS, ImportPermit, Stop};
pub use self::hasher::ImportHasher;
pub use self::pipeline::MAX_EVENT_BYTES;
use self::pipeline::{Batch, Classifier, Entry, Pending, classify_rows, read_rows};
use self::writer::{Remembered, remember_acknowledged, write_batches};
use crate::readers::{FileError, SnapshotRows};
use crate::store::{ImportStore, StoreBatch, StoreError};

/// Tuning of the pipeline.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Rows per batch between the reader thread and the publisher.
    pub batch_rows: usize,
    /// Batches published but not yet acknowledged.
    pub batches_in_flight: usize,
    /// Errors in an answer; the rest are paged with `GetImport`.
    pub errors_per_page: usize,
    /// Imports this server runs at once, uploads being received included; more are refused
    /// with [`ImportError::Busy`].
    pub max_running: usize,
    /// How long one import may take, from its admission (receiving the upload included).
    pub deadline: Duration,
}

/// Imports running at once by default.
pub const DEFAULT_MAX_RUNNING: usize = 4;
/// Default deadline of one import: 10 minutes.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            batch_rows: 1000,
            batches_in_flight: 3,
            errors_per_page: 1000,
            max_running: DEFAULT_MAX_RUNNING,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// What is being imported, besides the rows.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub tenant: String,
    /// Who asked for it: the actor of its events.
    pub actor: String,
    /// The content hash of the upload (see [`import_id`]).
    pub import_id: String,
    pub format: v1::FileFormat,
    pub data_origin: Option<String>,
    pub file_name: String,
}

/// An import that could not finish; rows acknowledged before it stay imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "kafka did not take the events ({0}); rows before it are kept, send the same upload \
         again to import the rest"
    )]
    Publish(#[from] PublishError),
    #[error(
        "Kafka does not answer at the moment; nothing of this upload was imported, send it \
         again later"
    )]
    KafkaUnreachable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the import's reader stopped unexpectedly: {0}")]
    Reader(String),
    #[error(
        "{running} imports are running, the most this server runs at once \
         (--max-running-imports); send the upload again in {retry_after_secs} s"
    )]
    Busy {
        running: usize,
        retry_after_secs: u64,
    },
    #[error(
        "{0}; rows Kafka acknowledged before it are kept, send the same upload again to import \
         the rest"
    )]
    Stopped(Stop),
}

/// Runs imports: shared by the gRPC and HTTP front ends.
#[derive(Clone)]
pub struct Importer {
    store: ImportStore,
    producer: Arc<EventProducer>,
    /// Rejects bypass the flow control: no in-process consumer reads them.
    rejects: Arc<EventProducer>,
    clock: Clock,
    settings: ImportSettings,
    /// One import at a time per tenant: two imports touching the same row would otherwise both
    /// read its revision and publish two contents under the next one.
    turns: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// Whether the Kafka cluster answers (see `event_backbone::reachability`); while it does
    /// not, new imports are refused at once rather than waiting for Kafka to time out.
    kafka_up: Option<tokio::sync::watch::Receiver<bool>>,
    /// Imports running at once, their deadline and what cancels them.
    slots: admit::Slots,
}

impl Importer {
    pub fn new(
        store: ImportStore,
        producer: Arc<EventProducer>,
        clock: Clock,
        settings: ImportSettings,
    ) -> Self {
        Self {
            store,
            rejects: Arc::new(producer.unmetered()),
            producer,
            clock,
            turns: Arc::default(),
            kafka_up: None,
            slots: admit::Slots::new(settings.max_running, settings.deadline),
            settings,
        }
    }

    /// True while the Kafka cluster is known not to answer.
    pub fn kafka_unreachable(&self) -> bool {
        self.kafka_up.as_ref().is_some_and(|up| !*up.borrow())
    }

    /// Refuses new imports (`ImportError::KafkaUnreachable`) while `kafka_up` says false.
    pub fn with_reachability(mut self, kafka_up: tokio::sync::watch::Receiver<bool>) -> Self {
        self.kafka_up = Some(kafka_up);
        self
    }

    pub fn store(&self) -> &ImportStore {
        &self.store
    }

    /// The report of an earlier import with the page of errors from sequence `from`.
    pub fn report(
        &self,
        tenant: &str,
        import_id: &str,
        from: u64,
        page: usize,
    ) -> Result<Option<v1::ImportReport>, StoreError> {
        let Some(mut report) = self.store.report(tenant, import_id)? else {
            return Ok(None);
        };
        let (errors, next) = self.store.errors(tenant, import_id, from, page)?;
        report.errors = errors;
        report.next_errors_page_token = next.map(|n| n.to_string()).unwrap_or_default();
        Ok(Some(report))
    }

    /// Whether this upload was imported before: its report, marked as a duplicate.
    pub fn earlier(
        &self,
        tenant: &str,
        import_id: &str,
    ) -> Result<Option<v1::ImportReport>, StoreError> {
        let report = self.report(tenant, import_id, 0, self.settings.errors_per_page)?;
        Ok(report.map(|mut r| {
            r.duplicate = true;
            r
        }))
    }

    /// Imports the rows `open` yields. A file error ends reading but not the import: the rows
    /// before it count, and the report names the error.
    ///
    /// The import runs as a task of its own: a client that goes away does not stop an upload
    /// it completed, and what Kafka acknowledged is always remembered. Imports of one tenant
    /// take turns; the same upload sent while it is being imported waits and is then answered
    /// as a duplicate.
    pub async fn import<F>(
        &self,
        permit: ImportPermit,
        request: ImportRequest,
        open: F,
    ) -> Result<v1::ImportReport, ImportError>
    where
        F: FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError> + Send + 'static,
    {
        let importer = self.clone();
        tokio::spawn(async move { importer.run(permit, request, open).await })
            .await
            .map_err(|e| ImportError::Reader(format!("the import task failed: {e}")))?
    }

    async fn run<F>(
        &self,
        mut permit: ImportPermit,
        request: ImportRequest,
        open: F,
    ) -> Result<v1::ImportReport, ImportError>
    where
        F: FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError> + Send + 'static,
    {
        let _turn = permit
            .within(self.turn(&request.tenant))
            .await
            .map_err(ImportError::Stopped)?;
        if let Some(report) = self.earlier(&request.tenant, &request.import_id)? {
            return Ok(report);
        }
        if self.kafka_unreachable() {
            return Err(ImportError::KafkaUnreachable);
        }
        let started = (self.clock)();
        let pending: Pending = Arc::default();
        let (batches, threads) = self.start_threads(&request, started, &pending, open);
        let (remember, remembered) = mpsc::channel::<Remembered>(2);
        let writer = {
            let store = self.store.clone();
            let pending = pending.clone();
            tokio::task::spawn_blocking(move || write_batches(remembered, &store, &pending))
        };
        let mut report = v1::ImportReport {
            import_id: request.import_id.clone(),
            format: request.format as i32,
            data_origin: request.data_origin.clone().unwrap_or_default(),
            file_name: request.file_name.clone(),
            started_at: Some(to_timestamp(started)),
            ..Default::default()
        };
        let published = self
            .publish_all(&mut permit, &request, batches, &remember, &mut report)
            .await;
        // Lets the writer finish what was acknowledged.
        drop(remember);
        let written = writer
            .await
            .map_err(|e| ImportError::Reader(e.to_string()))?;
        let classified = threads.join().await?;
        written?;
        published?;
        classified?;
        self.finish(&request, report).await
    }

    /// Imports of one tenant take turns: two imports touching the same row would otherwise
    /// both read its revision and publish two contents under the next one.
    async fn turn(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let turn = {
            let mut turns = self
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            turns.entry(tenant.to_owned()).or_default().clone()
        };
        turn.lock_owned().await
    }

    /// The reader and classifier threads of an import, and the batches the classifier hands
    /// to the publisher.
    fn start_threads<F>(
        &self,
        request: &ImportRequest,
        started: DateTime<Utc>,
        pending: &Pending,
        open: F,
    ) -> (mpsc::Receiver<Batch>, Threads)
    where
        F: FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Batch>(self.settings.batches_in_flight.max(1));
        let ctx = ImportContext {
            organization_id: request.tenant.clone(),
            data_origin: request.data_origin.clone(),
            source_id: request.import_id.clone(),
            now: started,
        };
        let store = self.store.clone();
        let pending = pending.clone();
        let request = request.clone();
        let batch_rows = self.settings.batch_rows;
        let (chunks_tx, chunks_rx) = std::sync::mpsc::sync_channel(4);
        let reader_ctx = ctx.clone();
        let reading = tokio::task::spawn_blocking(move || read_rows(open, &reader_ctx, &chunks_tx));
        let classifying = tokio::task::spawn_blocking(move || {
            let mut classifier = Classifier {
                ctx: &ctx,
                request: &request,
                metadata: EventMetadata {
                    correlation_id: request.import_id.clone(),
                    causation_id: request.import_id.clone(),
                    actor: request.actor.clone(),
                },
                store: &store,
                pending: &pending,
                content: Vec::with_capacity(2048),
            };
            classify_rows(chunks_rx, &mut classifier, batch_rows, &tx)
        });
        (
            rx,
            Threads {
                reading,
                classifying,
            },
        )
    }

    /// Publishes the batches as they come, a few in flight, and hands each to the writer once
    /// Kafka acknowledged it. If Kafka refuses, what it did acknowledge is remembered all the
    /// same, so the same upload sent again publishes only the rest. Dropping `batches` at the
    /// end stops the classifier if the publisher gave up.
    async fn publish_all(
        &self,
        permit: &mut ImportPermit,
        request: &ImportRequest,
        mut batches: mpsc::Receiver<Batch>,
        remember: &mpsc::Sender<Remembered>,
        report: &mut v1::ImportReport,
    ) -> Result<(), ImportError> {
        let mut in_flight: VecDeque<(Batch, AckFinalizer<Entry>)> = VecDeque::new();
        let mut error_sequence = 0u64;
        let stopped = |stop: Stop| {
            tracing::warn!(
                import_id = %request.import_id,
                tenant = %request.tenant,
                %stop,
                "import stopped before its end; what Kafka acknowledged is kept"
            );
            ImportError::Stopped(stop)
        };
        let outcome = loop {
            let next = match permit.within(batches.recv()).await {
                Ok(next) => next,
                Err(stop) => break Err(stopped(stop)),
            };
            let done = next.is_none();
            let mut refused = false;
            if let Some(batch) = next {
                let (finalizer, stop) = self.publish(&batch, permit).await;
                refused = finalizer.is_refused();
                in_flight.push_back((batch, finalizer));
                if let Some(stop) = stop {
                    break Err(stopped(stop));
                }
            }
            // Keep a few batches in flight while more come; settle them all at the end, or once
            // Kafka refused one (settling it answers the refusal).
            let keep = if done || refused {
                0
            } else {
                self.settings.batches_in_flight.saturating_sub(1)
            };
            let settled = self
                .settle_oldest(
                    request,
                    &mut in_flight,
                    keep,
                    remember,
                    report,
                    &mut error_sequence,
                )
                .await;
            if settled.is_err() || done {
                break settled;
            }
        };
        if outcome.is_err() {
            for (batch, finalizer) in in_flight {
                let (acknowledged, _) = finalizer.settle().await.acknowledged();
                remember_acknowledged(batch, acknowledged, remember).await;
            }
        }
        report.error_count = error_sequence;
        outcome
    }

    /// Settles the oldest batches in flight until `keep` are left.
    async fn settle_oldest(
        &self,
        request: &ImportRequest,
        in_flight: &mut VecDeque<(Batch, AckFinalizer<Entry>)>,
        keep: usize,
        remember: &mpsc::Sender<Remembered>,
        report: &mut v1::ImportReport,
        error_sequence: &mut u64,
    ) -> Result<(), ImportError> {
        while in_flight.len() > keep {
            let Some((batch, finalizer)) = in_flight.pop_front() else {
                break;
            };
            self.settle(request, batch, finalizer, remember, report, error_sequence)
                .await?;
        }
        Ok(())
    }

    /// Stores the report of a completed import and answers it with its first page of errors.
    async fn finish(
        &self,
        request: &ImportRequest,
        mut report: v1::ImportReport,
    ) -> Result<v1::ImportReport, ImportError> {
        report.finished_at = Some(to_timestamp((self.clock)()));
        self.store.finish(&request.tenant, &report).await?;
        let (errors, next) = self.store.errors(
            &request.tenant,
            &request.import_id,
            0,
            self.settings.errors_per_page,
        )?;
        report.errors = errors;
        report.next_errors_page_token = next.map(|n| n.to_string()).unwrap_or_default();
        tracing::info!(
            tenant = %request.tenant,
            import_id = %request.import_id,
            rows = report.rows_read,
            accepted = report.accepted,
            unchanged = report.unchanged,
            rejected = report.rejected,
            file_error = %report.file_error,
            "import finished"
        );
        Ok(report)
    }

    /// Enqueues a batch's snapshots; its rejects follow when it is settled.
    async fn publish(
        &self,
        batch: &Batch,
        permit: &mut ImportPermit,
    ) -> (AckFinalizer<Entry>, Option<Stop>) {
        let mut finalizer = AckFinalizer::with_capacity(batch.changed.len() + batch.rejected.len());
        for (i, changed) in batch.changed.iter().enumerate() {
            let event = OutgoingEvent {
                topic: PAYGO_SNAPSHOTS.name,
                key: &changed.account_uid,
                value: &changed.envelope,
                event_id: &changed.event_id,
                event_type: SNAPSHOT_RECORDED,
            };
            // Enqueueing waits for room (flow control, a full local queue while the broker is
            // away): a stop must not wait behind it. An event not yet enqueued is not sent.
            match permit
                .within(finalizer.push(&self.producer, event, Some(i)))
                .await
            {
                Ok(true) => {}
                Ok(false) => break,
                Err(stop) => return (finalizer, Some(stop)),
            }
        }
        (finalizer, None)
    }

    /// Publishes a batch's rejects, waits for every acknowledgement, then remembers the batch.
    async fn settle(
        &self,
        request: &ImportRequest,
        batch: Batch,
        mut finalizer: AckFinalizer<Entry>,
        remember: &mpsc::Sender<Remembered>,
        report: &mut v1::ImportReport,
        error_sequence: &mut u64,
    ) -> Result<(), ImportError> {
        // Rejects go out after the batch's snapshots were enqueued; their key is the import.
        for rejected in &batch.rejected {
            let event = OutgoingEvent {
                topic: REJECTS.name,
                key: &request.import_id,
                value: &rejected.envelope,
                event_id: &rejected.event_id,
                event_type: ROW_REJECTED,
            };
            if !finalizer.push(&self.rejects, event, None).await {
                break;
            }
        }
        let (acknowledged, refusal) = finalizer.settle().await.acknowledged();
        if let Some(error) = refusal {
            // Remember the snapshots Kafka has, then give up.
            remember_acknowledged(batch, acknowledged, remember).await;
            return Err(ImportError::Publish(error));
        }
        report.rows_read += batch.rows;
        report.accepted += batch.changed.len() as u64;
        report.unchanged += batch.unchanged;
        report.rejected += batch.rejected.len() as u64;
        let rows = &recoup_metrics::metrics().import_rows;
        for (outcome, n) in [
            ("accepted", batch.changed.len() as u64),
            ("unchanged", batch.unchanged),
            ("rejected", batch.rejected.len() as u64),
        ] {
            rows.get_or_create(&recoup_metrics::OutcomeLabel { outcome })
                .inc_by(n);
        }
        let mut writes = StoreBatch::default();
        for rejected in &batch.rejected {
            for error in &rejected.errors {
                writes.error(&request.tenant, &request.import_id, *error_sequence, error);
                *error_sequence += 1;
            }
        }
        let mut published = Vec::with_capacity(batch.changed.len());
        for changed in batch.changed {
            writes.snapshot(&changed.key, changed.stored);
            writes.published(changed.envelope);
            published.push((changed.key, changed.stored));
        }
        if let Some(error) = batch.file_error {
            report.file_error = error;
        }
        // The writer thread stores it while the next batch is published.
        remember
            .send(Remembered { writes, published })
            .await
            .map_err(|_| ImportError::Reader("the store writer stopped".to_owned()))
    }
}

/// The reader and classifier threads of one import.
struct Threads {
    reading: tokio::task::JoinHandle<()>,
    classifying: tokio::task::JoinHandle<Result<(), ImportError>>,
}

impl Threads {
    /// Waits for both: the classifier's result. A reader that died would look like the end of
    /// the file: that is never reported as done.
    async fn join(self) -> Result<Result<(), ImportError>, ImportError> {
        let classified = self
            .classifying
            .await
            .map_err(|e| ImportError::Reader(format!("classifying rows failed: {e}")))?;
        self.reading
            .await
            .map_err(|e| ImportError::Reader(format!("reading the upload failed: {e}")))?;
        Ok(classified)
    }
}
