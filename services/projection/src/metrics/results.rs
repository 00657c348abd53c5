//! What the read models show of the metrics: each account-day's latest result (`r`) and the PAR
//! totals on recoup's own numbers (`Q`), written in the batch that computes them.
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `r` | tenant, account_uid, date | [`Shown`]: the PAR buckets (nf, f) and outstanding, then the calculated fields |
//! | `Q` | tenant, date, basis (u8: 1 non-forgiving, 2 forgiving), bucket (u8) | accounts (i64 BE) + outstanding in 1/10,000 units (i64 BE) |
//! | `D` | tenant, date, account_uid | empty: the accounts with a result on a day |

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use paygo_snapshots::credit::Outcome;
use paygo_snapshots::par::{PAR_BUCKETS, UNKNOWN_BUCKET, par_bucket};

use super::{MetricsStage, Staged, corrupt, day_key};
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
    tenant_prefix(b'D', tenant).day(date)
}

fn par_key(tenant: &str, date: NaiveDate, basis: Basis, bucket: u8) -> Vec<u8> {
    tenant_prefix(b'Q', tenant)
        .day(date)
        .u8(basis as u8)
        .u8(bucket)
        .into_vec()
}

/// One account-day as the read models show it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Shown {
    bucket_nf: u8,
    bucket_f: u8,
    /// `amt_remaining_installment_calculated` in 1/10,000 units (0 without metrics).
    outstanding: i64,
    /// The encoded calculated fields; `None` when the day has none.
    calculated: Option<Vec<u8>>,
}

impl Shown {
    pub(super) fn of(outcome: &Outcome, calculated: &Result<Vec<u8>, String>) -> Self {
        match (outcome.metrics(), calculated) {
            (Some(m), Ok(bytes)) => Self {
                bucket_nf: par_bucket(Some(m.nf.consecutive)),
                bucket_f: par_bucket(Some(m.f.consecutive)),
                outstanding: (m.remaining * AMOUNT_SCALE).round() as i64,
                calculated: Some(bytes.clone()),
            },
            // Without the plan values the model needs: the unknown bucket.
            _ => Self {
                bucket_nf: UNKNOWN_BUCKET,
                bucket_f: UNKNOWN_BUCKET,
                outstanding: 0,
                calculated: None,
            },
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.bucket_nf, self.bucket_f];
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
        let outstanding = i64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?);
        Some(Self {
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
    days: BTreeSet<Vec<u8>>,
}

impl StagedResults {
    pub(super) fn write(self, batch: &mut sled::Batch) {
        for (key, shown) in self.shown {
            batch.insert(key, shown.encode());
        }
        for key in self.days {
            batch.insert(key, &[] as &[u8]);
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
    fn shown_staged(&self, staged: &Staged, key: &[u8]) -> Result<Option<Shown>, ReadModelError> {
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
        totals.add_counters(delta);
        Ok(())
    }

    /// The day's new result replaces the one shown, in the PAR totals too.
    pub(super) fn show(
        &self,
        staged: &mut Staged,
        tenant: &str,
        account_uid: &str,
        date: NaiveDate,
        shown: Shown,
    ) -> Result<(), ReadModelError> {
        let key = day_key(b'r', tenant, account_uid, date);
        let before = self.shown_staged(staged, &key)?;
        for basis in [Basis::NonForgiving, Basis::Forgiving] {
            if let Some(before) = &before {
                let k = par_key(tenant, date, basis, before.bucket(basis));
                self.add_par(staged, k, [-1, before.outstanding.saturating_neg()])?;
            }
            let k = par_key(tenant, date, basis, shown.bucket(basis));
            self.add_par(staged, k, [1, shown.outstanding])?;
        }
        staged.results.shown.insert(key, shown);
        staged
            .results
            .days
            .insert(day_prefix(tenant, date).last_str(account_uid).into_vec());
        Ok(())
    }

    /// The accounts with a result on `date`, in account_uid order, after `after`.
    pub fn accounts_on(
        &self,
        tenant: &str,
        date: NaiveDate,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String, ReadModelError>> + '_ {
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
                let (key, _) = entry?;
                KeyReader::tail(&key[skip..])
                    .last_str()
                    .map(str::to_owned)
                    .ok_or_else(|| corrupt(&key, "day index"))
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
        let key = day_key(b'r', tenant, account_uid, date);
        match self.tree.get(&key)? {
            Some(bytes) => Ok(Shown::decode(&bytes)
                .ok_or_else(|| corrupt(&key, "shown result"))?
                .calculated),
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
