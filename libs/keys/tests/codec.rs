//! Every part reads back as written, and keys sort as their values do.

#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, Utc};
use proptest::prelude::*;
use recoup_keys::{Key, KeyReader, prefix_end};

fn instant(seconds: i64, nanos: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(seconds, nanos).unwrap()
}

proptest! {
    #[test]
    fn every_part_reads_back(
        text in ".{0,40}",
        small in any::<u8>(),
        n32 in any::<u32>(),
        n64 in any::<u64>(),
        i in any::<i64>(),
        j in any::<i32>(),
        wide in any::<u128>(),
        day in -500_000i32..3_000_000,
        seconds in -60_000_000_000i64..60_000_000_000,
        nanos in 0u32..1_000_000_000,
    ) {
        let date = NaiveDate::from_num_days_from_ce_opt(day).unwrap();
        let at = instant(seconds, nanos);
        let key = Key::new(b'z').str(&text).u8(small).u32(n32).u64(n64).i64(i).i32(j)
            .u128(wide).day(date).instant(at).str("");
        let mut r = KeyReader::new(key.as_bytes(), b'z').unwrap();
        prop_assert_eq!(r.str(), Some(text.as_str()));
        prop_assert_eq!(r.u8(), Some(small));
        prop_assert_eq!(r.u32(), Some(n32));
        prop_assert_eq!(r.u64(), Some(n64));
        prop_assert_eq!(r.i64(), Some(i));
        prop_assert_eq!(r.i32(), Some(j));
        prop_assert_eq!(r.u128(), Some(wide));
        prop_assert_eq!(r.day(), Some(date));
        prop_assert_eq!(r.instant(), Some(at));
        prop_assert_eq!(r.str(), Some(""));
        prop_assert!(r.is_done());
        prop_assert!(KeyReader::new(key.as_bytes(), b'y').is_none());
    }

    #[test]
    fn signed_numbers_days_and_instants_sort_as_their_values(
        a in any::<i64>(), b in any::<i64>(),
        x in -500_000i32..3_000_000, y in -500_000i32..3_000_000,
        s in -60_000_000_000i64..60_000_000_000, t in -60_000_000_000i64..60_000_000_000,
        n in 0u32..1_000_000_000, m in 0u32..1_000_000_000,
    ) {
        let key = |v: i64| Key::new(b'k').i64(v);
        prop_assert_eq!(a.cmp(&b), key(a).cmp(&key(b)));
        let day = |d| Key::new(b'k').day(NaiveDate::from_num_days_from_ce_opt(d).unwrap());
        prop_assert_eq!(x.cmp(&y), day(x).cmp(&day(y)));
        let at = |s, n| Key::new(b'k').instant(instant(s, n));
        prop_assert_eq!((s, n).cmp(&(t, m)), at(s, n).cmp(&at(t, m)));
    }

    #[test]
    fn a_string_part_is_a_whole_field(a in "[a-c\\x00]{0,6}", b in "[a-c\\x00]{0,6}", c in "[a-c]{0,3}") {
        // A key with `a` then `c` starts with the key of `b` only when a == b: prefixes name
        // whole fields, whatever bytes the text holds.
        let whole = Key::new(b'k').str(&a).str(&c);
        let prefix = Key::new(b'k').str(&b);
        prop_assert_eq!(whole.as_bytes().starts_with(prefix.as_bytes()), a == b);
    }
}

#[test]
fn the_prefix_end_is_above_every_key_of_the_prefix_and_below_the_next() {
    let prefix = Key::new(b'd').str("acme");
    let end = prefix.prefix_end();
    let inside = Key::new(b'd').str("acme").str("\u{10FFFF}").u64(u64::MAX);
    assert!(inside.as_bytes() < end.as_slice());
    assert!(Key::new(b'd').str("acmf").as_bytes() >= end.as_slice());
    assert!(Key::new(b'e').as_bytes() >= end.as_slice());
    assert_eq!(prefix_end(&[1, 0xFF, 0xFF]), vec![2]);
    assert_eq!(prefix_end(&[0xFF]), vec![0xFF, 0xFF]);
}

#[test]
fn keys_ending_in_a_last_string_sort_by_its_bytes() {
    let mut ids = ["m-10", "b", "k0", "m", "m-1", "z", "a", "b7"];
    let mut keys: Vec<Key> = ids
        .iter()
        .map(|id| Key::new(b'c').str("acme").last_str(id))
        .collect();
    keys.sort();
    ids.sort();
    let read: Vec<&str> = keys
        .iter()
        .map(|k| {
            let mut r = KeyReader::new(k.as_bytes(), b'c').unwrap();
            assert_eq!(r.str(), Some("acme"));
            r.last_str().unwrap()
        })
        .collect();
    assert_eq!(read, ids);
}

#[test]
fn a_short_or_foreign_key_reads_as_none() {
    assert!(KeyReader::new(&[], b'k').is_none());
    let mut r = KeyReader::tail(&[0, 0, 0, 9, b'a']);
    assert_eq!(r.str(), None);
    let mut r = KeyReader::tail(&[0, 0, 0, 1, 0xFF]);
    assert_eq!(r.str(), None, "not UTF-8");
    assert_eq!(KeyReader::tail(&[1, 2, 3]).u64(), None);
}
