//! recoup's PAYGo credit model (docs/domain.md §2.1): the worked example cell by cell, the
//! hand-checked edge cases, and properties over random series.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, NaiveDate};
use paygo_snapshots::credit::{AccountState, DayInputs, Metrics, Outcome, compute, start_of};
use proptest::prelude::*;

fn day(month: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, month, d).unwrap()
}

fn snapshot(date: NaiveDate) -> DayInputs {
    DayInputs {
        date,
        ..DayInputs::default()
    }
}

/// The plan of the worked example: C = 3200, E = 200, Dur = 30, N = 3.
fn with_plan(mut d: DayInputs) -> DayInputs {
    d.contract_value = Some(3200.0);
    d.expected_deposits = Some(200.0);
    d.duration = Some(30.0);
    d.repayments = Some(3);
    d
}

fn worked_example() -> Vec<DayInputs> {
    let mut first = with_plan(snapshot(day(3, 1)));
    first.payment = Some(700.0);
    first.paid_deposits_cumulative = Some(200.0);
    let mut twelfth = snapshot(day(3, 12));
    twelfth.payment = Some(300.0);
    let mut fourteenth = snapshot(day(3, 14));
    fourteenth.delay_days = Some(2.0);
    let mut twentieth = snapshot(day(3, 20));
    twentieth.payment = Some(1000.0);
    vec![
        first,
        snapshot(day(3, 5)),
        snapshot(day(3, 9)),
        twelfth,
        fourteenth,
        twentieth,
    ]
}

fn metrics(outcomes: &[(NaiveDate, Outcome)]) -> Vec<Metrics> {
    outcomes
        .iter()
        .map(|(date, o)| {
            o.metrics()
                .unwrap_or_else(|| panic!("{date}: {o:?}"))
                .clone()
        })
        .collect()
}

/// day (of March), t, period, cutoff, cons nf, cons f, cum nf, cum f, hist nf, PAR nf,
/// paid inst, expected, remaining, amt arrears nf.
type TableRow = (
    u32,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    &'static str,
    f64,
    f64,
    f64,
    f64,
);

#[test]
fn the_worked_example_cell_by_cell() {
    let got = metrics(&compute(&worked_example()));
    // day, t, period, cutoff, cons nf, cons f, cum nf, cum f, hist nf, PAR nf, paid inst,
    // expected, remaining, amt arrears nf: the table of docs/domain.md §2.1.
    #[rustfmt::skip]
    let table: [TableRow; 6] = [
        (1, 0, 1, 5, 0, 0, 0, 0, 0, "0", 500.0, 1000.0, 2500.0, 0.0),
        (5, 4, 1, 1, 0, 0, 0, 0, 0, "0", 500.0, 1000.0, 2500.0, 0.0),
        (9, 8, 1, -3, 3, 3, 3, 3, 3, "1-7", 500.0, 1000.0, 2500.0, 300.0),
        (12, 11, 2, 3, 3, 0, 6, 5, 5, "1-7", 800.0, 2000.0, 2200.0, 300.0),
        (14, 13, 2, 3, 3, 0, 8, 5, 5, "1-7", 800.0, 2000.0, 2200.0, 300.0),
        (20, 19, 2, 10, 0, 0, 13, 7, 8, "0", 1800.0, 2000.0, 1200.0, 0.0),
    ];
    assert_eq!(got.len(), table.len());
    for (m, row) in got.iter().zip(table) {
        let (d, t, period, cutoff, cons_nf, cons_f, cum_nf, cum_f, hist_nf, par_nf) = (
            row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7, row.8, row.9,
        );
        let (paid, expected, remaining, amt_nf) = (row.10, row.11, row.12, row.13);
        let at = format!("03-{d:02}");
        assert_eq!(m.date, day(3, d), "{at}");
        assert_eq!(m.days_elapsed, t, "{at} t");
        assert_eq!(m.installment_period, period, "{at} period");
        assert_eq!(m.days_to_cutoff, cutoff, "{at} cutoff");
        assert_eq!(m.nf.consecutive, cons_nf, "{at} cons nf");
        assert_eq!(m.f.consecutive, cons_f, "{at} cons f");
        assert_eq!(m.nf.cumulative, cum_nf, "{at} cum nf");
        assert_eq!(m.f.cumulative, cum_f, "{at} cum f");
        assert_eq!(m.nf.historical, hist_nf, "{at} hist nf");
        assert_eq!(m.nf.par_status, par_nf, "{at} PAR nf");
        assert_eq!(m.paid_installments, paid, "{at} paid inst");
        assert_eq!(m.expected_payment_plan, expected, "{at} expected");
        assert_eq!(m.remaining, remaining, "{at} remaining");
        assert_eq!(m.nf.amount_consecutive, amt_nf, "{at} amt arrears nf");
    }
    // The fields the table leaves out, on 03-20.
    let last = &got[5];
    assert_eq!(last.paid_deposits, 200.0);
    assert_eq!(last.paid_payment_plan, 2000.0);
    assert_eq!(last.delays_cumulative, 2);
    assert_eq!(last.days_elapsed_installment, 9);
    assert_eq!(last.expected_maturity_date, day(3, 31));
    assert_eq!(last.percent_paid_vs_plan, 90.0);
    assert_eq!(last.percent_paid_vs_financed, 60.0);
    assert!((last.percent_elapsed_payment_plan - 100.0 * 19.0 / 30.0).abs() < 1e-9);
    // 10 days of credit on both clocks; the forgiving one moved from 16 to 29.
    assert_eq!(last.nf.credit_daily, 1000.0);
    assert_eq!(last.f.credit_daily, 1300.0);
    // Paid until day 29 (forgiving): due on 03-30.
    let due = last.next_payment_due_at.unwrap();
    assert_eq!(due.date_naive(), day(3, 30));
    assert_eq!(last.actual_maturity_date, None);
    // Paid for 20 of 19 days due (non-forgiving), 29 capped at Dur... of 19 (forgiving).
    assert_eq!(last.nf.repayment_rate, Some(20.0 / 19.0));
    assert_eq!(last.f.repayment_rate, Some(29.0 / 19.0));
    // 13 of the 20 days so far in arrears (non-forgiving).
    assert!((last.nf.percent_paid_on_time - 100.0 * 7.0 / 20.0).abs() < 1e-9);
    assert_eq!(last.nf.amount_cumulative, 1300.0);
    assert_eq!(
        got[0].nf.repayment_rate, None,
        "nothing is due on the start day"
    );
}

#[test]
fn every_cell_names_a_catalogue_column_of_its_type() {
    use paygo_snapshots::{FIELDS, FieldType, Value};
    let got = metrics(&compute(&worked_example()));
    let cells = got[5].cells();
    assert!(cells.len() >= 45, "{}", cells.len());
    for (index, value) in cells {
        let f = &FIELDS[index];
        let name = f.name;
        assert!(name.ends_with("_calculated"), "{name}");
        let fits = matches!(
            (f.ty, &value),
            (FieldType::Integer, Value::Integer(_))
                | (FieldType::Float, Value::Float(_))
                | (FieldType::String, Value::String(_))
                | (FieldType::Date, Value::Date(_))
                | (FieldType::DateTime, Value::DateTime(_))
        );
        assert!(fits, "{name}: {value:?} is not a {:?}", f.ty);
    }
}

#[test]
fn without_plan_values_there_are_no_metrics_and_the_flows_wait_for_a_plan() {
    let mut first = snapshot(day(3, 1));
    first.payment = Some(500.0);
    first.contract_value = Some(3000.0);
    let second = with_plan(snapshot(day(3, 3)));
    let out = compute(&[first, second]);
    let Outcome::NoPlan { missing } = &out[0].1 else {
        panic!("{:?}", out[0]);
    };
    assert_eq!(
        missing,
        &[
            "days_expected_loan_duration_source (> 0)",
            "num_expected_repayments_source (> 0)"
        ]
    );
    // The plan of 03-03 (C = 3200 given again, E = 200): r = 100. 500 paid on 03-01 is
    // credited on 03-03 as 5 days.
    let m = out[1].1.metrics().unwrap();
    assert_eq!(m.paid_installments, 500.0);
    assert_eq!(m.days_to_cutoff, 3);
    assert_eq!(m.nf.consecutive, 0);
    // A plan that finances nothing is no plan.
    let mut nothing = with_plan(snapshot(day(3, 1)));
    nothing.expected_deposits = Some(3200.0);
    let out = compute(&[nothing]);
    assert!(matches!(&out[0].1, Outcome::NoPlan { missing } if missing[0].contains("financed")));
}

#[test]
fn a_plan_that_changes_mid_series_prices_later_credit_at_its_new_rate() {
    let mut first = with_plan(snapshot(day(3, 1)));
    first.payment = Some(1000.0);
    // From 03-11 the plan runs 60 days: r = 50.
    let mut longer = snapshot(day(3, 11));
    longer.duration = Some(60.0);
    longer.payment = Some(500.0);
    let out = metrics(&compute(&[first, longer]));
    // 1000 at r = 100: 10 days; 500 at r = 50: 10 more.
    assert_eq!(out[0].days_to_cutoff, 10);
    assert_eq!(out[1].days_to_cutoff, 10, "paid until day 20 on day 10");
    assert_eq!(out[1].duration, 60.0);
    assert_eq!(out[1].expected_maturity_date, day(4, 30));
    assert_eq!(out[1].nf.consecutive, 0);
}

#[test]
fn a_refund_larger_than_the_days_payment_takes_credit_back_on_both_clocks() {
    let mut first = with_plan(snapshot(day(3, 1)));
    first.payment = Some(1000.0);
    let mut refund = snapshot(day(3, 5));
    refund.payment = Some(100.0);
    refund.refund = Some(600.0);
    let out = metrics(&compute(&[first, refund]));
    // 100 − 600 = −500: 5 days back, from 10 to 5, on both clocks; day 4 is not in arrears.
    let m = &out[1];
    assert_eq!(m.days_to_cutoff, 1);
    assert_eq!(m.nf.credit_daily, -500.0);
    assert_eq!(m.f.credit_daily, -500.0);
    assert_eq!(m.paid_installments, 500.0);
    assert_eq!(m.paid_payment_plan, 500.0);
    assert_eq!(m.refunds_cumulative, 600.0);
    assert_eq!((m.nf.consecutive, m.f.consecutive), (0, 0));
}

#[test]
fn a_settled_account_has_no_arrears_from_then_on() {
    let mut first = with_plan(snapshot(day(3, 1)));
    first.payment = Some(2000.0);
    let mut rest = snapshot(day(3, 25));
    rest.payment = Some(900.0);
    rest.discount = Some(100.0);
    let out = metrics(&compute(&[first, rest, snapshot(day(6, 1))]));
    let settled = &out[1];
    assert_eq!(settled.remaining, 0.0);
    assert_eq!(settled.actual_maturity_date, Some(day(3, 25)));
    assert_eq!(settled.next_payment_due_at, None);
    assert_eq!(settled.nf.consecutive, 0);
    assert_eq!(
        settled.nf.cumulative, 3,
        "days 21 to 23 were in arrears, not day 24"
    );
    let later = &out[2];
    assert_eq!((later.nf.consecutive, later.f.consecutive), (0, 0));
    assert_eq!(
        later.nf.cumulative, 3,
        "no arrears after settling, gap or not"
    );
    assert_eq!(later.actual_maturity_date, Some(day(3, 25)));
    assert!((later.percent_paid_vs_financed - 100.0 * 2900.0 / 3000.0).abs() < 1e-9);
}

#[test]
fn a_gap_of_many_days_counts_each_day_as_daily_snapshots_would() {
    let mut first = with_plan(snapshot(day(3, 1)));
    first.payment = Some(350.0);
    let last = snapshot(day(3, 1) + Duration::days(400));
    let gapped = metrics(&compute(&[first.clone(), last.clone()]));
    let mut daily = vec![first];
    for d in 1..400 {
        daily.push(snapshot(day(3, 1) + Duration::days(d)));
    }
    daily.push(last);
    let stepped = metrics(&compute(&daily));
    assert_eq!(gapped[1], stepped[400]);
    let m = &gapped[1];
    assert_eq!(m.nf.consecutive, 400 - 3, "paid until day 3.5");
    assert_eq!(m.nf.cumulative, 397);
    assert_eq!(m.nf.historical, 397);
    assert_eq!(m.nf.par_status, "180+");
    assert_eq!(m.installment_period, 3);
    assert_eq!(m.percent_elapsed_payment_plan, 100.0);
    assert_eq!(
        m.nf.amount_consecutive, m.remaining,
        "capped at what remains"
    );
}

#[test]
fn a_delay_on_a_locked_day_forgives_the_locked_days_on_the_forgiving_clock_only() {
    let mut first = with_plan(snapshot(day(3, 1)));
    first.payment = Some(300.0);
    let mut delay = snapshot(day(3, 11));
    delay.delay_days = Some(2.0);
    let out = metrics(&compute(&[first, delay]));
    let m = &out[1];
    // Locked since day 3; on day 10 the delay gives 2 days: forgiving from day 10, so paid
    // until 12; non-forgiving from 3, so paid until 5 and 5 days in arrears.
    assert_eq!(m.days_to_cutoff, 2);
    assert_eq!(m.f.consecutive, 0);
    assert_eq!(m.nf.consecutive, 5);
    assert_eq!(m.delays_cumulative, 2);
    assert_eq!(m.f.credit_daily, 900.0, "7 forgiven days and 2 of delay");
    assert_eq!(m.nf.credit_daily, 200.0);
}

#[test]
fn payments_before_the_start_wait_and_count_on_the_first_day_of_the_plan() {
    // 03-01 has a payment; 03-05 says the plan is 1 day old: the start is 03-04.
    let mut early = with_plan(snapshot(day(3, 1)));
    early.payment = Some(500.0);
    let mut anchor = snapshot(day(3, 5));
    anchor.days_elapsed = Some(1);
    let days = [early, anchor];
    assert_eq!(start_of(&days), Some(day(3, 4)));
    let out = compute(&days);
    assert_eq!(out[0].1, Outcome::BeforeStart);
    let m = out[1].1.metrics().unwrap();
    assert_eq!(m.days_elapsed, 1);
    assert_eq!(m.paid_installments, 500.0);
    assert_eq!(m.days_to_cutoff, 4, "5 days from day 0, read on day 1");
}

#[test]
fn two_snapshots_of_one_day_the_later_counts_and_order_does_not_matter() {
    let mut series = worked_example();
    let mut wrong = snapshot(day(3, 12));
    wrong.payment = Some(9999.0);
    series.insert(0, wrong);
    series.reverse();
    // Reversed, the corrected 03-12 (300) comes before the wrong one: put it last again.
    let corrected = series
        .iter()
        .position(|d| d.date == day(3, 12) && d.payment == Some(300.0));
    let corrected = series.remove(corrected.unwrap());
    series.push(corrected);
    assert_eq!(compute(&series), compute(&worked_example()));
}

/// A random series of one account: a plan on the first day (sometimes changing later), flows
/// on some days, dates in random order.
fn series() -> impl Strategy<Value = Vec<DayInputs>> {
    let plan = (1000.0..10000.0f64, 10.0..400.0f64, 1i64..24);
    let day = (
        0i64..300,
        prop::option::weighted(0.5, 0.0..2000.0f64),
        prop::option::weighted(0.1, 0.0..500.0f64),
        prop::option::weighted(0.1, 0.0..300.0f64),
        prop::option::weighted(0.1, 0.0..5.0f64),
        prop::option::weighted(0.05, 10.0..400.0f64),
    );
    (plan, prop::collection::vec(day, 1..40)).prop_map(|((c, dur, n), days)| {
        let base = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let mut out: Vec<DayInputs> = days
            .into_iter()
            .map(
                |(offset, pay, refund, discount, delay, new_duration)| DayInputs {
                    date: base + Duration::days(offset),
                    payment: pay,
                    refund,
                    discount,
                    delay_days: delay,
                    duration: new_duration,
                    ..DayInputs::default()
                },
            )
            .collect();
        out.push(DayInputs {
            date: base,
            contract_value: Some(c),
            duration: Some(dur),
            repayments: Some(n),
            ..DayInputs::default()
        });
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn forgiving_arrears_never_exceed_non_forgiving_and_historical_never_decreases(
        days in series()
    ) {
        let out = compute(&days);
        let mut last: Option<(i64, i64, i64, i64)> = None;
        for (date, outcome) in &out {
            let Some(m) = outcome.metrics() else { continue };
            prop_assert!(m.f.consecutive <= m.nf.consecutive, "{date}: {m:?}");
            prop_assert!(m.f.cumulative <= m.nf.cumulative, "{date}");
            prop_assert!(m.f.historical <= m.nf.historical, "{date}");
            prop_assert!(m.nf.historical >= m.nf.consecutive);
            if let Some((hist_nf, hist_f, cum_nf, cum_f)) = last {
                prop_assert!(m.nf.historical >= hist_nf && m.f.historical >= hist_f, "{date}");
                prop_assert!(m.nf.cumulative >= cum_nf && m.f.cumulative >= cum_f, "{date}");
            }
            last = Some((m.nf.historical, m.f.historical, m.nf.cumulative, m.f.cumulative));
            prop_assert!(m.remaining >= 0.0);
        }
    }

    #[test]
    fn any_order_gives_the_series_of_the_sorted_days_and_a_stored_state_resumes_it(
        days in series(), seed in any::<u64>()
    ) {
        let mut sorted = days.clone();
        sorted.sort_by_key(|d| d.date);
        sorted.dedup_by_key(|d| d.date);
        // Keep each day's last snapshot, as compute does.
        let last_of = |date| days.iter().rev().find(|d| d.date == date).unwrap().clone();
        let sorted: Vec<DayInputs> = sorted.iter().map(|d| last_of(d.date)).collect();
        let mut shuffled = sorted.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let whole = compute(&sorted);
        prop_assert_eq!(&compute(&shuffled), &whole);
        prop_assert_eq!(&compute(&days), &whole);
        // Stepping to the middle, keeping the state and stepping on gives the same days.
        let start = start_of(&sorted).unwrap();
        let mut state = AccountState::new(start);
        let mid = sorted.len() / 2;
        for d in &sorted[..mid] {
            state.step(d);
        }
        // Kept as bytes and read back, as a stage keeps it between days.
        let mut resumed = AccountState::decode(&state.encode()).unwrap();
        prop_assert_eq!(&resumed, &state);
        for (i, d) in sorted[mid..].iter().enumerate() {
            prop_assert_eq!(&resumed.step(d), &whole[mid + i].1);
            let read_back = AccountState::decode(&resumed.encode());
            prop_assert_eq!(read_back.as_ref(), Some(&resumed));
        }
        let bytes = resumed.encode();
        prop_assert_eq!(AccountState::decode(&bytes[..bytes.len() - 1]), None);
    }
}
