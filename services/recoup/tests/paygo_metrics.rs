//! recoup's PAYGo metrics end to end, in process: rows imported over gRPC, out of order and
//! changed, come out of `recoup.paygo-metrics.v1` as the credit model computes the final series
//! from scratch.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use common::{channel, config, envelopes, req, start};
use paygo_snapshots::credit::{DayInputs, compute};
use prost::Message;
use recoup_proto::contract::topic;
use recoup_proto::metrics::encode_outcome;
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tempfile::TempDir;

/// The calculated fields of a day, encoded, or why there are none.
type Calculated = Result<Vec<u8>, String>;

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(n)
}

/// Account `a`'s snapshot of day `n`: the plan on day 0, a payment every `a + 2` days.
fn snapshot(a: i64, n: i64, payment: f64) -> (DayInputs, v1::Row) {
    let mut inputs = DayInputs {
        date: day(n),
        payment: Some(payment),
        ..DayInputs::default()
    };
    let mut cells = vec![
        ("snapshot_date", day(n).format("%Y-%m-%d").to_string()),
        ("account_external_id", format!("A{a}")),
        ("amt_payments_daily_source", payment.to_string()),
        // The CRM says every account is exactly at its cutoff.
        ("days_to_cutoff_source", "0".to_owned()),
    ];
    if n == 0 {
        inputs.contract_value = Some(6000.0);
        inputs.duration = Some(60.0);
        inputs.repayments = Some(6);
        cells.push(("amt_contract_value_without_discounts_source", "6000".into()));
        cells.push(("days_expected_loan_duration_source", "60".into()));
        cells.push(("num_expected_repayments_source", "6".into()));
    }
    let row = v1::Row {
        cells: cells.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
    };
    (inputs, row)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_snapshots_come_out_as_the_final_series_computed_from_scratch() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let mut imports = SnapshotImportsClient::new(channel(&platform).await);
    let mut series: BTreeMap<i64, Vec<DayInputs>> = BTreeMap::new();
    let (mut late, mut early) = (Vec::new(), Vec::new());
    for a in 0..3 {
        for n in 0..40 {
            let payment = if n % (a + 2) == 0 { 150.0 } else { 0.0 };
            let (inputs, row) = snapshot(a, n, payment);
            series.entry(a).or_default().push(inputs);
            // The second half of the days comes first.
            if n >= 20 {
                late.push(row)
            } else {
                early.push(row)
            }
        }
    }
    // Then day 3 of account 0 changes: a payment of 2000.
    let (changed, row) = snapshot(0, 3, 2000.0);
    series.get_mut(&0).unwrap()[3] = changed;
    let mut sent = 0;
    for rows in [late, early, vec![row]] {
        sent += rows.len();
        let request = v1::ImportRowsRequest {
            data_origin: "crm".into(),
            rows,
        };
        let report = imports
            .import_rows(req("acme", request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(report.rejected, 0, "{report:?}");
    }
    assert_eq!(sent, 121);

    // Every day of every account arrives; the last revision of each day counts.
    let want: BTreeMap<(String, String), Calculated> = series
        .iter()
        .flat_map(|(a, days)| {
            compute(days).into_iter().map(move |(date, outcome)| {
                let calculated = encode_outcome(&outcome).map(|bytes| {
                    v1::AccountSnapshot::decode(bytes.as_slice())
                        .unwrap()
                        .encode_to_vec()
                });
                let key = (
                    format!("acme_crm_A{a}"),
                    date.format("%Y-%m-%d").to_string(),
                );
                (key, calculated)
            })
        })
        .collect();
    // Read until the results of the final series are there (a day changed is published again:
    // the highest revision of each day counts).
    let mut read = want.len();
    let got = loop {
        let published = envelopes(&platform, topic::PAYGO_METRICS, read).await;
        let mut got: BTreeMap<(String, String), (u64, Calculated)> = BTreeMap::new();
        for envelope in &published {
            assert_eq!(envelope.tenant, "acme");
            let m = v1::AccountMetricsCalculated::decode(envelope.payload.as_slice()).unwrap();
            let calculated = match m.calculated {
                Some(s) => Ok(s.encode_to_vec()),
                None => Err(m.not_calculated),
            };
            let key = (m.account_uid, m.snapshot_date);
            if got.get(&key).is_none_or(|(r, _)| *r < m.revision) {
                got.insert(key, (m.revision, calculated));
            }
        }
        let got: BTreeMap<_, _> = got.into_iter().map(|(k, (_, c))| (k, c)).collect();
        if got == want || published.len() > 10 * want.len() {
            break got;
        }
        read = published.len() + 1;
    };
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the results differ from the final series from scratch"
    );

    // The read models show them: the latest snapshot with recoup's calculated fields, and PAR
    // on recoup's numbers.
    let mut query = QueryClient::new(channel(&platform).await);
    let get = v1::GetAccountRequest {
        account_uid: "acme_crm_A0".into(),
    };
    let shown = query
        .get_account(req("acme", get))
        .await
        .unwrap()
        .into_inner();
    let last = compute(&series[&0]).pop().unwrap().1;
    let last = last.metrics().unwrap();
    assert_eq!(shown.days_to_cutoff_calculated, Some(last.days_to_cutoff));
    assert_eq!(
        shown.amt_remaining_installment_calculated,
        Some(last.remaining)
    );
    let mut want_buckets = [0u64; 8];
    for days in series.values() {
        let (_, outcome) = compute(days).pop().unwrap();
        let consecutive = outcome.metrics().unwrap().nf.consecutive;
        want_buckets[usize::from(paygo_snapshots::par::par_bucket(Some(consecutive)))] += 1;
    }
    let par = v1::PortfolioParRequest {
        snapshot_date: day(39).format("%Y-%m-%d").to_string(),
        basis: v1::ParBasis::NonForgiving as i32,
    };
    let par = query
        .portfolio_par(req("acme", par))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(par.basis, v1::ParBasis::NonForgiving as i32);
    let buckets: Vec<u64> = par.buckets.iter().map(|b| b.accounts).collect();
    assert_eq!(buckets, want_buckets);
    let bad = v1::PortfolioParRequest {
        snapshot_date: "2026-02-09".into(),
        basis: 7,
    };
    let refused = query.portfolio_par(req("acme", bad)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Where the CRM and recoup disagree on the last day.
    let mut want_disagree = Vec::new();
    for (a, days) in &series {
        let (_, outcome) = compute(days).pop().unwrap();
        let cutoff = outcome.metrics().unwrap().days_to_cutoff;
        if cutoff != 0 {
            want_disagree.push((format!("acme_crm_A{a}"), cutoff as f64));
        }
    }
    assert!(!want_disagree.is_empty());
    let ask = |field: &str| v1::ListDiscrepanciesRequest {
        snapshot_date: day(39).format("%Y-%m-%d").to_string(),
        field: field.to_owned(),
        ..Default::default()
    };
    let listed = query
        .list_discrepancies(req("acme", ask("days_to_cutoff")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            listed.source_field.as_str(),
            listed.calculated_field.as_str()
        ),
        ("days_to_cutoff_source", "days_to_cutoff_calculated")
    );
    let got: Vec<(String, f64)> = listed
        .discrepancies
        .iter()
        .map(|d| (d.account_uid.clone(), d.calculated))
        .collect();
    assert_eq!(got, want_disagree);
    assert!(listed.discrepancies.iter().all(|d| d.source == 0.0));
    for field in ["days_par_status", "no_such_thing", ""] {
        let refused = query.list_discrepancies(req("acme", ask(field))).await;
        assert_eq!(
            refused.unwrap_err().code(),
            tonic::Code::InvalidArgument,
            "{field}"
        );
    }
    platform.shutdown().await.unwrap();
}
