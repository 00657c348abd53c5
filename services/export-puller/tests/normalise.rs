//! D16 rows through the normaliser: the seed's sample, every quirk of docs/domain.md §1, and every
//! reason a row is refused.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone, Utc};
use export_puller::dataset::d16;
use export_puller::normalise::{Normalised, fingerprint, normalise, parse_dmy, rule};
use recoup_proto::from_timestamp;
use serde_json::{Value, json};

const SEED: &str = include_str!("data/cleargrid-export-d16-collections-cases.txt");

fn seed_sample() -> Value {
    let sample = &SEED[SEED.find("Sample row").unwrap()..];
    serde_json::from_str(&sample[sample.find('{').unwrap()..=sample.find('}').unwrap()]).unwrap()
}

/// The sample as the export emits it today: `dpd_due_date` under its wrong name.
fn emitted() -> Value {
    let mut row = seed_sample();
    let object = row.as_object_mut().unwrap();
    let due = object.remove("dpd_due_date").unwrap();
    object.insert("dpd_due_date_timestamp".into(), due);
    row
}

fn errors_of(row: &Value) -> Vec<(String, &'static str)> {
    normalise(&d16(), row)
        .unwrap_err()
        .into_iter()
        .map(|e| (e.field, e.rule))
        .collect()
}

#[test]
fn the_seed_sample_normalises_to_the_typed_event() {
    let row = normalise(&d16(), &emitted()).unwrap();
    assert_eq!(
        row.key,
        "7c1e9a02-5d38-4b6f-9012-a3e8c5d7b461|2026-04-18T10:05:12.000000Z"
    );
    assert_eq!(row.partition, "7c1e9a02-5d38-4b6f-9012-a3e8c5d7b461");
    assert_eq!(
        row.cursor,
        Utc.with_ymd_and_hms(2026, 5, 31, 13, 48, 30).unwrap()
    );
    assert!(row.extra.is_empty());
    let deal = row.to_deal(&d16(), "lender-1");
    assert_eq!(deal.dataset, "S3/D16");
    assert_eq!(deal.lender_public_id, "lender-1");
    assert_eq!(deal.public_id, "7c1e9a02-5d38-4b6f-9012-a3e8c5d7b461");
    assert_eq!(deal.deal_stage_id.as_deref(), Some("stage_negotiation"));
    assert_eq!(deal.pipeline.as_deref(), Some("Early Collections"));
    assert_eq!(deal.comms_pipeline.as_deref(), Some("Standard Outreach"));
    assert_eq!(deal.amount_minor, Some(920_000));
    assert_eq!(deal.assigned_user_name.as_deref(), Some("Mariam Al-Shehri"));
    // DD/MM/YYYY: the first of May, not the fifth of January.
    assert_eq!(deal.dpd_due_date.as_deref(), Some("2026-05-01"));
    assert_eq!(deal.last_due_date.as_deref(), Some("2026-06-01"));
    assert_eq!(
        from_timestamp(&deal.ptp_date_human.unwrap()),
        Some(Utc.with_ymd_and_hms(2026, 6, 5, 0, 0, 0).unwrap())
    );
    // Nulls stay absent.
    assert_eq!(deal.ptp_date_ai, None);
    assert_eq!(deal.broken_ptp_date_human, None);
    assert_eq!(deal.broken_ptp_date_ai, None);
    assert_eq!(deal.has_reached_rpc_or_beyond, Some(true));
    assert_eq!(deal.do_not_contact, Some(false));
    assert_eq!(
        from_timestamp(&deal.created_at.unwrap()),
        Some(Utc.with_ymd_and_hms(2026, 4, 18, 10, 5, 12).unwrap())
    );
}

#[test]
fn old_and_new_names_give_the_same_row() {
    let seed = normalise(&d16(), &seed_sample()).unwrap();
    assert_eq!(normalise(&d16(), &emitted()).unwrap(), seed);
    let mut legacy = emitted();
    let object = legacy.as_object_mut().unwrap();
    let id = object.remove("public_id").unwrap();
    object.insert("case_public_id".into(), id);
    assert_eq!(normalise(&d16(), &legacy).unwrap(), seed);
    // Both names with the same value, or one of them null: no conflict.
    let mut both = emitted();
    both["dpd_due_date"] = json!("01/05/2026");
    both["case_public_id"] = Value::Null;
    assert_eq!(normalise(&d16(), &both).unwrap(), seed);
}

#[test]
fn both_names_with_different_values_conflict() {
    let mut both = emitted();
    both["dpd_due_date"] = json!("02/05/2026");
    let errors = errors_of(&both);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1, rule::CONFLICT);
}

#[test]
fn unknown_fields_are_kept_as_json_text() {
    let mut row = emitted();
    row["branch"] = json!({"id": 7});
    row["score"] = json!(0.5);
    let row = normalise(&d16(), &row).unwrap();
    assert_eq!(
        row.extra.get("branch").map(String::as_str),
        Some(r#"{"id":7}"#)
    );
    assert_eq!(row.extra.get("score").map(String::as_str), Some("0.5"));
    let deal = row.to_deal(&d16(), "l");
    assert_eq!(deal.extra.len(), 2);
}

#[test]
fn amounts_stay_whole_minor_units() {
    let mut row = emitted();
    row["amount"] = json!(920000.0);
    assert_eq!(
        *normalise(&d16(), &row)
            .unwrap()
            .value(&d16(), "amount")
            .unwrap(),
        Normalised::Minor(920_000)
    );
    row["amount"] = json!(i64::MAX);
    assert_eq!(
        *normalise(&d16(), &row)
            .unwrap()
            .value(&d16(), "amount")
            .unwrap(),
        Normalised::Minor(i64::MAX)
    );
    for bad in [
        json!(12.5),
        json!("920000"),
        json!("12.50"),
        json!(1e300),
        json!(true),
    ] {
        row["amount"] = bad.clone();
        assert_eq!(
            errors_of(&row),
            vec![("amount".to_owned(), rule::INTEGER)],
            "{bad}"
        );
    }
}

#[test]
fn dates_are_day_month_year() {
    assert_eq!(
        parse_dmy("31/12/2026"),
        NaiveDate::from_ymd_opt(2026, 12, 31)
    );
    assert_eq!(
        parse_dmy("29/02/2024"),
        NaiveDate::from_ymd_opt(2024, 2, 29)
    );
    for bad in [
        "31/02/2026",
        "2026-05-01",
        "1/5/2026",
        "01-05-2026",
        "01/13/2026",
        "",
        "01/05/26",
    ] {
        assert_eq!(parse_dmy(bad), None, "{bad}");
        let mut row = emitted();
        row["last_due_date"] = json!(bad);
        assert_eq!(
            errors_of(&row),
            vec![("last_due_date".to_owned(), rule::DATE_FORMAT)]
        );
    }
    // The error names the field as exported.
    let mut row = emitted();
    row["dpd_due_date_timestamp"] = json!("2026-05-01");
    let error = &normalise(&d16(), &row).unwrap_err()[0];
    assert_eq!(error.field, "dpd_due_date_timestamp");
    assert_eq!(error.value, "\"2026-05-01\"");
    assert!(error.message.contains("DD/MM/YYYY"), "{}", error.message);
}

#[test]
fn instants_accept_iso_8601_forms() {
    for (text, expected) in [
        ("2026-05-31T13:48:30.000Z", (13, 48, 30)),
        ("2026-05-31T13:48:30Z", (13, 48, 30)),
        ("2026-05-31T17:48:30+04:00", (13, 48, 30)),
        ("2026-05-31T13:48:30.000", (13, 48, 30)),
    ] {
        let mut row = emitted();
        row["updated_at"] = json!(text);
        let (h, m, s) = expected;
        assert_eq!(
            normalise(&d16(), &row).unwrap().cursor,
            Utc.with_ymd_and_hms(2026, 5, 31, h, m, s).unwrap(),
            "{text}"
        );
    }
    // Kept to the microsecond, as the row key names it.
    let mut row = emitted();
    row["created_at"] = json!("2026-04-18T10:05:12.123456789Z");
    let normalised = normalise(&d16(), &row).unwrap();
    assert!(
        normalised.key.ends_with("|2026-04-18T10:05:12.123456Z"),
        "{}",
        normalised.key
    );
    let deal = normalised.to_deal(&d16(), "l");
    assert_eq!(deal.created_at.unwrap().nanos, 123_456_000);

    let mut row = emitted();
    row["ptp_date_ai"] = json!("next tuesday");
    row["updated_at"] = json!(1_748_699_310);
    let errors = errors_of(&row);
    assert_eq!(
        errors,
        vec![
            ("ptp_date_ai".to_owned(), rule::TIMESTAMP_FORMAT),
            ("updated_at".to_owned(), rule::TIMESTAMP_FORMAT),
        ]
    );
}

#[test]
fn key_and_cursor_fields_are_required_and_every_error_is_listed() {
    let mut row = emitted();
    let object = row.as_object_mut().unwrap();
    object.remove("public_id");
    object.insert("created_at".into(), Value::Null);
    object.insert("do_not_contact".into(), json!("yes"));
    object.insert("pipeline".into(), json!(3));
    let errors = errors_of(&row);
    assert_eq!(
        errors,
        vec![
            ("public_id".to_owned(), rule::REQUIRED),
            ("pipeline".to_owned(), rule::STRING),
            ("do_not_contact".to_owned(), rule::BOOLEAN),
            ("created_at".to_owned(), rule::REQUIRED),
        ]
    );
    assert_eq!(
        errors_of(&json!([1, 2])),
        vec![(String::new(), rule::OBJECT)]
    );
}

#[test]
fn a_configured_datasets_own_fields_travel_as_extra_json_text() {
    use export_puller::dataset::{Field, FieldKind};
    let mut d02 = d16();
    d02.code = "D02".to_owned();
    d02.fields.push(Field {
        name: "channel".to_owned(),
        kind: FieldKind::String,
        required: false,
    });
    d02.fields.push(Field {
        name: "paid_on".to_owned(),
        kind: FieldKind::DateDmy,
        required: false,
    });
    d02.fields.push(Field {
        name: "fee".to_owned(),
        kind: FieldKind::MinorAmount,
        required: false,
    });
    assert_eq!(d02.check(), Ok(()));
    let mut raw = emitted();
    let object = raw.as_object_mut().unwrap();
    object.insert("channel".into(), json!("sms \"late\""));
    object.insert("paid_on".into(), json!("02/06/2026"));
    object.insert("fee".into(), json!(150));
    object.insert("unknown".into(), json!([1, 2]));
    let deal = normalise(&d02, &raw).unwrap().to_deal(&d02, "lender-1");
    assert_eq!(deal.dataset, "S3/D02");
    let extra: Vec<(&str, &str)> = deal
        .extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        extra,
        [
            ("channel", r#""sms \"late\"""#),
            ("fee", "150"),
            ("paid_on", r#""2026-06-02""#),
            ("unknown", "[1,2]"),
        ]
    );
    // D16's own fields never land in extra.
    let d16_deal = normalise(&d16(), &emitted()).unwrap().to_deal(&d16(), "l");
    assert!(d16_deal.extra.is_empty(), "{:?}", d16_deal.extra);
}

#[test]
fn an_overlong_row_key_is_refused() {
    let mut raw = emitted();
    raw["public_id"] = json!("x".repeat(2000));
    assert_eq!(
        errors_of(&raw),
        [("public_id,created_at".to_owned(), rule::TOO_LONG)]
    );
}

#[test]
fn the_fingerprint_ignores_revision_and_fetch_time_only() {
    let deal = normalise(&d16(), &emitted()).unwrap().to_deal(&d16(), "l");
    let mut published = deal.clone();
    published.revision = 3;
    published.fetched_at = Some(recoup_proto::to_timestamp(Utc::now()));
    assert_eq!(fingerprint(&deal), fingerprint(&published));
    let mut changed = deal.clone();
    changed.deal_stage_id = Some("stage_paid".into());
    assert_ne!(fingerprint(&deal), fingerprint(&changed));
    let mut cleared = deal.clone();
    cleared.amount_minor = Some(0);
    let mut absent = deal;
    absent.amount_minor = None;
    assert_ne!(
        fingerprint(&cleared),
        fingerprint(&absent),
        "zero is not absent"
    );
}

proptest::proptest! {
    /// Any JSON value in any field: an error or a row, never a panic.
    #[test]
    fn any_value_in_any_field_never_panics(
        field in proptest::sample::select(vec![
            "public_id", "amount", "dpd_due_date_timestamp", "last_due_date", "created_at",
            "updated_at", "do_not_contact", "ptp_date_ai", "case_public_id", "other",
        ]),
        text in "\\PC{0,40}",
        number in proptest::num::f64::ANY,
        pick in 0u8..6,
    ) {
        let value = match pick {
            0 => json!(text),
            1 => json!(number),
            2 => Value::Null,
            3 => json!([text]),
            4 => json!({"k": text}),
            _ => json!(number as i64),
        };
        let mut row = emitted();
        row[field] = value;
        let _ = normalise(&d16(), &row);
    }

    /// Every real day written DD/MM/YYYY reads back as that day.
    #[test]
    fn every_day_reads_back(days in 0i64..200_000) {
        let day = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + chrono::Days::new(days as u64);
        proptest::prop_assert_eq!(parse_dmy(&day.format("%d/%m/%Y").to_string()), Some(day));
    }
}

fn sim_config(rows: usize) -> export_sim::SimConfig {
    export_sim::SimConfig {
        rows,
        ..export_sim::SimConfig::default()
    }
}

/// The simulated vendor writes rows this normaliser takes, and malformed ones it refuses.
#[test]
fn simulated_malformed_rows_are_refused_by_the_normaliser_and_the_rest_accepted() {
    let sim = export_sim::Simulator::new(export_sim::SimConfig {
        malformed_share: 0.1,
        ..sim_config(5_000)
    });
    sim.mutate(1_000);
    sim.add_rows(1_000);
    let rows = sim.latest();
    let d16 = d16();
    let refused: Vec<&Value> = rows
        .iter()
        .filter(|r| normalise(&d16, r).is_err())
        .collect();
    let share = refused.len() as f64 / rows.len() as f64;
    assert!(
        (0.07..0.13).contains(&share),
        "about 10% malformed: {share}"
    );

    let clean = export_sim::Simulator::new(sim_config(5_000));
    clean.mutate(1_000);
    clean.add_rows(1_000);
    for row in clean.latest() {
        let normalised = normalise(&d16, &row);
        assert!(normalised.is_ok(), "{row}: {normalised:?}");
    }
}

/// What normalising the simulator's rows gives (a tenth malformed, changed and added rows,
/// fields under both names, unknown fields), as one hash of every row's key, fingerprint and
/// errors: recorded on 2026-12-07, before the normaliser read rows from the page's text. Read
/// from its text, each row normalises the same. A change to any row's event or error shows here.
#[test]
fn the_simulators_rows_normalise_as_they_did() {
    let sim = export_sim::Simulator::new(export_sim::SimConfig {
        malformed_share: 0.1,
        ..sim_config(3_000)
    });
    sim.mutate(500);
    sim.add_rows(500);
    let d16 = d16();
    let normaliser = export_puller::normalise::Normaliser::new(&d16);
    let mut all = String::new();
    for (i, mut row) in sim.latest().into_iter().enumerate() {
        // Fields under both names: agreeing, disagreeing, one of them null.
        let object = row.as_object_mut().unwrap();
        let public_id = object.get("public_id").cloned().unwrap_or(Value::Null);
        match i % 5 {
            0 => object.insert("case_public_id".into(), public_id),
            1 if i % 3 == 0 => object.insert("case_public_id".into(), json!("other")),
            2 if i % 3 == 0 => object.insert("dpd_due_date".into(), json!("01/01/2026")),
            3 => object.insert("case_public_id".into(), Value::Null),
            _ => object.insert("branch".into(), json!({"id": i})),
        };
        let normalised = normalise(&d16, &row);
        let text = serde_json::value::RawValue::from_string(row.to_string()).unwrap();
        assert_eq!(normaliser.row_json(&text), normalised, "{row}");
        match normalised {
            Ok(row) => {
                let deal = row.to_deal(&d16, "lender-1");
                all.push_str(&format!("{} {:032x}\n", row.key, fingerprint(&deal)));
            }
            Err(errors) => all.push_str(&format!("{errors:?}\n")),
        }
    }
    assert_eq!(
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(all.as_bytes())),
        "65af89134d76c072287b65693d9dd162"
    );
}

/// A row the page's split lets through but JSON does not allow is refused on its own, with the
/// reason; the rows beside it are not affected.
#[test]
fn a_row_that_is_not_valid_json_is_refused_with_the_reason() {
    let d16 = d16();
    let normaliser = export_puller::normalise::Normaliser::new(&d16);
    let mut sample = emitted();
    sample["amount"] = json!(1);
    let text = sample
        .to_string()
        .replace("\"amount\":1", "\"amount\":1e400");
    for bad in [text, r#"{"public_id":"\ud800"}"#.to_owned()] {
        let raw = serde_json::value::RawValue::from_string(bad.clone()).unwrap();
        let errors = normaliser.row_json(&raw).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].rule, rule::OBJECT);
        assert!(errors[0].message.contains("not valid JSON"), "{errors:?}");
        assert_eq!(errors[0].value, bad[..bad.len().min(256)]);
    }
    let good = serde_json::value::RawValue::from_string(emitted().to_string()).unwrap();
    assert!(normaliser.row_json(&good).is_ok());
}
