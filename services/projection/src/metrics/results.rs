//! What the read models show of the metrics: each account-day's latest result (`R`) and the PAR
//! totals on recoup's own numbers (`Q`), written in the batch that computes them.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `R` | tenant, date, account_uid | [`Shown`]: revision (u64 BE) and fingerprint (u128 BE) of the result last published, the PAR buckets (nf, f), outstanding, then the calculated fields |
//! | `Q` | tenant, date, basis (u8: 1 non-forgiving, 2 forgiving), bucket (u8) | accounts (i64 BE) + outstanding in 1/10,000 units (i64 BE) |
//!
//! One key per account-day, in date order: a day's accounts are one range (the discrepancies
//! list), an account-day one lookup (the snapshots shown).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use paygo_snapshots::credit::Outcome;
use paygo_snapshots::par::{PAR_BUCKETS, UNKNOWN_BUCKET, par_bucket};

use super::{MetricsStage, Staged, corrupt};
use crate::accounts::ParTotals;
use recoup_keys::KeyReader;

use crate::kernel::{Counters, ReadModelError, tenant_prefix};

/// Amounts are summed in units of 1/10,000, as the account read model's PAR.
const AMOUNT_SCALE: f64 = 10_000.0;

/// Whose clock a PAR on recoup's numbers reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    NonForgiving = 1,
    Forgiving = 2,
}

fn day_prefix(tenant: &str, date: NaiveDate) -> recoup_keys::Key {
    tenant_prefix(b'R', tenant).day(date)
}

/// The key of one account-day's result.
pub(super) fn result_key(tenant: &str, account_uid: &str, date: NaiveDate) -> Vec<u8> {
    day_prefix(tenant, date).last_str(account_uid).into_vec()
}

fn par_key(tenant: &str, date: NaiveDate, basis: Basis, bucket: u8) -> Vec<u8> {
    tenant_prefix(b'Q', tenant)
        .day(date)
        .u8(basis as u8)
        .u8(bucket)
        .into_vec()
}

/// One account-day as the read models show it, and what was published of it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shown {
    /// The revision of the result last published.
    pub(super) revision: u64,
    /// A fingerprint of that result's content.
    pub(super) fingerprint: u128,
    bucket_nf: u8,
    bucket_f: u8,
    /// `amt_remaining_installment_calculated` in 1/10,000 units (0 without metrics).
    outstanding: i64,
    /// The encoded calculated fields; `None` when the day has none.
    pub(super) calculated: Option<Vec<u8>>,
}

impl Shown {
    pub(super) fn of(
        outcome: &Outcome,
        calculated: &Result<Vec<u8>, String>,
        (revision, fingerprint): (u64, u128),
    ) -> Self {
        match (outcome.metrics(), calculated) {
            (Some(m), Ok(bytes)) => Self {
                revision,
                fingerprint,
                bucket_nf: par_bucket(Some(m.nf.consecutive)),
                bucket_f: par_bucket(Some(m.f.consecutive)),
                outstanding: (m.remaining * AMOUNT_SCALE).round() as i64,
                calculated: Some(bytes.clone()),
            },
            // Without the plan values the model needs: the unknown bucket.
            _ => Self {
                revision,
                fingerprint,
                bucket_nf: UNKNOWN_BUCKET,
                bucket_f: UNKNOWN_BUCKET,
                outstanding: 0,
                calculated: None,
            },
        }
    }

    fn encode(&self) -> Vec<u8> {
        let calculated = self.calculated.as_ref().map_or(0, Vec::len);
        let mut v = Vec::with_capacity(35 + calculated);
        v.extend_from_slice(&self.revision.to_be_bytes());
        v.extend_from_slice(&self.fingerprint.to_be_bytes());
        v.extend_from_slice(&[self.bucket_nf, self.bucket_f]);
        v.extend_from_slice(&self.outstanding.to_be_bytes());
        if let Some(bytes) = &self.calculated {
            v.push(1);
            v.extend_from_slice(bytes);
        } else {
            v.push(0);
        }
        v
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let revision = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let fingerprint = u128::from_be_bytes(bytes.get(8..24)?.try_into().ok()?);
        Self::decode_shown(bytes.get(24..)?, (revision, fingerprint))
    }

    /// The part after revision and fingerprint (the whole value of layout 1's `r` keys).
    fn decode_shown(bytes: &[u8], (revision, fingerprint): (u64, u128)) -> Option<Self> {
        let outstanding = i64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?);
        Some(Self {
            revision,
            fingerprint,
            bucket_nf: *bytes.first()?,
            bucket_f: *bytes.get(1)?,
            outstanding,
            calculated: match bytes.get(10)? {
                1 => Some(bytes.get(11..)?.to_vec()),
                _ => None,
            },
        })
    }

    fn bucket(&self, basis: Basis) -> u8 {
        match basis {
            Basis::NonForgiving => self.bucket_nf,
            Basis::Forgiving => self.bucket_f,
        }
    }
}

/// The results and PAR totals a batch changes.
#[derive(Default)]
pub(super) struct StagedResults {
    shown: BTreeMap<Vec<u8>, Shown>,
    par: BTreeMap<Vec<u8>, ParTotals>,
}

impl StagedResults {
    pub(super) fn write(self, batch: &mut sled::Batch) {
        for (key, shown) in self.shown {
            batch.insert(key, shown.encode());
        }
        for (key, totals) in self.par {
            if totals == ParTotals::default() {
                batch.remove(key);
            } else {
                batch.insert(key, totals.encode());
            }
        }
    }
}

impl MetricsStage {
    /// The result shown for the account-day of `key`, staged or stored.
    pub(super) fn shown_staged(
        &self,
        staged: &Staged,
        key: &[u8],
    ) -> Result<Option<Shown>, ReadModelError> {
        if let Some(shown) = staged.results.shown.get(key) {
            return Ok(Some(shown.clone()));
        }
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(
                Shown::decode(&bytes).ok_or_else(|| corrupt(key, "shown result"))?,
            )),
            None => Ok(None),
        }
    }

    fn add_par(
        &self,
        staged: &mut Staged,
        key: Vec<u8>,
        delta: [i64; 2],
    ) -> Result<(), ReadModelError> {
        let totals = match staged.results.par.get_mut(&key) {
            Some(t) => t,
            None => {
                let stored = self
                    .tree
                    .get(&key)?
                    .map(|b| ParTotals::decode(&b))
                    .unwrap_or_default();
                staged.results.par.entry(key).or_insert(stored)
            }
        };
        totals.add_counters(delta.map(i128::from));
        Ok(())
    }

    /// The day's new result (under `key`) replaces the one shown, `before`, in the PAR totals
    /// too.
    pub(super) fn show(
        &self,
        staged: &mut Staged,
        (key, tenant, date): (Vec<u8>, &str, NaiveDate),
        before: Option<Shown>,
        shown: Shown,
    ) -> Result<(), ReadModelError> {
        for basis in [Basis::NonForgiving, Basis::Forgiving] {
            if let Some(before) = &before {
                let k = par_key(tenant, date, basis, before.bucket(basis));
                self.add_par(staged, k, [-1, before.outstanding.saturating_neg()])?;
            }
            let k = par_key(tenant, date, basis, shown.bucket(basis));
            self.add_par(staged, k, [1, shown.outstanding])?;
        }
        staged.results.shown.insert(key, shown);
        Ok(())
    }

    /// The accounts with a result on `date`, in account_uid order, after `after`, each with
    /// its calculated fields (`None`: the day has none).
    pub fn accounts_on(
        &self,
        tenant: &str,
        date: NaiveDate,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<(String, Option<Vec<u8>>), ReadModelError>> + '_ {
        let prefix = day_prefix(tenant, date);
        let start = match after {
            // The smallest key after the last one listed.
            Some(uid) => day_prefix(tenant, date).last_str(uid).u8(0).into_vec(),
            None => prefix.as_bytes().to_vec(),
        };
        let skip = prefix.len();
        self.tree
            .range(start..prefix.prefix_end())
            .map(move |entry| {
                let (key, value) = entry?;
                let uid = KeyReader::tail(&key[skip..])
                    .last_str()
                    .map(str::to_owned)
                    .ok_or_else(|| corrupt(&key, "result key"))?;
                let shown = Shown::decode(&value).ok_or_else(|| corrupt(&key, "shown result"))?;
                Ok((uid, shown.calculated))
            })
    }

    /// recoup's calculated fields of one account-day (an encoded `AccountSnapshot` with only
    /// `*_calculated` fields); `None` when the day has none, or no result yet.
    pub fn calculated(
        &self,
        tenant: &str,
        account_uid: &str,
        date: NaiveDate,
    ) -> Result<Option<Vec<u8>>, ReadModelError> {
        Ok(self
            .stored_result(tenant, account_uid, date)?
            .and_then(|s| s.calculated))
    }

    /// The result last published for one account-day: its revision (`None`: none yet).
    pub fn published_revision(
        &self,
        tenant: &str,
        account_uid: &str,
        date: NaiveDate,
    ) -> Result<Option<u64>, ReadModelError> {
        Ok(self
            .stored_result(tenant, account_uid, date)?
            .map(|s| s.revision))
    }

    fn stored_result(
        &self,
        tenant: &str,
        account_uid: &str,
        date: NaiveDate,
    ) -> Result<Option<Shown>, ReadModelError> {
        self.result(&result_key(tenant, account_uid, date))
    }

    /// The stored result under `key` (a [`result_key`]).
    pub(super) fn result(&self, key: &[u8]) -> Result<Option<Shown>, ReadModelError> {
        match self.tree.get(key)? {
            Some(bytes) => Ok(Some(
                Shown::decode(&bytes).ok_or_else(|| corrupt(key, "shown result"))?,
            )),
            None => Ok(None),
        }
    }

    /// The PAR totals of every bucket on one day on recoup's numbers, in bucket order.
    pub fn par(
        &self,
        tenant: &str,
        date: NaiveDate,
        basis: Basis,
    ) -> Result<Vec<ParTotals>, ReadModelError> {
        (0..PAR_BUCKETS.len() as u8)
            .map(|bucket| {
                Ok(self
                    .tree
                    .get(par_key(tenant, date, basis, bucket))?
                    .map(|b| ParTotals::decode(&b))
                    .unwrap_or_default())
            })
            .collect()
    }
}

/// Keys per batch when the layout is upgraded.
const UPGRADE_CHUNK: usize = 10_000;

/// Moves the stage's first layout to this one: each `r` (tenant, account, date → shown) with
/// its `m` (revision, fingerprint) becomes one `R`; the `D` index and the `i` inputs (the
/// account series holds them) go. In chunks, each one batch: an upgrade cut short by a crash
/// goes on at the next open. Returns the results moved.
pub(super) fn upgrade_layout(tree: &sled::Tree) -> Result<usize, ReadModelError> {
    let mut moved = 0;
    loop {
        let chunk: Vec<(sled::IVec, sled::IVec)> = tree
            .scan_prefix(b"r")
            .take(UPGRADE_CHUNK)
            .collect::<Result<_, _>>()?;
        if chunk.is_empty() {
            break;
        }
        let mut batch = sled::Batch::default();
        for (key, value) in chunk {
            let tail = key.get(1..).unwrap_or_default();
            let mut reader = KeyReader::tail(tail);
            let (Some(tenant), Some(uid), Some(date)) = (reader.str(), reader.str(), reader.day())
            else {
                return Err(corrupt(&key, "result key of layout 1"));
            };
            let published_key = [b"m", tail].concat();
            let published = match tree.get(&published_key)? {
                Some(b) => (
                    b.get(..8)
                        .and_then(|r| r.try_into().ok())
                        .map(u64::from_be_bytes),
                    b.get(8..24)
                        .and_then(|f| f.try_into().ok())
                        .map(u128::from_be_bytes),
                ),
                None => (None, None),
            };
            let (Some(revision), Some(fingerprint)) = published else {
                return Err(corrupt(&published_key, "published result of layout 1"));
            };
            let shown = Shown::decode_shown(&value, (revision, fingerprint))
                .ok_or_else(|| corrupt(&key, "shown result of layout 1"))?;
            batch.insert(result_key(tenant, uid, date), shown.encode());
            batch.remove(
                tenant_prefix(b'D', tenant)
                    .day(date)
                    .last_str(uid)
                    .into_vec(),
            );
            batch.remove(published_key);
            batch.remove(key.to_vec());
            moved += 1;
        }
        tree.apply_batch(batch)?;
    }
    for prefix in [b"i", b"m", b"D"] {
        loop {
            let keys: Vec<sled::IVec> = tree
                .scan_prefix(prefix)
                .keys()
                .take(UPGRADE_CHUNK)
                .collect::<Result<_, _>>()?;
            if keys.is_empty() {
                break;
            }
            let mut batch = sled::Batch::default();
            for key in keys {
                batch.remove(key);
            }
            tree.apply_batch(batch)?;
        }
    }
    Ok(moved)
}
