//! A rebuild stages each batch of the record while the one before is written
//! (`kernel::apply_recorded_batches`): whatever the batches, the parking, the duplicates and the
//! rejects, and however many batches are in flight when the next is staged, the read model ends
//! as batch-by-batch application leaves it.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::{CLUSTER, Case, Feed, TOPIC};
use event_backbone::consumer::ReceivedEvent;
use projection::kernel::{self, RECORD_CLUSTER};
use projection::{BatchOutcome, CaseReadModel, Projection, ReadModelError};
use proptest::prelude::*;

/// A case with `steps` events after its creation (4: deleted at the end).
fn case(i: usize, steps: &[u8]) -> Case {
    let currency = if i.is_multiple_of(2) { "EUR" } else { "CHF" };
    let mut case = Case::new("acme", &format!("case-{i}"), currency, &[1_000 + i as i64]);
    for step in steps {
        case = match step {
            0 => case.review(),
            1 => case.prepare(),
            2 => {
                let receipt = format!("r{}", case.version());
                case.receipt(&receipt, 10)
            }
            3 => case.close(),
            _ => case.delete(),
        };
    }
    case
}

/// Every case's events, the streams interleaved, some swapped with their successor (parked),
/// some sent twice, and a message that is no event.
fn messages(cases: &[Case], swaps: &[usize], twice: &[usize]) -> Vec<Vec<u8>> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    let longest = cases.iter().map(Case::version).max().unwrap_or(0);
    for version in 1..=longest {
        for case in cases.iter().filter(|c| c.version() >= version) {
            values.push(case.envelope(version));
        }
    }
    for &i in swaps {
        if values.len() > 1 {
            let i = i % (values.len() - 1);
            values.swap(i, i + 1);
        }
    }
    for &i in twice {
        if !values.is_empty() {
            let again = values[i % values.len()].clone();
            values.push(again);
        }
    }
    values.insert(values.len() / 2, b"no event".to_vec());
    values
}

fn batches(values: Vec<Vec<u8>>, sizes: &[usize]) -> Vec<Vec<ReceivedEvent>> {
    let mut feed = Feed::new();
    let mut messages = feed.batch(values).into_iter();
    let mut out = Vec::new();
    for size in sizes.iter().cycle() {
        let batch: Vec<ReceivedEvent> = messages.by_ref().take(*size).collect();
        if batch.is_empty() {
            return out;
        }
        out.push(batch);
    }
    out
}

/// The tree's entries that are the read model's: no offsets, rejects by their message only.
fn contents(rm: &CaseReadModel, cluster: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let reject = recoup_keys::Key::new(b'x').str(cluster).into_vec();
    rm.tree()
        .iter()
        .map(|e| e.unwrap())
        .filter(|(k, _)| !k.starts_with(b"o") && !k.starts_with(b"~"))
        .map(|(k, v)| {
            let k = match k.strip_prefix(reject.as_slice()) {
                Some(rest) => [b"x".as_slice(), rest].concat(),
                None => k.to_vec(),
            };
            (k, v.to_vec())
        })
        .collect()
}

fn open() -> (tempfile::TempDir, CaseReadModel) {
    let dir = tempfile::tempdir().unwrap();
    let rm = CaseReadModel::open(dir.path()).unwrap();
    (dir, rm)
}

/// Stages every batch while up to `depth` staged before it are still unwritten, then writes.
fn staged_ahead(rm: &CaseReadModel, batches: &[Vec<ReceivedEvent>], depth: usize) -> BatchOutcome {
    rm.set_pipelined(true);
    let mut total = BatchOutcome::default();
    let mut in_flight = std::collections::VecDeque::new();
    for batch in batches {
        let (sled_batch, written, outcome) = kernel::stage_recorded(rm, TOPIC, batch).unwrap();
        total.add(outcome);
        in_flight.push_back((sled_batch, written));
        while in_flight.len() > depth {
            let (b, w) = in_flight.pop_front().unwrap();
            rm.write_staged(b, w).unwrap();
        }
    }
    for (b, w) in in_flight {
        rm.write_staged(b, w).unwrap();
    }
    rm.set_pipelined(false);
    total
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn batches_staged_while_earlier_ones_are_in_flight_end_as_batch_by_batch(
        streams in prop::collection::vec(prop::collection::vec(0u8..5, 0..6), 1..6),
        swaps in prop::collection::vec(0usize..1000, 0..6),
        twice in prop::collection::vec(0usize..1000, 0..4),
        sizes in prop::collection::vec(1usize..7, 1..4),
        depth in 1usize..4,
    ) {
        let cases: Vec<Case> = streams.iter().enumerate().map(|(i, s)| case(i, s)).collect();
        let batches = batches(messages(&cases, &swaps, &twice), &sizes);

        let (_a, one_by_one) = open();
        let mut expected = BatchOutcome::default();
        for batch in &batches {
            expected.add(one_by_one.apply_batch(CLUSTER, TOPIC, batch).unwrap());
        }
        let want = contents(&one_by_one, CLUSTER);

        let (_b, ahead) = open();
        prop_assert_eq!(staged_ahead(&ahead, &batches, depth), expected);
        prop_assert_eq!(&contents(&ahead, RECORD_CLUSTER), &want);

        let (_c, threaded) = open();
        let mut source = batches.clone().into_iter();
        let outcome = kernel::apply_recorded_batches(
            &threaded,
            TOPIC,
            || Ok::<_, ReadModelError>(source.next()),
            |_| {},
        )
        .unwrap();
        prop_assert_eq!(outcome, expected);
        prop_assert_eq!(&contents(&threaded, RECORD_CLUSTER), &want);
    }
}
