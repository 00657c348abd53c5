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
use debt_cases::{
    CaseState, CollectorConfigurations, Command, DebtCase, DebtCaseEvent, DecisionContext,
    DomainError, NewCase,
};
use event_backbone::envelope::{EventMetadata, NewEnvelope, decode_envelope, occurred_at};
use event_backbone::topics::DEBT_CASES;
use prost::Message;
use recoup_proto::convert::{DEBT_CASE_SCHEMA_VERSION, event_from_payload, event_to_payload};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use recoup_runtime::Clock;

use crate::keys;

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
#[derive(Clone, PartialEq, prost::Message)]
pub struct OutboxRecord {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(string, tag = "2")]
    pub key: String,
    #[prost(string, tag = "3")]
    pub event_id: String,
    #[prost(string, tag = "4")]
    pub event_type: String,
    #[prost(bytes = "vec", tag = "5")]
    pub envelope: Vec<u8>,
}

/// Where the store keeps its files and how it decides.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub collectors: CollectorConfigurations,
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
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .open()?;
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

type CaseKey = (String, String);

struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    settings: StoreSettings,
    clock: Clock,
    cache: HashMap<CaseKey, DebtCase>,
    next_outbox: u64,
    appended: Arc<Notify>,
    stats: Arc<WriteStats>,
}

/// What the commands of one group changed, before it is written.
#[derive(Default)]
struct Staged {
    batch: sled::Batch,
    cases: HashMap<CaseKey, DebtCase>,
    /// Index entries set (`Some`) or removed (`None`) by this group.
    index: HashMap<Vec<u8>, Option<String>>,
    appended_events: bool,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut group: Vec<Request> = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => group.push(r),
                    Err(_) => break,
                }
            }
            self.write_group(&mut group);
        }
        if let Err(error) = self.db.flush() {
            tracing::error!(%error, "final flush of the event store failed");
        }
    }

    fn write_group(&mut self, group: &mut Vec<Request>) {
        let now = (self.clock)();
        let mut staged = Staged::default();
        let next_outbox_before = self.next_outbox;
        let outcomes: Vec<Outcome> = group
            .iter()
            .map(|r| match r {
                Request::Command {
                    tenant,
                    command,
                    metadata,
                    ..
                } => Outcome::Case(self.handle(tenant, command, metadata, now, &mut staged)),
                Request::Republish {
                    tenant,
                    case_id,
                    after_version,
                    ..
                } => Outcome::Republished(self.stage_republish(
                    &(tenant.clone(), case_id.clone()),
                    *after_version,
                    &mut staged,
                )),
            })
            .collect();
        let appended = staged.appended_events;
        let written = self
            .tree
            .apply_batch(std::mem::take(&mut staged.batch))
            .and_then(|_| self.db.flush().map(|_| ()));
        match written {
            Ok(()) => {
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .requests
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                if self.cache.len() + staged.cases.len() > MAX_CACHED_CASES {
                    self.cache.clear();
                }
                self.cache.extend(staged.cases);
                for (request, outcome) in group.drain(..).zip(outcomes) {
                    match (request, outcome) {
                        (Request::Command { reply, .. }, Outcome::Case(r)) => {
                            let _ = reply.send(r);
                        }
                        (Request::Republish { reply, .. }, Outcome::Republished(r)) => {
                            let _ = reply.send(r);
                        }
                        _ => {}
                    }
                }
                if appended {
                    self.appended.notify_waiters();
                    self.appended.notify_one();
                }
            }
            Err(error) => {
                tracing::error!(%error, "event store write failed; the group's commands are refused");
                self.next_outbox = next_outbox_before;
                // What the cache holds may be ahead of what sled holds now: rebuild on demand.
                self.cache.clear();
                let failed = || StoreError::Sled(sled::Error::Unsupported(error.to_string()));
                for request in group.drain(..) {
                    match request {
                        Request::Command { reply, .. } => {
                            let _ = reply.send(Err(CommandError::Failed(failed())));
                        }
                        Request::Republish { reply, .. } => {
                            let _ = reply.send(Err(failed()));
                        }
                    }
                }
            }
        }
    }

    fn current(&self, staged: &Staged, key: &CaseKey) -> Result<Option<DebtCase>, StoreError> {
        if let Some(c) = staged.cases.get(key) {
            return Ok(Some(c.clone()));
        }
        if let Some(c) = self.cache.get(key) {
            return Ok(Some(c.clone()));
        }
        load_case(&self.tree, &key.0, &key.1)
    }

    fn index_lookup(&self, staged: &Staged, key: &[u8]) -> Result<Option<String>, StoreError> {
        if let Some(v) = staged.index.get(key) {
            return Ok(v.clone());
        }
        Ok(self
            .tree
            .get(key)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn handle(
        &mut self,
        tenant: &str,
        command: &CaseCommand,
        metadata: &EventMetadata,
        now: DateTime<Utc>,
        staged: &mut Staged,
    ) -> Result<DebtCase, CommandError> {
        let ctx = DecisionContext {
            now,
            collectors: &self.settings.collectors,
        };
        match command {
            CaseCommand::Create(content) => {
                let x_key = keys::external_id(tenant, &content.external_id);
                if let Some(existing_id) = self.index_lookup(staged, &x_key)? {
                    let key = (tenant.to_owned(), existing_id.clone());
                    if let Some(existing) = self.current(staged, &key)? {
                        return if debt_cases::same_creation(&existing, content) {
                            Ok(existing)
                        } else {
                            Err(DomainError::ExternalIdConflict {
                                external_id: content.external_id.clone(),
                                case_id: existing_id,
                            }
                            .into())
                        };
                    }
                }
                let r_key = keys::reference(tenant, &content.reference);
                if let Some(other) = self.index_lookup(staged, &r_key)? {
                    return Err(DomainError::ReferenceTaken {
                        reference: content.reference.clone(),
                        case_id: other,
                    }
                    .into());
                }
                let case_id = Uuid::now_v7().to_string();
                let events = debt_cases::decide_create(&case_id, tenant, content, ctx)?;
                self.stage(
                    metadata,
                    None,
                    (tenant.to_owned(), case_id),
                    events,
                    now,
                    staged,
                )
            }
            CaseCommand::Existing {
                case_id,
                expected_version,
                command,
            } => {
                let key = (tenant.to_owned(), case_id.clone());
                let case = self.current(staged, &key)?.ok_or(DomainError::NotFound)?;
                let events = debt_cases::decide(&case, *expected_version, command, ctx)?;
                if events.is_empty() {
                    return Ok(case);
                }
                // A new reference must be free in the tenant, as on Create.
                if let Command::Update(changes) = command
                    && let Some(reference) = &changes.reference
                    && *reference != case.reference
                    && let Some(other) =
                        self.index_lookup(staged, &keys::reference(tenant, reference))?
                {
                    return Err(DomainError::ReferenceTaken {
                        reference: reference.clone(),
                        case_id: other,
                    }
                    .into());
                }
                self.stage(metadata, Some(case), key, events, now, staged)
            }
        }
    }

    /// Adds the events of one accepted command to the group's batch.
    fn stage(
        &mut self,
        metadata: &EventMetadata,
        before: Option<DebtCase>,
        key: CaseKey,
        events: Vec<DebtCaseEvent>,
        now: DateTime<Utc>,
        staged: &mut Staged,
    ) -> Result<DebtCase, CommandError> {
        let (tenant, case_id) = (&key.0, &key.1);
        let mut case = before.clone();
        for event in &events {
            match &mut case {
                None => case = DebtCase::from_created(event),
                Some(c) => c.apply(event),
            }
            let Some(current) = &case else {
                return Err(StoreError::Corrupt {
                    case_id: case_id.clone(),
                    reason: "first event is not a creation".into(),
                }
                .into());
            };
            let envelope = NewEnvelope {
                tenant,
                aggregate_type: recoup_proto::contract::aggregate::DEBT_CASE,
                aggregate_id: case_id,
                aggregate_version: current.version,
                occurred_at: event.at(),
                recorded_at: now,
                event_type: recoup_proto::convert::event_type(event),
                schema_version: DEBT_CASE_SCHEMA_VERSION,
                payload: event_to_payload(event),
                metadata,
            }
            .build();
            let bytes = envelope.encode_to_vec();
            let record = OutboxRecord {
                topic: DEBT_CASES.name.to_owned(),
                key: case_id.clone(),
                event_id: envelope.event_id,
                event_type: envelope.event_type,
                envelope: bytes.clone(),
            };
            staged
                .batch
                .insert(keys::event(tenant, case_id, current.version), bytes);
            staged
                .batch
                .insert(keys::outbox(self.next_outbox), record.encode_to_vec());
            self.next_outbox += 1;
        }
        let Some(after) = case else {
            return Err(StoreError::Corrupt {
                case_id: case_id.clone(),
                reason: "no events".into(),
            }
            .into());
        };
        self.stage_indexes(before.as_ref(), &after, staged);
        staged.appended_events = true;
        staged.cases.insert(key, after.clone());
        Ok(after)
    }

    /// Keeps the external-id, reference and timeout indexes in step with the case.
    fn stage_indexes(&self, before: Option<&DebtCase>, after: &DebtCase, staged: &mut Staged) {
        let tenant = &after.tenant;
        let set = |staged: &mut Staged, k: Vec<u8>, v: Option<&str>| {
            match v {
                Some(v) => staged.batch.insert(k.clone(), v.as_bytes()),
                None => staged.batch.remove(k.clone()),
            }
            staged.index.insert(k, v.map(str::to_owned));
        };
        let deleted = after.deleted_on.is_some();
        match before {
            None => {
                set(
                    staged,
                    keys::external_id(tenant, &after.external_id),
                    Some(&after.id),
                );
                set(
                    staged,
                    keys::reference(tenant, &after.reference),
                    Some(&after.id),
                );
            }
            Some(before) => {
                if before.reference != after.reference || deleted {
                    set(staged, keys::reference(tenant, &before.reference), None);
                    if !deleted {
                        set(
                            staged,
                            keys::reference(tenant, &after.reference),
                            Some(&after.id),
                        );
                    }
                }
                if deleted {
                    set(staged, keys::external_id(tenant, &before.external_id), None);
                }
            }
        }
        let was = before.and_then(timeout_entry);
        let is = timeout_entry(after);
        if was != is {
            if let Some(at) = was {
                staged.batch.remove(keys::timeout(at, tenant, &after.id));
            }
            if let Some(at) = is {
                staged
                    .batch
                    .insert(keys::timeout(at, tenant, &after.id), &[] as &[u8]);
            }
        }
    }

    fn stage_republish(
        &mut self,
        key: &CaseKey,
        after_version: u64,
        staged: &mut Staged,
    ) -> Result<usize, StoreError> {
        let mut queued = 0;
        let start = keys::event(&key.0, &key.1, after_version.saturating_add(1));
        let prefix = keys::stream_prefix(&key.0, &key.1);
        for entry in self.tree.range(start..) {
            let (k, v) = entry?;
            if !k.starts_with(&prefix) {
                break;
            }
            let envelope = decode_envelope(&v).map_err(|e| StoreError::Corrupt {
                case_id: key.1.clone(),
                reason: e.to_string(),
            })?;
            let record = OutboxRecord {
                topic: DEBT_CASES.name.to_owned(),
                key: key.1.clone(),
                event_id: envelope.event_id,
                event_type: envelope.event_type,
                envelope: v.to_vec(),
            };
            staged
                .batch
                .insert(keys::outbox(self.next_outbox), record.encode_to_vec());
            self.next_outbox += 1;
            staged.appended_events = true;
            queued += 1;
        }
        Ok(queued)
    }
}

/// The timeout index time of a case: set while it is processing.
fn timeout_entry(case: &DebtCase) -> Option<i64> {
    (case.state == CaseState::Processing && case.deleted_on.is_none())
        .then_some(case.processing_timeout_on?.timestamp())
}
