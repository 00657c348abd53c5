//! The collections deal read models on real sled files: revisions (duplicates, older, newer),
//! the funnel, DPD and PTP totals on any day, the do-not-contact list and its change feed,
//! listings, rejects, offsets and reopening. No Kafka: messages are built as the puller
//! publishes them and handed over as the consumer would.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use common::deals::{DEALS_TOPIC, Row, day, instant};
use common::{CLUSTER, Feed};
use event_backbone::consumer::ReceivedEvent;
use projection::BatchOutcome;
use projection::deals::{
    DealFilter, DealReadModel, DealTotals, DoNotContactChange, DpdBucket, FunnelStage, ListChange,
    PtpChannel, PtpStatus, PtpTotals, WatchError, dpd_days, ptp_status,
};
use projection::{CaseReadModel, Projection};
use proptest::prelude::*;
use prost::Message;
use recoup_proto::contract::aggregate::COLLECTIONS_DEAL as DEAL_AGGREGATE;
use recoup_proto::contract::event_type::COLLECTIONS_DEAL_OBSERVED as DEAL_EVENT_TYPE;
use recoup_proto::v1::EventEnvelope;
use tempfile::TempDir;

const TENANT: &str = "acme";

struct Models {
    cases: CaseReadModel,
    deals: DealReadModel,
}

fn open(dir: &Path) -> Models {
    let cases = CaseReadModel::open(dir).unwrap();
    let deals = DealReadModel::open(&cases).unwrap();
    Models { cases, deals }
}

/// Flushes, closes and opens again, as a restart does.
fn reopen(models: Models, dir: &Path) -> Models {
    models.deals.flush().unwrap();
    models.cases.flush().unwrap();
    drop(models);
    let cases = common::reopen_read_model(dir);
    let deals = DealReadModel::open(&cases).unwrap();
    Models { cases, deals }
}

fn apply(deals: &DealReadModel, feed: &mut Feed, values: Vec<Vec<u8>>) -> BatchOutcome {
    deals
        .apply_batch(CLUSTER, DEALS_TOPIC, &feed.batch(values))
        .unwrap()
}

fn outcome(applied: usize, duplicates: usize, rejected: usize) -> BatchOutcome {
    BatchOutcome {
        applied,
        duplicates,
        parked: 0,
        rejected,
        ignored: 0,
    }
}

fn totals(deals: i64, amount_minor: i64) -> DealTotals {
    DealTotals {
        deals: deals.into(),
        amount_minor: amount_minor.into(),
    }
}

fn stage(pipeline: &str, stage: &str, deals: i64, amount_minor: i64) -> FunnelStage {
    FunnelStage {
        pipeline: pipeline.into(),
        deal_stage_id: stage.into(),
        totals: totals(deals, amount_minor),
    }
}

fn stored(deals: &DealReadModel, row: &Row) -> Option<Row> {
    deals
        .deal(&row.tenant, row.public_id(), row.created_at())
        .unwrap()
        .map(|deal| Row {
            tenant: row.tenant.clone(),
            deal,
        })
}

fn revision(deals: &DealReadModel, row: &Row) -> Option<u64> {
    deals
        .applied_revision(&row.tenant, row.public_id(), row.created_at())
        .unwrap()
}

fn bucket_totals(deals: &DealReadModel, as_of: NaiveDate) -> BTreeMap<DpdBucket, DealTotals> {
    let totals = deals.dpd_buckets(TENANT, as_of).unwrap();
    DpdBucket::ALL
        .into_iter()
        .zip(totals)
        .filter(|(_, t)| *t != DealTotals::default())
        .collect()
}

/// Every deal of a listing, one page of `page_size` after the other.
fn list_all(
    deals: &DealReadModel,
    filter: &DealFilter,
    as_of: NaiveDate,
    page_size: usize,
) -> Vec<(String, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..1000 {
        let page = deals
            .list_deals(TENANT, filter, as_of, after.as_ref(), page_size)
            .unwrap();
        assert!(page.deals.len() <= page_size);
        out.extend(page.deals.iter().map(|d| {
            (
                d.public_id.clone(),
                recoup_proto::from_timestamp(d.created_at.as_ref().unwrap()).unwrap(),
            )
        }));
        match page.next {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
    panic!("paging does not end");
}

fn keys(rows: &[&Row]) -> BTreeSet<(String, DateTime<Utc>)> {
    rows.iter().map(|r| r.key()).collect()
}

fn listed(
    deals: &DealReadModel,
    filter: &DealFilter,
    as_of: NaiveDate,
) -> BTreeSet<(String, DateTime<Utc>)> {
    let all = list_all(deals, filter, as_of, 1000);
    let set: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(set.len(), all.len(), "a deal listed twice");
    set
}

fn dnc(deals: &DealReadModel) -> Vec<String> {
    deals.do_not_contact_list(TENANT).unwrap().borrowers
}

/// An encoded envelope with its payload replaced.
fn with_payload(envelope: &[u8], payload: Vec<u8>) -> Vec<u8> {
    EventEnvelope {
        payload,
        ..EventEnvelope::decode(envelope).unwrap()
    }
    .encode_to_vec()
}

/// Bytes no protobuf decoder accepts as an envelope.
fn garbage() -> Vec<u8> {
    vec![0xff, 0xfe, 0xfd, 0x01]
}

const TODAY: (i32, u32, u32) = (2026, 6, 1);

fn today() -> NaiveDate {
    day(TODAY.0, TODAY.1, TODAY.2)
}

fn first_deal() -> Row {
    Row::new(
        TENANT,
        "7c1e9a02-5d38-4b6f-9012-a3e8c5d7b461",
        instant(2026, 4, 18, 10, 5, 12, 0),
    )
    .stage("Early Collections", "stage_negotiation")
    .amount(920_000)
    .due(day(2026, 5, 1))
    .ptp(PtpChannel::Human, day(2026, 6, 5))
    .dnc(false)
}

#[test]
fn deals_of_other_datasets_are_ignored() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut other = first_deal();
    other.deal.dataset = "S1/D02".into();
    let got = apply(&m.deals, &mut Feed::new(), vec![other.envelope()]);
    assert_eq!(
        got,
        BatchOutcome {
            ignored: 1,
            ..BatchOutcome::default()
        }
    );
    assert_eq!(revision(&m.deals, &other), None);
    assert!(m.deals.funnel(TENANT).unwrap().is_empty());
    assert_eq!(m.deals.rejected_count(), 0);
}

#[test]
fn a_first_revision_is_held_and_counted_in_every_read_model() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let row = first_deal();
    assert_eq!(revision(&m.deals, &row), None);
    let got = apply(&m.deals, &mut Feed::new(), vec![row.envelope()]);
    assert_eq!(got, outcome(1, 0, 0));

    assert_eq!(stored(&m.deals, &row), Some(row.clone()));
    assert_eq!(revision(&m.deals, &row), Some(1));
    assert_eq!(
        m.deals.funnel(TENANT).unwrap(),
        [stage("Early Collections", "stage_negotiation", 1, 920_000)]
    );
    assert_eq!(
        bucket_totals(&m.deals, today()),
        BTreeMap::from([(DpdBucket::Days31To60, totals(1, 920_000))])
    );
    let [human, ai] = m.deals.ptp_summary(TENANT, today()).unwrap();
    assert_eq!(
        human,
        PtpTotals {
            open: totals(1, 920_000),
            ..PtpTotals::default()
        }
    );
    assert_eq!(ai, PtpTotals::default());
    assert!(dnc(&m.deals).is_empty());
    // Another tenant, and a tenant whose id extends this one's, see nothing.
    for tenant in ["other", "acme2"] {
        assert!(m.deals.funnel(tenant).unwrap().is_empty());
        assert_eq!(
            m.deals
                .applied_revision(tenant, row.public_id(), row.created_at())
                .unwrap(),
            None
        );
    }
    // The same public_id with another created_at is another deal.
    assert_eq!(
        m.deals
            .applied_revision(TENANT, row.public_id(), instant(2026, 4, 18, 10, 5, 12, 1))
            .unwrap(),
        None
    );
}

#[test]
fn the_same_revision_again_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut feed = Feed::new();
    let row = first_deal();
    // Twice in one batch, then again in a later one, once with other content under the same
    // revision: the first content applied stays.
    assert_eq!(
        apply(&m.deals, &mut feed, vec![row.envelope(), row.envelope()]),
        outcome(1, 1, 0)
    );
    let funnel = m.deals.funnel(TENANT).unwrap();
    let same_revision_other_content = Row {
        deal: row
            .clone()
            .amount(1)
            .stage("Late", "stage_legal")
            .dnc(true)
            .deal,
        ..row.clone()
    };
    assert_eq!(
        apply(
            &m.deals,
            &mut feed,
            vec![row.envelope(), same_revision_other_content.envelope()]
        ),
        outcome(0, 2, 0)
    );
    assert_eq!(stored(&m.deals, &row), Some(row.clone()));
    assert_eq!(m.deals.funnel(TENANT).unwrap(), funnel);
    assert_eq!(
        bucket_totals(&m.deals, today()),
        BTreeMap::from([(DpdBucket::Days31To60, totals(1, 920_000))])
    );
    assert!(dnc(&m.deals).is_empty());
}

#[test]
fn an_older_revision_is_skipped_as_a_duplicate() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut feed = Feed::new();
    let r1 = first_deal();
    let r2 = r1.revise(|r| r.amount(10));
    let r3 = r2.revise(|r| r.amount(30));
    assert_eq!(
        apply(&m.deals, &mut feed, vec![r3.envelope()]),
        outcome(1, 0, 0)
    );
    assert_eq!(
        apply(&m.deals, &mut feed, vec![r1.envelope(), r2.envelope()]),
        outcome(0, 2, 0)
    );
    assert_eq!(stored(&m.deals, &r1), Some(r3.clone()));
    assert_eq!(revision(&m.deals, &r1), Some(3));
    assert_eq!(
        m.deals.funnel(TENANT).unwrap(),
        [stage("Early Collections", "stage_negotiation", 1, 30)]
    );
}

#[test]
fn a_newer_revision_moves_every_aggregate_and_index() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut feed = Feed::new();
    let r1 = first_deal();
    let mut watch = m.deals.watch_do_not_contact(TENANT).unwrap().1;
    apply(&m.deals, &mut feed, vec![r1.envelope()]);
    let r2 = r1.revise(|r| {
        r.stage("Late Collections", "stage_legal")
            .amount(700_000)
            .due(day(2026, 2, 1))
            .broken(PtpChannel::Human, day(2026, 5, 20))
            .ptp(PtpChannel::Ai, day(2026, 5, 25))
            .dnc(true)
    });
    assert_eq!(
        apply(&m.deals, &mut feed, vec![r2.envelope()]),
        outcome(1, 0, 0)
    );

    assert_eq!(stored(&m.deals, &r1), Some(r2.clone()));
    assert_eq!(
        m.deals.funnel(TENANT).unwrap(),
        [stage("Late Collections", "stage_legal", 1, 700_000)]
    );
    assert_eq!(
        bucket_totals(&m.deals, today()),
        BTreeMap::from([(DpdBucket::Over90, totals(1, 700_000))])
    );
    let [human, ai] = m.deals.ptp_summary(TENANT, today()).unwrap();
    assert_eq!(
        human,
        PtpTotals {
            broken: totals(1, 700_000),
            ..PtpTotals::default()
        }
    );
    assert_eq!(
        ai,
        PtpTotals {
            kept: totals(1, 700_000),
            ..PtpTotals::default()
        }
    );
    assert_eq!(dnc(&m.deals), [r1.public_id()]);
    let change = watch.try_next().unwrap().unwrap();
    assert_eq!(
        change,
        DoNotContactChange {
            tenant: TENANT.into(),
            public_id: r1.public_id().into(),
            change: ListChange::Added,
            sequence: 1,
            changed_at: r2.updated_at(),
        }
    );
    assert_eq!(watch.try_next(), Ok(None));

    // The indexes moved too: the old stage, pipeline and bucket list nothing any more.
    let only = |f: DealFilter| listed(&m.deals, &f, today());
    let old_stage = DealFilter {
        deal_stage_id: Some("stage_negotiation".into()),
        ..DealFilter::default()
    };
    assert!(only(old_stage).is_empty());
    let old_pipeline = DealFilter {
        pipeline: Some("Early Collections".into()),
        ..DealFilter::default()
    };
    assert!(only(old_pipeline).is_empty());
    let old_bucket = DealFilter {
        dpd_bucket: Some(DpdBucket::Days31To60),
        ..DealFilter::default()
    };
    assert!(only(old_bucket).is_empty());
    let expected = keys(&[&r1]);
    for filter in [
        DealFilter {
            deal_stage_id: Some("stage_legal".into()),
            ..DealFilter::default()
        },
        DealFilter {
            pipeline: Some("Late Collections".into()),
            deal_stage_id: Some("stage_legal".into()),
            ..DealFilter::default()
        },
        DealFilter {
            dpd_bucket: Some(DpdBucket::Over90),
            ..DealFilter::default()
        },
        DealFilter {
            do_not_contact: Some(true),
            ..DealFilter::default()
        },
    ] {
        assert_eq!(only(filter.clone()), expected, "{filter:?}");
    }

    // Unflagged again: off the list, and the flagged-deal index is empty.
    let r3 = r2.revise(|r| r.dnc(false));
    apply(&m.deals, &mut feed, vec![r3.envelope()]);
    assert!(dnc(&m.deals).is_empty());
    let change = watch.try_next().unwrap().unwrap();
    assert_eq!((change.change, change.sequence), (ListChange::Removed, 2));
    let flagged = DealFilter {
        do_not_contact: Some(true),
        ..DealFilter::default()
    };
    assert!(only(flagged).is_empty());
}

#[test]
fn dpd_buckets_at_their_boundaries() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let as_of = today();
    // (days past due on as_of, bucket)
    let cases = [
        (-5, DpdBucket::Current),
        (0, DpdBucket::Current),
        (1, DpdBucket::Days1To30),
        (30, DpdBucket::Days1To30),
        (31, DpdBucket::Days31To60),
        (60, DpdBucket::Days31To60),
        (61, DpdBucket::Days61To90),
        (90, DpdBucket::Days61To90),
        (91, DpdBucket::Over90),
        (400, DpdBucket::Over90),
    ];
    let mut rows = Vec::new();
    for (i, (dpd, _)) in cases.iter().enumerate() {
        let due = as_of - chrono::Duration::days(*dpd);
        rows.push(
            Row::new(
                TENANT,
                &format!("b-{i:02}"),
                instant(2026, 1, 1, 0, 0, 0, i as i64),
            )
            .amount(10_i64.pow(i as u32 % 6))
            .due(due),
        );
    }
    let undated = Row::new(TENANT, "b-undated", instant(2026, 1, 2, 0, 0, 0, 0)).amount(7);
    let unreadable = {
        let mut r = Row::new(TENANT, "b-unreadable", instant(2026, 1, 3, 0, 0, 0, 0));
        r.deal.dpd_due_date = Some("01/05/2026".into());
        r
    };
    let mut values: Vec<Vec<u8>> = rows.iter().map(Row::envelope).collect();
    values.push(undated.envelope());
    values.push(unreadable.envelope());
    apply(&m.deals, &mut Feed::new(), values);

    for (row, (dpd, bucket)) in rows.iter().zip(cases) {
        assert_eq!(dpd_days(&row.deal, as_of), Some(dpd));
        assert_eq!(DpdBucket::of(Some(dpd)), bucket, "{dpd}");
    }
    assert_eq!(dpd_days(&undated.deal, as_of), None);
    assert_eq!(dpd_days(&unreadable.deal, as_of), None);

    let mut expected: BTreeMap<DpdBucket, DealTotals> = BTreeMap::new();
    let mut members: BTreeMap<DpdBucket, Vec<&Row>> = BTreeMap::new();
    for (row, (_, bucket)) in rows.iter().zip(cases) {
        let t = expected.entry(bucket).or_default();
        t.deals += 1;
        t.amount_minor += i128::from(row.deal.amount_minor.unwrap());
        members.entry(bucket).or_default().push(row);
    }
    expected.insert(DpdBucket::Unknown, totals(2, 7));
    members.insert(DpdBucket::Unknown, vec![&undated, &unreadable]);
    assert_eq!(bucket_totals(&m.deals, as_of), expected);
    for bucket in DpdBucket::ALL {
        let filter = DealFilter {
            dpd_bucket: Some(bucket),
            ..DealFilter::default()
        };
        assert_eq!(
            listed(&m.deals, &filter, as_of),
            keys(&members[&bucket]),
            "{bucket:?}"
        );
    }
    // A day later everything moves one day on: 0 → 1-30, 30 → 31-60, 90 → 90+.
    let later = bucket_totals(&m.deals, as_of.succ_opt().unwrap());
    assert_eq!(later[&DpdBucket::Current].deals, 1);
    assert_eq!(later[&DpdBucket::Days1To30].deals, 2);
    assert_eq!(later[&DpdBucket::Days31To60].deals, 2);
    assert_eq!(later[&DpdBucket::Days61To90].deals, 2);
    assert_eq!(later[&DpdBucket::Over90].deals, 3);
    assert_eq!(later[&DpdBucket::Unknown].deals, 2);
    for (name, bucket) in [
        ("current", DpdBucket::Current),
        ("1-30", DpdBucket::Days1To30),
        ("31-60", DpdBucket::Days31To60),
        ("61-90", DpdBucket::Days61To90),
        ("90+", DpdBucket::Over90),
        ("unknown", DpdBucket::Unknown),
    ] {
        assert_eq!(bucket.name(), name);
        assert_eq!(DpdBucket::from_name(name), Some(bucket));
    }
    assert_eq!(DpdBucket::from_name("91+"), None);
}

#[test]
fn ptp_is_open_until_its_day_passes_then_kept_and_broken_whatever_the_day() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let promise = day(2026, 6, 5);
    let human = Row::new(TENANT, "b-human", instant(2026, 3, 1, 9, 0, 0, 0))
        .amount(100)
        .ptp(PtpChannel::Human, promise);
    // Broken wins over a promise date.
    let broken = Row::new(TENANT, "b-broken", instant(2026, 3, 2, 9, 0, 0, 0))
        .amount(20)
        .ptp(PtpChannel::Human, promise)
        .broken(PtpChannel::Human, day(2026, 6, 6));
    let ai = Row::new(TENANT, "b-ai", instant(2026, 3, 3, 9, 0, 0, 0))
        .amount(3)
        .ptp(PtpChannel::Ai, day(2026, 6, 1));
    // A promise at 23:30 UTC belongs to its UTC day.
    let mut late = Row::new(TENANT, "b-late", instant(2026, 3, 4, 9, 0, 0, 0)).amount(4000);
    late.deal.ptp_date_ai = Some(recoup_proto::to_timestamp(instant(
        2026, 6, 1, 23, 30, 0, 0,
    )));
    let none = Row::new(TENANT, "b-none", instant(2026, 3, 5, 9, 0, 0, 0)).amount(50_000);
    apply(
        &m.deals,
        &mut Feed::new(),
        [&human, &broken, &ai, &late, &none]
            .iter()
            .map(|r| r.envelope())
            .collect(),
    );

    let on = |as_of: NaiveDate| m.deals.ptp_summary(TENANT, as_of).unwrap();
    for as_of in [day(2026, 5, 1), day(2026, 6, 4), promise] {
        assert_eq!(
            ptp_status(&human.deal, PtpChannel::Human, as_of),
            PtpStatus::Open
        );
        assert_eq!(
            on(as_of)[0],
            PtpTotals {
                open: totals(1, 100),
                broken: totals(1, 20),
                ..PtpTotals::default()
            },
            "{as_of}"
        );
    }
    let after = promise.succ_opt().unwrap();
    assert_eq!(
        ptp_status(&human.deal, PtpChannel::Human, after),
        PtpStatus::Kept
    );
    assert_eq!(
        on(after)[0],
        PtpTotals {
            kept: totals(1, 100),
            broken: totals(1, 20),
            ..PtpTotals::default()
        }
    );
    assert_eq!(
        ptp_status(&broken.deal, PtpChannel::Human, day(2026, 1, 1)),
        PtpStatus::Broken
    );
    assert_eq!(
        ptp_status(&none.deal, PtpChannel::Human, promise),
        PtpStatus::None
    );
    assert_eq!(
        ptp_status(&human.deal, PtpChannel::Ai, promise),
        PtpStatus::None
    );

    assert_eq!(
        on(day(2026, 6, 1))[1],
        PtpTotals {
            open: totals(2, 4003),
            ..PtpTotals::default()
        }
    );
    assert_eq!(
        on(day(2026, 6, 2))[1],
        PtpTotals {
            kept: totals(2, 4003),
            ..PtpTotals::default()
        }
    );

    // Marked broken later: the promise moves from its day to the broken totals.
    let now_broken = ai.revise(|r| r.broken(PtpChannel::Ai, day(2026, 6, 2)));
    apply(&m.deals, &mut Feed::new(), vec![now_broken.envelope()]);
    assert_eq!(
        on(day(2026, 6, 1))[1],
        PtpTotals {
            open: totals(1, 4000),
            broken: totals(1, 3),
            ..PtpTotals::default()
        }
    );
}

#[test]
fn a_borrower_is_listed_while_any_of_its_deals_is_flagged() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut feed = Feed::new();
    let (_, mut watch) = m.deals.watch_do_not_contact(TENANT).unwrap();
    let first = Row::new(TENANT, "borrower-1", instant(2026, 1, 5, 8, 0, 0, 0)).dnc(true);
    let second = Row::new(TENANT, "borrower-1", instant(2026, 2, 5, 8, 0, 0, 0));
    let other = Row::new(TENANT, "borrower-2", instant(2026, 1, 5, 8, 0, 0, 0)).dnc(false);
    let mut changes = Vec::new();
    let drain = |watch: &mut projection::deals::DoNotContactWatch| {
        let mut out = Vec::new();
        while let Some(c) = watch.try_next().unwrap() {
            out.push((c.public_id, c.change, c.sequence));
        }
        out
    };

    apply(
        &m.deals,
        &mut feed,
        vec![first.envelope(), second.envelope(), other.envelope()],
    );
    assert_eq!(dnc(&m.deals), ["borrower-1"]);
    changes.extend(drain(&mut watch));

    // The second deal flagged too: no change of the list.
    let second_flagged = second.revise(|r| r.dnc(true));
    apply(&m.deals, &mut feed, vec![second_flagged.envelope()]);
    assert_eq!(dnc(&m.deals), ["borrower-1"]);
    assert!(drain(&mut watch).is_empty());

    // The first unflagged: still listed through the second.
    let first_unflagged = first.revise(|r| r.dnc(false));
    apply(&m.deals, &mut feed, vec![first_unflagged.envelope()]);
    assert_eq!(dnc(&m.deals), ["borrower-1"]);
    assert!(drain(&mut watch).is_empty());

    // The second unflagged (the flag absent counts as not flagged): off the list.
    let mut second_unflagged = second_flagged.revise(|r| r);
    second_unflagged.deal.do_not_contact = None;
    apply(&m.deals, &mut feed, vec![second_unflagged.envelope()]);
    assert!(dnc(&m.deals).is_empty());
    changes.extend(drain(&mut watch));

    // Flagged and unflagged within one batch: the list ends as it began, no change published.
    let flagged_again = second_unflagged.revise(|r| r.dnc(true));
    let unflagged_again = flagged_again.revise(|r| r.dnc(false));
    apply(
        &m.deals,
        &mut feed,
        vec![flagged_again.envelope(), unflagged_again.envelope()],
    );
    assert!(dnc(&m.deals).is_empty());
    assert!(drain(&mut watch).is_empty());

    assert_eq!(
        changes,
        [
            ("borrower-1".to_owned(), ListChange::Added, 1),
            ("borrower-1".to_owned(), ListChange::Removed, 2)
        ]
    );
    assert_eq!(m.deals.do_not_contact_list(TENANT).unwrap().sequence, 2);
    // Other tenants' changes do not reach this tenant's watcher.
    let elsewhere = Row::new("other", "borrower-1", instant(2026, 1, 5, 8, 0, 0, 0)).dnc(true);
    apply(&m.deals, &mut feed, vec![elsewhere.envelope()]);
    assert!(drain(&mut watch).is_empty());
    assert_eq!(
        m.deals.do_not_contact_list("other").unwrap().borrowers,
        ["borrower-1"]
    );
    assert_eq!(m.deals.do_not_contact_list("other").unwrap().sequence, 1);
}

#[test]
fn a_watcher_that_falls_behind_is_told_so() {
    let dir = TempDir::new().unwrap();
    let cases = CaseReadModel::open(dir.path()).unwrap();
    let deals = DealReadModel::open_with_feed_capacity(&cases, 2).unwrap();
    let mut feed = Feed::new();
    let (list, mut watch) = deals.watch_do_not_contact(TENANT).unwrap();
    assert_eq!(list.sequence, 0);
    for i in 0..3 {
        let row = Row::new(TENANT, &format!("b-{i}"), instant(2026, 1, 1, 0, 0, 0, 0)).dnc(true);
        apply(&deals, &mut feed, vec![row.envelope()]);
    }
    assert_eq!(watch.try_next(), Err(WatchError::Lagged));
    // A fresh subscription has it all.
    let (list, mut watch) = deals.watch_do_not_contact(TENANT).unwrap();
    assert_eq!(list.borrowers, ["b-0", "b-1", "b-2"]);
    assert_eq!(list.sequence, 3);
    assert_eq!(watch.try_next(), Ok(None));
}

#[test]
fn unusable_messages_are_rejected_kept_and_do_not_stop_the_batch() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let good = first_deal();
    let mut no_public_id = Row::new(TENANT, "x", instant(2026, 1, 1, 0, 0, 0, 0));
    no_public_id.deal.public_id.clear();
    let no_created_at = {
        let mut deal = Row::new(TENANT, "y", instant(2026, 1, 1, 0, 0, 0, 0)).deal;
        deal.created_at = None;
        with_payload(&good.envelope(), deal.encode_to_vec())
    };
    let undecodable_payload = with_payload(&good.envelope(), vec![0xff, 0xff, 0xff]);
    let values = vec![
        garbage(),
        good.envelope_with("debt_case", DEAL_EVENT_TYPE, 1),
        good.envelope_with(DEAL_AGGREGATE, "CollectionsDealDeleted", 1),
        // The envelope's version says 2, the payload's revision 1.
        good.envelope_with(DEAL_AGGREGATE, DEAL_EVENT_TYPE, 2),
        undecodable_payload,
        no_public_id.envelope(),
        no_created_at,
        good.envelope(),
    ];
    let got = apply(&m.deals, &mut Feed::new(), values);
    assert_eq!(got, outcome(1, 0, 7));
    assert_eq!(m.deals.rejected_count(), 7);
    assert_eq!(stored(&m.deals, &good), Some(good.clone()));
    assert_eq!(
        m.deals.offsets(CLUSTER, DEALS_TOPIC, &[0]).unwrap(),
        [(0, Some(8))]
    );
    assert_eq!(m.deals.funnel(TENANT).unwrap().len(), 1);
}

#[test]
fn offsets_are_recorded_per_cluster_topic_and_partition_with_the_batch() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let rows: Vec<Row> = (0..5)
        .map(|i| Row::new(TENANT, &format!("b-{i}"), instant(2026, 1, 1, 0, 0, 0, 0)))
        .collect();
    let mut feed = Feed::new();
    let messages: Vec<ReceivedEvent> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| feed.on((i % 2) as i32, r.envelope()))
        .collect();
    assert_eq!(
        m.deals.offsets(CLUSTER, DEALS_TOPIC, &[0, 1, 2]).unwrap(),
        [(0, None), (1, None), (2, None)]
    );
    m.deals
        .apply_batch(CLUSTER, DEALS_TOPIC, &messages)
        .unwrap();
    assert_eq!(
        m.deals.offsets(CLUSTER, DEALS_TOPIC, &[0, 1, 2]).unwrap(),
        [(0, Some(3)), (1, Some(2)), (2, None)]
    );
    assert_eq!(
        m.deals.offsets("c2", DEALS_TOPIC, &[0]).unwrap(),
        [(0, None)]
    );
    assert_eq!(
        m.deals
            .offsets(CLUSTER, "recoup.debt-cases.v1", &[0])
            .unwrap(),
        [(0, None)]
    );
    // The case read model's offsets are its own.
    assert_eq!(
        m.cases.offsets(CLUSTER, DEALS_TOPIC, &[0]).unwrap(),
        [(0, None)]
    );
    // Through the Projection trait, as the Projector uses it.
    assert_eq!(
        Projection::offsets(&m.deals, CLUSTER, DEALS_TOPIC, &[1]).unwrap(),
        [(1, Some(2))]
    );
}

#[test]
fn reopening_keeps_every_read_model_and_the_change_sequence() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut feed = Feed::new();
    let a = first_deal().dnc(true);
    let b = Row::new(TENANT, "b-2", instant(2026, 2, 1, 0, 0, 0, 0))
        .stage("Late", "s")
        .amount(5)
        .ptp(PtpChannel::Ai, day(2026, 5, 1));
    apply(
        &m.deals,
        &mut feed,
        vec![a.envelope(), b.envelope(), garbage()],
    );
    let funnel = m.deals.funnel(TENANT).unwrap();
    let buckets = m.deals.dpd_buckets(TENANT, today()).unwrap();
    let ptp = m.deals.ptp_summary(TENANT, today()).unwrap();
    let list = m.deals.do_not_contact_list(TENANT).unwrap();
    assert_eq!(list.sequence, 1);

    let m = reopen(m, dir.path());
    assert_eq!(stored(&m.deals, &a), Some(a.clone()));
    assert_eq!(stored(&m.deals, &b), Some(b.clone()));
    assert_eq!(m.deals.funnel(TENANT).unwrap(), funnel);
    assert_eq!(m.deals.dpd_buckets(TENANT, today()).unwrap(), buckets);
    assert_eq!(m.deals.ptp_summary(TENANT, today()).unwrap(), ptp);
    assert_eq!(m.deals.do_not_contact_list(TENANT).unwrap(), list);
    assert_eq!(m.deals.rejected_count(), 1);
    assert_eq!(
        m.deals.offsets(CLUSTER, DEALS_TOPIC, &[0]).unwrap(),
        [(0, Some(3))]
    );
    assert_eq!(
        listed(
            &m.deals,
            &DealFilter {
                pipeline: Some("Late".into()),
                ..DealFilter::default()
            },
            today()
        ),
        keys(&[&b])
    );
    // Redelivered after the restart: duplicates. The next change continues the sequence.
    let (_, mut watch) = m.deals.watch_do_not_contact(TENANT).unwrap();
    assert_eq!(
        apply(&m.deals, &mut Feed::new(), vec![a.envelope(), b.envelope()]),
        outcome(0, 2, 0)
    );
    apply(
        &m.deals,
        &mut feed,
        vec![a.revise(|r| r.dnc(false)).envelope()],
    );
    let change = watch.try_next().unwrap().unwrap();
    assert_eq!((change.change, change.sequence), (ListChange::Removed, 2));
}

#[test]
fn listings_page_through_every_match_once_with_any_page_size() {
    let dir = TempDir::new().unwrap();
    let m = open(dir.path());
    let mut rows = Vec::new();
    for i in 0..23_i64 {
        let pipeline = ["P1", "P2", ""][i as usize % 3];
        let stage = ["s1", "s2"][i as usize % 2];
        let mut row = Row::new(
            TENANT,
            &format!("borrower-{}", i % 7),
            instant(2026, 1, 1, 0, 0, 0, i),
        )
        .stage(pipeline, stage)
        .amount(i)
        .dnc(i % 4 == 0);
        if i % 5 != 0 {
            row = row.due(today() - chrono::Duration::days(i * 7 - 40));
        }
        rows.push(row);
    }
    apply(
        &m.deals,
        &mut Feed::new(),
        rows.iter().map(Row::envelope).collect(),
    );
    let filters = [
        DealFilter::default(),
        DealFilter {
            pipeline: Some("P1".into()),
            ..DealFilter::default()
        },
        DealFilter {
            pipeline: Some(String::new()),
            ..DealFilter::default()
        },
        DealFilter {
            deal_stage_id: Some("s2".into()),
            ..DealFilter::default()
        },
        DealFilter {
            pipeline: Some("P2".into()),
            deal_stage_id: Some("s1".into()),
            ..DealFilter::default()
        },
        DealFilter {
            dpd_bucket: Some(DpdBucket::Over90),
            ..DealFilter::default()
        },
        DealFilter {
            dpd_bucket: Some(DpdBucket::Unknown),
            do_not_contact: Some(false),
            ..DealFilter::default()
        },
        DealFilter {
            do_not_contact: Some(true),
            ..DealFilter::default()
        },
        DealFilter {
            deal_stage_id: Some("s1".into()),
            dpd_bucket: Some(DpdBucket::Current),
            do_not_contact: Some(true),
            ..DealFilter::default()
        },
        DealFilter {
            deal_stage_id: Some("nowhere".into()),
            ..DealFilter::default()
        },
    ];
    for filter in &filters {
        let expected: BTreeSet<_> = rows
            .iter()
            .filter(|r| {
                let d = &r.deal;
                filter
                    .pipeline
                    .as_ref()
                    .is_none_or(|p| Some(p) == d.pipeline.as_ref())
                    && filter
                        .deal_stage_id
                        .as_ref()
                        .is_none_or(|s| Some(s) == d.deal_stage_id.as_ref())
                    && filter
                        .dpd_bucket
                        .is_none_or(|b| b == DpdBucket::of(dpd_days(d, today())))
                    && filter
                        .do_not_contact
                        .is_none_or(|f| f == (d.do_not_contact == Some(true)))
            })
            .map(|r| r.key())
            .collect();
        let whole = list_all(&m.deals, filter, today(), 1000);
        for page_size in [1, 2, 3, 7] {
            assert_eq!(
                list_all(&m.deals, filter, today(), page_size),
                whole,
                "{filter:?}, pages of {page_size}"
            );
        }
        assert_eq!(
            whole.len(),
            expected.len(),
            "{filter:?}: a deal listed twice"
        );
        assert_eq!(
            whole.into_iter().collect::<BTreeSet<_>>(),
            expected,
            "{filter:?}"
        );
    }
    // A position from one listing does not fit another.
    let page = m
        .deals
        .list_deals(TENANT, &filters[1], today(), None, 1)
        .unwrap();
    let position = page.next.unwrap();
    assert!(
        m.deals
            .list_deals(TENANT, &filters[7], today(), Some(&position), 1)
            .is_err()
    );
    assert!(
        m.deals
            .list_deals("other", &filters[1], today(), Some(&position), 1)
            .is_err()
    );
}

// ---- a from-scratch recomputation of every read model, over random revision sequences ----

const PIPELINES: [Option<&str>; 3] = [None, Some("Early"), Some("Late")];
const STAGES: [Option<&str>; 3] = [None, Some("s1"), Some("s2")];
/// Row keys: borrower A has two deals.
const ROW_KEYS: [(&str, i64); 4] = [("A", 0), ("A", 1), ("B", 0), ("C", 0)];

fn base() -> NaiveDate {
    day(2026, 6, 1)
}

#[derive(Debug, Clone)]
struct Content {
    pipeline: usize,
    stage: usize,
    amount: Option<i64>,
    due: Option<i64>,
    /// (0 none, 1 promised, 2 broken; day offset) per channel.
    ptp: [(u8, i64); 2],
    dnc: Option<bool>,
}

fn content() -> impl Strategy<Value = Content> {
    (
        0..3usize,
        0..3usize,
        proptest::option::of(-1_000i64..1_000_000),
        proptest::option::of(-130i64..130),
        (0..3u8, -10i64..10),
        (0..3u8, -10i64..10),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(pipeline, stage, amount, due, human, ai, dnc)| Content {
            pipeline,
            stage,
            amount,
            due,
            ptp: [human, ai],
            dnc,
        })
}

fn row_of(key: usize, revision: u64, c: &Content) -> Row {
    let (borrower, created) = ROW_KEYS[key];
    let mut row = Row::new(TENANT, borrower, instant(2026, 1, 1, 0, 0, 0, created));
    for _ in 1..revision {
        row = row.revise(|r| r);
    }
    row.deal.pipeline = PIPELINES[c.pipeline].map(Into::into);
    row.deal.deal_stage_id = STAGES[c.stage].map(Into::into);
    row.deal.amount_minor = c.amount;
    if let Some(offset) = c.due {
        row = row.due(base() + chrono::Duration::days(offset));
    }
    for (channel, (kind, offset)) in PtpChannel::ALL.into_iter().zip(c.ptp) {
        let when = base() + chrono::Duration::days(offset);
        row = match kind {
            1 => row.ptp(channel, when),
            2 => row.ptp(channel, when).broken(channel, when),
            _ => row,
        };
    }
    row.deal.do_not_contact = c.dnc;
    row
}

/// What every read model should say, from the latest deals alone.
fn check_against_recomputation(
    deals: &DealReadModel,
    latest: &BTreeMap<usize, Row>,
    followed: &mut BTreeSet<String>,
    watch: &mut projection::deals::DoNotContactWatch,
    sequence: &mut u64,
) {
    for row in latest.values() {
        assert_eq!(stored(deals, row).as_ref(), Some(row));
    }
    let mut funnel: BTreeMap<(String, String), DealTotals> = BTreeMap::new();
    for row in latest.values() {
        let t = funnel
            .entry((
                row.deal.pipeline.clone().unwrap_or_default(),
                row.deal.deal_stage_id.clone().unwrap_or_default(),
            ))
            .or_default();
        t.deals += 1;
        t.amount_minor += i128::from(row.deal.amount_minor.unwrap_or(0));
    }
    let funnel: Vec<FunnelStage> = funnel
        .into_iter()
        .map(|((pipeline, deal_stage_id), totals)| FunnelStage {
            pipeline,
            deal_stage_id,
            totals,
        })
        .collect();
    assert_eq!(deals.funnel(TENANT).unwrap(), funnel);

    for offset in [-100, -31, 0, 1, 45, 200] {
        let as_of = base() + chrono::Duration::days(offset);
        let mut buckets = [DealTotals::default(); 6];
        let mut ptp = [PtpTotals::default(); 2];
        for row in latest.values() {
            let amount = row.deal.amount_minor.unwrap_or(0);
            let bucket = DpdBucket::of(dpd_days(&row.deal, as_of));
            let slot = DpdBucket::ALL.iter().position(|b| *b == bucket).unwrap();
            buckets[slot].deals += 1;
            buckets[slot].amount_minor += i128::from(amount);
            for (i, channel) in PtpChannel::ALL.into_iter().enumerate() {
                let t = match ptp_status(&row.deal, channel, as_of) {
                    PtpStatus::None => continue,
                    PtpStatus::Open => &mut ptp[i].open,
                    PtpStatus::Kept => &mut ptp[i].kept,
                    PtpStatus::Broken => &mut ptp[i].broken,
                };
                t.deals += 1;
                t.amount_minor += i128::from(amount);
            }
        }
        assert_eq!(
            deals.dpd_buckets(TENANT, as_of).unwrap(),
            buckets,
            "{as_of}"
        );
        assert_eq!(deals.ptp_summary(TENANT, as_of).unwrap(), ptp, "{as_of}");
        let filter = DealFilter {
            dpd_bucket: Some(DpdBucket::Days1To30),
            ..DealFilter::default()
        };
        let expected: BTreeSet<_> = latest
            .values()
            .filter(|r| DpdBucket::of(dpd_days(&r.deal, as_of)) == DpdBucket::Days1To30)
            .map(Row::key)
            .collect();
        assert_eq!(listed(deals, &filter, as_of), expected);
    }

    let flagged: BTreeSet<String> = latest
        .values()
        .filter(|r| r.deal.do_not_contact == Some(true))
        .map(|r| r.deal.public_id.clone())
        .collect();
    let list = deals.do_not_contact_list(TENANT).unwrap();
    assert_eq!(
        list.borrowers.iter().cloned().collect::<BTreeSet<_>>(),
        flagged
    );
    // Following the changes from an empty list gives the same list, one sequence at a time.
    while let Some(change) = watch.try_next().unwrap() {
        *sequence += 1;
        assert_eq!(change.sequence, *sequence);
        match change.change {
            ListChange::Added => assert!(followed.insert(change.public_id)),
            ListChange::Removed => assert!(followed.remove(&change.public_id)),
        }
    }
    assert_eq!(*followed, flagged);
    assert_eq!(list.sequence, *sequence);

    for filter in [
        DealFilter {
            pipeline: Some("Early".into()),
            ..DealFilter::default()
        },
        DealFilter {
            deal_stage_id: Some("s1".into()),
            ..DealFilter::default()
        },
        DealFilter {
            do_not_contact: Some(true),
            ..DealFilter::default()
        },
    ] {
        let expected: BTreeSet<_> = latest
            .values()
            .filter(|r| {
                filter
                    .pipeline
                    .as_ref()
                    .is_none_or(|p| Some(p) == r.deal.pipeline.as_ref())
                    && filter
                        .deal_stage_id
                        .as_ref()
                        .is_none_or(|s| Some(s) == r.deal.deal_stage_id.as_ref())
                    && filter
                        .do_not_contact
                        .is_none_or(|f| f == (r.deal.do_not_contact == Some(true)))
            })
            .map(Row::key)
            .collect();
        assert_eq!(listed(deals, &filter, base()), expected, "{filter:?}");
        let paged: Vec<_> = list_all(deals, &filter, base(), 1);
        assert_eq!(paged.into_iter().collect::<BTreeSet<_>>(), expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_read_model_equals_a_recomputation_from_the_latest_deals(
        revisions in proptest::collection::vec(proptest::collection::vec(content(), 1..5), 4),
        deliveries in proptest::collection::vec((0..4usize, 0..5usize), 1..40),
        batch_sizes in proptest::collection::vec(1..8usize, 1..40),
    ) {
        let dir = TempDir::new().unwrap();
        let m = open(dir.path());
        let (_, mut watch) = m.deals.watch_do_not_contact(TENANT).unwrap();
        // Another tenant's deals are never counted here.
        let foreign = row_of(0, 1, &revisions[0][0]);
        let foreign = Row { tenant: "other".into(), ..foreign };
        apply(&m.deals, &mut Feed::new(), vec![foreign.envelope()]);

        let rows: Vec<Vec<Row>> = revisions
            .iter()
            .enumerate()
            .map(|(key, contents)| {
                contents
                    .iter()
                    .enumerate()
                    .map(|(i, c)| row_of(key, i as u64 + 1, c))
                    .collect()
            })
            .collect();
        let messages: Vec<&Row> = deliveries
            .iter()
            .map(|(key, i)| &rows[*key][i % rows[*key].len()])
            .collect();
        let mut latest: BTreeMap<usize, Row> = BTreeMap::new();
        let mut followed = BTreeSet::new();
        let mut sequence = 0;
        let mut feed = Feed::new();
        let mut rest = messages.as_slice();
        let mut sizes = batch_sizes.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).min(rest.len());
            let (batch, tail) = rest.split_at(size);
            rest = tail;
            let mut applied = 0;
            for row in batch {
                let key = ROW_KEYS
                    .iter()
                    .position(|(b, c)| {
                        row.key() == ((*b).to_owned(), instant(2026, 1, 1, 0, 0, 0, *c))
                    })
                    .unwrap();
                if latest.get(&key).is_none_or(|l| l.revision() < row.revision()) {
                    latest.insert(key, (*row).clone());
                    applied += 1;
                }
            }
            let got = apply(&m.deals, &mut feed, batch.iter().map(|r| r.envelope()).collect());
            prop_assert_eq!(got, outcome(applied, batch.len() - applied, 0));
            check_against_recomputation(&m.deals, &latest, &mut followed, &mut watch, &mut sequence);
        }
    }
}
