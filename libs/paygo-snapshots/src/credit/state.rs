//! The model after some day of an account, stepped one snapshot day at a time.

use chrono::NaiveDate;

use super::metrics::{Arrears, Metrics};
use super::{DayInputs, Outcome, at_least, ceil_tol};

/// The plan in force on a day: the latest value of each input given on or before it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Carried {
    pub contract_value: Option<f64>,
    pub add_ons: Option<f64>,
    pub expected_deposits: Option<f64>,
    pub duration: Option<f64>,
    pub repayments: Option<i64>,
}

/// A complete, usable plan and what follows from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Plan {
    pub contract_value: f64,
    pub add_ons: f64,
    pub expected_deposits: f64,
    pub duration: f64,
    pub repayments: i64,
    /// Financed: `C + A − E`.
    pub financed: f64,
    /// Per day: `R / Dur`.
    pub rate: f64,
    /// Days per installment: `Dur / N`.
    pub period: f64,
    /// `R / N`.
    pub installment: f64,
}

impl Carried {
    fn take(&mut self, day: &DayInputs) {
        let keep = |old: &mut Option<f64>, new: Option<f64>| *old = new.or(*old);
        keep(&mut self.contract_value, day.contract_value);
        keep(&mut self.add_ons, day.add_ons);
        keep(&mut self.expected_deposits, day.expected_deposits);
        keep(&mut self.duration, day.duration);
        self.repayments = day.repayments.or(self.repayments);
    }

    /// The plan, or what is missing or unusable.
    fn plan(&self) -> Result<Plan, Vec<&'static str>> {
        let mut missing = Vec::new();
        let c = self.contract_value;
        let dur = self.duration.filter(|d| *d > 0.0);
        let n = self.repayments.filter(|n| *n > 0);
        if c.is_none() {
            missing.push("amt_contract_value_without_discounts_source");
        }
        if dur.is_none() {
            missing.push("days_expected_loan_duration_source (> 0)");
        }
        if n.is_none() {
            missing.push("num_expected_repayments_source (> 0)");
        }
        let (Some(c), Some(dur), Some(n)) = (c, dur, n) else {
            return Err(missing);
        };
        let (a, e) = (
            self.add_ons.unwrap_or(0.0),
            self.expected_deposits.unwrap_or(0.0),
        );
        let financed = c + a - e;
        if financed <= 0.0 {
            return Err(vec!["a financed amount (C + A − E) above 0"]);
        }
        Ok(Plan {
            contract_value: c,
            add_ons: a,
            expected_deposits: e,
            duration: dur,
            repayments: n,
            financed,
            rate: financed / dur,
            period: dur / n as f64,
            installment: financed / n as f64,
        })
    }
}

/// Money and delay days not yet turned into credit: flows of days before the start or without
/// a plan, credited on the next day that has both.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Pending {
    payments: f64,
    deposits: f64,
    refunds: f64,
    discounts: f64,
    delays: f64,
    penalties: f64,
}

impl Pending {
    pub(super) fn values(&self) -> [f64; 6] {
        let p = self;
        [
            p.payments,
            p.deposits,
            p.refunds,
            p.discounts,
            p.delays,
            p.penalties,
        ]
    }

    pub(super) fn from_values(
        [payments, deposits, refunds, discounts, delays, penalties]: [f64; 6],
    ) -> Self {
        Self {
            payments,
            deposits,
            refunds,
            discounts,
            delays,
            penalties,
        }
    }
}

/// Running figures of one paid-until clock.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Clock {
    /// Paid until this many days after the start.
    pub paid_until: f64,
    /// Days so far with consecutive arrears.
    pub cumulative: i64,
    /// The largest consecutive arrears so far.
    pub historical: i64,
    /// The daily rate summed over the days in arrears.
    pub amount_cumulative: f64,
}

impl Clock {
    /// Consecutive days in arrears on day `t` (0 once settled).
    pub(super) fn consecutive(&self, t: i64, settled: bool) -> i64 {
        if settled {
            return 0;
        }
        (ceil_tol(t as f64 - self.paid_until).max(0.0)) as i64
    }

    /// Counts the days `from..=to` (no flows on them) into the running figures.
    fn pass(&mut self, from: i64, to: i64, settled: bool, rate: f64) {
        if from > to || settled {
            return;
        }
        // Consecutive arrears grow with the day: find the first day in arrears.
        let mut first = (self.paid_until.floor() as i64).saturating_add(1).max(from);
        while first > from && self.consecutive(first - 1, false) > 0 {
            first -= 1;
        }
        while first <= to && self.consecutive(first, false) == 0 {
            first += 1;
        }
        if first > to {
            return;
        }
        let days = to - first + 1;
        self.cumulative += days;
        self.historical = self.historical.max(self.consecutive(to, false));
        self.amount_cumulative += days as f64 * rate;
    }

    /// Counts day `t` itself, after its flows.
    fn count(&mut self, t: i64, settled: bool, rate: f64) {
        let consecutive = self.consecutive(t, settled);
        if consecutive > 0 {
            self.cumulative += 1;
            self.amount_cumulative += rate;
        }
        self.historical = self.historical.max(consecutive);
    }
}

/// Sums over the flows credited so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Sums {
    /// `Σ(inst − ref)`.
    pub paid_installments: f64,
    pub paid_deposits: f64,
    /// `Σ(pay − ref)`.
    pub paid_plan: f64,
    pub refunds: f64,
    pub discounts: f64,
    pub penalties: f64,
    pub delays: f64,
}

impl Sums {
    pub(super) fn values(&self) -> [f64; 7] {
        let s = self;
        [
            s.paid_installments,
            s.paid_deposits,
            s.paid_plan,
            s.refunds,
            s.discounts,
            s.penalties,
            s.delays,
        ]
    }

    pub(super) fn from_values(
        [
            paid_installments,
            paid_deposits,
            paid_plan,
            refunds,
            discounts,
            penalties,
            delays,
        ]: [f64; 7],
    ) -> Self {
        Self {
            paid_installments,
            paid_deposits,
            paid_plan,
            refunds,
            discounts,
            penalties,
            delays,
        }
    }

    /// `max(0, R − paid installments − Σ disc)`.
    pub(super) fn remaining(&self, plan: &Plan) -> f64 {
        (plan.financed - self.paid_installments - self.discounts).max(0.0)
    }
}

/// The scalar parts of an [`AccountState`], for its codec.
pub(super) struct Parts {
    pub start: NaiveDate,
    pub counted_to: Option<i64>,
    pub carried: Carried,
    pub plan_in_force: bool,
    pub deposits_seen: f64,
    pub settled_on: Option<NaiveDate>,
}

/// One account's model after its last stepped day. Step the snapshot days in date order.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountState {
    start: NaiveDate,
    /// `t` of the last day counted into the clocks.
    counted_to: Option<i64>,
    carried: Carried,
    /// The plan in force after the last stepped day, when complete.
    plan: Option<Plan>,
    /// `amt_paid_deposits_cumulative_source` as last given.
    deposits_seen: f64,
    /// Flows not yet credited, with the day (`t`, 0 before the start) they came on: flows of
    /// days before the start or without a plan. Those days are worked out, as if the first
    /// plan known had held on them, on the next day with a plan.
    pending: Vec<(i64, Pending)>,
    pub(super) nf: Clock,
    pub(super) f: Clock,
    pub(super) sums: Sums,
    settled_on: Option<NaiveDate>,
}

impl AccountState {
    /// The model of an account whose plan starts on `start`, before any day.
    pub fn new(start: NaiveDate) -> Self {
        Self {
            start,
            counted_to: None,
            carried: Carried::default(),
            plan: None,
            deposits_seen: 0.0,
            pending: Vec::new(),
            nf: Clock::default(),
            f: Clock::default(),
            sums: Sums::default(),
            settled_on: None,
        }
    }

    pub(super) fn parts(&self) -> (Parts, &[(i64, Pending)]) {
        let parts = Parts {
            start: self.start,
            counted_to: self.counted_to,
            carried: self.carried,
            plan_in_force: self.plan.is_some(),
            deposits_seen: self.deposits_seen,
            settled_on: self.settled_on,
        };
        (parts, &self.pending)
    }

    /// The state of [`AccountState::parts`]; the plan in force is the carried one's.
    pub(super) fn from_parts(
        parts: Parts,
        pending: Vec<(i64, Pending)>,
        nf: Clock,
        f: Clock,
        sums: Sums,
    ) -> Self {
        Self {
            start: parts.start,
            counted_to: parts.counted_to,
            carried: parts.carried,
            plan: parts
                .plan_in_force
                .then(|| parts.carried.plan().ok())
                .flatten(),
            deposits_seen: parts.deposits_seen,
            pending,
            nf,
            f,
            sums,
            settled_on: parts.settled_on,
        }
    }

    /// The plan's start.
    pub fn start(&self) -> NaiveDate {
        self.start
    }

    /// Takes the next snapshot day (a date after every day stepped so far).
    pub fn step(&mut self, day: &DayInputs) -> Outcome {
        let t = (day.date - self.start).num_days();
        self.carried.take(day);
        let flows = self.flows_of(day);
        self.pending.push((t.max(0), flows));
        if t < 0 {
            return Outcome::BeforeStart;
        }
        let plan = match self.carried.plan() {
            Ok(plan) => plan,
            Err(missing) => {
                self.plan = None;
                return Outcome::NoPlan { missing };
            }
        };
        // Days without flows run under the plan then in force (this one when none was).
        let gap_rate = self.plan.map_or(plan.rate, |p| p.rate);
        self.plan = Some(plan);
        let (credit_nf, credit_f) = self.work_out(t, &plan, gap_rate);
        let settled = self.settled_on.is_some();
        let remaining = self.sums.remaining(&plan);
        let arrears = |clock: &Clock, credit: f64| {
            let consecutive = clock.consecutive(t, settled);
            Arrears::of(clock, consecutive, credit * plan.rate, t, &plan, remaining)
        };
        Outcome::Metrics(Box::new(Metrics::of(
            self,
            day,
            t,
            &plan,
            arrears(&self.nf, credit_nf),
            arrears(&self.f, credit_f),
        )))
    }

    /// The day's flows.
    fn flows_of(&mut self, day: &DayInputs) -> Pending {
        let payment = day.payment.unwrap_or(0.0);
        // The part of the payment that paid deposits: the rise of the paid deposits, within
        // the payment (a fall is a correction, not a negative deposit).
        let deposits = match day.paid_deposits_cumulative {
            Some(cumulative) => {
                let rise = (cumulative - self.deposits_seen).clamp(0.0, payment.max(0.0));
                self.deposits_seen = cumulative;
                rise
            }
            None => 0.0,
        };
        Pending {
            payments: payment,
            deposits,
            refunds: day.refund.unwrap_or(0.0),
            discounts: day.discount.unwrap_or(0.0),
            delays: day.delay_days.unwrap_or(0.0),
            penalties: day.penalty.unwrap_or(0.0),
        }
    }

    /// Works the days out up to `t` (today, whose flows are the last pending): each day with
    /// flows credits them and is counted, the days between are counted without flows. Returns
    /// today's credit in days of each clock.
    fn work_out(&mut self, t: i64, plan: &Plan, gap_rate: f64) -> (f64, f64) {
        let pending = std::mem::take(&mut self.pending);
        let mut today = (0.0, 0.0);
        let mut i = 0;
        while i < pending.len() {
            let at = pending[i].0;
            let settled = self.settled_on.is_some();
            // Days before a day without a plan run under the plan found now.
            let rate = if at < t { plan.rate } else { gap_rate };
            let from = self.counted_to.map_or(0, |c| c + 1);
            self.nf.pass(from, at - 1, settled, rate);
            self.f.pass(from, at - 1, settled, rate);
            let mut credit = (0.0, 0.0);
            while i < pending.len() && pending[i].0 == at {
                let (nf, f) = self.credit(at, &pending[i].1, plan);
                credit = (credit.0 + nf, credit.1 + f);
                i += 1;
            }
            self.settle(at, plan);
            if self.counted_to.is_none_or(|c| c < at) {
                let settled = self.settled_on.is_some();
                self.nf.count(at, settled, plan.rate);
                self.f.count(at, settled, plan.rate);
                self.counted_to = Some(at);
            }
            if at == t {
                today = credit;
            }
        }
        today
    }

    /// Credits one day's flows on day `t`: the clocks move, the sums grow. Returns the credit
    /// in days of each clock.
    fn credit(&mut self, t: i64, p: &Pending, plan: &Plan) -> (f64, f64) {
        let installments = p.payments - p.deposits;
        let days = (installments - p.refunds + p.discounts) / plan.rate + p.delays;
        self.nf.paid_until += days;
        let before = self.f.paid_until;
        self.f.paid_until = if days > 0.0 {
            (t as f64).max(before) + days
        } else {
            before + days
        };
        let s = &mut self.sums;
        s.paid_installments += installments - p.refunds;
        s.paid_deposits += p.deposits;
        s.paid_plan += p.payments - p.refunds;
        s.refunds += p.refunds;
        s.discounts += p.discounts;
        s.penalties += p.penalties;
        s.delays += p.delays;
        (days, self.f.paid_until - before)
    }

    /// Settled once paid installments and discounts cover the financed amount.
    fn settle(&mut self, t: i64, plan: &Plan) {
        let settled = at_least(
            self.sums.paid_installments + self.sums.discounts,
            plan.financed,
        );
        self.settled_on = match (settled, self.settled_on) {
            (true, Some(on)) => Some(on),
            (true, None) => self.start.checked_add_days(chrono::Days::new(t as u64)),
            (false, _) => None,
        };
    }

    /// The day the account became settled, while it is.
    pub fn settled_on(&self) -> Option<NaiveDate> {
        self.settled_on
    }
}
