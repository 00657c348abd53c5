//! The calculated fields of one day, and their cells in the catalogue.

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::state::{AccountState, Clock, Plan};
use super::{DayInputs, ceil_tol, floor_tol};
use crate::par::{PAR_BUCKETS, par_bucket};
use crate::value::Value;

/// The catalogue position of a column, found when the crate builds: a name missing from the
/// catalogue fails the build.
macro_rules! col {
    ($name:literal) => {
        const { crate::catalogue::position($name) }
    };
}

/// The figures of one paid-until clock on one day (`_nf_` or `_f_`).
#[derive(Debug, Clone, PartialEq)]
pub struct Arrears {
    /// `days_arrears_consecutive_x`: `max(0, ceil(t − u_x))`, 0 once settled.
    pub consecutive: i64,
    /// `days_arrears_cumulative_x`: days so far, with a snapshot or without, in arrears.
    pub cumulative: i64,
    /// `days_arrears_historical_x`: the largest consecutive arrears so far.
    pub historical: i64,
    /// `days_par_status_x`: the PAR bucket of `consecutive`.
    pub par_status: &'static str,
    /// `amt_arrears_consecutive_x`: `min(remaining, consecutive × r)`.
    pub amount_consecutive: f64,
    /// `amt_arrears_cumulative_x`: the daily rate summed over the days in arrears so far.
    pub amount_cumulative: f64,
    /// `amt_credit_daily_x`: how far the day's credit moved the clock, in money (days × r).
    pub credit_daily: f64,
    /// `repayment_rate_x`: `max(0, min(u_x, Dur)) / min(t, Dur)`, the days paid for over the
    /// days due; absent on the start day (nothing is due yet).
    pub repayment_rate: Option<f64>,
    /// `percent_paid_on_time_x`: `100 × (t + 1 − cumulative) / (t + 1)`, the share of the plan's
    /// days so far not in arrears.
    pub percent_paid_on_time: f64,
}

impl Arrears {
    pub(super) fn of(
        clock: &Clock,
        consecutive: i64,
        credit: f64,
        t: i64,
        plan: &Plan,
        remaining: f64,
    ) -> Self {
        let due = (t as f64).min(plan.duration);
        let days = (t + 1) as f64;
        Arrears {
            consecutive,
            cumulative: clock.cumulative,
            historical: clock.historical,
            par_status: PAR_BUCKETS[usize::from(par_bucket(Some(consecutive)))].0,
            amount_consecutive: remaining.min(consecutive as f64 * plan.rate),
            amount_cumulative: clock.amount_cumulative,
            credit_daily: credit,
            repayment_rate: (due > 0.0).then(|| clock.paid_until.min(plan.duration).max(0.0) / due),
            percent_paid_on_time: 100.0 * (days - clock.cumulative as f64) / days,
        }
    }
}

/// Every calculated field of one snapshot day (docs/domain.md §2.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub date: NaiveDate,
    /// `days_elapsed_payment_plan`: days since the start.
    pub days_elapsed: i64,
    pub nf: Arrears,
    pub f: Arrears,
    /// `floor(u_f − t)`; negative: locked that many days.
    pub days_to_cutoff: i64,
    /// `min(N, floor(t / P) + 1)`.
    pub installment_period: i64,
    /// `t − floor((installment_period − 1) × P)`.
    pub days_elapsed_installment: i64,
    /// `min(100, 100 × t / Dur)`.
    pub percent_elapsed_payment_plan: f64,
    /// `100 × min(N, floor(t / P)) / N`: the installment periods fully elapsed.
    pub percent_elapsed_installments: f64,
    /// `s + ceil(Dur)`.
    pub expected_maturity_date: NaiveDate,
    /// The day the account became settled, while it is.
    pub actual_maturity_date: Option<NaiveDate>,
    /// Not settled: midnight (UTC) of `s + max(t, ceil(u_f))`, the day the forgiving clock runs
    /// out (today when locked). Settled: absent.
    pub next_payment_due_at: Option<DateTime<Utc>>,
    // The plan in force.
    pub contract_value: f64,
    pub add_ons: f64,
    pub expected_deposits: f64,
    pub duration: f64,
    pub repayments: i64,
    // The day's own flows.
    pub payments_daily: f64,
    pub refunds_daily: f64,
    pub discounts_daily: f64,
    pub penalties_daily: f64,
    pub delays_daily: f64,
    // Sums of what was credited so far.
    /// `Σ(inst − ref)`.
    pub paid_installments: f64,
    pub paid_deposits: f64,
    /// `Σ(pay − ref)`.
    pub paid_payment_plan: f64,
    pub refunds_cumulative: f64,
    pub discounts_cumulative: f64,
    pub penalties_cumulative: f64,
    /// `round(Σ del)` (the catalogue holds whole days).
    pub delays_cumulative: i64,
    /// `max(0, R − paid installments − Σ disc)`.
    pub remaining: f64,
    /// `min(R, I × installment_period)`.
    pub expected_payment_plan: f64,
    /// `min(R, I × min(N, floor(t / P)))`: the installments of the periods fully elapsed.
    pub expected_installments: f64,
    /// `min(R, r × t)`: what the daily rate asks by day `t`.
    pub expected_installments_daily: f64,
    /// `100 × paid installments / expected_payment_plan`.
    pub percent_paid_vs_plan: f64,
    /// `100 × paid installments / R`.
    pub percent_paid_vs_financed: f64,
}

impl Metrics {
    pub(super) fn of(
        state: &AccountState,
        day: &DayInputs,
        t: i64,
        plan: &Plan,
        nf: Arrears,
        f: Arrears,
    ) -> Self {
        let s = &state.sums;
        let tf = t as f64;
        let n = plan.repayments;
        let whole_periods = (floor_tol(tf / plan.period) as i64).min(n);
        let installment_period = (whole_periods + 1).min(n);
        let remaining = s.remaining(plan);
        let expected_payment_plan = plan
            .financed
            .min(plan.installment * installment_period as f64);
        let settled = state.settled_on();
        let start = state.start();
        let after = |days: f64| start.checked_add_days(Days::new(days.max(0.0) as u64));
        Metrics {
            date: day.date,
            days_elapsed: t,
            days_to_cutoff: floor_tol(state.f.paid_until - tf) as i64,
            installment_period,
            days_elapsed_installment: t - floor_tol((installment_period - 1) as f64 * plan.period)
                as i64,
            percent_elapsed_payment_plan: (100.0 * tf / plan.duration).min(100.0),
            percent_elapsed_installments: 100.0 * whole_periods as f64 / n as f64,
            expected_maturity_date: after(ceil_tol(plan.duration)).unwrap_or(NaiveDate::MAX),
            actual_maturity_date: settled,
            next_payment_due_at: match settled {
                Some(_) => None,
                None => after(tf.max(ceil_tol(state.f.paid_until)))
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|d| d.and_utc()),
            },
            contract_value: plan.contract_value,
            add_ons: plan.add_ons,
            expected_deposits: plan.expected_deposits,
            duration: plan.duration,
            repayments: n,
            payments_daily: day.payment.unwrap_or(0.0),
            refunds_daily: day.refund.unwrap_or(0.0),
            discounts_daily: day.discount.unwrap_or(0.0),
            penalties_daily: day.penalty.unwrap_or(0.0),
            delays_daily: day.delay_days.unwrap_or(0.0),
            paid_installments: s.paid_installments,
            paid_deposits: s.paid_deposits,
            paid_payment_plan: s.paid_plan,
            refunds_cumulative: s.refunds,
            discounts_cumulative: s.discounts,
            penalties_cumulative: s.penalties,
            delays_cumulative: s.delays.round() as i64,
            remaining,
            expected_payment_plan,
            expected_installments: plan.financed.min(plan.installment * whole_periods as f64),
            expected_installments_daily: plan.financed.min(plan.rate * tf),
            percent_paid_vs_plan: 100.0 * s.paid_installments / expected_payment_plan,
            percent_paid_vs_financed: 100.0 * s.paid_installments / plan.financed,
            nf,
            f,
        }
    }

    /// Every field by its position in the catalogue ([`crate::FIELDS`]), with its value (in
    /// the catalogue's type).
    pub fn cells(&self) -> Vec<(usize, Value)> {
        let float = |name, v: f64| (name, Value::Float(v));
        let int = |name, v: i64| (name, Value::Integer(v));
        let mut cells = vec![
            int(
                col!("days_elapsed_payment_plan_calculated"),
                self.days_elapsed,
            ),
            int(col!("days_to_cutoff_calculated"), self.days_to_cutoff),
            int(
                col!("installment_period_calculated"),
                self.installment_period,
            ),
            int(
                col!("days_elapsed_installment_calculated"),
                self.days_elapsed_installment,
            ),
            float(
                col!("percent_elapsed_payment_plan_calculated"),
                self.percent_elapsed_payment_plan,
            ),
            float(
                col!("percent_elapsed_installments_calculated"),
                self.percent_elapsed_installments,
            ),
            (
                col!("expected_maturity_date_calculated"),
                Value::Date(self.expected_maturity_date),
            ),
            float(
                col!("amt_contract_value_without_discounts_calculated"),
                self.contract_value,
            ),
            float(col!("amt_lump_sum_add_ons_calculated"), self.add_ons),
            float(
                col!("amt_expected_deposits_cumulative_calculated"),
                self.expected_deposits,
            ),
            float(
                col!("days_expected_loan_duration_calculated"),
                self.duration,
            ),
            int(col!("num_expected_repayments_calculated"), self.repayments),
        ];
        cells.extend(self.money_cells());
        if let Some(date) = self.actual_maturity_date {
            cells.push((col!("actual_maturity_date_calculated"), Value::Date(date)));
        }
        if let Some(at) = self.next_payment_due_at {
            cells.push((col!("next_payment_due_at_calculated"), Value::DateTime(at)));
        }
        for (variant, a) in [("nf", &self.nf), ("f", &self.f)] {
            cells.extend(a.cells(variant));
        }
        cells
    }
}

impl Metrics {
    /// The flows of the day, the sums and what is expected.
    fn money_cells(&self) -> Vec<(usize, Value)> {
        let float = |name, v: f64| (name, Value::Float(v));
        let int = |name, v: i64| (name, Value::Integer(v));
        vec![
            float(col!("amt_payments_daily_calculated"), self.payments_daily),
            float(col!("amt_refunds_daily_calculated"), self.refunds_daily),
            float(col!("amt_discounts_daily_calculated"), self.discounts_daily),
            float(col!("amt_penalties_daily_calculated"), self.penalties_daily),
            float(col!("days_delays_daily_calculated"), self.delays_daily),
            float(
                col!("amt_paid_installments_cumulative_calculated"),
                self.paid_installments,
            ),
            float(
                col!("amt_paid_deposits_cumulative_calculated"),
                self.paid_deposits,
            ),
            float(
                col!("amt_paid_payment_plan_cumulative_calculated"),
                self.paid_payment_plan,
            ),
            float(
                col!("amt_refunds_cumulative_calculated"),
                self.refunds_cumulative,
            ),
            float(
                col!("amt_discounts_cumulative_calculated"),
                self.discounts_cumulative,
            ),
            float(
                col!("amt_penalties_cumulative_calculated"),
                self.penalties_cumulative,
            ),
            int(
                col!("days_delays_cumulative_calculated"),
                self.delays_cumulative,
            ),
            float(col!("amt_remaining_installment_calculated"), self.remaining),
            float(
                col!("amt_expected_payment_plan_cumulative_calculated"),
                self.expected_payment_plan,
            ),
            float(
                col!("amt_expected_installments_cumulative_calculated"),
                self.expected_installments,
            ),
            float(
                col!("amt_expected_installments_daily_cumulative_calculated"),
                self.expected_installments_daily,
            ),
            float(
                col!("percent_paid_vs_plan_calculated"),
                self.percent_paid_vs_plan,
            ),
            float(
                col!("percent_paid_vs_financed_calculated"),
                self.percent_paid_vs_financed,
            ),
        ]
    }
}

/// The column names of one clock's figures, in the order [`Arrears::cells`] gives them.
type ClockNames = [usize; 9];

const NON_FORGIVING: ClockNames = [
    col!("days_arrears_consecutive_nf_calculated"),
    col!("days_arrears_cumulative_nf_calculated"),
    col!("days_arrears_historical_nf_calculated"),
    col!("days_par_status_nf_calculated"),
    col!("amt_arrears_consecutive_nf_calculated"),
    col!("amt_arrears_cumulative_nf_calculated"),
    col!("amt_credit_daily_nf_calculated"),
    col!("percent_paid_on_time_nf_calculated"),
    col!("repayment_rate_nf_calculated"),
];

const FORGIVING: ClockNames = [
    col!("days_arrears_consecutive_f_calculated"),
    col!("days_arrears_cumulative_f_calculated"),
    col!("days_arrears_historical_f_calculated"),
    col!("days_par_status_f_calculated"),
    col!("amt_arrears_consecutive_f_calculated"),
    col!("amt_arrears_cumulative_f_calculated"),
    col!("amt_credit_daily_f_calculated"),
    col!("percent_paid_on_time_f_calculated"),
    col!("repayment_rate_f_calculated"),
];

impl Arrears {
    fn cells(&self, variant: &str) -> Vec<(usize, Value)> {
        let names = if variant == "f" {
            &FORGIVING
        } else {
            &NON_FORGIVING
        };
        let [
            consecutive,
            cumulative,
            historical,
            par,
            amount,
            amount_cumulative,
            credit,
            on_time,
            rate,
        ] = *names;
        let mut cells = vec![
            (consecutive, Value::Integer(self.consecutive)),
            (cumulative, Value::Integer(self.cumulative)),
            (historical, Value::Integer(self.historical)),
            (par, Value::String(self.par_status.to_owned())),
            (amount, Value::Float(self.amount_consecutive)),
            (amount_cumulative, Value::Float(self.amount_cumulative)),
            (credit, Value::Float(self.credit_daily)),
            (on_time, Value::Float(self.percent_paid_on_time)),
        ];
        if let Some(repayment_rate) = self.repayment_rate {
            cells.push((rate, Value::Float(repayment_rate)));
        }
        cells
    }
}
