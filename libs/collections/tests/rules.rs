//! One test per collections rule.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, Utc};
use collections::dpd::{dpd_days, parse_due_date};
use collections::{DealKey, DpdBucket, PtpFact, PtpStatus};

fn day(text: &str) -> NaiveDate {
    NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn dpd_is_the_as_of_day_less_the_due_day() {
    let due = Some(day("2026-03-01"));
    assert_eq!(dpd_days(due, day("2026-03-01")), Some(0));
    assert_eq!(dpd_days(due, day("2026-03-31")), Some(30));
    assert_eq!(dpd_days(due, day("2026-02-20")), Some(-9));
    assert_eq!(dpd_days(None, day("2026-02-20")), None);
}

#[test]
fn buckets_split_at_0_30_60_and_90_days() {
    let cases = [
        (None, DpdBucket::Unknown),
        (Some(-5), DpdBucket::Current),
        (Some(0), DpdBucket::Current),
        (Some(1), DpdBucket::Days1To30),
        (Some(30), DpdBucket::Days1To30),
        (Some(31), DpdBucket::Days31To60),
        (Some(60), DpdBucket::Days31To60),
        (Some(61), DpdBucket::Days61To90),
        (Some(90), DpdBucket::Days61To90),
        (Some(91), DpdBucket::Over90),
    ];
    for (dpd, bucket) in cases {
        assert_eq!(DpdBucket::of(dpd), bucket, "{dpd:?}");
        if let (Some(d), Some((low, high))) = (dpd, bucket.dpd_bounds()) {
            assert!(low.is_none_or(|l| d >= l) && high.is_none_or(|h| d <= h));
        }
    }
    for (i, bucket) in DpdBucket::ALL.into_iter().enumerate() {
        assert_eq!(bucket.index(), i);
        assert_eq!(DpdBucket::from_name(bucket.name()), Some(bucket));
    }
    assert_eq!(DpdBucket::from_name("31-61"), None);
}

#[test]
fn due_dates_are_iso_days() {
    assert_eq!(parse_due_date("2026-03-01"), Some(day("2026-03-01")));
    assert_eq!(parse_due_date("01/03/2026"), None);
}

#[test]
fn a_promise_is_open_through_its_day_then_kept_unless_marked_broken() {
    let promised = PtpFact::of(Some(at("2026-05-10T18:00:00Z")), false);
    assert_eq!(promised.status(day("2026-05-09")), PtpStatus::Open);
    assert_eq!(promised.status(day("2026-05-10")), PtpStatus::Open);
    assert_eq!(promised.status(day("2026-05-11")), PtpStatus::Kept);
    let broken = PtpFact::of(Some(at("2026-05-10T18:00:00Z")), true);
    assert_eq!(broken, PtpFact::Broken);
    assert_eq!(broken.status(day("2026-05-01")), PtpStatus::Broken);
    assert_eq!(
        PtpFact::of(None, false).status(day("2026-05-01")),
        PtpStatus::None
    );
}

#[test]
fn the_d16_row_key_is_public_id_and_created_at_to_the_microsecond() {
    let key = DealKey::new("b|x-1", at("2026-01-02T03:04:05.123456Z"));
    assert_eq!(key.row_key(), "b|x-1|2026-01-02T03:04:05.123456Z");
    // The instant is the last field: a `|` inside public_id survives.
    assert_eq!(DealKey::parse(&key.row_key()), Some(key));
    assert_eq!(DealKey::parse("no-instant"), None);
    assert_eq!(DealKey::parse("a|yesterday"), None);
}
