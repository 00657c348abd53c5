//! recoup's PAYGo credit model (docs/domain.md §2.1): an account's snapshots in, the
//! `_calculated` fields of each snapshot day out. Pure: no I/O, no clock.
//!
//! - [`DayInputs`]: what the model reads of one snapshot ([`DayInputs::of`]).
//! - [`compute`]: a whole series, in any order, into one [`Outcome`] per snapshot day.
//! - [`AccountState`]: the model after some day, stepped one snapshot day at a time
//!   ([`AccountState::step`]); `compute` is a start ([`start_of`]) and a fold of steps, so a
//!   caller that keeps the state of each day can recompute an account from any day on.
//! - [`Metrics`]: the calculated fields of one day, and their catalogue cells
//!   ([`Metrics::cells`]).
//!
//! Values are f64. Whole-day results (`ceil`, `floor`) forgive a relative error of
//! [`TOLERANCE`], so that 3 × 0.1 days of credit count as 0.3 days, not a day more.

mod codec;
mod metrics;
mod state;

use chrono::NaiveDate;

pub use metrics::{Arrears, Metrics};
pub use state::AccountState;

use crate::row::AccountSnapshot;
use crate::value::Value;

/// The model's version, carried by every result computed with it: bumped whenever a definition
/// changes, so that a consumer can tell results of different definitions apart.
pub const MODEL_VERSION: u32 = 1;

/// Relative tolerance of comparisons and of whole-day rounding.
pub const TOLERANCE: f64 = 1e-9;

/// What the model reads of one snapshot (`None`: the snapshot had no value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayInputs {
    pub date: NaiveDate,
    /// `days_elapsed_payment_plan_source`: fixes the plan's start.
    pub days_elapsed: Option<i64>,
    /// `amt_contract_value_without_discounts_source` (C).
    pub contract_value: Option<f64>,
    /// `amt_lump_sum_add_ons_source` (A).
    pub add_ons: Option<f64>,
    /// `amt_expected_deposits_cumulative_source` (E).
    pub expected_deposits: Option<f64>,
    /// `days_expected_loan_duration_source` (Dur).
    pub duration: Option<f64>,
    /// `num_expected_repayments_source` (N).
    pub repayments: Option<i64>,
    /// `amt_payments_daily_source`.
    pub payment: Option<f64>,
    /// `amt_paid_deposits_cumulative_source`.
    pub paid_deposits_cumulative: Option<f64>,
    /// `amt_refunds_daily_source`.
    pub refund: Option<f64>,
    /// `amt_discounts_daily_source`.
    pub discount: Option<f64>,
    /// `days_delays_daily_source`.
    pub delay_days: Option<f64>,
    /// `amt_penalties_daily_source`.
    pub penalty: Option<f64>,
}

impl DayInputs {
    /// The inputs of a validated snapshot; `None` without a `snapshot_date`.
    pub fn of(snapshot: &AccountSnapshot) -> Option<Self> {
        let float = |name: &str| match snapshot.get(name) {
            Some(Value::Float(v)) => Some(*v),
            Some(Value::Integer(v)) => Some(*v as f64),
            _ => None,
        };
        let integer = |name: &str| match snapshot.get(name) {
            Some(Value::Integer(v)) => Some(*v),
            _ => None,
        };
        Some(Self {
            date: snapshot.snapshot_date()?,
            days_elapsed: integer("days_elapsed_payment_plan_source"),
            contract_value: float("amt_contract_value_without_discounts_source"),
            add_ons: float("amt_lump_sum_add_ons_source"),
            expected_deposits: float("amt_expected_deposits_cumulative_source"),
            duration: float("days_expected_loan_duration_source"),
            repayments: integer("num_expected_repayments_source"),
            payment: float("amt_payments_daily_source"),
            paid_deposits_cumulative: float("amt_paid_deposits_cumulative_source"),
            refund: float("amt_refunds_daily_source"),
            discount: float("amt_discounts_daily_source"),
            delay_days: float("days_delays_daily_source"),
            penalty: float("amt_penalties_daily_source"),
        })
    }
}

/// What the model says of one snapshot day.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The day's calculated fields.
    Metrics(Box<Metrics>),
    /// The day is before the plan's start: no calculated values (its flows wait for the start).
    BeforeStart,
    /// No complete, usable plan is known on this day; `missing` names what is missing or
    /// unusable (its flows wait for a day with a plan).
    NoPlan { missing: Vec<&'static str> },
}

impl Outcome {
    /// The metrics, when the day has them.
    pub fn metrics(&self) -> Option<&Metrics> {
        match self {
            Outcome::Metrics(m) => Some(m),
            _ => None,
        }
    }
}

/// The plan's start `s` of a series: the date of its first snapshot (by date) that has
/// `days_elapsed`, minus that value; else its first date. `None` for an empty series.
pub fn start_of<'a>(days: impl IntoIterator<Item = &'a DayInputs>) -> Option<NaiveDate> {
    let mut first: Option<NaiveDate> = None;
    let mut anchor: Option<(NaiveDate, i64)> = None;
    for day in days {
        first = Some(first.map_or(day.date, |f| f.min(day.date)));
        if let Some(elapsed) = day.days_elapsed
            && anchor.is_none_or(|(date, _)| day.date < date)
        {
            anchor = Some((day.date, elapsed));
        }
    }
    match anchor {
        Some((date, elapsed)) => date.checked_sub_days(chrono::Days::new(elapsed.max(0) as u64)),
        None => first,
    }
}

/// Computes a whole series: one outcome per snapshot day, in date order. The series may come in
/// any order; of two snapshots of one day the later in `days` counts.
pub fn compute(days: &[DayInputs]) -> Vec<(NaiveDate, Outcome)> {
    let mut series: Vec<&DayInputs> = days.iter().collect();
    // Stable: of one day's snapshots the last given stays last, and wins below.
    series.sort_by_key(|d| d.date);
    series.dedup_by(|later, earlier| {
        if later.date == earlier.date {
            std::mem::swap(later, earlier);
            true
        } else {
            false
        }
    });
    let Some(start) = start_of(series.iter().copied()) else {
        return Vec::new();
    };
    let mut state = AccountState::new(start);
    series
        .into_iter()
        .map(|day| (day.date, state.step(day)))
        .collect()
}

/// `ceil(x)`, forgiving a relative error of [`TOLERANCE`].
pub(crate) fn ceil_tol(x: f64) -> f64 {
    (x - TOLERANCE * x.abs().max(1.0)).ceil()
}

/// `floor(x)`, forgiving a relative error of [`TOLERANCE`].
pub(crate) fn floor_tol(x: f64) -> f64 {
    (x + TOLERANCE * x.abs().max(1.0)).floor()
}

/// `a ≥ b` within [`TOLERANCE`].
pub(crate) fn at_least(a: f64, b: f64) -> bool {
    a >= b - TOLERANCE * a.abs().max(b.abs()).max(1.0)
}
