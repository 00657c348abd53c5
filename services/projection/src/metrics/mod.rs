//! The PAYGo metrics stage: part of the account projection ([`crate::accounts`]), it keeps each
//! account's credit model (`paygo_snapshots::credit`) as the snapshots arrive, and publishes
//! each account-day's result as `AccountMetricsCalculated` on `recoup.paygo-metrics.v1` through
//! an outbox. Being part of the account projection, it holds the partitions the account read
//! model holds, and writes in the same batch.
//!
//! A day after the account's last one steps the kept state (the common case: snapshots arrive
//! day by day). A day that arrives late, earlier, as a changed revision, or that moves the
//! plan's start marks the account, and when the batch ends each marked account is recomputed
//! once from its stored days; only the days whose result changed are published again, each
//! with the next revision. So the results published are
//! always those of the account's final series computed from scratch.
//!
//! No loss, no double effect: the states, the results with their fingerprints, the outbox
//! records, the account read model's changes and the consumer offsets of a batch are one atomic
//! `sled::Batch`; the backbone's
//! relay (`event_backbone::outbox::OutboxRelay` over this stage) publishes the outbox and
//! removes what Kafka acknowledged. After a
//! crash the relay sends what is left again, with the same event ids (derived from tenant,
//! account, day and revision): consumers keep the highest revision of each account-day.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `a` | tenant, account_uid | [`Cursor`]: the last day, whether a day fixes the start, the state after the last day |
//! | `P` | sequence (u64) | [`outbox::Pointers`]: the results a batch publishes (the relay builds each event from its `R`) |
//!
//! and what the read models show ([`results`]: `R`, each account-day's result with the revision
//! and fingerprint last published, and `Q`), in the account read model's tree. The inputs of
//! every day are the account read model's series (`n`): a recompute reads them from there.

mod outbox;
mod results;

use outbox::{Pointer, Pointers, Trigger, outbox_key};

pub use results::Basis;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::NaiveDate;
use paygo_snapshots::credit::{AccountState, DayInputs, Outcome, start_of};
use prost::Message as _;
use recoup_keys::{Key, KeyReader};
pub(crate) use recoup_proto::metrics::day_of;
use recoup_proto::metrics::{RecordedDay, encode_outcome, snapshot_day};
use recoup_proto::v1;
use tokio::sync::Notify;

use crate::kernel::{ReadModelError, tenant_prefix};

fn account_key(prefix: u8, tenant: &str, account_uid: &str) -> Key {
    tenant_prefix(prefix, tenant).str(account_uid)
}

/// Where an account's model stands.
#[derive(Debug, Clone, PartialEq)]
struct Cursor {
    /// The last day stepped.
    last: NaiveDate,
    /// Whether a day so far has `days_elapsed_payment_plan_source`, which fixes the start: a
    /// later day cannot move it then.
    anchored: bool,
    state: AccountState,
}

impl Cursor {
    fn encode(&self) -> Vec<u8> {
        let mut v = Key::parts().day(self.last).into_vec();
        v.push(u8::from(self.anchored));
        v.extend_from_slice(&self.state.encode());
        v
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let last = KeyReader::tail(bytes).day()?;
        let rest = bytes.get(4..)?;
        let (&anchored, state) = rest.split_first()?;
        Some(Self {
            last,
            anchored: anchored == 1,
            state: AccountState::decode(state)?,
        })
    }
}

/// One account's days as this batch sees them: stored, then replaced by the batch's.
type Days = BTreeMap<NaiveDate, RecordedDay>;

/// The changes of one batch.
#[derive(Default)]
pub struct Staged {
    /// Days received by this batch, per account.
    days: HashMap<(String, String), Days>,
    cursors: HashMap<(String, String), Option<Cursor>>,
    /// Accounts to recompute when the batch ends, with the last event that changed each: a
    /// batch that brings several earlier days of an account recomputes it once.
    dirty: BTreeMap<(String, String), Trigger>,
    /// The results to publish, in order.
    outbox: Vec<Pointer>,
    results: results::StagedResults,
}

/// The stage: its tree, and the relay's wake-up.
#[derive(Clone)]
pub struct MetricsStage {
    db: sled::Db,
    tree: sled::Tree,
    appended: Arc<Notify>,
}

fn corrupt(key: impl AsRef<[u8]>, what: &str) -> ReadModelError {
    ReadModelError::corrupt(key, what)
}

impl MetricsStage {
    /// The stage in `tree` (the account read model's) of `db`; a tree of the stage's first
    /// layout is upgraded first.
    pub(crate) fn open(
        db: sled::Db,
        tree: sled::Tree,
        appended: Option<Arc<Notify>>,
    ) -> Result<Self, ReadModelError> {
        let moved = results::upgrade_layout(&tree)?;
        if moved > 0 {
            tracing::info!(
                results = moved,
                "PAYGo metrics results moved to the stage's layout 2"
            );
        }
        Ok(Self {
            db,
            tree,
            appended: appended.unwrap_or_default(),
        })
    }

    /// The relay's wake-up, shared with a generation built beside this one.
    pub(crate) fn appended_notify(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Copies into `next`, a generation being built, the results this stage published (their
    /// revisions and fingerprints, `R`, with the PAR totals on them, `Q`): the rebuilt stage
    /// then publishes only the results that come out different, each with the next revision.
    pub(crate) fn seed(&self, next: &MetricsStage) -> Result<(), ReadModelError> {
        copy_prefixes(&self.tree, &next.tree, &[b"R", b"Q"])
    }

    /// Copies into `next` what the relay has not published yet, under the same keys: the relay
    /// reads the next generation's outbox after the switch, and removes from it what it had
    /// already taken from this one.
    pub(crate) fn hand_over(&self, next: &MetricsStage) -> Result<(), ReadModelError> {
        copy_prefixes(&self.tree, &next.tree, &[outbox::RECORDS, outbox::POINTERS])?;
        self.appended.notify_one();
        Ok(())
    }

    /// Every day of an account: its series in the account read model, then this batch's.
    fn all_days(&self, staged: &Staged, id: &(String, String)) -> Result<Days, ReadModelError> {
        let mut days = Days::new();
        for entry in crate::accounts::stored_series(&self.tree, &id.0, &id.1) {
            let (key, revision, snapshot) = entry?;
            let day = snapshot_day(&snapshot, revision).map_err(|e| corrupt(&key, &e))?;
            days.insert(day.inputs.date, day);
        }
        if let Some(newer) = staged.days.get(id) {
            days.extend(newer.iter().map(|(d, day)| (*d, day.clone())));
        }
        Ok(days)
    }

    fn cursor(
        &self,
        staged: &mut Staged,
        id: &(String, String),
    ) -> Result<Option<Cursor>, ReadModelError> {
        if let Some(cursor) = staged.cursors.get(id) {
            return Ok(cursor.clone());
        }
        let key = account_key(b'a', &id.0, &id.1);
        let cursor = match self.tree.get(&key)? {
            Some(bytes) => Some(Cursor::decode(&bytes).ok_or_else(|| corrupt(&key, "cursor"))?),
            None => None,
        };
        Ok(cursor)
    }

    /// Publishes the result of one day unless it is the one last published. `first`: the day
    /// is after every day the account's results hold, so it has none yet (nothing to read).
    fn publish(
        &self,
        staged: &mut Staged,
        (trigger, first): (&Trigger, bool),
        id: &(String, String),
        day: &RecordedDay,
        outcome: &Outcome,
    ) -> Result<(), ReadModelError> {
        let date = day.inputs.date;
        let calculated = encode_outcome(outcome);
        let fingerprint = match &calculated {
            Ok(bytes) => xxhash_rust::xxh3::xxh3_128(bytes),
            Err(why) => xxhash_rust::xxh3::xxh3_128(why.as_bytes()) ^ 1,
        };
        let key = results::result_key(&id.0, &id.1, date);
        let before = if first {
            None
        } else {
            self.shown_staged(staged, &key)?
        };
        if before
            .as_ref()
            .is_some_and(|b| b.fingerprint == fingerprint)
        {
            return Ok(());
        }
        let revision = before.as_ref().map_or(1, |b| b.revision + 1);
        let shown = results::Shown::of(outcome, &calculated, (revision, fingerprint));
        self.show(staged, (key, &id.0, date), before, shown)?;
        let pointer = Pointer::of(trigger, id, date, (day.revision, revision), &calculated);
        staged.outbox.push(pointer);
        Ok(())
    }

    /// Recomputes an account from all its days and publishes what changed.
    fn recompute(
        &self,
        staged: &mut Staged,
        trigger: &Trigger,
        id: &(String, String),
    ) -> Result<Option<Cursor>, ReadModelError> {
        let days = self.all_days(staged, id)?;
        let inputs: Vec<&DayInputs> = days.values().map(|d| &d.inputs).collect();
        let Some(start) = start_of(inputs.iter().copied()) else {
            return Ok(None);
        };
        let mut state = AccountState::new(start);
        for day in days.values() {
            let outcome = state.step(&day.inputs);
            self.publish(staged, (trigger, false), id, day, &outcome)?;
        }
        Ok(days.keys().next_back().map(|last| Cursor {
            last: *last,
            anchored: inputs.iter().any(|d| d.days_elapsed.is_some()),
            state,
        }))
    }
}

impl MetricsStage {
    /// Takes one snapshot day of `envelope` (an `AccountSnapshotRecorded`, its inputs read by
    /// the caller) into the staged changes. `same_revision` is the snapshot the account read
    /// model holds for the day at the same revision, if any: equal inputs change nothing. (An
    /// older revision than the one held never comes here.)
    pub(crate) fn apply(
        &self,
        envelope: &v1::EventEnvelope,
        day: RecordedDay,
        same_revision: Option<&[u8]>,
        staged: &mut Staged,
    ) -> Result<(), ReadModelError> {
        let id = (envelope.tenant.clone(), day.account_uid.clone());
        let date = day.inputs.date;
        if let Some(held) = same_revision {
            let held = snapshot_day(held, day.revision)
                .map_err(|e| corrupt(account_key(b'n', &id.0, &id.1), &e))?;
            if held.inputs == day.inputs {
                return Ok(());
            }
        }
        let cursor = match staged.dirty.get_mut(&id) {
            // Recomputed when the batch ends anyway.
            Some(trigger) => {
                *trigger = Trigger::of(envelope);
                None
            }
            None => Some(self.cursor(staged, &id)?),
        };
        let stepped = match cursor {
            // A new last day that cannot move the start: step the kept state.
            Some(Some(mut c))
                if date > c.last && (c.anchored || day.inputs.days_elapsed.is_none()) =>
            {
                let outcome = c.state.step(&day.inputs);
                // A day after the last: no result of it is held yet.
                self.publish(staged, (&Trigger::of(envelope), true), &id, &day, &outcome)?;
                c.last = date;
                Some(c)
            }
            _ => None,
        };
        match stepped {
            Some(c) => {
                staged.cursors.insert(id.clone(), Some(c));
            }
            None => {
                staged.dirty.insert(id.clone(), Trigger::of(envelope));
            }
        }
        staged.days.entry(id).or_default().insert(date, day);
        Ok(())
    }

    /// Recomputes the accounts the batch left dirty (each once, from all its days).
    fn finish(&self, staged: &mut Staged) -> Result<(), ReadModelError> {
        for (id, trigger) in std::mem::take(&mut staged.dirty) {
            let next = self.recompute(staged, &trigger, &id)?;
            staged.cursors.insert(id, next);
        }
        Ok(())
    }

    /// Puts the staged changes into `batch`; returns how many outbox records it appends.
    pub(crate) fn stage_writes(
        &self,
        mut staged: Staged,
        batch: &mut sled::Batch,
    ) -> Result<usize, ReadModelError> {
        self.finish(&mut staged)?;
        let Staged {
            cursors,
            outbox,
            results,
            days: _,
            dirty: _,
        } = staged;
        results.write(batch);
        for ((tenant, uid), cursor) in cursors {
            let key = account_key(b'a', &tenant, &uid).into_vec();
            match cursor {
                Some(c) => batch.insert(key, c.encode()),
                None => batch.remove(key),
            }
        }
        let appended = outbox.len();
        if appended > 0 {
            let pointers = Pointers {
                first: 0,
                pointers: outbox,
            };
            batch.insert(outbox_key(self.db.generate_id()?), pointers.encode_to_vec());
        }
        Ok(appended)
    }

    /// After the batch was written: the relay is told of what it appended.
    pub(crate) fn written(&self, appended: usize) {
        if appended > 0 {
            self.appended.notify_one();
        }
    }
}

/// Copies every entry under `prefixes` from one tree to another, in batches.
fn copy_prefixes(
    from: &sled::Tree,
    to: &sled::Tree,
    prefixes: &[&[u8]],
) -> Result<(), ReadModelError> {
    for prefix in prefixes {
        let mut batch = sled::Batch::default();
        let mut staged = 0;
        for entry in from.scan_prefix(prefix) {
            let (key, value) = entry?;
            batch.insert(key, value);
            staged += 1;
            if staged == 10_000 {
                to.apply_batch(std::mem::take(&mut batch))?;
                staged = 0;
            }
        }
        to.apply_batch(batch)?;
    }
    Ok(())
}
