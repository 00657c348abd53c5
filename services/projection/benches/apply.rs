//! Projection apply rate: encoded case events applied to the sled read model in consumer-sized
//! batches, beside a bare sled loop inserting one key per event in the same batches, in two
//! orders:
//! - the record's: each case's events together, as a rebuild reads the case event store (and
//!   as a case's burst of commands arrives);
//! - the worst: a case's events all in different batches (every case created, then every case
//!   reviewed, ...), so no batch holds two events of one case.
//!
//! `cargo bench -p projection --bench apply`; BENCH_CASES (4 events each) changes the size,
//! BENCH_BATCH the batch, BENCH_REBUILD_ONLY=1 measures the rebuild alone (a million events:
//! `BENCH_CASES=250000 BENCH_REBUILD_ONLY=1`), BENCH_ROUNDS the rounds (default 5), each of
//! which runs every variant once, the bare loop last. Each figure comes with the CPU per event
//! of the whole process (sled's threads included), which a busy neighbour moves less than the
//! rate.
#![allow(clippy::unwrap_used)]

// As the recoup binary does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use debt_cases::{
    BillingAddress, CaseState, DebtCase, DebtCaseEvent, Environment, LineItem, NewCase,
};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{EventMetadata, NewEnvelope};
use projection::{CaseReadModel, Projection, rebuild};
use prost::Message;
use recoup_keys::record::PrefixRecord;
use recoup_proto::convert::event_to_payload;
use recoup_runtime::process::cpu_seconds;

/// What one pass took: wall time, and CPU seconds of the whole process (every thread, sled's
/// own included), steadier than wall time on a shared machine.
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: f64,
}

impl Took {
    fn since(started: Instant, cpu_at_start: f64) -> Self {
        Took {
            wall: started.elapsed(),
            cpu: cpu_seconds() - cpu_at_start,
        }
    }
}

/// Messages per batch: the projector's and the rebuild's.
fn batch_size() -> usize {
    std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

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
    out
}

/// The events with no two of one case in the same batch: every creation, then every review...
fn spread(mut events: Vec<ReceivedEvent>) -> Vec<ReceivedEvent> {
    events.sort_by_key(|e| (e.offset % 4, e.offset / 4));
    for (i, e) in events.iter_mut().enumerate() {
        e.offset = i as i64;
    }
    events
}

fn main() {
    let cases: usize = std::env::var("BENCH_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rebuild_only = std::env::var("BENCH_REBUILD_ONLY").is_ok_and(|v| v == "1");
    let rounds = bench_rounds::rounds();
    let in_record_order = events(cases);
    let spread = spread(in_record_order.clone());
    let count = in_record_order.len();
    println!(
        "{count} events of {cases} cases, batches of {}; {rounds} rounds",
        batch_size()
    );
    let variants: &[&str] = if rebuild_only {
        &VARIANTS[..2]
    } else {
        &VARIANTS
    };
    let mut rate = bench_rounds::Rounds::new("events/s", variants);
    let mut cpu = bench_rounds::Rounds::new("µs CPU/event", variants);
    let mut record = |variant: usize, took: Took| {
        rate.record(variant, count as f64 / took.wall.as_secs_f64());
        cpu.record(variant, took.cpu * 1e6 / count as f64);
        count as f64 / took.wall.as_secs_f64()
    };
    for round in 1..=rounds {
        let (rebuild, case_bytes) = apply(&in_record_order, cases, Path::Rebuild);
        let mut line = format!("round {round}: rebuild {:.0}", record(1, rebuild));
        if !rebuild_only {
            let (together, _) = apply(&in_record_order, cases, Path::Live);
            let (worst, _) = apply(&spread, cases, Path::Live);
            line += &format!(
                ", live together {:.0}, live one per case {:.0}",
                record(2, together),
                record(3, worst)
            );
        }
        let bare = bare_sled(count, case_bytes);
        line += &format!(
            ", bare sled ({case_bytes}-byte values) {:.0} events/s",
            record(0, bare)
        );
        println!("{line}");
    }
    println!("\n{}\n{}", rate.report(), cpu.report());
}

const VARIANTS: [&str; 4] = [
    "bare sled loop, one insert per event, same batches",
    "rebuild from a record (read back, a case's events together, pipelined)",
    "live, batch by batch, a case's events together",
    "live, batch by batch, one event per case per batch",
];

/// A tree laid out as the case store's record (`e`, tenant, case, version) holding `events`.
fn record_of(dir: &std::path::Path, events: &[ReceivedEvent]) -> PrefixRecord {
    let db = recoup_keys::store::open(dir, Default::default()).unwrap();
    let tree = db.open_tree("case_store").unwrap();
    for chunk in events.chunks(10_000) {
        let mut batch = sled::Batch::default();
        for e in chunk {
            let version = (e.offset % 4 + 1) as u64;
            let key = recoup_keys::Key::new(b'e')
                .str("bench")
                .str(std::str::from_utf8(&e.key).unwrap())
                .u64(version);
            batch.insert(key.into_vec(), e.value.as_slice());
        }
        tree.apply_batch(batch).unwrap();
    }
    // A rebuild reads a record written long before: on disk before the clock starts.
    db.flush().unwrap();
    PrefixRecord::new(tree, b"e")
}

/// How events reach the read model.
#[derive(Clone, Copy)]
enum Path {
    /// As a rebuild applies the record: read from a store, staging a batch while the one
    /// before is written.
    Rebuild,
    /// As the projector applies what it consumed: each batch written before the next.
    Live,
}

/// Applies `events` to a new read model: what it took, with the flush, and the size of a stored
/// case.
fn apply(events: &[ReceivedEvent], cases: usize, path: Path) -> (Took, usize) {
    let dir = tempfile::tempdir().unwrap();
    let rm = CaseReadModel::open(dir.path()).unwrap();
    let mut started = Instant::now();
    let mut cpu = cpu_seconds();
    let applied = match path {
        Path::Rebuild => {
            // The record as the case store keeps it: each case's events together, read back
            // page by page as a rebuild reads it.
            let record_dir = tempfile::tempdir().unwrap();
            let record = record_of(record_dir.path(), events);
            started = Instant::now();
            cpu = cpu_seconds();
            rebuild::apply_whole_record(&record, &rm, || false, |_| {})
                .unwrap()
                .applied
        }
        Path::Live => events
            .chunks(batch_size())
            .map(|chunk| rm.apply_batch("bench", "topic", chunk).unwrap().applied)
            .sum(),
    };
    rm.flush().unwrap();
    let took = Took::since(started, cpu);
    assert_eq!(applied, events.len());
    let closed = rm
        .list_cases("bench", Some(CaseState::Closed), None, cases)
        .unwrap();
    assert_eq!(closed.len(), cases, "every case ends closed");
    let case_bytes = closed
        .first()
        .map(|c: &DebtCase| {
            recoup_proto::convert::case_to_proto(c)
                .encode_to_vec()
                .len()
        })
        .unwrap_or(200);
    (took, case_bytes)
}

fn bare_sled(events: usize, value_bytes: usize) -> Took {
    let dir = tempfile::tempdir().unwrap();
    // Opened as recoup opens its stores (the read model's page cache).
    let db = recoup_keys::store::open(dir.path(), Default::default()).unwrap();
    let tree = db.open_tree("read_model").unwrap();
    let value = vec![1u8; value_bytes];
    let started = Instant::now();
    let cpu = cpu_seconds();
    for chunk_start in (0..events).step_by(batch_size()) {
        let mut batch = sled::Batch::default();
        for i in chunk_start..(chunk_start + batch_size()).min(events) {
            batch.insert(
                format!("c\0bench\0{:036}", i % (events / 4).max(1)).into_bytes(),
                value.clone(),
            );
        }
        tree.apply_batch(batch).unwrap();
    }
    db.flush().unwrap();
    Took::since(started, cpu)
}
