//! The sled event store with group commit.
//!
//! One writer thread owns every change. It takes the commands waiting in its queue as a group,
//! decides each against the latest state (its own cache, plus what earlier commands of the same
//! group staged), and writes the whole group — events, index updates, outbox records — as one
//! atomic `sled::Batch` on one tree, followed by one flush. Only then are the commands answered:
//! an answer means the events are durable. Checking versions in a single writer instead of in a
//! sled transaction is about twice as fast (see the README's performance section).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use debt_cases::{CollectorConfigurations, Command, DebtCase, DebtCaseEvent, DomainError, NewCase};
use event_backbone::envelope::{EventMetadata, decode_envelope, occurred_at};
use prost::Message;
use recoup_keys::store::StoreOptions;
use recoup_proto::convert::event_from_payload;
use tokio::sync::{Notify, mpsc, oneshot};

use recoup_runtime::Clock;

use crate::keys;

mod search;
mod writer;

pub use self::search::Found;
use self::writer::Writer;

/// The store's tree.
const TREE: &str = "event_store";
/// Its tree before the key codec.
const OLD_TREE: &str = "events";

/// Most commands written by one batch and flush.
const MAX_GROUP: usize = 512;
/// Cached case states; the cache is cleared when it grows past this (a miss replays the stream).
const MAX_CACHED_CASES: usize = 200_000;

/// A technical failure of the store: the request may be retried later.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("event store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored event of case {case_id} is unreadable: {reason}")]
    Corrupt { case_id: String, reason: String },
    #[error("the event store is shutting down")]
    Closed,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The rules forbid it: the client must change the request.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// Something broke: the client may retry.
    #[error(transparent)]
    Failed(#[from] StoreError),
}

/// A command on a case of a tenant.
#[derive(Debug, Clone)]
pub enum CaseCommand {
    Create(NewCase),
    Existing {
        case_id: String,
        expected_version: u64,
        command: Command,
    },
}

/// Work for the writer thread.
// Short-lived, one per queued request: boxing would add an allocation per command.
#[allow(clippy::large_enum_variant)]
enum Request {
    Command {
        tenant: String,
        command: CaseCommand,
        metadata: EventMetadata,
        reply: oneshot::Sender<Result<DebtCase, CommandError>>,
    },
    /// Queue already-stored events again (after `after_version`).
    Republish {
        tenant: String,
        case_id: String,
        after_version: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// What the writer answers once the group is durable.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Case(Result<DebtCase, CommandError>),
    Republished(Result<usize, StoreError>),
}

/// The record the relay publishes; kept in the outbox until the broker acknowledged it.
pub use event_backbone::outbox::OutboxRecord;

/// Where the store keeps its files and how it decides.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub collectors: CollectorConfigurations,
    /// How the database is opened.
    pub store: StoreOptions,
}

/// Counters of the writer: how well group commit groups.
#[derive(Debug, Default)]
pub struct WriteStats {
    /// Batches written, each followed by one flush.
    pub groups: AtomicU64,
    /// Requests answered by those batches.
    pub requests: AtomicU64,
}

/// A handle to the event store: cheap to clone, usable from any task.
#[derive(Clone)]
pub struct EventStore {
    tree: sled::Tree,
    db: sled::Db,
    commands: mpsc::Sender<Request>,
    appended: Arc<Notify>,
    stats: Arc<WriteStats>,
    /// Set by the writer thread once it ended and let go of the database.
    writer_done: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl EventStore {
    /// Opens (or creates) the store in `dir` and starts its writer thread. The clock is read by
    /// the writer for each group; tests pass their own.
    pub fn open(dir: &Path, settings: StoreSettings, clock: Clock) -> Result<Self, StoreError> {
        let db = recoup_keys::store::open(dir, settings.store)?;
        // A store of layout 1 (tree `events`) is copied into the key codec's first.
        let (tree, _) = recoup_keys::layout::open_upgraded(&db, TREE, OLD_TREE, keys::upgraded)?;
        let (tx, rx) = mpsc::channel(4096);
        let appended = Arc::new(Notify::new());
        let stats = Arc::new(WriteStats::default());
        let next_outbox = match tree.scan_prefix(keys::OUTBOX_PREFIX).next_back() {
            Some(entry) => {
                let (k, _) = entry?;
                keys::outbox_sequence(&k).map_or(0, |s| s + 1)
            }
            None => 0,
        };
        let writer = Writer {
            db: db.clone(),
            tree: tree.clone(),
            settings,
            clock,
            cache: HashMap::new(),
            next_outbox,
            appended: appended.clone(),
            stats: stats.clone(),
        };
        let writer_done: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)> = Arc::default();
        let done = writer_done.clone();
        std::thread::Builder::new()
            .name("case-store-writer".into())
            .spawn(move || {
                // `run` consumes the writer: its database handle is gone when this is set.
                writer.run(rx);
                let (ended, signal) = &*done;
                *ended
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
                signal.notify_all();
            })
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Self {
            tree,
            db,
            commands: tx,
            appended,
            stats,
            writer_done,
        })
    }

    /// Lets go of this handle and waits (up to `timeout`) until the writer thread ended, which
    /// it does once every handle is gone: then the store's files can be opened again, e.g. by a
    /// restart in the same process. Returns whether it ended in time.
    pub fn close(self, timeout: std::time::Duration) -> bool {
        let done = self.writer_done.clone();
        drop(self);
        let (ended, signal) = &*done;
        let guard = ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = signal
            .wait_timeout_while(guard, timeout, |ended| !*ended)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }

    /// Runs a command; answers once its events are durable.
    pub async fn execute(
        &self,
        tenant: &str,
        command: CaseCommand,
        metadata: EventMetadata,
    ) -> Result<DebtCase, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Request::Command {
                tenant: tenant.to_owned(),
                command,
                metadata,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The case as its durable events make it; `None` when it never existed. A deleted case is
    /// returned with `deleted_on` set.
    pub fn get(&self, tenant: &str, case_id: &str) -> Result<Option<DebtCase>, StoreError> {
        load_case(&self.tree, tenant, case_id)
    }

    /// The stored envelopes of one case from `after_version + 1` on, in order.
    pub fn events_after(
        &self,
        tenant: &str,
        case_id: &str,
        after_version: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let start = keys::event(tenant, case_id, after_version.saturating_add(1));
        let prefix = keys::stream_prefix(tenant, case_id);
        let mut out = Vec::new();
        for entry in self.tree.range(start..) {
            let (k, v) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Cases whose processing timeout is at or before `now`: (tenant, case id).
    pub fn due_timeouts(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>, StoreError> {
        let mut due = Vec::new();
        for entry in self.tree.scan_prefix(keys::TIMEOUT_PREFIX) {
            let (k, _) = entry?;
            match keys::parse_timeout(&k) {
                Some((at, tenant, case_id)) if at <= now.timestamp() => due.push((tenant, case_id)),
                Some(_) => break,
                None => continue,
            }
        }
        Ok(due)
    }

    /// Up to `max` outbox records in append order, with their keys.
    pub fn outbox_batch(&self, max: usize) -> Result<Vec<(sled::IVec, OutboxRecord)>, StoreError> {
        let mut out = Vec::with_capacity(max.min(1024));
        for entry in self.tree.scan_prefix(keys::OUTBOX_PREFIX).take(max) {
            let (k, v) = entry?;
            let record = OutboxRecord::decode(v.as_ref()).map_err(|e| StoreError::Corrupt {
                case_id: format!("outbox {:?}", keys::outbox_sequence(&k)),
                reason: e.to_string(),
            })?;
            out.push((k, record));
        }
        Ok(out)
    }

    /// Removes published records from the outbox. Not flushed: a removal lost in a crash only
    /// means the record is sent again, and consumers drop the duplicate.
    pub fn remove_from_outbox(&self, keys: &[sled::IVec]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k.clone());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// Number of records waiting in the outbox.
    pub fn outbox_len(&self) -> usize {
        self.tree.scan_prefix(keys::OUTBOX_PREFIX).count()
    }

    /// Puts already-stored events of a case back into the outbox (after `after_version`), so a
    /// read model that lost them in transit gets them again. Returns how many were queued.
    pub async fn republish_after(
        &self,
        tenant: &str,
        case_id: &str,
        after_version: u64,
    ) -> Result<usize, StoreError> {
        // Through the writer, so outbox sequence numbers stay single-owner.
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Request::Republish {
                tenant: tenant.to_owned(),
                case_id: case_id.to_owned(),
                after_version,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The events of every stream, in key order (each case's in version order): the record
    /// of the case stream that read models are rebuilt from.
    pub fn record(&self) -> recoup_keys::record::PrefixRecord {
        recoup_keys::record::PrefixRecord::new(self.tree.clone(), b"e")
    }

    /// Every stream head: (tenant, case id, version), in key order.
    pub fn heads(&self) -> impl Iterator<Item = Result<(String, String, u64), StoreError>> + '_ {
        let mut last: Option<(String, String, u64)> = None;
        let mut iter = self.tree.scan_prefix(b"e");
        std::iter::from_fn(move || {
            loop {
                match iter.next() {
                    None => return last.take().map(Ok),
                    Some(Err(e)) => return Some(Err(e.into())),
                    Some(Ok((k, _))) => {
                        let Some((tenant, case_id, version)) = keys::parse_event(&k) else {
                            continue;
                        };
                        match &mut last {
                            Some((t, c, v)) if *t == tenant && *c == case_id => *v = version,
                            _ => {
                                let done = last.replace((tenant, case_id, version));
                                if done.is_some() {
                                    return done.map(Ok);
                                }
                            }
                        }
                    }
                }
            }
        })
    }

    /// (groups written, requests answered) since the store opened.
    pub fn write_stats(&self) -> (u64, u64) {
        (
            self.stats.groups.load(Ordering::Relaxed),
            self.stats.requests.load(Ordering::Relaxed),
        )
    }

    /// Woken after every group that appended events.
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Decodes one stored envelope into a domain event.
pub fn decode_event(bytes: &[u8]) -> Result<DebtCaseEvent, String> {
    let envelope = decode_envelope(bytes).map_err(|e| e.to_string())?;
    let at = occurred_at(&envelope).ok_or("occurred_at is missing")?;
    event_from_payload(
        &envelope.event_type,
        &envelope.payload,
        &envelope.aggregate_id,
        &envelope.tenant,
        at,
    )
    .map_err(|e| e.to_string())
}

fn load_case(
    tree: &sled::Tree,
    tenant: &str,
    case_id: &str,
) -> Result<Option<DebtCase>, StoreError> {
    let mut case: Option<DebtCase> = None;
    for entry in tree.scan_prefix(keys::stream_prefix(tenant, case_id)) {
        let (_, v) = entry?;
        let event = decode_event(&v).map_err(|reason| StoreError::Corrupt {
            case_id: case_id.to_owned(),
            reason,
        })?;
        match &mut case {
            None => {
                case = Some(
                    DebtCase::from_created(&event).ok_or_else(|| StoreError::Corrupt {
                        case_id: case_id.to_owned(),
                        reason: format!(
                            "stream starts with {}",
                            recoup_proto::convert::event_type(&event)
                        ),
                    })?,
                )
            }
            Some(c) => c.apply(&event),
        }
    }
    Ok(case)
}
