//! PAYGo account read models, in one sled tree beside the case read model (same database), so
//! that a batch's changes and the consumer offsets after it are one atomic `sled::Batch`.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `n` | tenant, account_uid, date | [`SeriesEntry`]: revision, PAR bucket, outstanding, encoded `AccountSnapshot` |
//! | `q` | tenant, date, bucket (u8) | accounts (i64 BE) + outstanding in 1/10,000 units (i64 BE) |
//!
//! and the offsets and rejects of [`crate::kernel`]. Keys are of `recoup_keys`. An account's
//! latest snapshot is the last of its series (`n` in date order); the first layout also kept it
//! apart (`l`), removed at open.
//!
//! Events of one `(account_uid, snapshot_date)` carry a revision. An event older than the
//! applied revision is skipped; the same revision again is applied again (an importer that
//! crashed before it remembered an acknowledged event sends that revision once more, possibly
//! with newer content), which changes nothing when the content is the same.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use paygo_snapshots::par::{PAR_BUCKETS, par_bucket};
use prost::Message;
use recoup_keys::{Key, KeyReader};
use recoup_proto::contract::aggregate::PAYGO_ACCOUNT_SNAPSHOT as SNAPSHOT_AGGREGATE;
use recoup_proto::snapshots::{numeric_field, without_calculated};
use recoup_proto::v1;

use crate::cases::CaseReadModel;
use crate::kernel::{
    Counters, Projection, ReadModelError, Step, envelope_of, tenant_prefix,
    upgrade_offsets_and_rejects,
};
use crate::metrics::{self, MetricsStage};

/// Amounts in the PAR view are summed as integers of this many units per 1, so that an update
/// (subtract the old row, add the new) leaves no floating-point residue.
const AMOUNT_SCALE: f64 = 10_000.0;

fn account_key(prefix: u8, tenant: &str, account_uid: &str) -> Key {
    tenant_prefix(prefix, tenant).str(account_uid)
}

fn series_key(tenant: &str, account_uid: &str, date: NaiveDate) -> Key {
    account_key(b'n', tenant, account_uid).day(date)
}

fn par_key(tenant: &str, date: NaiveDate, bucket: u8) -> Key {
    tenant_prefix(b'q', tenant).day(date).u8(bucket)
}

/// Every stored day of an account's series, in date order: (key, revision, encoded snapshot
/// as imported). The metrics stage reads the model's inputs from there.
pub(crate) fn stored_series<'a>(
    tree: &'a sled::Tree,
    tenant: &str,
    account_uid: &str,
) -> impl Iterator<Item = Result<(sled::IVec, u64, Vec<u8>), ReadModelError>> + 'a {
    tree.scan_prefix(account_key(b'n', tenant, account_uid))
        .map(|entry| {
            let (key, value) = entry?;
            let entry = SeriesEntry::decode(&value).ok_or_else(|| corrupt(&key, "series entry"))?;
            Ok((key, entry.revision, entry.snapshot))
        })
}

/// Removes the latest entries of the first layout (`l`: the last of the series, kept apart).
fn remove_latest_entries(tree: &sled::Tree) -> Result<(), ReadModelError> {
    loop {
        let keys: Vec<sled::IVec> = tree
            .scan_prefix(b"l")
            .keys()
            .take(10_000)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.remove(key);
        }
        tree.apply_batch(batch)?;
    }
}

/// One day of one account as stored in the series.
#[derive(Debug, Clone, PartialEq)]
struct SeriesEntry {
    revision: u64,
    bucket: u8,
    /// Outstanding amount in 1/10,000 units.
    outstanding: i64,
    snapshot: Vec<u8>,
}

impl SeriesEntry {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17 + self.snapshot.len());
        v.extend_from_slice(&self.revision.to_be_bytes());
        v.push(self.bucket);
        v.extend_from_slice(&self.outstanding.to_be_bytes());
        v.extend_from_slice(&self.snapshot);
        v
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(Self {
            revision: u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?),
            bucket: *bytes.get(8)?,
            outstanding: i64::from_be_bytes(bytes.get(9..17)?.try_into().ok()?),
            snapshot: bytes.get(17..)?.to_vec(),
        })
    }
}

/// An `AccountSnapshotRecorded` event, checked.
struct RecordedSnapshot {
    envelope: v1::EventEnvelope,
    tenant: String,
    account_uid: String,
    date: NaiveDate,
    revision: u64,
    snapshot: v1::AccountSnapshot,
}

impl RecordedSnapshot {
    /// The event in `bytes`, or why it does not belong in this read model.
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let envelope = envelope_of(bytes, SNAPSHOT_AGGREGATE)?;
        let recorded = v1::AccountSnapshotRecorded::decode(envelope.payload.as_slice())
            .map_err(|e| format!("payload does not decode: {e}"))?;
        let snapshot = recorded
            .snapshot
            .ok_or("AccountSnapshotRecorded without snapshot")?;
        let date = snapshot
            .snapshot_date
            .as_deref()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
        let (Some(account_uid), Some(date)) = (snapshot.account_uid.clone(), date) else {
            return Err("snapshot without account_uid or a valid snapshot_date".into());
        };
        Ok(Self {
            tenant: envelope.tenant.clone(),
            envelope,
            account_uid,
            date,
            revision: recorded.revision,
            snapshot,
        })
    }
}

/// Accounts and outstanding amount of one PAR bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ParTotals {
    pub accounts: i128,
    /// Outstanding in 1/10,000 units.
    pub outstanding_units: i128,
}

impl Counters<2> for ParTotals {
    fn from_counters([accounts, outstanding_units]: [i128; 2]) -> Self {
        Self {
            accounts,
            outstanding_units,
        }
    }

    fn counters(&self) -> [i128; 2] {
        [self.accounts, self.outstanding_units]
    }
}

impl ParTotals {
    /// The outstanding amount.
    pub fn outstanding(&self) -> f64 {
        self.outstanding_units as f64 / AMOUNT_SCALE
    }
}

/// An account whose CRM and recoup disagree: account_uid, the CRM's value, recoup's.
pub type Disagreement = (String, f64, f64);

/// The account read models, and the PAYGo metrics stage in the same tree.
#[derive(Clone)]
pub struct AccountReadModel {
    tree: sled::Tree,
    metrics: MetricsStage,
}

#[derive(Default)]
pub struct Staged {
    series: HashMap<Vec<u8>, SeriesEntry>,
    par: BTreeMap<Vec<u8>, ParTotals>,
    metrics: metrics::Staged,
    batch: sled::Batch,
}

fn corrupt(key: impl AsRef<[u8]>, reason: &str) -> ReadModelError {
    ReadModelError::corrupt(key, reason)
}

impl AccountReadModel {
    /// Opens the account tree in the database of `cases`.
    pub fn open(cases: &CaseReadModel) -> Result<Self, ReadModelError> {
        Self::open_in(cases.db(), "accounts", None)
    }

    /// The read model in tree `tree` of `db` (a generation, see [`crate::generations`]); the
    /// metrics stage's relay is woken through `appended` when given (shared by generations).
    pub fn open_in(
        db: &sled::Db,
        tree: &str,
        appended: Option<std::sync::Arc<tokio::sync::Notify>>,
    ) -> Result<Self, ReadModelError> {
        let tree = db.open_tree(tree)?;
        upgrade_offsets_and_rejects(&tree)?;
        remove_latest_entries(&tree)?;
        let metrics = MetricsStage::open(db.clone(), tree.clone(), appended)?;
        Ok(Self { tree, metrics })
    }

    /// The PAYGo metrics stage, which computes as this read model applies.
    pub fn metrics(&self) -> &MetricsStage {
        &self.metrics
    }

    fn add_par(
        &self,
        staged: &mut Staged,
        tenant: &str,
        date: NaiveDate,
        bucket: u8,
        accounts: i64,
        outstanding: i64,
    ) -> Result<(), ReadModelError> {
        let key = par_key(tenant, date, bucket).into_vec();
        let totals = match staged.par.get_mut(&key) {
            Some(t) => t,
            None => {
                let current = self
                    .tree
                    .get(&key)?
                    .map(|b| ParTotals::decode(&b))
                    .unwrap_or_default();
                staged.par.entry(key).or_insert(current)
            }
        };
        totals.add_counters([accounts.into(), outstanding.into()]);
        Ok(())
    }

    /// The revision applied for one account on one day (`None`: nothing yet).
    pub fn applied_revision(
        &self,
        tenant: &str,
        account_uid: &str,
        date: NaiveDate,
    ) -> Result<Option<u64>, ReadModelError> {
        let key = series_key(tenant, account_uid, date);
        match self.tree.get(&key)? {
            Some(bytes) => Ok(Some(
                SeriesEntry::decode(&bytes)
                    .ok_or_else(|| corrupt(&key, "series entry"))?
                    .revision,
            )),
            None => Ok(None),
        }
    }

    /// The latest snapshot of an account (the last of its series), with recoup's calculated
    /// fields.
    pub fn account(
        &self,
        tenant: &str,
        account_uid: &str,
    ) -> Result<Option<v1::AccountSnapshot>, ReadModelError> {
        let prefix = account_key(b'n', tenant, account_uid);
        let Some(last) = self.tree.scan_prefix(&prefix).next_back() else {
            return Ok(None);
        };
        let (key, value) = last?;
        let date = KeyReader::tail(&key[prefix.len()..])
            .day()
            .ok_or_else(|| corrupt(&key, "date"))?;
        let entry = SeriesEntry::decode(&value).ok_or_else(|| corrupt(&key, "series entry"))?;
        self.shown(tenant, account_uid, date, &entry.snapshot)
            .map(Some)
            .map_err(|e| corrupt(&key, &e))
    }

    /// A snapshot as the read model shows it: as imported, its `*_calculated` fields replaced
    /// by recoup's (none where recoup computed none).
    fn shown(
        &self,
        tenant: &str,
        account_uid: &str,
        date: NaiveDate,
        imported: &[u8],
    ) -> Result<v1::AccountSnapshot, String> {
        let mut bytes = without_calculated(imported).map_err(|e| e.to_string())?;
        let calculated = self
            .metrics
            .calculated(tenant, account_uid, date)
            .map_err(|e| e.to_string())?;
        bytes.extend_from_slice(&calculated.unwrap_or_default());
        v1::AccountSnapshot::decode(bytes.as_slice()).map_err(|e| e.to_string())
    }

    /// Up to `limit` snapshots of an account with dates in `[from, to]`, oldest first.
    pub fn series(
        &self,
        tenant: &str,
        account_uid: &str,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
        limit: usize,
    ) -> Result<Vec<(NaiveDate, v1::AccountSnapshot)>, ReadModelError> {
        let prefix = account_key(b'n', tenant, account_uid);
        let start = series_key(tenant, account_uid, from.unwrap_or(NaiveDate::MIN)).into_vec();
        let end = series_key(tenant, account_uid, to.unwrap_or(NaiveDate::MAX)).into_vec();
        let mut out = Vec::new();
        for entry in self.tree.range(start..=end).take(limit) {
            let (key, value) = entry?;
            let date = KeyReader::tail(&key[prefix.len()..])
                .day()
                .ok_or_else(|| corrupt(&key, "date"))?;
            let entry = SeriesEntry::decode(&value).ok_or_else(|| corrupt(&key, "series entry"))?;
            let snapshot = self
                .shown(tenant, account_uid, date, &entry.snapshot)
                .map_err(|e| corrupt(&key, &e))?;
            out.push((date, snapshot));
        }
        Ok(out)
    }

    /// Up to `limit` accounts with a result on `date` after `after` whose `source` field (a
    /// catalogue column's proto number) differs from recoup's `calculated` one by more than
    /// `tolerance`: (account_uid, source, calculated). At most `examine` accounts are looked at;
    /// the second value is the last one looked at when more may follow.
    pub fn discrepancies(
        &self,
        tenant: &str,
        date: NaiveDate,
        (source, calculated): (u32, u32),
        tolerance: f64,
        after: Option<&str>,
        (limit, examine): (usize, usize),
    ) -> Result<(Vec<Disagreement>, Option<String>), ReadModelError> {
        let mut found = Vec::new();
        let mut examined = 0;
        for result in self.metrics.accounts_on(tenant, date, after) {
            let (uid, ours) = result?;
            examined += 1;
            let key = series_key(tenant, &uid, date);
            let theirs = match self.tree.get(&key)? {
                Some(bytes) => {
                    SeriesEntry::decode(&bytes)
                        .ok_or_else(|| corrupt(&key, "series entry"))?
                        .snapshot
                }
                None => Vec::new(),
            };
            let values = (
                numeric_field(&theirs, source),
                ours.and_then(|o| numeric_field(&o, calculated)),
            );
            if let (Some(s), Some(c)) = values
                && (c - s).abs() > tolerance
            {
                found.push((uid.clone(), s, c));
            }
            if found.len() >= limit || examined >= examine {
                return Ok((found, Some(uid)));
            }
        }
        Ok((found, None))
    }

    /// The PAR totals of every bucket on one day, in bucket order.
    pub fn par(&self, tenant: &str, date: NaiveDate) -> Result<Vec<ParTotals>, ReadModelError> {
        (0..PAR_BUCKETS.len() as u8)
            .map(|bucket| {
                Ok(self
                    .tree
                    .get(par_key(tenant, date, bucket))?
                    .map(|b| ParTotals::decode(&b))
                    .unwrap_or_default())
            })
            .collect()
    }
}

impl Projection for AccountReadModel {
    type Staged = Staged;
    /// Records the metrics stage appended to its outbox.
    type Written = usize;

    fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    fn apply(&self, bytes: &[u8], staged: &mut Staged) -> Result<Step, ReadModelError> {
        let recorded = match RecordedSnapshot::decode(bytes) {
            Ok(recorded) => recorded,
            Err(reason) => return Ok(Step::Rejected(reason)),
        };
        let day = match metrics::day_of(&recorded.snapshot, recorded.date, recorded.revision) {
            Ok(day) => day,
            Err(reason) => return Ok(Step::Rejected(reason)),
        };
        let RecordedSnapshot {
            tenant,
            account_uid,
            date,
            revision,
            snapshot,
            ..
        } = &recorded;
        let key = series_key(tenant, account_uid, *date).into_vec();
        let earlier = match staged.series.get(&key) {
            Some(entry) => Some(entry.clone()),
            None => match self.tree.get(&key)? {
                Some(bytes) => {
                    Some(SeriesEntry::decode(&bytes).ok_or_else(|| corrupt(&key, "series entry"))?)
                }
                None => None,
            },
        };
        if earlier.as_ref().is_some_and(|e| e.revision > *revision) {
            return Ok(Step::Duplicate);
        }
        let same_revision = earlier
            .as_ref()
            .filter(|e| e.revision == *revision)
            .map(|e| e.snapshot.as_slice());
        self.metrics
            .apply(&recorded.envelope, day, same_revision, &mut staged.metrics)?;
        let encoded = snapshot.encode_to_vec();
        let entry = SeriesEntry {
            revision: *revision,
            bucket: par_bucket(snapshot.days_arrears_consecutive_source),
            outstanding: (snapshot.amt_remaining_installment_source.unwrap_or(0.0) * AMOUNT_SCALE)
                .round() as i64,
            snapshot: encoded,
        };
        if let Some(earlier) = &earlier {
            let minus = earlier.outstanding.saturating_neg();
            self.add_par(staged, tenant, *date, earlier.bucket, -1, minus)?;
        }
        self.add_par(staged, tenant, *date, entry.bucket, 1, entry.outstanding)?;
        staged.series.insert(key, entry);
        Ok(Step::Applied(1))
    }

    fn batch(staged: &mut Staged) -> &mut sled::Batch {
        &mut staged.batch
    }

    fn stage_writes(&self, staged: Staged) -> Result<(sled::Batch, usize), ReadModelError> {
        let Staged {
            series,
            par,
            metrics,
            mut batch,
        } = staged;
        let appended = self.metrics.stage_writes(metrics, &mut batch)?;
        for (key, entry) in series {
            batch.insert(key, entry.encode());
        }
        for (key, totals) in par {
            batch.insert(key, totals.encode());
        }
        Ok((batch, appended))
    }

    fn written(&self, appended: usize) -> Result<(), ReadModelError> {
        self.metrics.written(appended);
        Ok(())
    }
}
