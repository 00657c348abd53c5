//! `recoup.v1.AccountSnapshot` and the field catalogue cannot drift apart: every column has the
//! proto field of its name, number and type, and a snapshot encoded from the catalogue decodes
//! with the generated message to the same values.

use chrono::{DateTime, TimeZone, Utc};
use paygo_snapshots::{Columns, FIELDS, FieldType, ImportContext};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use recoup_proto::snapshots::{encode_snapshot, encode_snapshot_content, field_number};
use recoup_proto::{FILE_DESCRIPTOR_SET, v1};

fn message(name: &str) -> DescriptorProto {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    set.file
        .iter()
        .filter(|f| f.package() == "recoup.v1")
        .flat_map(|f| f.message_type.iter())
        .find(|m| m.name() == name)
        .cloned()
        .unwrap_or_else(|| panic!("recoup.v1.{name} is not in the descriptor set"))
}

#[test]
fn every_catalogue_column_is_the_proto_field_of_its_name_number_and_type() {
    let snapshot = message("AccountSnapshot");
    assert_eq!(
        snapshot.field.len(),
        FIELDS.len(),
        "one proto field per column"
    );
    for (index, column) in FIELDS.iter().enumerate() {
        let proto = snapshot
            .field
            .iter()
            .find(|f| f.name() == column.name)
            .unwrap_or_else(|| panic!("column {} has no proto field", column.name));
        assert_eq!(
            proto.number(),
            field_number(index) as i32,
            "{}",
            column.name
        );
        assert_ne!(proto.label(), Label::Repeated, "{}", column.name);
        let expected = match (column.name, column.ty) {
            // Tenants and import sources are names in recoup; the seed numbers them.
            ("organization_id" | "source_id", _) => Type::String,
            (_, FieldType::Integer) => Type::Int64,
            (_, FieldType::Float) => Type::Double,
            (_, FieldType::String | FieldType::Date | FieldType::Json) => Type::String,
            (_, FieldType::DateTime) => Type::Message,
        };
        assert_eq!(proto.r#type(), expected, "{}", column.name);
        if expected == Type::Message {
            assert_eq!(
                proto.type_name(),
                ".google.protobuf.Timestamp",
                "{}",
                column.name
            );
        } else {
            assert!(proto.proto3_optional(), "{} keeps absence", column.name);
        }
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 2, 1, 12, 0, 0)
        .single()
        .expect("valid")
}

fn seed_row() -> paygo_snapshots::AccountSnapshot {
    let cells = [
        ("snapshot_date", "2021-05-03"),
        ("account_external_id", "C11223344"),
        ("days_to_cutoff_source", "-4"),
        ("days_delays_daily_source", "0.5"),
        ("days_par_status_source", "1-7"),
        ("days_arrears_consecutive_source", "4"),
        ("amt_remaining_installment_source", "1500.25"),
        ("next_payment_due_at_source", "2021-05-03 6:23:55"),
        ("expected_maturity_date_source", "2022-01-31"),
        ("custom", r#"{"branch": "Kisumu"}"#),
        ("region", "West"),
    ];
    let headers: Vec<String> = cells.iter().map(|(h, _)| (*h).to_owned()).collect();
    let values: Vec<&str> = cells.iter().map(|(_, v)| *v).collect();
    let ctx = ImportContext {
        organization_id: "acme".to_owned(),
        data_origin: Some("crm".to_owned()),
        source_id: "import-1".to_owned(),
        now: now(),
    };
    Columns::checked(&headers)
        .expect("headers")
        .validate(2, &values, &ctx)
        .expect("valid row")
}

#[test]
fn a_snapshot_encoded_from_the_catalogue_decodes_with_the_generated_message() {
    let mut bytes = Vec::new();
    encode_snapshot(&seed_row(), &mut bytes);
    let decoded = v1::AccountSnapshot::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(decoded.snapshot_date.as_deref(), Some("2021-05-03"));
    assert_eq!(decoded.account_external_id.as_deref(), Some("C11223344"));
    assert_eq!(decoded.account_uid.as_deref(), Some("acme_crm_C11223344"));
    assert_eq!(decoded.data_origin.as_deref(), Some("crm"));
    assert_eq!(decoded.organization_id.as_deref(), Some("acme"));
    assert_eq!(decoded.source_id.as_deref(), Some("import-1"));
    assert_eq!(decoded.days_to_cutoff_source, Some(-4));
    assert_eq!(decoded.days_delays_daily_source, Some(0.5));
    assert_eq!(decoded.days_par_status_source.as_deref(), Some("1-7"));
    assert_eq!(decoded.amt_remaining_installment_source, Some(1500.25));
    assert_eq!(
        decoded.expected_maturity_date_source.as_deref(),
        Some("2022-01-31")
    );
    let due = Utc
        .with_ymd_and_hms(2021, 5, 3, 6, 23, 55)
        .single()
        .expect("valid");
    assert_eq!(
        decoded.next_payment_due_at_source,
        Some(recoup_proto::to_timestamp(due))
    );
    assert_eq!(decoded.created_at, Some(recoup_proto::to_timestamp(now())));
    let custom: serde_json::Value =
        serde_json::from_str(decoded.custom.as_deref().expect("custom kept")).expect("json");
    assert_eq!(
        custom,
        serde_json::json!({"branch": "Kisumu", "region": "West"})
    );
    assert_eq!(
        decoded.days_elapsed_installment_source, None,
        "absent stays absent"
    );
    // The generated message encodes the same bytes: same numbers, same order, same types.
    assert_eq!(decoded.encode_to_vec(), bytes);
}

#[test]
fn content_encoding_leaves_out_only_what_describes_the_import() {
    let first = seed_row();
    let mut later = first.clone();
    let other_time = Utc
        .with_ymd_and_hms(2024, 3, 1, 0, 0, 0)
        .single()
        .expect("valid");
    later.values[paygo_snapshots::catalogue::CREATED_AT] =
        Some(paygo_snapshots::Value::DateTime(other_time));
    later.values[paygo_snapshots::catalogue::UPDATED_AT] =
        Some(paygo_snapshots::Value::DateTime(other_time));
    later.values[paygo_snapshots::catalogue::SOURCE_ID] =
        Some(paygo_snapshots::Value::String("import-2".to_owned()));
    let content = |s: &paygo_snapshots::AccountSnapshot| {
        let mut bytes = Vec::new();
        encode_snapshot_content(s, &mut bytes);
        bytes
    };
    assert_eq!(content(&first), content(&later));

    let mut changed = first.clone();
    changed.values[paygo_snapshots::field("days_to_cutoff_source")
        .expect("column")
        .0] = Some(paygo_snapshots::Value::Integer(-5));
    assert_ne!(content(&first), content(&changed));
    let decoded = v1::AccountSnapshot::decode(content(&first).as_slice()).expect("decodes");
    assert_eq!(decoded.created_at, None);
    assert_eq!(decoded.source_id, None);
    assert_eq!(decoded.account_uid.as_deref(), Some("acme_crm_C11223344"));
}

#[test]
fn a_recorded_event_wraps_the_encoded_snapshot() {
    let mut snapshot = Vec::new();
    encode_snapshot(&seed_row(), &mut snapshot);
    let bytes = recoup_proto::snapshots::encode_recorded(&snapshot, "imp-1", 7, 2);
    let event = v1::AccountSnapshotRecorded::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(event.import_id, "imp-1");
    assert_eq!(event.row, 7);
    assert_eq!(event.revision, 2);
    assert_eq!(
        event.snapshot.expect("snapshot").encode_to_vec(),
        snapshot,
        "the snapshot inside is the one given"
    );
}

#[test]
fn content_then_import_fields_is_the_whole_snapshot() {
    let row = seed_row();
    let mut whole = Vec::new();
    encode_snapshot(&row, &mut whole);
    let mut split = Vec::new();
    encode_snapshot_content(&row, &mut split);
    recoup_proto::snapshots::encode_snapshot_import_fields(&row, &mut split);
    assert_ne!(split, whole, "a different field order");
    assert_eq!(
        v1::AccountSnapshot::decode(split.as_slice()).expect("decodes"),
        v1::AccountSnapshot::decode(whole.as_slice()).expect("decodes")
    );
}

#[test]
fn dates_format_as_iso_days() {
    use recoup_proto::snapshots::format_date;
    let d = |y, m, day| chrono::NaiveDate::from_ymd_opt(y, m, day).expect("valid");
    assert_eq!(format_date(d(2021, 5, 3)), "2021-05-03");
    assert_eq!(format_date(d(999, 12, 31)), "0999-12-31");
    assert_eq!(format_date(d(10000, 1, 1)), "10000-01-01");
}
