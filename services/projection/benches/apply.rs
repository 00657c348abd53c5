//! Projection apply rate: encoded case events applied to the sled read model in consumer-sized
//! batches, beside a bare sled loop inserting one key per event in the same batches.
//!
//! `cargo bench -p projection --bench apply` (BENCH_CASES to change the size).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use debt_cases::{
    BillingAddress, CaseState, DebtCase, DebtCaseEvent, Environment, LineItem, NewCase,
};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{EventMetadata, NewEnvelope};
use projection::CaseReadModel;
use projection::Projection;
use prost::Message;
use recoup_proto::convert::event_to_payload;

const BATCH: usize = 2000;

fn events(cases: usize) -> Vec<ReceivedEvent> {
    let now = Utc::now();
    let metadata = EventMetadata::default();
    let mut out = Vec::with_capacity(cases * 4);
    for i in 0..cases {
        let id = uuid::Uuid::now_v7().to_string();
        let stream = [
            DebtCaseEvent::Created {
                case_id: id.clone(),
                tenant: "bench".into(),
                content: NewCase {
                    external_id: format!("ext-{i}"),
                    reference: format!("REF-{i}"),
                    collector_configuration_id: None,
                    environment: Environment::Test,
                    currency: "EUR".into(),
                    line_items: vec![LineItem {
                        unique_id: "1".into(),
                        name: "installments".into(),
                        quantity: 1,
                        amount_minor: 10_000,
                    }],
                    due_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
                    contract_date: None,
                    language: "en".into(),
                    billing_address: BillingAddress::default(),
                    labels: vec![],
                },
                collector_configuration_id: "default".into(),
                state: CaseState::Reviewing,
                creator: "key:bench".into(),
                at: now,
            },
            DebtCaseEvent::Reviewed {
                reviewer: "key:bench".into(),
                at: now,
            },
            DebtCaseEvent::Prepared { at: now },
            DebtCaseEvent::Closed { at: now },
        ];
        for (v, event) in stream.iter().enumerate() {
            let envelope = NewEnvelope {
                tenant: "bench",
                aggregate_type: "debt_case",
                aggregate_id: &id,
                aggregate_version: v as u64 + 1,
                occurred_at: event.at(),
                recorded_at: now,
                event_type: recoup_proto::convert::event_type(event),
                schema_version: 1,
                payload: event_to_payload(event),
                metadata: &metadata,
            }
            .build();
            let offset = out.len() as i64;
            out.push(ReceivedEvent {
                partition: 0,
                offset,
                key: id.clone().into_bytes(),
                value: envelope.encode_to_vec(),
            });
        }
    }
    // Interleave cases the way several partitions' batches would.
    out.sort_by_key(|e| (e.offset % 4, e.offset / 4));
    for (i, e) in out.iter_mut().enumerate() {
        e.offset = i as i64;
    }
    out
}

fn main() {
    let cases: usize = std::env::var("BENCH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let events = events(cases);
    let dir = tempfile::tempdir().unwrap();
    let rm = CaseReadModel::open(dir.path()).unwrap();
    let started = Instant::now();
    let mut applied = 0;
    for chunk in events.chunks(BATCH) {
        applied += rm.apply_batch("bench", "topic", chunk).unwrap().applied;
    }
    rm.flush().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(applied, events.len());
    let sample = rm
        .list_cases("bench", Some(CaseState::Closed), None, 1)
        .unwrap();
    let case_bytes = sample
        .first()
        .map(|c: &DebtCase| {
            recoup_proto::convert::case_to_proto(c)
                .encode_to_vec()
                .len()
        })
        .unwrap_or(200);

    let bare = bare_sled(events.len(), case_bytes);
    let rate = events.len() as f64 / elapsed.as_secs_f64();
    let bare_rate = events.len() as f64 / bare.as_secs_f64();
    println!(
        "projection apply: {} events of {cases} cases in {:.2} s = {rate:.0} events/s",
        events.len(),
        elapsed.as_secs_f64()
    );
    println!(
        "bare sled loop, one {case_bytes}-byte insert per event, same batches: {bare_rate:.0} events/s"
    );
    println!("ratio projection / bare sled: {:.2}", rate / bare_rate);
}

fn bare_sled(events: usize, value_bytes: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("read_model").unwrap();
    let value = vec![1u8; value_bytes];
    let started = Instant::now();
    for chunk_start in (0..events).step_by(BATCH) {
        let mut batch = sled::Batch::default();
        for i in chunk_start..(chunk_start + BATCH).min(events) {
            batch.insert(
                format!("c\0bench\0{:036}", i % (events / 4).max(1)).into_bytes(),
                value.clone(),
            );
        }
        tree.apply_batch(batch).unwrap();
    }
    db.flush().unwrap();
    started.elapsed()
}
