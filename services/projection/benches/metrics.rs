//! PAYGo metrics end to end: account-day snapshots on `recoup.paygo-snapshots.v1` (the
//! embedded Kafka, flow-controlled as `recoup up` runs it) consumed by the account projection —
//! its read model and the metrics stage in one sled batch — and every result published by the
//! outbox relay to `recoup.paygo-metrics.v1` and acknowledged; beside the credit model alone
//! over the same account-days, in the same run.
//!
//! `cargo bench -p projection --bench metrics` (BENCH_ACCOUNTS, BENCH_DAYS to change the size;
//! 10,000 × 100 by default; BENCH_ROUNDS, default 5, each the model alone then end to end). The
//! time the account projection spent applying its batches (read model + metrics stage, sled)
//! is reported beside the end to end time.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, TimeZone, Utc};
use event_backbone::envelope::{EventMetadata, NewEnvelope};
use event_backbone::outbox::{Outbox, OutboxRelay};
use event_backbone::producer::{OutgoingEvent, ProducerSettings};
use event_backbone::{EmbeddedKafka, EventConsumer, EventProducer, FlowGate, topics};
use paygo_snapshots::credit::{AccountState, DayInputs, start_of};
use projection::{AccountReadModel, CaseReadModel, Projection};
use prost::Message;
use recoup_proto::contract::{aggregate, event_type};
use recoup_proto::metrics::encode_outcome;
use recoup_proto::v1;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Account `a`'s day `n`: the plan on day 0, a payment on about a third of the days, the CRM's
/// own figures beside them.
fn snapshot(a: usize, n: u64, start: NaiveDate) -> (DayInputs, v1::AccountSnapshot) {
    let date = start + Days::new(n);
    let plan = n == 0;
    let pays = (a as u64 * 7 + n * 13).is_multiple_of(3);
    let inputs = DayInputs {
        date,
        contract_value: plan.then_some(3_000.0 + a as f64),
        duration: plan.then_some(365.0),
        repayments: plan.then_some(12),
        payment: Some(if pays { 25.0 } else { 0.0 }),
        ..DayInputs::default()
    };
    let uid = format!("bench_crm_A{a:05}");
    let snapshot = v1::AccountSnapshot {
        snapshot_date: Some(date.format("%Y-%m-%d").to_string()),
        account_external_id: Some(format!("A{a:05}")),
        data_origin: Some("crm".to_owned()),
        organization_id: Some("bench".to_owned()),
        account_uid: Some(uid),
        amt_contract_value_without_discounts_source: inputs.contract_value,
        days_expected_loan_duration_source: inputs.duration,
        num_expected_repayments_source: inputs.repayments,
        amt_payments_daily_source: inputs.payment,
        days_arrears_consecutive_source: Some((n % 40) as i64),
        amt_remaining_installment_source: Some(3_000.0 - n as f64 * 8.0),
        days_to_cutoff_source: Some(0),
        ..Default::default()
    };
    (inputs, snapshot)
}

/// An event with its Kafka key.
type Keyed = (String, Vec<u8>);

/// Every account-day in date order (as daily snapshot files arrive): the model's inputs per
/// account, and the recorded events with their keys.
fn portfolio(accounts: usize, days: u64) -> (Vec<Vec<DayInputs>>, Vec<Keyed>) {
    let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
    let at = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
    let metadata = EventMetadata {
        correlation_id: "bench-import".into(),
        causation_id: "bench-import".into(),
        actor: "key:bench".into(),
    };
    let mut series = vec![Vec::with_capacity(days as usize); accounts];
    let mut events = Vec::with_capacity(accounts * days as usize);
    for n in 0..days {
        for (a, inputs_of) in series.iter_mut().enumerate() {
            let (inputs, snapshot) = snapshot(a, n, start);
            inputs_of.push(inputs);
            let uid = snapshot.account_uid.clone().unwrap();
            let payload = v1::AccountSnapshotRecorded {
                snapshot: Some(snapshot),
                import_id: "bench-import".into(),
                row: n * accounts as u64 + a as u64 + 2,
                revision: 1,
            }
            .encode_to_vec();
            let envelope = NewEnvelope {
                tenant: "bench",
                aggregate_type: aggregate::PAYGO_ACCOUNT_SNAPSHOT,
                aggregate_id: &uid,
                aggregate_version: 1,
                occurred_at: at,
                recorded_at: at,
                event_type: event_type::ACCOUNT_SNAPSHOT_RECORDED,
                schema_version: 1,
                payload,
                metadata: &metadata,
            }
            .build()
            .encode_to_vec();
            events.push((uid, envelope));
        }
    }
    (series, events)
}

/// The credit model alone: every account's series stepped day by day, each outcome encoded
/// as the stage publishes it. Returns the account-days computed.
fn model_alone(series: &[Vec<DayInputs>]) -> usize {
    let mut n = 0;
    let mut bytes = 0;
    for days in series {
        let mut state = AccountState::new(start_of(days).unwrap());
        for day in days {
            let outcome = state.step(day);
            bytes += encode_outcome(&outcome).map_or(0, |b| b.len());
            n += 1;
        }
    }
    assert!(bytes > 0);
    n
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let accounts = env("BENCH_ACCOUNTS", 10_000);
    let days = env("BENCH_DAYS", 100) as u64;
    let (series, events) = portfolio(accounts, days);
    let total = events.len();
    let snapshot_bytes = events.iter().map(|(_, e)| e.len()).sum::<usize>() / total;

    let events = Arc::new(events);
    let rounds = bench_rounds::rounds();
    println!(
        "{total} account-days ({accounts} accounts x {days} days, {snapshot_bytes}-byte snapshot events); {rounds} rounds"
    );
    let variants = [
        "credit model alone (step + encode)",
        "end to end, snapshot topic to acknowledged metric events",
    ];
    let mut rate = bench_rounds::Rounds::new("account-days/s", &variants);
    let mut applying = bench_rounds::Rounds::without_baseline(
        "s",
        &["end to end", "of which the account projection applying"],
    );
    for round in 1..=rounds {
        let started = Instant::now();
        assert_eq!(model_alone(&series), total);
        let model = started.elapsed();
        let (end_to_end, applied_in, published) = end_to_end(events.clone()).await;
        assert_eq!(published, total);
        let model_rate = total as f64 / model.as_secs_f64();
        let end_rate = total as f64 / end_to_end.as_secs_f64();
        rate.record(0, model_rate);
        rate.record(1, end_rate);
        applying.record(0, end_to_end.as_secs_f64());
        applying.record(1, applied_in.as_secs_f64());
        println!(
            "round {round}: model alone {model_rate:.0}, end to end {end_rate:.0} account-days/s ({:.2} s, of which applying {:.2} s)",
            end_to_end.as_secs_f64(),
            applied_in.as_secs_f64()
        );
    }
    println!("\n{}\n{}", rate.report(), applying.report());
}

/// Feeds the events to the snapshot topic while the account projection takes them and the
/// relay publishes its results; returns the time until every result was acknowledged, the
/// time the account projection spent applying its batches, and how many results there were.
async fn end_to_end(events: Arc<Vec<Keyed>>) -> (Duration, Duration, usize) {
    let total = events.len();
    let kafka = EmbeddedKafka::start(topics::ALL).unwrap();
    let config = kafka.kafka_config();
    let dir = tempfile::tempdir().unwrap();
    let cases = CaseReadModel::open(dir.path()).unwrap();
    let model = AccountReadModel::open(&cases).unwrap();
    let stage = model.metrics().clone();
    // As `recoup up` wires it: the importer's producer and the projection's consumer share a
    // flow-control budget; the relay's producer is unmetered (no in-process consumer).
    let gate = Arc::new(FlowGate::new(event_backbone::flow::EMBEDDED_BUDGET_BYTES));
    let feeder =
        EventProducer::new(&config, &ProducerSettings::bulk(), Some(gate.clone())).unwrap();
    let relay_producer = EventProducer::new(&config, &ProducerSettings::bulk(), None).unwrap();
    let relay = OutboxRelay::new(stage.clone(), Arc::new(relay_producer));
    let consumer =
        EventConsumer::new(&config, "bench", topics::PAYGO_SNAPSHOTS.name, Some(gate)).unwrap();
    let partitions = consumer.partitions(Duration::from_secs(10)).unwrap();
    let from_start: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    consumer.assign(&from_start).unwrap();
    let cluster = kafka.cluster_id().to_owned();

    let started = Instant::now();
    let feed = tokio::spawn(async move {
        let mut pending = Vec::with_capacity(4096);
        for (key, value) in events.iter() {
            let event = OutgoingEvent {
                topic: topics::PAYGO_SNAPSHOTS.name,
                key,
                value,
                event_id: "bench",
                event_type: event_type::ACCOUNT_SNAPSHOT_RECORDED,
            };
            pending.push(feeder.enqueue(event).await.unwrap());
            if pending.len() == 4096 {
                for p in pending.drain(..) {
                    p.acknowledged().await.unwrap();
                }
            }
        }
        for p in pending {
            p.acknowledged().await.unwrap();
        }
    });
    // What the projector does, with the time spent applying counted apart.
    let apply = tokio::spawn(async move {
        let (mut applied, mut applying) = (0, Duration::ZERO);
        while applied < total {
            let messages = consumer.recv_batch(2000).await.unwrap();
            let at = Instant::now();
            let outcome = tokio::task::block_in_place(|| {
                model.apply_batch(&cluster, topics::PAYGO_SNAPSHOTS.name, &messages)
            });
            applying += at.elapsed();
            applied += outcome.unwrap().applied;
        }
        applying
    });
    let mut published = 0;
    let appended = stage.appended();
    while published < total {
        let notified = appended.notified();
        let n = relay.publish_pending().await.unwrap();
        published += n;
        if n == 0 {
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            }
        }
    }
    let elapsed = started.elapsed();
    feed.await.unwrap();
    let applying = apply.await.unwrap();
    assert!(stage.is_empty());
    (elapsed, applying, published)
}
