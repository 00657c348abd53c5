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

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use event_backbone::envelope::{EventMetadata, NewEnvelope, new_event_id};
use event_backbone::finalizer::AckFinalizer;
use event_backbone::producer::{Acknowledged, EventProducer, OutgoingEvent, PublishError};
use event_backbone::topics::{PAYGO_SNAPSHOTS, REJECTS};
use paygo_snapshots::catalogue::{CREATED_AT, UPDATED_AT};
use paygo_snapshots::{AccountSnapshot, ImportContext, Value, rule};
use prost::Message;
use recoup_proto::snapshots::{
    encode_recorded, encode_snapshot_content, encode_snapshot_import_fields, format_date,
    row_error_to_proto,
};
use recoup_proto::{to_timestamp, v1};
use tokio::sync::mpsc;

use crate::readers::{FileError, RowOutcome, SnapshotRows, keep_raw};
use crate::store::{
    ImportStore, SnapshotKey, StoreBatch, StoreError, Stored, import_tag, snapshot_key,
};

use recoup_proto::contract::aggregate::{
    PAYGO_ACCOUNT_SNAPSHOT as SNAPSHOT_AGGREGATE, SNAPSHOT_IMPORT as IMPORT_AGGREGATE,
};
use recoup_proto::contract::event_type::{
    ACCOUNT_SNAPSHOT_RECORDED as SNAPSHOT_RECORDED, ROW_REJECTED,
};

use recoup_runtime::Clock;

/// Tuning of the pipeline.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// Rows per batch between the reader thread and the publisher.
    pub batch_rows: usize,
    /// Batches published but not yet acknowledged.
    pub batches_in_flight: usize,
    /// Errors in an answer; the rest are paged with `GetImport`.
    pub errors_per_page: usize,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            batch_rows: 1000,
            batches_in_flight: 3,
            errors_per_page: 1000,
        }
    }
}

/// What is being imported, besides the rows.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    pub tenant: String,
    /// The content hash of the upload (see [`import_id`]).
    pub import_id: String,
    pub format: v1::FileFormat,
    pub data_origin: Option<String>,
    pub file_name: String,
}

/// The import id of an upload: the first 128 bits of SHA-256 over the format, the data origin,
/// the sheet (XLSX, when named) and the bytes, in hex. The same file sent again with the same
/// origin has the same id.
pub struct ImportHasher(sha2::Sha256);

impl ImportHasher {
    pub fn new(format: v1::FileFormat, data_origin: Option<&str>) -> Self {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(format.as_str_name().as_bytes());
        hasher.update([0]);
        hasher.update(data_origin.unwrap_or("").trim().as_bytes());
        hasher.update([0]);
        Self(hasher)
    }

    /// Adds a named part of the request that changes what is imported (e.g. the XLSX sheet).
    pub fn scope(&mut self, name: &str, value: &str) {
        for part in [name, value] {
            self.update(&(part.len() as u64).to_be_bytes());
            self.update(part.as_bytes());
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }

    pub fn finish(self) -> String {
        let digest = sha2::Digest::finalize(self.0);
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
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
}

/// One accepted row whose content is new or changed.
struct Changed {
    key: SnapshotKey,
    account_uid: String,
    stored: Stored,
    event_id: String,
    envelope: Vec<u8>,
}

/// One rejected row.
struct Rejected {
    event_id: String,
    envelope: Vec<u8>,
    errors: Vec<v1::RowError>,
}

#[derive(Default)]
struct Batch {
    rows: u64,
    unchanged: u64,
    changed: Vec<Changed>,
    rejected: Vec<Rejected>,
    file_error: Option<String>,
}

/// What one event of a batch is, for the finalizer: the snapshot `batch.changed[i]`, or a reject.
type Entry = Option<usize>;

/// Keys published by batches not yet acknowledged, so that a later row of the same upload
/// compares against them rather than against the store.
type Pending = Arc<Mutex<HashMap<SnapshotKey, Stored>>>;

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
            settings,
            turns: Arc::default(),
            kafka_up: None,
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
        request: ImportRequest,
        open: F,
    ) -> Result<v1::ImportReport, ImportError>
    where
        F: FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError> + Send + 'static,
    {
        let importer = self.clone();
        tokio::spawn(async move { importer.run(request, open).await })
            .await
            .map_err(|e| ImportError::Reader(format!("the import task failed: {e}")))?
    }

    async fn run<F>(&self, request: ImportRequest, open: F) -> Result<v1::ImportReport, ImportError>
    where
        F: FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError> + Send + 'static,
    {
        let turn = {
            let mut turns = self
                .turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            turns.entry(request.tenant.clone()).or_default().clone()
        };
        let _turn = turn.lock().await;
        if let Some(report) = self.earlier(&request.tenant, &request.import_id)? {
            return Ok(report);
        }
        if self.kafka_unreachable() {
            return Err(ImportError::KafkaUnreachable);
        }
        let started = (self.clock)();
        let pending: Pending = Arc::default();
        let (tx, mut rx) = mpsc::channel::<Batch>(self.settings.batches_in_flight.max(1));
        let reader = {
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
            let reading =
                tokio::task::spawn_blocking(move || read_rows(open, &reader_ctx, &chunks_tx));
            let classifying = tokio::task::spawn_blocking(move || {
                classify_rows(chunks_rx, &ctx, &request, &store, &pending, batch_rows, &tx)
            });
            (reading, classifying)
        };

        let mut report = v1::ImportReport {
            import_id: request.import_id.clone(),
            format: request.format as i32,
            data_origin: request.data_origin.clone().unwrap_or_default(),
            file_name: request.file_name.clone(),
            started_at: Some(to_timestamp(started)),
            ..Default::default()
        };
        let mut in_flight: VecDeque<(Batch, AckFinalizer<Entry>)> = VecDeque::new();
        let mut error_sequence = 0u64;
        let (remember, remembered) = mpsc::channel::<Remembered>(2);
        let writer = {
            let store = self.store.clone();
            let pending = pending.clone();
            tokio::task::spawn_blocking(move || write_batches(remembered, &store, &pending))
        };
        let outcome: Result<(), ImportError> = async {
            loop {
                let next = rx.recv().await;
                let done = next.is_none();
                let mut refused = false;
                if let Some(batch) = next {
                    let finalizer = self.publish(&batch).await;
                    refused = finalizer.is_refused();
                    in_flight.push_back((batch, finalizer));
                }
                // Keep a few batches in flight while more come; settle them all at the end, or
                // once Kafka refused one (settling it answers the refusal).
                let keep = if done || refused {
                    0
                } else {
                    self.settings.batches_in_flight.saturating_sub(1)
                };
                while in_flight.len() > keep {
                    let Some((batch, finalizer)) = in_flight.pop_front() else {
                        break;
                    };
                    self.settle(
                        &request,
                        batch,
                        finalizer,
                        &remember,
                        &mut report,
                        &mut error_sequence,
                    )
                    .await?;
                }
                if done {
                    break;
                }
            }
            Ok(())
        }
        .await;
        if outcome.is_err() {
            // Kafka refused something: what it did acknowledge is remembered all the same, so
            // the same upload sent again publishes only the rest.
            for (batch, finalizer) in in_flight {
                let (acknowledged, _) = finalizer.settle().await.acknowledged();
                remember_acknowledged(batch, acknowledged, &remember).await;
            }
        }
        // Lets the writer finish what was acknowledged; stops the reader if the publisher gave up.
        drop(remember);
        drop(rx);
        let (reading, classifying) = reader;
        let written = writer
            .await
            .map_err(|e| ImportError::Reader(e.to_string()))?;
        let classified = classifying
            .await
            .map_err(|e| ImportError::Reader(format!("classifying rows failed: {e}")))?;
        // A reader that died would look like the end of the file: never report that as done.
        reading
            .await
            .map_err(|e| ImportError::Reader(format!("reading the upload failed: {e}")))?;
        written?;
        outcome?;
        classified?;

        report.error_count = error_sequence;
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
    async fn publish(&self, batch: &Batch) -> AckFinalizer<Entry> {
        let mut finalizer = AckFinalizer::with_capacity(batch.changed.len() + batch.rejected.len());
        for (i, changed) in batch.changed.iter().enumerate() {
            let event = OutgoingEvent {
                topic: PAYGO_SNAPSHOTS.name,
                key: &changed.account_uid,
                value: &changed.envelope,
                event_id: &changed.event_id,
                event_type: SNAPSHOT_RECORDED,
            };
            if !finalizer.push(&self.producer, event, Some(i)).await {
                break;
            }
        }
        finalizer
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

/// What the publisher hands to the store writer once Kafka acknowledged a batch.
struct Remembered {
    writes: StoreBatch,
    /// Keys no longer pending once written.
    published: Vec<(SnapshotKey, Stored)>,
}

/// The store writer: applies acknowledged batches in order, then drops their keys from the
/// pending map (a later row of the upload then finds them in the store).
fn write_batches(
    mut batches: mpsc::Receiver<Remembered>,
    store: &ImportStore,
    pending: &Pending,
) -> Result<(), StoreError> {
    while let Some(Remembered { writes, published }) = batches.blocking_recv() {
        store.apply(writes)?;
        if let Ok(mut pending) = pending.lock() {
            for (key, stored) in published {
                if pending.get(&key) == Some(&stored) {
                    pending.remove(&key);
                }
            }
        }
    }
    Ok(())
}

/// Hands the snapshots of `batch` that Kafka acknowledged to the writer.
async fn remember_acknowledged(
    batch: Batch,
    acknowledged: Vec<(Entry, Acknowledged)>,
    remember: &mpsc::Sender<Remembered>,
) {
    let mut taken = vec![false; batch.changed.len()];
    for i in acknowledged.into_iter().filter_map(|(entry, _)| entry) {
        if let Some(taken) = taken.get_mut(i) {
            *taken = true;
        }
    }
    let mut writes = StoreBatch::default();
    let mut published = Vec::new();
    for (changed, _) in batch.changed.into_iter().zip(taken).filter(|(_, t)| *t) {
        writes.snapshot(&changed.key, changed.stored);
        published.push((changed.key, changed.stored));
    }
    if !published.is_empty() {
        let _ = remember.send(Remembered { writes, published }).await;
    }
}

/// What the reader thread hands to the classifier thread.
enum Chunk {
    Rows(Vec<RowOutcome>),
    /// The file cannot be read further (or opened at all).
    FileError(String),
    /// This server could not read the upload: the import fails, no report is kept.
    Failed(String),
}

fn file_chunk(error: FileError) -> Chunk {
    match error {
        FileError::Io { .. } => Chunk::Failed(error.to_string()),
        _ => Chunk::FileError(error.to_string()),
    }
}

/// Rows per chunk between the reader and the classifier thread.
const CHUNK_ROWS: usize = 256;

/// The reader thread: the file into validated rows, in chunks. Reading and validating is half
/// of an import's work; the classifier thread does the other half on the second core.
fn read_rows<F>(open: F, ctx: &ImportContext, out: &std::sync::mpsc::SyncSender<Chunk>)
where
    F: FnOnce() -> Result<Box<dyn SnapshotRows + Send>, FileError>,
{
    let mut rows = match open() {
        Ok(rows) => rows,
        Err(error) => {
            // A closed channel means the import gave up and reports why.
            let _ = out.send(file_chunk(error));
            return;
        }
    };
    let mut chunk = Vec::with_capacity(CHUNK_ROWS);
    loop {
        match rows.next_row(ctx) {
            None => break,
            Some(Err(error)) => {
                if !chunk.is_empty() {
                    let _ = out.send(Chunk::Rows(std::mem::take(&mut chunk)));
                }
                let _ = out.send(file_chunk(error));
                return;
            }
            Some(Ok(outcome)) => chunk.push(outcome),
        }
        if chunk.len() >= CHUNK_ROWS
            && out
                .send(Chunk::Rows(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(CHUNK_ROWS),
                )))
                .is_err()
        {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = out.send(Chunk::Rows(chunk));
    }
}

/// The classifier thread: validated rows into envelopes (new, changed, unchanged, rejected), in
/// batches for the publisher.
fn classify_rows(
    chunks: std::sync::mpsc::Receiver<Chunk>,
    ctx: &ImportContext,
    request: &ImportRequest,
    store: &ImportStore,
    pending: &Pending,
    batch_rows: usize,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), ImportError> {
    let metadata = EventMetadata {
        correlation_id: request.import_id.clone(),
        causation_id: request.import_id.clone(),
    };
    let mut batch = Batch::default();
    let mut content = Vec::with_capacity(2048);
    for chunk in chunks {
        match chunk {
            Chunk::FileError(error) => {
                batch.file_error = Some(error);
                break;
            }
            Chunk::Failed(error) => return Err(ImportError::Reader(error)),
            Chunk::Rows(rows) => {
                for outcome in rows {
                    batch.rows += 1;
                    classify(
                        outcome,
                        ctx,
                        request,
                        &metadata,
                        store,
                        pending,
                        &mut content,
                        &mut batch,
                    )?;
                }
            }
        }
        if batch.rows as usize >= batch_rows
            && tx.blocking_send(std::mem::take(&mut batch)).is_err()
        {
            // The publisher gave up; dropping `chunks` stops the reader.
            return Ok(());
        }
    }
    let _ = tx.blocking_send(batch);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn classify(
    outcome: RowOutcome,
    ctx: &ImportContext,
    request: &ImportRequest,
    metadata: &EventMetadata,
    store: &ImportStore,
    pending: &Pending,
    content: &mut Vec<u8>,
    batch: &mut Batch,
) -> Result<(), ImportError> {
    let row = outcome.row;
    let mut snapshot: AccountSnapshot = match outcome.result {
        Ok(snapshot) => snapshot,
        Err(errors) => {
            let errors = errors.iter().map(row_error_to_proto).collect();
            batch
                .rejected
                .push(reject(row, outcome.raw, errors, ctx, request, metadata));
            return Ok(());
        }
    };
    let (Some(account_uid), Some(date)) = (
        snapshot.account_uid().map(str::to_owned),
        snapshot.snapshot_date(),
    ) else {
        // validate() guarantees both; a row without them would have been rejected.
        return Err(ImportError::Reader(format!(
            "row {row} was accepted without account_uid or snapshot_date"
        )));
    };
    content.clear();
    encode_snapshot_content(&snapshot, content);
    let fingerprint = xxhash_rust::xxh3::xxh3_128(content);
    let key = snapshot_key(&request.tenant, &account_uid, date);
    let earlier = match pending.lock().ok().and_then(|p| p.get(&key).copied()) {
        Some(stored) => Some(stored),
        None => store.snapshot(&key)?,
    };
    if let Some(earlier) = earlier
        && earlier.fingerprint == fingerprint
    {
        batch.unchanged += 1;
        return Ok(());
    }
    let created_at = earlier.and_then(|e| e.created_at()).unwrap_or(ctx.now);
    snapshot.values[CREATED_AT] = Some(Value::DateTime(created_at));
    snapshot.values[UPDATED_AT] = Some(Value::DateTime(ctx.now));
    let stored = Stored {
        fingerprint,
        created_at_micros: created_at.timestamp_micros(),
        revision: earlier.map_or(1, |e| e.revision + 1),
        import: import_tag(&request.import_id),
    };
    // The content is already encoded: the import's columns complete the snapshot.
    encode_snapshot_import_fields(&snapshot, content);
    let payload = encode_recorded(content, &request.import_id, row, stored.revision);
    let aggregate_id = format!("{account_uid}@{}", format_date(date));
    let event_id = new_event_id();
    let encoded = NewEnvelope {
        tenant: &request.tenant,
        aggregate_type: SNAPSHOT_AGGREGATE,
        aggregate_id: &aggregate_id,
        aggregate_version: stored.revision,
        occurred_at: ctx.now,
        recorded_at: ctx.now,
        event_type: SNAPSHOT_RECORDED,
        schema_version: 1,
        payload,
        metadata,
    }
    .encode(&event_id);
    if encoded.len() > MAX_EVENT_BYTES {
        // Hundreds of long unknown columns: Kafka would refuse the event (and every retry).
        let error = v1::RowError {
            row,
            column: String::new(),
            value: String::new(),
            rule: rule::TOO_LONG.to_owned(),
            message: format!(
                "the row makes an event of {} bytes, more than the limit of {MAX_EVENT_BYTES} \
                 bytes (columns that match no field go into `custom`)",
                encoded.len()
            ),
        };
        let raw = keep_raw(
            snapshot
                .custom
                .iter()
                .map(|(column, value)| (column.clone(), value.as_str().unwrap_or_default())),
        );
        batch
            .rejected
            .push(reject(row, raw, vec![error], ctx, request, metadata));
        return Ok(());
    }
    if let Ok(mut pending) = pending.lock() {
        pending.insert(key.clone(), stored);
    }
    batch.changed.push(Changed {
        key,
        account_uid,
        stored,
        event_id,
        envelope: encoded,
    });
    Ok(())
}

/// The largest event an import publishes; librdkafka's default `message.max.bytes` is 1 MB.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// A rejected row as its `RowRejected` event.
fn reject(
    row: u64,
    raw: Vec<(String, String)>,
    errors: Vec<v1::RowError>,
    ctx: &ImportContext,
    request: &ImportRequest,
    metadata: &EventMetadata,
) -> Rejected {
    let payload = v1::RowRejected {
        import_id: request.import_id.clone(),
        data_origin: ctx.origin().to_owned(),
        file_name: request.file_name.clone(),
        row,
        cells: raw
            .into_iter()
            .map(|(column, value)| v1::RawCell { column, value })
            .collect(),
        errors: errors.clone(),
    };
    let event_id = new_event_id();
    let envelope = NewEnvelope {
        tenant: &request.tenant,
        aggregate_type: IMPORT_AGGREGATE,
        aggregate_id: &request.import_id,
        aggregate_version: row.max(1),
        occurred_at: ctx.now,
        recorded_at: ctx.now,
        event_type: ROW_REJECTED,
        schema_version: 1,
        payload: payload.encode_to_vec(),
        metadata,
    }
    .encode(&event_id);
    Rejected {
        event_id,
        envelope,
        errors,
    }
}
