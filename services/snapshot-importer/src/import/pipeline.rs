//! The import's two threads: the reader (file → validated rows, in chunks) and the
//! classifier (rows → events of new or changed snapshots and rejects, in batches).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use event_backbone::envelope::{EventMetadata, NewEnvelope, new_event_id};
use paygo_snapshots::catalogue::{CREATED_AT, UPDATED_AT};
use paygo_snapshots::{AccountSnapshot, ImportContext, Value, rule};
use prost::Message;
use recoup_proto::contract::aggregate::{
    PAYGO_ACCOUNT_SNAPSHOT as SNAPSHOT_AGGREGATE, SNAPSHOT_IMPORT as IMPORT_AGGREGATE,
};
use recoup_proto::contract::event_type::{
    ACCOUNT_SNAPSHOT_RECORDED as SNAPSHOT_RECORDED, ROW_REJECTED,
};
use recoup_proto::snapshots::{
    encode_recorded, encode_snapshot_content, encode_snapshot_import_fields, format_date,
    row_error_to_proto,
};
use recoup_proto::v1;
use tokio::sync::mpsc;

use super::{ImportError, ImportRequest};
use crate::readers::{FileError, RowOutcome, SnapshotRows, keep_raw};
use crate::store::{ImportStore, SnapshotKey, Stored, import_tag, snapshot_key};

/// The largest event an import publishes; librdkafka's default `message.max.bytes` is 1 MB.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// One accepted row whose content is new or changed.
pub(super) struct Changed {
    pub key: SnapshotKey,
    pub account_uid: String,
    pub stored: Stored,
    pub event_id: String,
    pub envelope: Vec<u8>,
}

/// One rejected row.
pub(super) struct Rejected {
    pub event_id: String,
    pub envelope: Vec<u8>,
    pub errors: Vec<v1::RowError>,
}

#[derive(Default)]
pub(super) struct Batch {
    pub rows: u64,
    pub unchanged: u64,
    pub changed: Vec<Changed>,
    pub rejected: Vec<Rejected>,
    pub file_error: Option<String>,
}

/// What one event of a batch is, for the finalizer: the snapshot `batch.changed[i]`, or a reject.
pub(super) type Entry = Option<usize>;

/// Keys published by batches not yet acknowledged, so that a later row of the same upload
/// compares against them rather than against the store.
pub(super) type Pending = Arc<Mutex<HashMap<SnapshotKey, Stored>>>;

/// What the reader thread hands to the classifier thread.
pub(super) enum Chunk {
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
pub(super) fn read_rows<F>(open: F, ctx: &ImportContext, out: &std::sync::mpsc::SyncSender<Chunk>)
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
pub(super) fn classify_rows(
    chunks: std::sync::mpsc::Receiver<Chunk>,
    classifier: &mut Classifier<'_>,
    batch_rows: usize,
    tx: &mpsc::Sender<Batch>,
) -> Result<(), ImportError> {
    let mut batch = Batch::default();
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
                    classifier.row(outcome, &mut batch)?;
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

/// Sorts the rows of one import: rejected, unchanged (the same content as stored or in
/// flight for the row's key), or new or changed, encoded as their events.
pub(super) struct Classifier<'a> {
    pub ctx: &'a ImportContext,
    pub request: &'a ImportRequest,
    pub metadata: EventMetadata,
    pub store: &'a ImportStore,
    pub pending: &'a Pending,
    /// The content of the row at hand, encoded (reused).
    pub content: Vec<u8>,
}

impl Classifier<'_> {
    /// One row into `batch`.
    fn row(&mut self, outcome: RowOutcome, batch: &mut Batch) -> Result<(), ImportError> {
        let row = outcome.row;
        let snapshot: AccountSnapshot = match outcome.result {
            Ok(snapshot) => snapshot,
            Err(errors) => {
                let errors = errors.iter().map(row_error_to_proto).collect();
                batch.rejected.push(self.reject(row, outcome.raw, errors));
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
        self.content.clear();
        encode_snapshot_content(&snapshot, &mut self.content);
        let fingerprint = xxhash_rust::xxh3::xxh3_128(&self.content);
        let key = snapshot_key(&self.request.tenant, &account_uid, date);
        let earlier = match self.pending.lock().ok().and_then(|p| p.get(&key).copied()) {
            Some(stored) => Some(stored),
            None => self.store.snapshot(&key)?,
        };
        if earlier.is_some_and(|e| e.fingerprint == fingerprint) {
            batch.unchanged += 1;
            return Ok(());
        }
        let stored = Stored {
            fingerprint,
            created_at_micros: 0,
            revision: earlier.map_or(1, |e| e.revision + 1),
            import: import_tag(&self.request.import_id),
        };
        let created_at = earlier.and_then(|e| e.created_at()).unwrap_or(self.ctx.now);
        match self.recorded(snapshot, row, created_at, stored, &account_uid, date) {
            Ok((event_id, envelope, stored)) => {
                if let Ok(mut pending) = self.pending.lock() {
                    pending.insert(key.clone(), stored);
                }
                batch.changed.push(Changed {
                    key,
                    account_uid,
                    stored,
                    event_id,
                    envelope,
                });
            }
            Err(rejected) => batch.rejected.push(rejected),
        }
        Ok(())
    }

    /// The `AccountSnapshotRecorded` event of a new or changed row (its id and envelope, and
    /// what to store once Kafka has it), or the row rejected when that event would be too long.
    fn recorded(
        &mut self,
        mut snapshot: AccountSnapshot,
        row: u64,
        created_at: DateTime<Utc>,
        mut stored: Stored,
        account_uid: &str,
        date: NaiveDate,
    ) -> Result<(String, Vec<u8>, Stored), Rejected> {
        let now = self.ctx.now;
        snapshot.values[CREATED_AT] = Some(Value::DateTime(created_at));
        snapshot.values[UPDATED_AT] = Some(Value::DateTime(now));
        stored.created_at_micros = created_at.timestamp_micros();
        // The content is already encoded: the import's columns complete the snapshot.
        encode_snapshot_import_fields(&snapshot, &mut self.content);
        let import_id = &self.request.import_id;
        let payload = encode_recorded(&self.content, import_id, row, stored.revision);
        let aggregate_id = format!("{account_uid}@{}", format_date(date));
        let event_id = new_event_id();
        let encoded = NewEnvelope {
            tenant: &self.request.tenant,
            aggregate_type: SNAPSHOT_AGGREGATE,
            aggregate_id: &aggregate_id,
            aggregate_version: stored.revision,
            occurred_at: now,
            recorded_at: now,
            event_type: SNAPSHOT_RECORDED,
            schema_version: recoup_proto::schema::current(SNAPSHOT_RECORDED),
            payload,
            metadata: &self.metadata,
        }
        .encode(&event_id);
        if encoded.len() > MAX_EVENT_BYTES {
            return Err(self.too_long(&snapshot, row, encoded.len()));
        }
        Ok((event_id, encoded, stored))
    }

    /// Hundreds of long unknown columns: Kafka would refuse the event (and every retry).
    fn too_long(&self, snapshot: &AccountSnapshot, row: u64, bytes: usize) -> Rejected {
        let error = v1::RowError {
            row,
            column: String::new(),
            value: String::new(),
            rule: rule::TOO_LONG.to_owned(),
            message: format!(
                "the row makes an event of {bytes} bytes, more than the limit of \
                 {MAX_EVENT_BYTES} bytes (columns that match no field go into `custom`)"
            ),
        };
        let raw = keep_raw(
            snapshot
                .custom
                .iter()
                .map(|(column, value)| (column.clone(), value.as_str().unwrap_or_default())),
        );
        self.reject(row, raw, vec![error])
    }

    /// A rejected row as its `RowRejected` event.
    fn reject(&self, row: u64, raw: Vec<(String, String)>, errors: Vec<v1::RowError>) -> Rejected {
        let (ctx, request, metadata) = (self.ctx, self.request, &self.metadata);
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
            schema_version: recoup_proto::schema::current(ROW_REJECTED),
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
}
