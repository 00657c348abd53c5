//! [`AccountState`] as bytes, for a stage that keeps each account's state between days.
//!
//! Layout (version 1): a version byte, then the fields in declaration order, numbers big-endian,
//! an `Option` as a presence byte and the value, the pending flows as a count and entries.

use chrono::NaiveDate;

use super::state::{AccountState, Carried, Clock, Pending, Sums};

const VERSION: u8 = 1;

struct Writer(Vec<u8>);

impl Writer {
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn date(&mut self, d: NaiveDate) {
        self.i64(i64::from(d.num_days_from_ce()));
    }
    fn flag(&mut self, present: bool) {
        self.0.push(u8::from(present));
    }
    fn opt_f64(&mut self, v: Option<f64>) {
        self.flag(v.is_some());
        if let Some(v) = v {
            self.f64(v);
        }
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        self.flag(v.is_some());
        if let Some(v) = v {
            self.i64(v);
        }
    }
    fn clock(&mut self, c: &Clock) {
        self.f64(c.paid_until);
        self.i64(c.cumulative);
        self.i64(c.historical);
        self.f64(c.amount_cumulative);
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
    fn date(&mut self) -> Option<NaiveDate> {
        NaiveDate::from_num_days_from_ce_opt(i32::try_from(self.i64()?).ok()?)
    }
    fn flag(&mut self) -> Option<bool> {
        match self.take::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
    fn opt_f64(&mut self) -> Option<Option<f64>> {
        Some(if self.flag()? {
            Some(self.f64()?)
        } else {
            None
        })
    }
    fn opt_i64(&mut self) -> Option<Option<i64>> {
        Some(if self.flag()? {
            Some(self.i64()?)
        } else {
            None
        })
    }
    fn clock(&mut self) -> Option<Clock> {
        Some(Clock {
            paid_until: self.f64()?,
            cumulative: self.i64()?,
            historical: self.i64()?,
            amount_cumulative: self.f64()?,
        })
    }
}

use chrono::Datelike as _;

impl AccountState {
    /// The state as bytes; [`AccountState::decode`] gives it back equal.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(256));
        w.0.push(VERSION);
        let (parts, pending) = self.parts();
        w.date(parts.start);
        w.opt_i64(parts.counted_to);
        let c = parts.carried;
        for v in [c.contract_value, c.add_ons, c.expected_deposits, c.duration] {
            w.opt_f64(v);
        }
        w.opt_i64(c.repayments);
        w.flag(parts.plan_in_force);
        w.f64(parts.deposits_seen);
        w.i64(pending.len() as i64);
        for (t, p) in pending {
            w.i64(*t);
            for v in p.values() {
                w.f64(v);
            }
        }
        w.clock(&self.nf);
        w.clock(&self.f);
        for v in self.sums.values() {
            w.f64(v);
        }
        w.flag(parts.settled_on.is_some());
        if let Some(d) = parts.settled_on {
            w.date(d);
        }
        w.0
    }

    /// A state [`AccountState::encode`] wrote; `None` for bytes it did not.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        if r.take::<1>()? != [VERSION] {
            return None;
        }
        let start = r.date()?;
        let counted_to = r.opt_i64()?;
        let carried = Carried {
            contract_value: r.opt_f64()?,
            add_ons: r.opt_f64()?,
            expected_deposits: r.opt_f64()?,
            duration: r.opt_f64()?,
            repayments: r.opt_i64()?,
        };
        let plan_in_force = r.flag()?;
        let deposits_seen = r.f64()?;
        let n = usize::try_from(r.i64()?).ok()?;
        let mut pending = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let t = r.i64()?;
            let mut values = [0.0; 6];
            for v in &mut values {
                *v = r.f64()?;
            }
            pending.push((t, Pending::from_values(values)));
        }
        let (nf, f) = (r.clock()?, r.clock()?);
        let mut sums = [0.0; 7];
        for v in &mut sums {
            *v = r.f64()?;
        }
        let settled_on = if r.flag()? { Some(r.date()?) } else { None };
        if !r.0.is_empty() {
            return None;
        }
        Some(AccountState::from_parts(
            super::state::Parts {
                start,
                counted_to,
                carried,
                plan_in_force,
                deposits_seen,
                settled_on,
            },
            pending,
            nf,
            f,
            Sums::from_values(sums),
        ))
    }
}
