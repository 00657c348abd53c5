//! Fuzzing D16 normalisation with proptest: the seed's sample row (the corpus, in
//! `tests/data/`) with fields replaced by arbitrary JSON (dates that are no dates, numbers past
//! every range, objects where text belongs), fields dropped and unknown ones added, and wholly
//! arbitrary values. Whatever the row, normalising never panics: it gives a row whose event
//! can be built and fingerprinted, or errors that each name a rule, a bounded value and the
//! field (the whole row when it is no object). Read from its JSON text (as pages hold rows),
//! a row normalises exactly as parsed, repeated names and escaped names included.
//! `FUZZ_CASES` sets the cases (default 4000); failures are kept in
//! `fuzz_normalise.proptest-regressions`.
#![allow(clippy::unwrap_used)]

use export_puller::dataset::d16;
use export_puller::normalise::{Normaliser, fingerprint, normalise, rule};
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

const SEED: &str = include_str!("data/cleargrid-export-d16-collections-cases.txt");

fn seed_sample() -> Map<String, Value> {
    let sample = &SEED[SEED.find("Sample row").unwrap()..];
    let row: Value =
        serde_json::from_str(&sample[sample.find('{').unwrap()..=sample.find('}').unwrap()])
            .unwrap();
    row.as_object().unwrap().clone()
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "2026-05-31T13:48:30.000Z",
            "2026-05-31T13:48:30.123456789+14:00",
            "31/05/2026",
            "29/02/2025",
            "2026-02-30T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "",
            " ",
            "1e309",
            "-0",
            "92233720368547758.08",
            "true",
            "null",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A row read from `text` normalises as the text parsed does.
fn same_from_text(text: &str) -> Result<(), TestCaseError> {
    let dataset = d16();
    let normaliser = Normaliser::new(&dataset);
    let raw = RawValue::from_string(text.to_owned()).unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    prop_assert_eq!(normaliser.row_json(&raw), normaliser.row(&parsed));
    Ok(())
}

/// What holds of any row normalised.
fn check(row: &Value) -> Result<(), TestCaseError> {
    let dataset = d16();
    same_from_text(&row.to_string())?;
    match normalise(&dataset, row) {
        Ok(normalised) => {
            let deal = normalised.to_deal(&dataset, "lender-1");
            prop_assert_eq!(fingerprint(&deal), fingerprint(&deal));
            prop_assert!(!normalised.key.is_empty());
        }
        Err(errors) => {
            prop_assert!(!errors.is_empty());
            for error in errors {
                prop_assert!(!error.rule.is_empty() && !error.message.is_empty());
                // Only a row that is no object has no field to name.
                prop_assert!(!error.field.is_empty() || error.rule == rule::OBJECT);
                prop_assert!(error.value.len() <= 4096, "{} bytes", error.value.len());
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn any_change_to_a_d16_row_is_normalised_or_refused_field_by_field(
        replaced in prop::collection::vec((any::<prop::sample::Index>(), json_value()), 0..6),
        dropped in prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        added in prop::collection::btree_map("[a-z_]{1,20}", json_value(), 0..3),
    ) {
        let mut row = seed_sample();
        let names: Vec<String> = row.keys().cloned().collect();
        for (at, value) in replaced {
            row.insert(at.get(&names).clone(), value);
        }
        for at in dropped {
            row.remove(at.get(&names));
        }
        row.extend(added);
        check(&Value::Object(row))?;
    }

    #[test]
    fn any_json_value_is_normalised_or_refused(value in json_value()) {
        check(&value)?;
    }

    /// Texts no parsed value prints: a name given twice, a field under both its names in
    /// either order, names written with escapes.
    #[test]
    fn a_row_read_from_text_normalises_as_parsed(
        fields in prop::collection::vec((
            prop::sample::select(vec![
                "public_id", "case_public_id", "public\\u005fid", "dpd_due_date",
                "dpd_due_date_timestamp", "amount", "updated_at", "created_at", "branch",
                "do_not_contact",
            ]),
            json_value(),
        ), 0..8),
    ) {
        let mut text = seed_sample()
            .into_iter()
            .map(|(name, value)| format!("{}:{value}", json!(name)))
            .collect::<Vec<_>>();
        for (name, value) in fields {
            text.push(format!("\"{name}\":{value}"));
        }
        same_from_text(&format!("{{{}}}", text.join(",")))?;
    }
}
