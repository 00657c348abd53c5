//! The PAYGo metrics stage of the account projection over a real sled database: snapshots in
//! any order, late, changed or repeated, across restarts, always end with the results of the
//! account's final series computed from scratch; the outbox goes to a real Kafka-protocol
//! broker.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as Days, NaiveDate, TimeZone, Utc};
use common::{CLUSTER, Feed, reopen_read_model};
use event_backbone::envelope::{EventMetadata, NewEnvelope, decode_envelope};
use event_backbone::outbox::{Outbox, OutboxRelay};
use event_backbone::producer::ProducerSettings;
use event_backbone::{EmbeddedKafka, EventConsumer, EventProducer, topics};
use paygo_snapshots::credit::{DayInputs, compute};
use projection::metrics::Basis;
use projection::{AccountReadModel, CaseReadModel, MetricsStage, Projection};
use prost::Message;
use recoup_proto::contract::{aggregate, event_type};
use recoup_proto::metrics::encode_outcome;
use recoup_proto::v1;
use tempfile::TempDir;

const TOPIC: &str = "recoup.paygo-snapshots.v1";

fn day(n: i64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, 1).unwrap() + Days::days(n)
}

/// The snapshot of `uid` on day `n`: the plan on day 0, a payment every third day.
fn inputs(n: i64, payment: f64) -> DayInputs {
    let mut d = DayInputs {
        date: day(n),
        payment: (payment > 0.0).then_some(payment),
        ..DayInputs::default()
    };
    if n == 0 {
        d.contract_value = Some(3000.0);
        d.duration = Some(30.0);
        d.repayments = Some(3);
    }
    d
}

/// The recorded event of `inputs` (revision `revision`) as the importer publishes it.
fn recorded(tenant: &str, uid: &str, inputs: &DayInputs, revision: u64) -> Vec<u8> {
    let snapshot = v1::AccountSnapshot {
        snapshot_date: Some(inputs.date.format("%Y-%m-%d").to_string()),
        account_external_id: Some(uid.to_owned()),
        account_uid: Some(uid.to_owned()),
        amt_contract_value_without_discounts_source: inputs.contract_value,
        days_expected_loan_duration_source: inputs.duration,
        num_expected_repayments_source: inputs.repayments,
        amt_payments_daily_source: inputs.payment,
        days_elapsed_payment_plan_source: inputs.days_elapsed,
        amt_lump_sum_add_ons_source: inputs.add_ons,
        amt_expected_deposits_cumulative_source: inputs.expected_deposits,
        amt_paid_deposits_cumulative_source: inputs.paid_deposits_cumulative,
        amt_refunds_daily_source: inputs.refund,
        amt_discounts_daily_source: inputs.discount,
        days_delays_daily_source: inputs.delay_days,
        amt_penalties_daily_source: inputs.penalty,
        // The CRM's figures: kept as given, but the read model shows recoup's calculated ones.
        days_to_cutoff_source: Some(-7),
        days_to_cutoff_calculated: Some(99),
        ..Default::default()
    };
    let payload = v1::AccountSnapshotRecorded {
        snapshot: Some(snapshot),
        import_id: "import".into(),
        row: 2,
        revision,
    }
    .encode_to_vec();
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let metadata = EventMetadata {
        correlation_id: "import".into(),
        causation_id: "import".into(),
        actor: "key:importer".into(),
    };
    NewEnvelope {
        tenant,
        aggregate_type: aggregate::PAYGO_ACCOUNT_SNAPSHOT,
        aggregate_id: uid,
        aggregate_version: revision,
        occurred_at: at,
        recorded_at: at,
        event_type: event_type::ACCOUNT_SNAPSHOT_RECORDED,
        schema_version: 1,
        payload,
        metadata: &metadata,
    }
    .build()
    .encode_to_vec()
}

fn open(dir: &std::path::Path) -> (CaseReadModel, AccountReadModel) {
    let cases = reopen_read_model(dir);
    let accounts = AccountReadModel::open(&cases).unwrap();
    (cases, accounts)
}

/// Every result in the outbox: (tenant, uid, day) → (revision, event id, message), keeping
/// the highest revision, and checking that one revision of a day is always the same result.
type Results = BTreeMap<(String, String, String), (u64, String, v1::AccountMetricsCalculated)>;

fn results(stage: &MetricsStage, into: &mut Results) {
    for (_, record) in stage.pending(usize::MAX).unwrap() {
        let envelope = decode_envelope(&record.envelope).unwrap();
        assert_eq!(record.event_id, envelope.event_id);
        assert_eq!(record.topic, "recoup.paygo-metrics.v1");
        let m = v1::AccountMetricsCalculated::decode(envelope.payload.as_slice()).unwrap();
        assert_eq!(record.key, m.account_uid);
        assert_eq!(envelope.aggregate_version, m.revision);
        let key = (
            envelope.tenant.clone(),
            m.account_uid.clone(),
            m.snapshot_date.clone(),
        );
        match into.get(&key) {
            Some((revision, id, earlier)) if *revision == m.revision => {
                assert_eq!(
                    (id, earlier),
                    (&envelope.event_id, &m),
                    "one revision, one result"
                );
            }
            Some((revision, ..)) if *revision > m.revision => {}
            _ => {
                into.insert(key, (m.revision, envelope.event_id.clone(), m));
            }
        }
    }
}

/// What the outbox says of one account, day by day: the encoded calculated fields or why none.
fn published(results: &Results, tenant: &str, uid: &str) -> Vec<(String, Result<Vec<u8>, String>)> {
    results
        .iter()
        .filter(|((t, u, _), _)| t == tenant && u == uid)
        .map(|((_, _, d), (_, _, m))| {
            let calculated = match &m.calculated {
                Some(s) => Ok(s.encode_to_vec()),
                None => Err(m.not_calculated.clone()),
            };
            (d.clone(), calculated)
        })
        .collect()
}

/// The same, computed from scratch from `series`.
fn from_scratch(series: &[DayInputs]) -> Vec<(String, Result<Vec<u8>, String>)> {
    compute(series)
        .into_iter()
        .map(|(date, outcome)| {
            // Decoded and encoded again, as `published` reads them.
            let calculated = encode_outcome(&outcome).map(|bytes| {
                v1::AccountSnapshot::decode(bytes.as_slice())
                    .unwrap()
                    .encode_to_vec()
            });
            (date.format("%Y-%m-%d").to_string(), calculated)
        })
        .collect()
}

#[test]
fn days_in_order_publish_one_result_each_as_computed_from_scratch() {
    let dir = TempDir::new().unwrap();
    let (_cases, accounts) = open(dir.path());
    let stage = accounts.metrics();
    let series: Vec<DayInputs> = (0..40)
        .map(|n| inputs(n, if n % 3 == 0 { 250.0 } else { 0.0 }))
        .collect();
    let mut feed = Feed::new();
    for chunk in series.chunks(7) {
        let values = chunk.iter().map(|d| recorded("acme", "A1", d, 1));
        let outcome = accounts
            .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
            .unwrap();
        assert_eq!(outcome.applied, chunk.len());
    }
    assert_eq!(stage.len(), 40, "one result per day");
    let mut all = Results::new();
    results(stage, &mut all);
    assert!(all.values().all(|(revision, ..)| *revision == 1));
    assert_eq!(published(&all, "acme", "A1"), from_scratch(&series));
    // The same events again publish nothing (the account read model applies them again).
    let again = series.iter().map(|d| recorded("acme", "A1", d, 1));
    let outcome = accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(again))
        .unwrap();
    assert_eq!(outcome.rejected, 0);
    assert_eq!(stage.len(), 40);
}

#[test]
fn late_earlier_and_changed_days_end_as_the_final_series_from_scratch_across_restarts() {
    let dir = TempDir::new().unwrap();
    let mut series: Vec<DayInputs> = (0..30)
        .map(|n| inputs(n, if n % 4 == 1 { 400.0 } else { 0.0 }))
        .collect();
    // Arrival order: odd days first, then even days backwards, then a changed day 5 and an
    // anchor on day 12 that moves the start two days earlier.
    let mut order: Vec<(usize, u64)> = (0..30).filter(|n| n % 2 == 1).map(|n| (n, 1)).collect();
    order.extend((0..30).filter(|n| n % 2 == 0).rev().map(|n| (n, 1)));
    let mut events: Vec<(DayInputs, u64)> = order
        .iter()
        .map(|(n, revision)| (series[*n].clone(), *revision))
        .collect();
    series[5].payment = Some(1000.0);
    events.push((series[5].clone(), 2));
    series[12].days_elapsed = Some(14);
    events.push((series[12].clone(), 2));
    // A stale revision of day 5 arrives last: skipped.
    events.push((inputs(5, 1.0), 1));

    let mut all = Results::new();
    let mut feed = Feed::new();
    let mut cases_and_stage = Some(open(dir.path()));
    for chunk in events.chunks(9) {
        let (_, accounts) = cases_and_stage.as_ref().unwrap();
        let values = chunk.iter().map(|(d, r)| recorded("acme", "A1", d, *r));
        accounts
            .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
            .unwrap();
        results(accounts.metrics(), &mut all);
        // Restart between batches: the state comes back from the tree.
        let (cases, accounts) = cases_and_stage.take().unwrap();
        accounts.flush().unwrap();
        drop((cases, accounts));
        cases_and_stage = Some(open(dir.path()));
    }
    assert_eq!(published(&all, "acme", "A1"), from_scratch(&series));
    let (_, accounts) = cases_and_stage.as_ref().unwrap();
    let stage = accounts.metrics();
    assert!(stage.published_revision("acme", "A1", day(20)).unwrap() > Some(1));
    assert_eq!(
        stage.published_revision("acme", "A9", day(20)).unwrap(),
        None
    );
}

#[test]
fn accounts_and_tenants_are_computed_apart_and_bad_events_are_kept_as_rejects() {
    let dir = TempDir::new().unwrap();
    let (_cases, accounts) = open(dir.path());
    let stage = accounts.metrics();
    let a: Vec<DayInputs> = (0..10).map(|n| inputs(n, 300.0)).collect();
    let b: Vec<DayInputs> = (0..10).map(|n| inputs(n, 50.0)).collect();
    let mut values = Vec::new();
    for n in 0..10 {
        values.push(recorded("acme", "A1", &a[n], 1));
        values.push(recorded("globex", "A1", &b[n], 1));
    }
    values.push(b"not an envelope".to_vec());
    let mut feed = Feed::new();
    let outcome = accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
        .unwrap();
    assert_eq!((outcome.applied, outcome.rejected), (20, 1));
    let mut all = Results::new();
    results(stage, &mut all);
    assert_eq!(published(&all, "acme", "A1"), from_scratch(&a));
    assert_eq!(published(&all, "globex", "A1"), from_scratch(&b));
}

/// Days 0..11 of A1, A2 and A3 (a payment of 100 each day), in one batch.
fn three_accounts_in_one_batch(accounts: &AccountReadModel, feed: &mut Feed) {
    let mut values = Vec::new();
    for uid in ["A1", "A2", "A3"] {
        for n in 0..12 {
            values.push(recorded("acme", uid, &inputs(n, 100.0), 1));
        }
    }
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_the_outbox_to_kafka_in_order_per_account_and_empties_it() {
    let dir = TempDir::new().unwrap();
    let (_cases, accounts) = open(dir.path());
    let stage = accounts.metrics();
    let mut feed = Feed::new();
    three_accounts_in_one_batch(&accounts, &mut feed);
    assert_eq!(stage.len(), 36, "one result per day");
    // A late change of day 2 of A1 republishes days 2..11 of it.
    let late = vec![recorded("acme", "A1", &inputs(2, 900.0), 2)];
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(late))
        .unwrap();
    assert_eq!(stage.len(), 46);
    let mut want = Results::new();
    results(stage, &mut want);
    // Revision 1 of those days was not published yet: replaced, it is not published at all.
    let total = want.len();
    assert_eq!(total, 36);
    assert_eq!(stage.pending(usize::MAX).unwrap().len(), total);

    let kafka = EmbeddedKafka::start(topics::ALL).unwrap();
    let config = kafka.kafka_config();
    let producer = EventProducer::new(&config, &ProducerSettings::default(), None).unwrap();
    let relay = OutboxRelay::new(stage.clone(), Arc::new(producer));
    assert_eq!(relay.publish_pending().await.unwrap(), total);
    assert!(stage.is_empty());

    let consumer =
        EventConsumer::new(&config, "metrics-test", topics::PAYGO_METRICS.name, None).unwrap();
    let partitions = consumer.partitions(Duration::from_secs(10)).unwrap();
    consumer
        .assign(&partitions.iter().map(|p| (*p, None)).collect::<Vec<_>>())
        .unwrap();
    let mut got = Results::new();
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut count = 0;
    while count < total {
        let batch = tokio::time::timeout(Duration::from_secs(20), consumer.recv_batch(256))
            .await
            .expect("every result arrives")
            .unwrap();
        for event in batch {
            let envelope = decode_envelope(&event.value).unwrap();
            let m = v1::AccountMetricsCalculated::decode(envelope.payload.as_slice()).unwrap();
            assert_eq!(event.key, m.account_uid.as_bytes());
            // In order per account: a day's revisions never go back.
            let key = (m.account_uid.clone(), m.snapshot_date.clone());
            assert!(last.get(&key).is_none_or(|r| *r < m.revision), "{key:?}");
            last.insert(key.clone(), m.revision);
            got.insert(
                (envelope.tenant, key.0, key.1),
                (m.revision, envelope.event_id, m),
            );
            count += 1;
        }
    }
    assert_eq!(got, want);
}

#[test]
fn a_new_last_day_that_moves_the_start_recomputes_every_day() {
    let dir = TempDir::new().unwrap();
    let (_cases, accounts) = open(dir.path());
    let stage = accounts.metrics();
    let mut series: Vec<DayInputs> = (0..10).map(|n| inputs(n, 100.0)).collect();
    let mut feed = Feed::new();
    let values = series.iter().map(|d| recorded("acme", "A1", d, 1));
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
        .unwrap();
    // Day 10 is the first to say how old the plan is: it began on day −2, not day 0.
    let mut anchor = inputs(10, 100.0);
    anchor.days_elapsed = Some(12);
    series.push(anchor.clone());
    let values = [recorded("acme", "A1", &anchor, 1)];
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
        .unwrap();
    let mut all = Results::new();
    results(stage, &mut all);
    assert_eq!(published(&all, "acme", "A1"), from_scratch(&series));
    assert_eq!(
        stage.published_revision("acme", "A1", day(0)).unwrap(),
        Some(2),
        "day 0 is day 2 of the plan now"
    );
}

#[test]
fn the_read_model_shows_recoups_calculated_fields_and_par_on_its_numbers() {
    let dir = TempDir::new().unwrap();
    let (_cases, accounts) = open(dir.path());
    let mut feed = Feed::new();
    // A1 pays for 10 days on day 0 only; A2 every day; A3 has no plan.
    let a1: Vec<DayInputs> = (0..25)
        .map(|n| inputs(n, if n == 0 { 1000.0 } else { 0.0 }))
        .collect();
    let a2: Vec<DayInputs> = (0..25).map(|n| inputs(n, 100.0)).collect();
    let a3: Vec<DayInputs> = (0..25)
        .map(|n| DayInputs {
            date: day(n),
            ..DayInputs::default()
        })
        .collect();
    let mut values = Vec::new();
    for (uid, series) in [("A1", &a1), ("A2", &a2), ("A3", &a3)] {
        values.extend(series.iter().map(|d| recorded("acme", uid, d, 1)));
    }
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
        .unwrap();

    let want = compute(&a1);
    let latest = accounts.account("acme", "A1").unwrap().unwrap();
    let m = want[24].1.metrics().unwrap();
    assert_eq!(
        latest.days_to_cutoff_source,
        Some(-7),
        "the CRM's value as imported"
    );
    assert_eq!(
        latest.days_to_cutoff_calculated,
        Some(m.days_to_cutoff),
        "recoup's"
    );
    assert_eq!(latest.days_arrears_consecutive_nf_calculated, Some(14));
    let series = accounts.series("acme", "A1", None, None, 100).unwrap();
    for ((date, shown), (want_date, outcome)) in series.iter().zip(&want) {
        assert_eq!(date, want_date);
        let m = outcome.metrics().unwrap();
        assert_eq!(
            shown.days_to_cutoff_calculated,
            Some(m.days_to_cutoff),
            "{date}"
        );
    }
    // No plan: recoup shows no calculated field, not the imported one.
    let none = accounts.account("acme", "A3").unwrap().unwrap();
    assert_eq!(none.days_to_cutoff_calculated, None);
    assert_eq!(none.days_to_cutoff_source, Some(-7));

    // PAR on day 24: A1 14 days in arrears (bucket 8-30), A2 none (0), A3 unknown.
    let par = accounts
        .metrics()
        .par("acme", day(24), Basis::NonForgiving)
        .unwrap();
    let counts: Vec<i128> = par.iter().map(|t| t.accounts).collect();
    assert_eq!(counts, [1, 0, 1, 0, 0, 0, 0, 1]);
    let outstanding_a1 = m_remaining(&want[24].1);
    assert_eq!(par[2].outstanding(), outstanding_a1);
    // A late payment of A1 on day 5 moves it out of arrears: the totals move with it.
    let mut late = inputs(5, 2000.0);
    late.date = day(5);
    accounts
        .apply_batch(
            CLUSTER,
            TOPIC,
            &feed.batch([recorded("acme", "A1", &late, 2)]),
        )
        .unwrap();
    let par = accounts
        .metrics()
        .par("acme", day(24), Basis::NonForgiving)
        .unwrap();
    let counts: Vec<i128> = par.iter().map(|t| t.accounts).collect();
    assert_eq!(counts, [2, 0, 0, 0, 0, 0, 0, 1]);
    let forgiving = accounts
        .metrics()
        .par("acme", day(24), Basis::Forgiving)
        .unwrap();
    assert_eq!(forgiving.iter().map(|t| t.accounts).sum::<i128>(), 3);

    // Where the CRM (days_to_cutoff_source = -7 everywhere) and recoup disagree on day 24: A1
    // (paid until day 30: 6) and A2 (paid until day 25: 1); A3 has no figure of recoup's.
    let tags = (7, 8); // days_to_cutoff_source, days_to_cutoff_calculated
    let (all, more) = accounts
        .discrepancies("acme", day(24), tags, 0.0, None, (100, 100))
        .unwrap();
    assert_eq!(
        all,
        [("A1".to_owned(), -7.0, 6.0), ("A2".to_owned(), -7.0, 1.0)]
    );
    assert_eq!(more, None);
    let (within, _) = accounts
        .discrepancies("acme", day(24), tags, 8.5, None, (100, 100))
        .unwrap();
    assert_eq!(within, [("A1".to_owned(), -7.0, 6.0)], "A2 is within 8.5");
    // One at a time: the page says where to go on.
    let (first, more) = accounts
        .discrepancies("acme", day(24), tags, 0.0, None, (1, 100))
        .unwrap();
    assert_eq!((first.len(), more.as_deref()), (1, Some("A1")));
    let (second, _) = accounts
        .discrepancies("acme", day(24), tags, 0.0, Some("A1"), (1, 100))
        .unwrap();
    assert_eq!(second[0].0, "A2");
}

fn m_remaining(outcome: &paygo_snapshots::credit::Outcome) -> f64 {
    outcome.metrics().unwrap().remaining
}

/// One account-day as a property test draws it: a payment, maybe a refund, maybe the plan.
fn drawn_day(n: i64, (payment, refund, plan): (u8, bool, bool)) -> DayInputs {
    let mut d = DayInputs {
        date: day(n),
        payment: Some([0.0, 50.0, 300.0, 1500.0][usize::from(payment % 4)]),
        refund: refund.then_some(40.0),
        ..DayInputs::default()
    };
    if plan {
        d.contract_value = Some(3000.0 + 100.0 * n as f64);
        d.duration = Some(30.0);
        d.repayments = Some(3);
    }
    d
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any arrival order of any revisions, in batches of any size, ends with the results of
    /// each account's final series computed from scratch, published and shown.
    #[test]
    fn any_order_of_any_revisions_ends_as_the_final_series_from_scratch(
        accounts in proptest::collection::vec(
            proptest::collection::vec((0u8..4, proptest::bool::weighted(0.1), proptest::bool::weighted(0.15)), 1..20),
            1..3,
        ),
        changes in proptest::collection::vec((0usize..2, 0usize..20, 0u8..4, 1u64..4), 0..8),
        order in proptest::collection::vec(proptest::num::usize::ANY, 64),
        batch_sizes in proptest::collection::vec(1usize..12, 1..8),
    ) {
        let dir = TempDir::new().unwrap();
        let (_cases, model) = open(dir.path());
        let stage = model.metrics();
        // Revision 1 of every day, then the changes; the final series keeps, per day, the
        // highest revision's inputs (of two of one revision, the later to arrive, as the read
        // model keeps it).
        let mut events: Vec<(usize, DayInputs, u64)> = Vec::new();
        for (a, days) in accounts.iter().enumerate() {
            for (n, drawn) in days.iter().enumerate() {
                events.push((a, drawn_day(n as i64, *drawn), 1));
            }
        }
        for (a, n, payment, revision) in changes {
            let Some(days) = accounts.get(a) else { continue };
            let Some(drawn) = days.get(n) else { continue };
            let (_, refund, plan) = *drawn;
            events.push((a, drawn_day(n as i64, (payment, refund, plan)), revision + 1));
        }
        // A shuffle driven by `order`.
        for (i, pick) in order.iter().enumerate().take(events.len()) {
            let j = i + pick % (events.len() - i);
            events.swap(i, j);
        }
        let mut finals: BTreeMap<(usize, NaiveDate), (u64, DayInputs)> = BTreeMap::new();
        for (a, inputs, revision) in &events {
            let key = (*a, inputs.date);
            if finals.get(&key).is_none_or(|(r, _)| r <= revision) {
                finals.insert(key, (*revision, inputs.clone()));
            }
        }
        let mut feed = Feed::new();
        let mut all = Results::new();
        let mut rest = events.as_slice();
        for size in batch_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (batch, later) = rest.split_at((*size).min(rest.len()));
            rest = later;
            let values = batch.iter().map(|(a, d, r)| recorded("acme", &format!("A{a}"), d, *r));
            model.apply_batch(CLUSTER, TOPIC, &feed.batch(values)).unwrap();
            // What each batch published: the relay takes it before the next.
            results(stage, &mut all);
            let keys: Vec<Vec<u8>> = stage.pending(usize::MAX).unwrap().into_iter().map(|(k, _)| k).collect();
            stage.remove(&keys).unwrap();
        }
        for a in 0..accounts.len() {
            let uid = format!("A{a}");
            let series: Vec<DayInputs> = finals
                .iter()
                .filter(|((b, _), _)| *b == a)
                .map(|(_, (_, d))| d.clone())
                .collect();
            let want = from_scratch(&series);
            proptest::prop_assert_eq!(&published(&all, "acme", &uid), &want, "published, {}", uid);
            for (date, calculated) in &want {
                let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
                let shown = stage.calculated("acme", &uid, date).unwrap().map(|bytes| {
                    v1::AccountSnapshot::decode(bytes.as_slice()).unwrap().encode_to_vec()
                });
                proptest::prop_assert_eq!(&shown, &calculated.clone().ok(), "shown, {} {}", uid, date);
            }
        }
    }
}

#[test]
fn results_of_the_stages_first_layout_are_moved_and_recomputed_from_the_series() {
    use recoup_keys::{Key, KeyReader};
    let dir = TempDir::new().unwrap();
    let mut series: Vec<DayInputs> = (0..12)
        .map(|n| inputs(n, if n % 3 == 0 { 200.0 } else { 0.0 }))
        .collect();
    let mut feed = Feed::new();
    let shown_of = |stage: &MetricsStage| -> Vec<(Option<Vec<u8>>, Option<u64>)> {
        (0..12)
            .map(|n| {
                (
                    stage.calculated("acme", "A1", day(n)).unwrap(),
                    stage.published_revision("acme", "A1", day(n)).unwrap(),
                )
            })
            .collect()
    };
    let before = {
        let (cases, accounts) = open(dir.path());
        let values = series.iter().map(|d| recorded("acme", "A1", d, 1));
        accounts
            .apply_batch(CLUSTER, TOPIC, &feed.batch(values))
            .unwrap();
        let shown = shown_of(accounts.metrics());
        assert!(shown.iter().all(|(c, r)| c.is_some() && *r == Some(1)));
        // Back to the first layout: each result as `r` (tenant, account, date) with its `m`,
        // the `D` index, the inputs under `i`, and whole records in the outbox (`O`).
        let tree = accounts.tree();
        let mut batch = sled::Batch::default();
        let records = accounts.metrics().pending(usize::MAX).unwrap();
        assert_eq!(records.len(), 12);
        for (n, (_, record)) in records.iter().enumerate() {
            let old = Key::new(b'O').u64(n as u64).into_vec();
            batch.insert(old, record.encode_to_vec());
        }
        for key in tree.scan_prefix(b"P").keys() {
            batch.remove(key.unwrap());
        }
        for entry in tree.scan_prefix(b"R") {
            let (key, value) = entry.unwrap();
            let mut reader = KeyReader::tail(&key[1..]);
            let tenant = reader.str().unwrap();
            let date = reader.day().unwrap();
            let uid = reader.last_str().unwrap();
            let tail = Key::parts().str(tenant).str(uid).day(date).into_vec();
            batch.insert([b"r", tail.as_slice()].concat(), &value[24..]);
            batch.insert([b"m", tail.as_slice()].concat(), &value[..24]);
            let index = Key::new(b'D').str(tenant).day(date).last_str(uid);
            batch.insert(index.into_vec(), &[] as &[u8]);
            batch.insert([b"i", tail.as_slice()].concat(), b"inputs".as_slice());
            batch.remove(key);
        }
        // The account read model's first layout kept the latest snapshot apart.
        let latest = Key::new(b'l').str("acme").str("A1").into_vec();
        batch.insert(latest, b"day and snapshot".as_slice());
        tree.apply_batch(batch).unwrap();
        accounts.flush().unwrap();
        drop((cases, accounts));
        (shown, records)
    };
    let (before, records) = before;

    let (_cases, accounts) = open(dir.path());
    let tree = accounts.tree();
    for prefix in [b"r", b"m", b"D", b"i", b"l"] {
        assert_eq!(tree.scan_prefix(prefix).count(), 0, "{prefix:?} is gone");
    }
    let stage = accounts.metrics();
    assert_eq!(shown_of(stage), before, "every result shown as before");
    let latest = accounts.account("acme", "A1").unwrap().unwrap();
    assert_eq!(latest.snapshot_date.as_deref(), Some("2026-03-12"));
    assert_eq!(
        latest.days_to_cutoff_calculated,
        v1::AccountSnapshot::decode(before[11].0.clone().unwrap().as_slice())
            .unwrap()
            .days_to_cutoff_calculated
    );
    let pending: Vec<_> = stage
        .pending(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    let records: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        pending, records,
        "the outbox of the first layout is published as it was"
    );
    let listed: Vec<String> = stage
        .accounts_on("acme", day(5), None)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(listed, ["A1"]);
    // A changed day recomputes the account from its series.
    series[4].payment = Some(900.0);
    let late = vec![recorded("acme", "A1", &series[4], 2)];
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(late))
        .unwrap();
    let mut all = Results::new();
    results(stage, &mut all);
    assert_eq!(published(&all, "acme", "A1"), from_scratch(&series));
    assert_eq!(
        stage.published_revision("acme", "A1", day(11)).unwrap(),
        Some(2)
    );
}

#[test]
fn the_outbox_gives_a_batchs_results_in_parts_and_drops_those_replaced() {
    let dir = TempDir::new().unwrap();
    let (_cases, accounts) = open(dir.path());
    let stage = accounts.metrics();
    let mut feed = Feed::new();
    three_accounts_in_one_batch(&accounts, &mut feed);
    let all = stage.pending(usize::MAX).unwrap();
    assert_eq!(all.len(), 36);
    // A batch's results come whole; the relay removes what Kafka acknowledged, here a part.
    assert_eq!(stage.pending(10).unwrap(), all);
    let keys: Vec<Vec<u8>> = all.iter().map(|(k, _)| k.clone()).collect();
    stage.remove(&keys[..7]).unwrap();
    assert_eq!(stage.len(), 29);
    assert_eq!(stage.pending(usize::MAX).unwrap(), all[7..]);
    // Days 6..11 of A3 change before the relay sent them: the replaced results are skipped,
    // the new ones follow.
    let late = (6..12).map(|n| recorded("acme", "A3", &inputs(n, 700.0), 2));
    accounts
        .apply_batch(CLUSTER, TOPIC, &feed.batch(late))
        .unwrap();
    let rest = stage.pending(usize::MAX).unwrap();
    assert_eq!(rest[..23], all[7..30]);
    assert_eq!(rest.len(), 23 + 6);
    let keys: Vec<Vec<u8>> = rest.iter().map(|(k, _)| k.clone()).collect();
    stage.remove(&keys[..23]).unwrap();
    // Left of the first batch: the six replaced, dropped at the next pass.
    assert_eq!(stage.len(), 12);
    assert_eq!(stage.pending(usize::MAX).unwrap(), rest[23..]);
    assert_eq!(stage.len(), 6);
    stage.remove(&keys[23..]).unwrap();
    assert!(stage.is_empty());
    assert!(stage.pending(usize::MAX).unwrap().is_empty());
}
