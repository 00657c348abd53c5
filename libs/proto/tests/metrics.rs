//! The credit model on the wire: its inputs read from an encoded `AccountSnapshotRecorded`
//! (the partial message's field numbers against the catalogue's), and its results encoded as
//! `AccountMetricsCalculated` that the generated messages decode.
#![allow(clippy::unwrap_used)]

use chrono::{TimeZone, Utc};
use paygo_snapshots::credit::{DayInputs, MODEL_VERSION, Outcome, compute};
use paygo_snapshots::{Columns, ImportContext};
use prost::Message;
use recoup_proto::metrics::{
    day_of, encode_calculated, encode_outcome, recorded_day, snapshot_day,
};
use recoup_proto::snapshots::{encode_recorded, encode_snapshot};
use recoup_proto::v1;

/// A validated row with a distinct value in every column the model reads.
fn row() -> paygo_snapshots::AccountSnapshot {
    let cells = [
        ("snapshot_date", "2026-03-01"),
        ("account_external_id", "A1"),
        ("days_elapsed_payment_plan_source", "3"),
        ("amt_contract_value_without_discounts_source", "3200"),
        ("amt_lump_sum_add_ons_source", "11.5"),
        ("amt_expected_deposits_cumulative_source", "200"),
        ("days_expected_loan_duration_source", "30"),
        ("num_expected_repayments_source", "3"),
        ("amt_payments_daily_source", "700"),
        ("amt_paid_deposits_cumulative_source", "200.25"),
        ("amt_refunds_daily_source", "12.5"),
        ("amt_discounts_daily_source", "13.5"),
        ("days_delays_daily_source", "1.5"),
        ("amt_penalties_daily_source", "14.5"),
        // Not read by the model: skipped by the partial message.
        ("days_to_cutoff_source", "-4"),
        ("days_to_cutoff_calculated", "99"),
    ];
    let headers: Vec<String> = cells.iter().map(|(h, _)| (*h).to_owned()).collect();
    let values: Vec<&str> = cells.iter().map(|(_, v)| *v).collect();
    let ctx = ImportContext {
        organization_id: "acme".to_owned(),
        data_origin: Some("crm".to_owned()),
        source_id: "import-1".to_owned(),
        now: Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).single().unwrap(),
    };
    Columns::checked(&headers)
        .unwrap()
        .validate(2, &values, &ctx)
        .unwrap()
}

#[test]
fn the_models_inputs_are_read_from_a_recorded_snapshot_as_the_domain_reads_them() {
    let snapshot = row();
    let mut bytes = Vec::new();
    encode_snapshot(&snapshot, &mut bytes);
    let recorded = encode_recorded(&bytes, "import-1", 2, 7);
    let day = recorded_day(&recorded).unwrap();
    assert_eq!(day.account_uid, "acme_crm_A1");
    assert_eq!(day.revision, 7);
    let want = DayInputs::of(&snapshot).unwrap();
    assert_eq!(day.inputs, want);
    // Every input has its distinct value: no tag points at another column.
    assert_eq!(want.days_elapsed, Some(3));
    assert_eq!(want.add_ons, Some(11.5));
    assert_eq!(want.paid_deposits_cumulative, Some(200.25));
    assert_eq!(want.refund, Some(12.5));
    assert_eq!(want.discount, Some(13.5));
    assert_eq!(want.delay_days, Some(1.5));
    assert_eq!(want.penalty, Some(14.5));
    assert_eq!(want.repayments, Some(3));

    let mut bare = Vec::new();
    encode_snapshot(&snapshot, &mut bare);
    assert_eq!(
        snapshot_day(&bare, 7).unwrap(),
        day,
        "read from the snapshot alone"
    );
    // The same inputs from the snapshot decoded whole.
    let whole = v1::AccountSnapshotRecorded::decode(recorded.as_slice())
        .unwrap()
        .snapshot
        .unwrap();
    assert_eq!(day_of(&whole, want.date, 7).unwrap(), day);
    let nameless = v1::AccountSnapshot::default();
    assert!(
        day_of(&nameless, want.date, 7)
            .unwrap_err()
            .contains("account_uid")
    );
    assert!(recorded_day(b"\xff\xff").is_err());
    let no_uid = encode_recorded(&[], "import-1", 2, 1);
    assert!(recorded_day(&no_uid).unwrap_err().contains("account_uid"));
}

#[test]
fn results_are_encoded_as_account_metrics_calculated_with_only_calculated_fields() {
    let inputs = DayInputs::of(&row()).unwrap();
    let (date, outcome) = compute(&[inputs]).pop().unwrap();
    let calculated = encode_outcome(&outcome);
    let bytes = encode_calculated("acme_crm_A1", date, 7, 2, &calculated);
    let message = v1::AccountMetricsCalculated::decode(bytes.as_slice()).unwrap();
    assert_eq!(message.account_uid, "acme_crm_A1");
    assert_eq!(message.snapshot_date, "2026-03-01");
    assert_eq!(message.model_version, MODEL_VERSION);
    assert_eq!((message.snapshot_revision, message.revision), (7, 2));
    assert_eq!(message.not_calculated, "");
    let snapshot = message.calculated.unwrap();
    let metrics = outcome.metrics().unwrap();
    assert_eq!(snapshot.days_elapsed_payment_plan_calculated, Some(3));
    assert_eq!(
        snapshot.days_to_cutoff_calculated,
        Some(metrics.days_to_cutoff)
    );
    assert_eq!(
        snapshot.amt_remaining_installment_calculated,
        Some(metrics.remaining)
    );
    assert_eq!(
        snapshot.days_par_status_nf_calculated.as_deref(),
        Some(metrics.nf.par_status)
    );
    assert_eq!(snapshot.days_to_cutoff_source, None, "no _source field");
    assert_eq!(snapshot.snapshot_date, None);

    let before = encode_outcome(&Outcome::BeforeStart);
    let bytes = encode_calculated("acme_crm_A1", date, 1, 1, &before);
    let message = v1::AccountMetricsCalculated::decode(bytes.as_slice()).unwrap();
    assert_eq!(message.calculated, None);
    assert_eq!(message.not_calculated, "before the plan's start");
}

#[test]
fn a_numeric_field_is_read_by_its_number_without_decoding_the_rest() {
    use recoup_proto::snapshots::{field_number, numeric_field};
    let mut bytes = Vec::new();
    encode_snapshot(&row(), &mut bytes);
    let number = |name: &str| field_number(paygo_snapshots::field(name).unwrap().0);
    let value = |name: &str| numeric_field(&bytes, number(name));
    assert_eq!(value("amt_payments_daily_source"), Some(700.0), "a double");
    assert_eq!(
        value("days_to_cutoff_source"),
        Some(-4.0),
        "a negative int64"
    );
    assert_eq!(value("num_expected_repayments_source"), Some(3.0));
    assert_eq!(value("days_to_cutoff_calculated"), Some(99.0));
    assert_eq!(value("amt_refunds_cumulative_source"), None, "absent");
    assert_eq!(value("snapshot_date"), None, "not a number");
    assert_eq!(numeric_field(b"\xff", 7), None, "not a snapshot");
}
