//! The store's single writer thread: groups of commands decided against the latest state and
//! written as one atomic, flushed `sled::Batch`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use debt_cases::{CaseState, Command, DebtCase, DebtCaseEvent, DecisionContext, DomainError};
use event_backbone::envelope::{EventMetadata, NewEnvelope, decode_envelope};
use event_backbone::topics::DEBT_CASES;
use prost::Message;
use recoup_proto::convert::event_to_payload;
use recoup_runtime::Clock;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::{
    CaseCommand, CommandError, MAX_CACHED_CASES, MAX_GROUP, OutboxRecord, Outcome, Request,
    StoreError, StoreSettings, WriteStats, load_case,
};
use crate::keys;

type CaseKey = (String, String);

pub(super) struct Writer {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) settings: StoreSettings,
    pub(super) clock: Clock,
    pub(super) cache: HashMap<CaseKey, DebtCase>,
    pub(super) next_outbox: u64,
    pub(super) appended: Arc<Notify>,
    pub(super) stats: Arc<WriteStats>,
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
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Request>) {
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
            actor: &metadata.actor,
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
                schema_version: recoup_proto::schema::current(recoup_proto::convert::event_type(
                    event,
                )),
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
