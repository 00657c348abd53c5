//! The case read model on real sled files: ordering, duplicates, parking, rejects, offsets,
//! deletion, totals, listing and tenants. No Kafka: messages are built as the consumer hands them
//! over.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::NaiveDate;
use common::{CLUSTER, Case, Feed, TOPIC, at, line_items};
use debt_cases::{BillingAddress, CaseChanges, CaseState, DebtCase, DebtCaseEvent};
use event_backbone::consumer::ReceivedEvent;
use event_backbone::envelope::{EventMetadata, NewEnvelope};
use projection::CaseReadModel;
use projection::Projection;
use projection::{BatchOutcome, Totals};
use prost::Message;
use tempfile::TempDir;

fn open(dir: &Path) -> CaseReadModel {
    CaseReadModel::open(dir).unwrap()
}

/// Flushes, closes and opens the read model again, as a restart does.
fn reopen(rm: CaseReadModel, dir: &Path) -> CaseReadModel {
    rm.flush().unwrap();
    drop(rm);
    common::reopen_read_model(dir)
}

fn apply(rm: &CaseReadModel, messages: &[ReceivedEvent]) -> BatchOutcome {
    rm.apply_batch(CLUSTER, TOPIC, messages).unwrap()
}

fn outcome(applied: usize, duplicates: usize, parked: usize, rejected: usize) -> BatchOutcome {
    BatchOutcome {
        applied,
        duplicates,
        parked,
        rejected,
        ignored: 0,
    }
}

fn case(rm: &CaseReadModel, c: &Case) -> Option<DebtCase> {
    rm.case(&c.tenant, &c.id).unwrap()
}

fn stats(rm: &CaseReadModel, tenant: &str) -> BTreeMap<(CaseState, String), Totals> {
    let rows = rm.stats(tenant).unwrap();
    let n = rows.len();
    let map: BTreeMap<_, _> = rows.into_iter().map(|(s, c, t)| ((s, c), t)).collect();
    assert_eq!(map.len(), n, "one row per state and currency");
    map
}

fn totals(
    state: CaseState,
    currency: &str,
    count: i64,
    amount_minor: i64,
    collected_minor: i64,
) -> ((CaseState, String), Totals) {
    (
        (state, currency.to_owned()),
        Totals {
            count: count.into(),
            amount_minor: amount_minor.into(),
            collected_minor: collected_minor.into(),
        },
    )
}

fn ids(cases: &[DebtCase]) -> Vec<String> {
    cases.iter().map(|c| c.id.clone()).collect()
}

/// Bytes no protobuf decoder accepts as an envelope.
fn garbage(seed: u8) -> Vec<u8> {
    let mut bytes = vec![0xff, 0xfe, seed];
    bytes.extend_from_slice(b"\x07\x07 not an envelope");
    bytes
}

#[test]
fn events_applied_in_order_build_the_case_that_replay_builds() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let a = Case::new("acme", "case-a", "EUR", &[10_000, 2_500])
        .update(CaseChanges {
            reference: Some("REF-A-2".into()),
            line_items: Some(line_items(&[9_000])),
            due_date: NaiveDate::from_ymd_opt(2025, 1, 31),
            contract_date: NaiveDate::from_ymd_opt(2024, 7, 1),
            language: Some("fr-CH".into()),
            billing_address: Some(BillingAddress {
                organization_name: "Muster AG".into(),
                country: "CH".into(),
                ..BillingAddress::default()
            }),
            labels: Some(vec!["vip".into(), "b2b".into()]),
        })
        .review()
        .prepare()
        .start()
        .receipt("r1", 4_000)
        .receipt("r2", 5_000)
        .close();
    let b = Case::new("acme", "case-b", "CHF", &[700])
        .review()
        .prepare()
        .start()
        .fail("debtor unknown");
    assert_eq!((a.version(), b.version()), (8, 5));

    // Interleaved, as a partition carries them, over two batches.
    let mut feed = Feed::new();
    let first = feed.batch([
        a.envelope(1),
        b.envelope(1),
        a.envelope(2),
        a.envelope(3),
        b.envelope(2),
    ]);
    assert_eq!(apply(&rm, &first), outcome(5, 0, 0, 0));
    assert_eq!(case(&rm, &a), Some(a.replay_to(3)));
    assert_eq!(case(&rm, &b), Some(b.replay_to(2)));
    assert_eq!(rm.applied_version("acme", "case-a").unwrap(), 3);

    let mut rest = vec![a.envelope(4)];
    rest.extend(b.envelopes(3, 5));
    rest.extend(a.envelopes(5, 8));
    let second = feed.batch(rest);
    assert_eq!(apply(&rm, &second), outcome(8, 0, 0, 0));

    for c in [&a, &b] {
        assert_eq!(case(&rm, c), Some(c.replay()), "case {}", c.id);
        assert_eq!(rm.applied_version(&c.tenant, &c.id).unwrap(), c.version());
    }
    let rm = reopen(rm, dir.path());
    for c in [&a, &b] {
        assert_eq!(case(&rm, c), Some(c.replay()), "case {} after reopen", c.id);
        assert_eq!(rm.applied_version(&c.tenant, &c.id).unwrap(), c.version());
    }
}

#[test]
fn a_duplicate_is_counted_and_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    // A repeated receipt would raise `collected` if it were applied again.
    let c = Case::new("acme", "dup", "EUR", &[10_000])
        .review()
        .prepare()
        .start()
        .receipt("r1", 3_000);
    let mut feed = Feed::new();

    // In the same batch: right after itself, and after later versions.
    let batch = feed.batch([
        c.envelope(1),
        c.envelope(2),
        c.envelope(1),
        c.envelope(3),
        c.envelope(4),
        c.envelope(5),
        c.envelope(5),
        c.envelope(2),
    ]);
    assert_eq!(apply(&rm, &batch), outcome(5, 3, 0, 0));
    let expected = c.replay();
    assert_eq!(expected.collected_minor, 3_000);
    assert_eq!(case(&rm, &c), Some(expected.clone()));
    let stats_before = stats(&rm, "acme");
    assert_eq!(
        stats_before,
        BTreeMap::from([totals(CaseState::Processing, "EUR", 1, 10_000, 3_000)])
    );

    // In a later batch: a redelivery of the whole stream.
    let batch = feed.batch([
        c.envelope(5),
        c.envelope(1),
        c.envelope(3),
        c.envelope(2),
        c.envelope(4),
    ]);
    assert_eq!(apply(&rm, &batch), outcome(0, 5, 0, 0));
    assert_eq!(case(&rm, &c), Some(expected));
    assert_eq!(stats(&rm, "acme"), stats_before);
    assert_eq!(rm.applied_version("acme", "dup").unwrap(), 5);
    assert_eq!(rm.rejected_count(), 0);
}

#[test]
fn an_event_before_its_predecessor_is_parked_until_it_arrives_in_a_later_batch() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let c = Case::new("acme", "late", "EUR", &[10_000])
        .review()
        .prepare()
        .start()
        .receipt("r1", 1_000)
        .receipt("r2", 2_000)
        .close();
    let mut feed = Feed::new();
    assert_eq!(
        apply(&rm, &feed.batch(c.envelopes(1, 2))),
        outcome(2, 0, 0, 0)
    );

    // Version 4 before 3: parked, not applied.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(4)])),
        outcome(0, 0, 1, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay_to(2)));
    assert_eq!(rm.applied_version("acme", "late").unwrap(), 2);
    assert_eq!(
        stats(&rm, "acme"),
        BTreeMap::from([totals(CaseState::Preparing, "EUR", 1, 10_000, 0)])
    );

    // Version 3 arrives: 3 and then 4 are applied.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(3)])),
        outcome(2, 0, 0, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay_to(4)));
    assert_eq!(rm.applied_version("acme", "late").unwrap(), 4);

    // A longer gap: 7 and 6 wait for 5, then all three follow in order.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(7), c.envelope(6)])),
        outcome(0, 0, 2, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay_to(4)));
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(5)])),
        outcome(3, 0, 0, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay()));
    assert_eq!(rm.applied_version("acme", "late").unwrap(), 7);
    assert_eq!(
        stats(&rm, "acme"),
        BTreeMap::from([totals(CaseState::Closed, "EUR", 1, 10_000, 3_000)])
    );
    // Nothing stays parked: the unparked versions are duplicates now.
    assert_eq!(
        apply(&rm, &feed.batch(c.envelopes(4, 7))),
        outcome(0, 4, 0, 0)
    );
}

#[test]
fn an_event_before_its_predecessor_is_parked_until_it_arrives_in_the_same_batch() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let c = Case::new("acme", "swapped", "EUR", &[10_000])
        .review()
        .prepare()
        .start();
    let fresh = Case::new("acme", "fresh", "CHF", &[500]).review().prepare();
    let mut feed = Feed::new();
    assert_eq!(
        apply(&rm, &feed.batch(c.envelopes(1, 2))),
        outcome(2, 0, 0, 0)
    );

    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(4), c.envelope(3)])),
        outcome(2, 0, 1, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay()));
    assert_eq!(rm.applied_version("acme", "swapped").unwrap(), 4);

    // A case whose whole stream arrives backwards in one batch.
    assert_eq!(
        apply(
            &rm,
            &feed.batch([fresh.envelope(3), fresh.envelope(2), fresh.envelope(1)])
        ),
        outcome(3, 0, 2, 0)
    );
    assert_eq!(case(&rm, &fresh), Some(fresh.replay()));
    assert_eq!(
        stats(&rm, "acme"),
        BTreeMap::from([
            totals(CaseState::Pending, "CHF", 1, 500, 0),
            totals(CaseState::Processing, "EUR", 1, 10_000, 0),
        ])
    );
    // Nothing stays parked.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(4), fresh.envelope(3)])),
        outcome(0, 2, 0, 0)
    );
}

#[test]
fn parked_events_survive_reopening_the_read_model() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let c = Case::new("acme", "parked", "EUR", &[10_000])
        .review()
        .prepare()
        .start();
    let mut feed = Feed::new();
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(1)])),
        outcome(1, 0, 0, 0)
    );
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(4), c.envelope(3)])),
        outcome(0, 0, 2, 0)
    );

    let rm = reopen(rm, dir.path());
    assert_eq!(case(&rm, &c), Some(c.replay_to(1)));
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(2)])),
        outcome(3, 0, 0, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay()));
    assert_eq!(rm.applied_version("acme", "parked").unwrap(), 4);
}

#[test]
fn an_unusable_message_is_rejected_kept_and_does_not_stop_the_batch() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let c = Case::new("acme", "ok", "EUR", &[10_000]).review().prepare();
    let invoice = Case::new("acme", "inv-1", "EUR", &[1_000]);
    let foreign = invoice.envelope_of(1, &invoice.events[0], "invoice");
    // An envelope of this case's next version whose event type nobody knows.
    let metadata = EventMetadata::default();
    let unknown_type = NewEnvelope {
        tenant: "acme",
        aggregate_type: "debt_case",
        aggregate_id: "ok",
        aggregate_version: 3,
        occurred_at: at(30),
        recorded_at: at(30),
        event_type: "DebtCaseTeleported",
        schema_version: 1,
        payload: Vec::new(),
        metadata: &metadata,
    }
    .build()
    .encode_to_vec();

    let mut feed = Feed::new();
    let batch = feed.batch([
        c.envelope(1),
        garbage(1),
        foreign,
        c.envelope(2),
        unknown_type,
        c.envelope(3),
    ]);
    assert_eq!(apply(&rm, &batch), outcome(3, 0, 0, 3));
    assert_eq!(rm.rejected_count(), 3);
    assert_eq!(case(&rm, &c), Some(c.replay()));
    assert_eq!(rm.case("acme", "inv-1").unwrap(), None);
    assert_eq!(ids(&rm.list_cases("acme", None, None, 10).unwrap()), ["ok"]);
    assert_eq!(
        rm.offsets(CLUSTER, TOPIC, &[0]).unwrap(),
        [(0, Some(6))],
        "the offsets advance past the rejects"
    );

    // A batch of nothing but a reject still moves the offset on, and the reject is kept.
    assert_eq!(apply(&rm, &feed.batch([garbage(2)])), outcome(0, 0, 0, 1));
    assert_eq!(rm.rejected_count(), 4);
    assert_eq!(rm.offsets(CLUSTER, TOPIC, &[0]).unwrap(), [(0, Some(7))]);
    let rm = reopen(rm, dir.path());
    assert_eq!(rm.rejected_count(), 4);
    assert_eq!(case(&rm, &c), Some(c.replay()));
}

#[test]
fn offsets_are_the_next_offset_per_partition_cluster_and_topic() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let a = Case::new("acme", "a", "EUR", &[100]).review().prepare();
    let b = Case::new("acme", "b", "EUR", &[100]).review();
    assert_eq!(
        rm.offsets(CLUSTER, TOPIC, &[0, 1]).unwrap(),
        [(0, None), (1, None)]
    );

    // Partition 0 only, with a gap in its offsets (as compaction or transaction markers leave).
    let message = |partition, offset, value| ReceivedEvent {
        partition,
        offset,
        key: Vec::new(),
        value,
    };
    let batch = [
        message(0, 5, a.envelope(1)),
        message(0, 6, a.envelope(2)),
        message(0, 9, a.envelope(3)),
    ];
    assert_eq!(apply(&rm, &batch), outcome(3, 0, 0, 0));
    assert_eq!(
        rm.offsets(CLUSTER, TOPIC, &[0, 1]).unwrap(),
        [(0, Some(10)), (1, None)]
    );

    // Both partitions, interleaved.
    let batch = [
        message(1, 0, b.envelope(1)),
        message(0, 10, garbage(0)),
        message(1, 1, b.envelope(2)),
    ];
    assert_eq!(apply(&rm, &batch), outcome(2, 0, 0, 1));
    let both = [(0, Some(11)), (1, Some(2))];
    assert_eq!(rm.offsets(CLUSTER, TOPIC, &[0, 1]).unwrap(), both);
    assert_eq!(
        rm.offsets(CLUSTER, TOPIC, &[1, 0, 2]).unwrap(),
        [(1, Some(2)), (0, Some(11)), (2, None)]
    );

    // Another cluster, or another topic, has read nothing.
    assert_eq!(
        rm.offsets("c2", TOPIC, &[0, 1]).unwrap(),
        [(0, None), (1, None)]
    );
    assert_eq!(
        rm.offsets(CLUSTER, "recoup.other", &[0, 1]).unwrap(),
        [(0, None), (1, None)]
    );

    let rm = reopen(rm, dir.path());
    assert_eq!(rm.offsets(CLUSTER, TOPIC, &[0, 1]).unwrap(), both);
    assert_eq!(
        rm.offsets("c2", TOPIC, &[0, 1]).unwrap(),
        [(0, None), (1, None)]
    );

    // Offsets of c2 are kept apart from c1's.
    let batch = [message(0, 0, garbage(3))];
    rm.apply_batch("c2", TOPIC, &batch).unwrap();
    assert_eq!(
        rm.offsets("c2", TOPIC, &[0, 1]).unwrap(),
        [(0, Some(1)), (1, None)]
    );
    assert_eq!(rm.offsets(CLUSTER, TOPIC, &[0, 1]).unwrap(), both);
}

#[test]
fn a_deleted_case_is_gone_but_its_version_is_remembered() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let gone = Case::new("acme", "gone", "EUR", &[5_000])
        .update(CaseChanges {
            reference: Some("REF-GONE-2".into()),
            ..CaseChanges::default()
        })
        .delete();
    let kept = Case::new("acme", "kept", "EUR", &[1_000]);
    let mut feed = Feed::new();
    let batch = feed.batch([gone.envelope(1), gone.envelope(2), kept.envelope(1)]);
    assert_eq!(apply(&rm, &batch), outcome(3, 0, 0, 0));
    assert_eq!(case(&rm, &gone), Some(gone.replay_to(2)));
    assert_eq!(
        ids(&rm.list_cases("acme", None, None, 10).unwrap()),
        ["gone", "kept"]
    );

    assert_eq!(
        apply(&rm, &feed.batch([gone.envelope(3)])),
        outcome(1, 0, 0, 0)
    );
    let only_kept = BTreeMap::from([totals(CaseState::Reviewing, "EUR", 1, 1_000, 0)]);
    let check = |rm: &CaseReadModel| {
        assert_eq!(case(rm, &gone), None);
        assert_eq!(case(rm, &kept), Some(kept.replay()));
        assert_eq!(
            ids(&rm.list_cases("acme", None, None, 10).unwrap()),
            ["kept"]
        );
        assert_eq!(
            ids(&rm
                .list_cases("acme", Some(CaseState::Reviewing), None, 10)
                .unwrap()),
            ["kept"]
        );
        assert_eq!(stats(rm, "acme"), only_kept);
        assert_eq!(rm.applied_version("acme", "gone").unwrap(), 3);
    };
    check(&rm);

    let rm = reopen(rm, dir.path());
    check(&rm);
    // A redelivery of the old stream is a duplicate, not a re-creation.
    assert_eq!(apply(&rm, &feed.batch(gone.all())), outcome(0, 3, 0, 0));
    check(&rm);
}

#[test]
fn a_case_created_and_deleted_in_one_batch_leaves_no_trace_but_its_version_and_history() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let gone = Case::new("acme", "brief", "CHF", &[5_000]).delete();
    let mut feed = Feed::new();
    assert_eq!(apply(&rm, &feed.batch(gone.all())), outcome(2, 0, 0, 0));
    assert_eq!(case(&rm, &gone), None);
    assert!(rm.list_cases("acme", None, None, 10).unwrap().is_empty());
    assert!(stats(&rm, "acme").is_empty());
    assert_eq!(rm.applied_version("acme", "brief").unwrap(), 2);
    assert_eq!(apply(&rm, &feed.batch(gone.all())), outcome(0, 2, 0, 0));
    assert_eq!(case(&rm, &gone), None);
    // The audit trail outlives the case: who created it and who deleted it.
    let trail = rm.history("acme", "brief", 0, 10).unwrap();
    let types: Vec<&str> = trail.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["DebtCaseCreated", "DebtCaseDeleted"]);
    assert_eq!(trail[1].actor, common::actor(2));
}

#[test]
fn the_history_holds_each_applied_event_once_in_version_order_across_parking_and_restarts() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let c = Case::new("acme", "audited", "EUR", &[5_000])
        .review()
        .prepare()
        .start();
    let mut feed = Feed::new();
    // Versions 3 and 4 come first and wait for 1 and 2; then everything comes again.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(4), c.envelope(3)])),
        outcome(0, 0, 2, 0)
    );
    assert!(rm.history("acme", "audited", 0, 10).unwrap().is_empty());
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(1), c.envelope(2)])),
        outcome(4, 0, 0, 0)
    );
    assert_eq!(apply(&rm, &feed.batch(c.all())), outcome(0, 4, 0, 0));
    // A bogus fifth event (a second creation) is rejected and leaves no entry.
    let bogus = c.envelope_of(5, &c.events[0], "debt_case");
    assert_eq!(apply(&rm, &feed.batch([bogus])), outcome(0, 0, 0, 1));
    let rm = reopen(rm, dir.path());
    let trail = rm.history("acme", "audited", 0, 10).unwrap();
    let versions: Vec<u64> = trail.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    for e in &trail {
        assert_eq!(e.actor, common::actor(e.version));
        assert_eq!(e.correlation_id, common::correlation(e.version));
    }
    assert_eq!(rm.history("acme", "audited", 2, 1).unwrap(), trail[2..3]);
    assert!(rm.history("acme", "audited", 4, 10).unwrap().is_empty());
    assert!(rm.history("other", "audited", 0, 10).unwrap().is_empty());
    let held = case(&rm, &c).unwrap();
    assert_eq!(held.creator, common::actor(1));
    assert_eq!(held.reviewer, Some(common::actor(2)));
}

#[test]
fn an_event_after_a_deletion_is_rejected_and_the_case_stays_deleted() {
    // The aggregate never emits one, but a foreign or corrupt stream may; rejecting it must not
    // undo the deletion staged before it.
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let earlier = Case::new("acme", "earlier", "EUR", &[5_000]).delete();
    let bogus = DebtCaseEvent::Reviewed {
        reviewer: "key:bogus".into(),
        at: at(10),
    };
    let after_earlier = earlier.envelope_of(3, &bogus, "debt_case");
    let same = Case::new("acme", "same", "EUR", &[7_000]).delete();
    let after_same = same.envelope_of(3, &bogus, "debt_case");
    let mut feed = Feed::new();

    // Created in an earlier batch; deleted and followed by the bogus event in a later one.
    assert_eq!(
        apply(&rm, &feed.batch([earlier.envelope(1)])),
        outcome(1, 0, 0, 0)
    );
    assert_eq!(
        apply(&rm, &feed.batch([earlier.envelope(2), after_earlier])),
        outcome(1, 0, 0, 1)
    );
    // Created, deleted and followed by the bogus event in one batch.
    assert_eq!(
        apply(
            &rm,
            &feed.batch([same.envelope(1), same.envelope(2), after_same])
        ),
        outcome(2, 0, 0, 1)
    );

    let check = |rm: &CaseReadModel| {
        for c in [&earlier, &same] {
            assert_eq!(case(rm, c), None, "case {}", c.id);
            assert_eq!(
                rm.applied_version("acme", &c.id).unwrap(),
                2,
                "case {}",
                c.id
            );
        }
        assert!(rm.list_cases("acme", None, None, 10).unwrap().is_empty());
        assert!(stats(rm, "acme").is_empty());
    };
    check(&rm);
    let rm = reopen(rm, dir.path());
    check(&rm);
    assert_eq!(
        apply(&rm, &feed.batch([same.envelope(1), earlier.envelope(1)])),
        outcome(0, 2, 0, 0)
    );
    check(&rm);
}

#[test]
fn stats_are_exact_per_state_and_currency() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let a = Case::new("acme", "a", "EUR", &[6_000, 4_000]);
    let g = Case::new("acme", "g", "EUR", &[1_000]).update(CaseChanges {
        line_items: Some(line_items(&[1_200, 300])),
        ..CaseChanges::default()
    });
    let b = Case::new("acme", "b", "EUR", &[25_000]).review();
    let c = Case::new("acme", "c", "CHF", &[7_000])
        .review()
        .prepare()
        .start()
        .receipt("c1", 3_000);
    let d = Case::new("acme", "d", "EUR", &[5_000])
        .review()
        .prepare()
        .start()
        .receipt("d1", 1_000)
        .receipt("d2", 500);
    let e = Case::new("acme", "e", "CHF", &[2_000])
        .review()
        .prepare()
        .start()
        .receipt("e1", 2_000)
        .close();
    let f = Case::new("acme", "f", "EUR", &[4_000])
        .review()
        .fail("disputed");
    let h = Case::new("acme", "h", "CHF", &[900]).review().prepare();
    let mut feed = Feed::new();

    // Every case created first; then the rest of every stream, interleaved.
    let all = [&a, &g, &b, &c, &d, &e, &f, &h];
    let created: Vec<_> = all.iter().map(|x| x.envelope(1)).collect();
    assert_eq!(apply(&rm, &feed.batch(created)), outcome(8, 0, 0, 0));
    assert_eq!(
        stats(&rm, "acme"),
        BTreeMap::from([
            totals(CaseState::Reviewing, "CHF", 3, 9_900, 0),
            totals(CaseState::Reviewing, "EUR", 5, 45_000, 0),
        ])
    );
    let mut rest = Vec::new();
    for v in 2..=6 {
        for x in all {
            if v <= x.version() {
                rest.push(x.envelope(v));
            }
        }
    }
    let n = rest.len();
    assert_eq!(apply(&rm, &feed.batch(rest)), outcome(n, 0, 0, 0));
    assert_eq!(
        stats(&rm, "acme"),
        BTreeMap::from([
            totals(CaseState::Reviewing, "EUR", 2, 11_500, 0),
            totals(CaseState::Preparing, "EUR", 1, 25_000, 0),
            totals(CaseState::Pending, "CHF", 1, 900, 0),
            totals(CaseState::Processing, "CHF", 1, 7_000, 3_000),
            totals(CaseState::Processing, "EUR", 1, 5_000, 1_500),
            totals(CaseState::Closed, "CHF", 1, 2_000, 2_000),
            totals(CaseState::Failed, "EUR", 1, 4_000, 0),
        ])
    );

    // Pending, Preparing and Processing in CHF empty out.
    let h = h.close();
    let b = b.prepare().start().receipt("b1", 5_000);
    let c = c.receipt("c2", 4_000).close();
    let batch = feed.batch([
        h.envelope(4),
        b.envelope(3),
        c.envelope(6),
        b.envelope(4),
        c.envelope(7),
        b.envelope(5),
    ]);
    assert_eq!(apply(&rm, &batch), outcome(6, 0, 0, 0));
    let expected = BTreeMap::from([
        totals(CaseState::Reviewing, "EUR", 2, 11_500, 0),
        totals(CaseState::Processing, "EUR", 2, 30_000, 6_500),
        totals(CaseState::Closed, "CHF", 3, 9_900, 9_000),
        totals(CaseState::Failed, "EUR", 1, 4_000, 0),
    ]);
    assert_eq!(stats(&rm, "acme"), expected);
    assert!(stats(&rm, "other").is_empty());
    let rm = reopen(rm, dir.path());
    assert_eq!(stats(&rm, "acme"), expected);
}

#[test]
fn list_cases_is_ordered_by_id_and_pages_continue_right_after_the_given_id() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    // Ids that are prefixes of others, created out of order.
    let ids_in_creation_order = ["m", "m-1", "m-10", "m-2", "a", "z", "b7", "b", "k0", "k"];
    let reviewed = ["m-1", "b", "z", "k0", "m"];
    let cases: Vec<Case> = ids_in_creation_order
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let c = Case::new("acme", id, "EUR", &[1_000 + i as i64]);
            if reviewed.contains(id) { c.review() } else { c }
        })
        .collect();
    let mut feed = Feed::new();
    let (first, second) = cases.split_at(4);
    for part in [first, second] {
        let values: Vec<_> = part.iter().flat_map(Case::all).collect();
        apply(&rm, &feed.batch(values));
    }

    let mut all: Vec<String> = ids_in_creation_order
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.sort();
    let of_state = |state: CaseState| -> Vec<String> {
        let mut v: Vec<String> = cases
            .iter()
            .filter(|c| c.replay().state == state)
            .map(|c| c.id.clone())
            .collect();
        v.sort();
        v
    };
    let preparing = of_state(CaseState::Preparing);
    let reviewing = of_state(CaseState::Reviewing);
    assert_eq!(preparing, ["b", "k0", "m", "m-1", "z"]);
    assert_eq!(reviewing, ["a", "b7", "k", "m-10", "m-2"]);

    let listed = rm.list_cases("acme", None, None, 100).unwrap();
    assert_eq!(ids(&listed), all);
    for c in &listed {
        let stream = cases.iter().find(|s| s.id == c.id).unwrap();
        assert_eq!(*c, stream.replay());
    }
    assert_eq!(
        ids(&rm
            .list_cases("acme", Some(CaseState::Preparing), None, 100)
            .unwrap()),
        preparing
    );
    assert_eq!(
        ids(&rm
            .list_cases("acme", Some(CaseState::Reviewing), None, 100)
            .unwrap()),
        reviewing
    );
    assert!(
        rm.list_cases("acme", Some(CaseState::Closed), None, 100)
            .unwrap()
            .is_empty()
    );

    // Paging through every listing with every page size sees each case once, in order.
    for (state, expected) in [
        (None, &all),
        (Some(CaseState::Preparing), &preparing),
        (Some(CaseState::Reviewing), &reviewing),
    ] {
        for limit in 1..=4 {
            let mut seen: Vec<String> = Vec::new();
            loop {
                let page = rm
                    .list_cases("acme", state, seen.last().map(String::as_str), limit)
                    .unwrap();
                assert!(page.len() <= limit);
                if page.is_empty() {
                    break;
                }
                seen.extend(ids(&page));
                assert!(
                    seen.len() <= expected.len(),
                    "state {state:?}, limit {limit}: paging repeats, seen {seen:?}"
                );
            }
            assert_eq!(&seen, expected, "state {state:?}, limit {limit}");
        }
    }

    // `after` need not be a listed id: the page starts at the next id above it.
    let after = |state, id| ids(&rm.list_cases("acme", state, Some(id), 2).unwrap());
    assert_eq!(after(None, "m-1"), ["m-10", "m-2"]);
    assert_eq!(after(None, "b5"), ["b7", "k"]);
    assert_eq!(after(None, "k"), ["k0", "m"]);
    assert_eq!(after(None, "0"), ["a", "b"]);
    assert!(after(None, "z").is_empty());
    assert!(after(None, "zz").is_empty());
    assert_eq!(after(Some(CaseState::Preparing), "m"), ["m-1", "z"]);
    assert_eq!(after(Some(CaseState::Reviewing), "m-1"), ["m-10", "m-2"]);
    assert_eq!(after(Some(CaseState::Reviewing), "b"), ["b7", "k"]);
}

#[test]
fn applied_versions_lists_held_and_deleted_cases() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let one = Case::new("acme", "one", "EUR", &[100]).review().prepare();
    let two = Case::new("acme", "two", "EUR", &[100]);
    let gone = Case::new("acme", "gone", "EUR", &[100]).delete();
    let other = Case::new("other", "one", "CHF", &[100]).review();
    let other_gone = Case::new("other", "gone", "CHF", &[100])
        .update(CaseChanges {
            language: Some("it-CH".into()),
            ..CaseChanges::default()
        })
        .delete();
    // Only parked so far: nothing applied.
    let waiting = Case::new("acme", "waiting", "EUR", &[100]).review();
    let mut feed = Feed::new();
    let mut values: Vec<Vec<u8>> = [&one, &two, &gone, &other, &other_gone]
        .iter()
        .flat_map(|c| c.all())
        .collect();
    values.push(waiting.envelope(2));
    assert_eq!(apply(&rm, &feed.batch(values)), outcome(11, 0, 1, 0));

    let expected = |rm: &CaseReadModel| {
        let mut got = rm.applied_versions().unwrap();
        got.sort();
        let mut want: Vec<(String, String, u64)> = [
            ("acme", "gone", 2),
            ("acme", "one", 3),
            ("acme", "two", 1),
            ("other", "gone", 3),
            ("other", "one", 2),
        ]
        .iter()
        .map(|(t, c, v)| (t.to_string(), c.to_string(), *v))
        .collect();
        want.sort();
        assert_eq!(got, want);
    };
    expected(&rm);
    let rm = reopen(rm, dir.path());
    expected(&rm);
}

#[test]
fn tenants_are_separate() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    // One tenant id is a prefix of the other.
    let north = Case::new("north", "shared", "EUR", &[1_000]).review();
    let north2 = Case::new("north-2", "shared", "CHF", &[2_000]);
    let mut feed = Feed::new();
    let batch = feed.batch([north2.envelope(1), north.envelope(1), north.envelope(2)]);
    assert_eq!(apply(&rm, &batch), outcome(3, 0, 0, 0));

    assert_eq!(case(&rm, &north), Some(north.replay()));
    assert_eq!(case(&rm, &north2), Some(north2.replay()));
    assert_ne!(case(&rm, &north), case(&rm, &north2));
    assert_eq!(rm.applied_version("north", "shared").unwrap(), 2);
    assert_eq!(rm.applied_version("north-2", "shared").unwrap(), 1);
    assert_eq!(rm.applied_version("south", "shared").unwrap(), 0);
    assert_eq!(rm.case("south", "shared").unwrap(), None);
    assert_eq!(
        rm.list_cases("north", None, None, 10).unwrap(),
        [north.replay()]
    );
    assert_eq!(
        rm.list_cases("north-2", None, None, 10).unwrap(),
        [north2.replay()]
    );
    assert!(
        rm.list_cases("north", Some(CaseState::Reviewing), None, 10)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        stats(&rm, "north"),
        BTreeMap::from([totals(CaseState::Preparing, "EUR", 1, 1_000, 0)])
    );
    assert_eq!(
        stats(&rm, "north-2"),
        BTreeMap::from([totals(CaseState::Reviewing, "CHF", 1, 2_000, 0)])
    );
    assert!(rm.list_cases("south", None, None, 10).unwrap().is_empty());

    // Deleting one leaves the other as it was.
    let north2 = north2.delete();
    let north = north.prepare();
    let batch = feed.batch([north2.envelope(2), north.envelope(3)]);
    assert_eq!(apply(&rm, &batch), outcome(2, 0, 0, 0));
    assert_eq!(case(&rm, &north2), None);
    assert_eq!(case(&rm, &north), Some(north.replay()));
    assert!(rm.list_cases("north-2", None, None, 10).unwrap().is_empty());
    assert!(stats(&rm, "north-2").is_empty());
    assert_eq!(
        stats(&rm, "north"),
        BTreeMap::from([totals(CaseState::Pending, "EUR", 1, 1_000, 0)])
    );
}

#[test]
fn a_parked_event_that_cannot_be_applied_when_its_turn_comes_is_kept_as_rejected() {
    let dir = TempDir::new().unwrap();
    let rm = open(dir.path());
    let c = Case::new("acme", "bad-successor", "EUR", &[500])
        .review()
        .prepare();
    let mut feed = Feed::new();
    apply(&rm, &feed.batch([c.envelope(1)]));
    // Version 3 claims to be a second creation: parked now, unappliable later.
    let bogus = c.envelope_of(3, &c.events[0], "debt_case");
    assert_eq!(apply(&rm, &feed.batch([bogus])), outcome(0, 0, 1, 0));
    assert_eq!(rm.rejected_count(), 0);
    // Version 2 arrives: it is applied, the bogus successor moves to the rejects.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(2)])),
        outcome(1, 0, 0, 0)
    );
    assert_eq!(rm.rejected_count(), 1);
    assert_eq!(case(&rm, &c), Some(c.replay_to(2)));
    // The real version 3 still applies.
    assert_eq!(
        apply(&rm, &feed.batch([c.envelope(3)])),
        outcome(1, 0, 0, 0)
    );
    assert_eq!(case(&rm, &c), Some(c.replay_to(3)));
}

#[test]
fn totals_of_the_first_layout_read_as_they_were() {
    use projection::kernel::Counters;
    // Eight bytes per counter before the totals became exact (sixteen now).
    let legacy: Vec<u8> = [3i64, -7, i64::MAX]
        .iter()
        .flat_map(|c| c.to_be_bytes())
        .collect();
    let read = Totals::decode(&legacy);
    assert_eq!(
        (read.count, read.amount_minor, read.collected_minor),
        (3, -7, i128::from(i64::MAX))
    );
    let mut wider = read;
    wider.add_counters([0, 0, i128::from(i64::MAX)]);
    assert_eq!(wider.encode().len(), 48);
    assert_eq!(Totals::decode(&wider.encode()), wider);
    assert_eq!(wider.collected_minor, 2 * i128::from(i64::MAX));
}
