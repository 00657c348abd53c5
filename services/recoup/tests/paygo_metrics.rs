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
    platform.shutdown().await.unwrap();
}
