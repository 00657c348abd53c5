//! recoup's PAYGo metrics on the wire: the credit model's inputs read straight from an
//! `AccountSnapshotRecorded` (only the fields the model needs are decoded, prost skips the
//! rest), and `AccountMetricsCalculated` encoded from the model's outcome.

use chrono::NaiveDate;
use paygo_snapshots::credit::{DayInputs, MODEL_VERSION, Outcome};
use prost::{Message, encoding};

use crate::snapshots::{encode_value, field_number, format_date};

/// The fields of `recoup.v1.AccountSnapshot` the model reads (tags: catalogue position + 1;
/// `tests/metrics.rs` checks them against an encoded snapshot).
#[derive(Clone, PartialEq, Message)]
struct SnapshotInputs {
    #[prost(string, optional, tag = "1")]
    snapshot_date: Option<String>,
    #[prost(int64, optional, tag = "5")]
    days_elapsed_payment_plan_source: Option<i64>,
    #[prost(double, optional, tag = "11")]
    days_delays_daily_source: Option<f64>,
    #[prost(int64, optional, tag = "47")]
    num_expected_repayments_source: Option<i64>,
    #[prost(double, optional, tag = "49")]
    days_expected_loan_duration_source: Option<f64>,
    #[prost(double, optional, tag = "56")]
    amt_lump_sum_add_ons_source: Option<f64>,
    #[prost(double, optional, tag = "58")]
    amt_paid_deposits_cumulative_source: Option<f64>,
    #[prost(double, optional, tag = "64")]
    amt_payments_daily_source: Option<f64>,
    #[prost(double, optional, tag = "66")]
    amt_contract_value_without_discounts_source: Option<f64>,
    #[prost(string, optional, tag = "76")]
    account_uid: Option<String>,
    #[prost(double, optional, tag = "84")]
    amt_refunds_daily_source: Option<f64>,
    #[prost(double, optional, tag = "88")]
    amt_penalties_daily_source: Option<f64>,
    #[prost(double, optional, tag = "92")]
    amt_discounts_daily_source: Option<f64>,
    #[prost(double, optional, tag = "94")]
    amt_expected_deposits_cumulative_source: Option<f64>,
}

/// The model's inputs of `$s`, a [`SnapshotInputs`] or a whole `v1::AccountSnapshot` (the
/// same field names), on `$date`: written once for both.
macro_rules! inputs_of {
    ($s:expr, $date:expr) => {
        DayInputs {
            date: $date,
            days_elapsed: $s.days_elapsed_payment_plan_source,
            contract_value: $s.amt_contract_value_without_discounts_source,
            add_ons: $s.amt_lump_sum_add_ons_source,
            expected_deposits: $s.amt_expected_deposits_cumulative_source,
            duration: $s.days_expected_loan_duration_source,
            repayments: $s.num_expected_repayments_source,
            payment: $s.amt_payments_daily_source,
            paid_deposits_cumulative: $s.amt_paid_deposits_cumulative_source,
            refund: $s.amt_refunds_daily_source,
            discount: $s.amt_discounts_daily_source,
            delay_days: $s.days_delays_daily_source,
            penalty: $s.amt_penalties_daily_source,
        }
    };
}

/// `AccountSnapshotRecorded` with only what the model needs.
#[derive(Clone, PartialEq, Message)]
struct RecordedInputs {
    #[prost(message, optional, tag = "1")]
    snapshot: Option<SnapshotInputs>,
    #[prost(uint64, tag = "4")]
    revision: u64,
}

/// One snapshot day as the model takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedDay {
    pub account_uid: String,
    /// `AccountSnapshotRecorded.revision`.
    pub revision: u64,
    pub inputs: DayInputs,
}

/// The model's inputs of an encoded `AccountSnapshotRecorded`, or why it has none.
pub fn recorded_day(payload: &[u8]) -> Result<RecordedDay, String> {
    let recorded = RecordedInputs::decode(payload).map_err(|e| e.to_string())?;
    let s = recorded.snapshot.ok_or("the event carries no snapshot")?;
    day_from(s, recorded.revision)
}

/// The model's inputs of an encoded `recoup.v1.AccountSnapshot` of revision `revision` (as a
/// read model keeps the snapshots it applied), or why it has none.
pub fn snapshot_day(snapshot: &[u8], revision: u64) -> Result<RecordedDay, String> {
    let s = SnapshotInputs::decode(snapshot).map_err(|e| e.to_string())?;
    day_from(s, revision)
}

fn day_from(s: SnapshotInputs, revision: u64) -> Result<RecordedDay, String> {
    let account_uid = s
        .account_uid
        .filter(|u| !u.is_empty())
        .ok_or("no account_uid")?;
    let date = s.snapshot_date.ok_or("no snapshot_date")?;
    let date = NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .map_err(|_| format!("snapshot_date {date:?} is not a date"))?;
    Ok(RecordedDay {
        account_uid,
        revision,
        inputs: inputs_of!(s, date),
    })
}

/// The model's inputs of a snapshot already decoded as `recoup.v1.AccountSnapshot` (what
/// [`recorded_day`] reads from the bytes): a consumer that decodes the whole snapshot anyway
/// does not decode it twice.
pub fn day_of(
    s: &crate::v1::AccountSnapshot,
    date: NaiveDate,
    revision: u64,
) -> Result<RecordedDay, String> {
    let account_uid = s
        .account_uid
        .clone()
        .filter(|u| !u.is_empty())
        .ok_or("no account_uid")?;
    Ok(RecordedDay {
        account_uid,
        revision,
        inputs: inputs_of!(s, date),
    })
}

/// The calculated fields of an outcome as an encoded `recoup.v1.AccountSnapshot` (only
/// `*_calculated` fields set), or why there are none.
pub fn encode_outcome(outcome: &Outcome) -> Result<Vec<u8>, String> {
    match outcome {
        Outcome::Metrics(metrics) => {
            let mut buf = Vec::with_capacity(768);
            for (index, value) in metrics.cells() {
                encode_value(field_number(index), &value, &mut buf);
            }
            Ok(buf)
        }
        Outcome::BeforeStart => Err("before the plan's start".to_owned()),
        Outcome::NoPlan { missing } => Err(format!("no plan: {}", missing.join(", "))),
    }
}

/// An encoded `AccountMetricsCalculated`.
pub fn encode_calculated(
    account_uid: &str,
    date: NaiveDate,
    snapshot_revision: u64,
    revision: u64,
    calculated: &Result<Vec<u8>, String>,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(900);
    encoding::string::encode(1, &account_uid.to_owned(), &mut buf);
    encoding::string::encode(2, &format_date(date), &mut buf);
    encoding::uint32::encode(3, &MODEL_VERSION, &mut buf);
    encoding::uint64::encode(4, &snapshot_revision, &mut buf);
    encoding::uint64::encode(5, &revision, &mut buf);
    match calculated {
        Ok(snapshot) => {
            encoding::encode_key(6, encoding::WireType::LengthDelimited, &mut buf);
            encoding::encode_varint(snapshot.len() as u64, &mut buf);
            buf.extend_from_slice(snapshot);
        }
        Err(why) => encoding::string::encode(7, why, &mut buf),
    }
    buf
}
