//! The golden events in `proto/golden/`: one envelope per event type as the version that wrote
//! it encoded it (`{EventType}.v{N}.bin`), never changed once checked in (`SHA256SUMS`). Every
//! change's code must read every one of them through `decode_envelope`, older versions through
//! their upcasters.
//!
//! A new schema version adds its golden file: `RECOUP_WRITE_GOLDEN=1 cargo test -p
//! event-backbone --test golden` writes the files of the current versions that are missing (and
//! only those), from the samples below.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use event_backbone::envelope::decode_envelope;
use prost::Message;
use prost_types::Timestamp;
use recoup_proto::contract::event_type as types;
use recoup_proto::schema::{EVENTS, UNKNOWN_CREATOR, current};
use recoup_proto::v1;
use sha2::{Digest, Sha256};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/golden")
}

fn at(seconds: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: 1_767_225_600 + seconds,
        nanos: 123_456_000,
    })
}

/// The payload of a sample event of `event_type` as version `version` wrote it.
fn sample_payload(event_type: &str, version: u32) -> Vec<u8> {
    let line = v1::LineItem {
        unique_id: "l1".into(),
        name: "Solar kit instalment".into(),
        quantity: 1,
        amount_minor: 12_500,
    };
    let address = v1::BillingAddress {
        given_name: "Amina".into(),
        family_name: "Okoth".into(),
        street: "Moi Avenue 1".into(),
        postcode: "00100".into(),
        city: "Nairobi".into(),
        country: "KE".into(),
        email_address: "amina@example.org".into(),
        ..Default::default()
    };
    let snapshot = v1::AccountSnapshot {
        snapshot_date: Some("2026-01-01".into()),
        account_external_id: Some("A-1".into()),
        data_origin: Some("crm".into()),
        days_arrears_consecutive_source: Some(12),
        ..Default::default()
    };
    match (event_type, version) {
        (types::DEBT_CASE_CREATED, 1 | 2) => v1::DebtCaseCreated {
            content: Some(v1::CaseContent {
                external_id: "ext-1".into(),
                reference: "INV-1".into(),
                environment: v1::Environment::Production.into(),
                currency: "KES".into(),
                line_items: vec![line.clone()],
                due_date: "2025-12-01".into(),
                language: "en-KE".into(),
                billing_address: Some(address.clone()),
                labels: vec!["paygo".into()],
                ..Default::default()
            }),
            collector_configuration_id: "default".into(),
            state: v1::CaseState::Reviewing.into(),
            // Version 1 was written before recoup recorded who created a case.
            creator: if version == 1 {
                String::new()
            } else {
                "key:k1".into()
            },
        }
        .encode_to_vec(),
        (types::DEBT_CASE_UPDATED, 1) => v1::DebtCaseUpdated {
            changes: Some(v1::CaseChanges {
                reference: Some("INV-1b".into()),
                line_items: Some(v1::LineItems { items: vec![line] }),
                billing_address: Some(address),
                ..Default::default()
            }),
        }
        .encode_to_vec(),
        (types::DEBT_CASE_REVIEWED, 1) => v1::DebtCaseReviewed {
            reviewer: "key:k2".into(),
        }
        .encode_to_vec(),
        (types::DEBT_CASE_PREPARED, 1) => v1::DebtCasePrepared {}.encode_to_vec(),
        (types::DEBT_CASE_PROCESSING_STARTED, 1) => v1::DebtCaseProcessingStarted {
            timeout_on: at(86_400),
        }
        .encode_to_vec(),
        (types::DEBT_CASE_PAYMENT_RECEIPT_ADDED, 1) => v1::DebtCasePaymentReceiptAdded {
            external_id: "rcpt-1".into(),
            amount_minor: 2_500,
        }
        .encode_to_vec(),
        (types::DEBT_CASE_CLOSED, 1) => v1::DebtCaseClosed {}.encode_to_vec(),
        (types::DEBT_CASE_FAILED, 1) => v1::DebtCaseFailed {
            reason: "debtor unreachable".into(),
        }
        .encode_to_vec(),
        (types::DEBT_CASE_DELETED, 1) => v1::DebtCaseDeleted {}.encode_to_vec(),
        (types::ACCOUNT_SNAPSHOT_RECORDED, 1) => v1::AccountSnapshotRecorded {
            snapshot: Some(snapshot),
            import_id: "3c2356872e6deae245d0851b10df2c0a".into(),
            row: 2,
            revision: 1,
        }
        .encode_to_vec(),
        (types::ROW_REJECTED, 1) => v1::RowRejected {
            import_id: "3c2356872e6deae245d0851b10df2c0a".into(),
            data_origin: "crm".into(),
            file_name: "snapshots.csv".into(),
            row: 4,
            cells: vec![v1::RawCell {
                column: "days_arrears_consecutive_source".into(),
                value: "2.5".into(),
            }],
            errors: vec![v1::RowError {
                row: 4,
                column: "days_arrears_consecutive_source".into(),
                value: "2.5".into(),
                rule: "integer".into(),
                message: "not a whole number".into(),
            }],
        }
        .encode_to_vec(),
        (types::COLLECTIONS_DEAL_OBSERVED, 1) => v1::CollectionsDealObserved {
            dataset: "S3/D16".into(),
            lender_public_id: "lender-1".into(),
            public_id: "7f1c0a52-5a8e-4c1e-9a43-0d2b9b0c1e11".into(),
            created_at: at(0),
            updated_at: at(60),
            deal_stage_id: Some("promise".into()),
            pipeline: Some("early".into()),
            amount_minor: Some(45_000),
            dpd_due_date: Some("2025-12-20".into()),
            ptp_date_human: at(172_800),
            do_not_contact: Some(false),
            extra: BTreeMap::from([("region".to_owned(), "\"coast\"".to_owned())]),
            ..Default::default()
        }
        .encode_to_vec(),
        (types::EXPORT_ROW_REJECTED, 1) => v1::ExportRowRejected {
            dataset: "S3/D16".into(),
            lender_public_id: "lender-1".into(),
            raw_json: r#"{"publicId":""}"#.into(),
            errors: vec![v1::ExportFieldError {
                field: "publicId".into(),
                value: String::new(),
                rule: "required".into(),
                message: "publicId is missing".into(),
            }],
            fetched_at: at(120),
        }
        .encode_to_vec(),
        (types::API_KEY_RECORDED, 1) => v1::ApiKey {
            id: "k1".into(),
            name: "dialer".into(),
            tenants: vec!["acme".into()],
            role: v1::Role::Viewer.into(),
            ..Default::default()
        }
        .encode_to_vec(),
        (types::ACCOUNT_METRICS_CALCULATED, 1) => v1::AccountMetricsCalculated {
            account_uid: "acme_crm_A-1".into(),
            snapshot_date: "2026-01-01".into(),
            model_version: 1,
            snapshot_revision: 1,
            revision: 1,
            calculated: None,
            not_calculated: "before the plan's start".into(),
        }
        .encode_to_vec(),
        (other, version) => panic!("no sample of {other} version {version}"),
    }
}

/// The aggregate type events of `event_type` belong to.
fn aggregate_of(event_type: &str) -> &'static str {
    recoup_proto::schema::of(event_type).unwrap().aggregate_type
}

/// The whole envelope of a sample.
fn sample(event_type: &str, version: u32) -> Vec<u8> {
    v1::EventEnvelope {
        event_id: "0193d5a4-0000-7000-8000-000000000001".into(),
        tenant: "acme".into(),
        aggregate_type: aggregate_of(event_type).into(),
        aggregate_id: "a-1".into(),
        aggregate_version: 1,
        occurred_at: at(0),
        recorded_at: at(1),
        correlation_id: "0193d5a4-0000-7000-8000-0000000000c0".into(),
        causation_id: String::new(),
        event_type: event_type.into(),
        schema_version: version,
        payload: sample_payload(event_type, version),
        // Events of the first versions were written before recoup recorded actors.
        actor: if event_type == types::DEBT_CASE_CREATED && version == 1 {
            String::new()
        } else {
            "key:k1".into()
        },
    }
    .encode_to_vec()
}

/// The payload decoded as its event type's message and encoded again.
fn reencoded(event_type: &str, payload: &[u8]) -> Vec<u8> {
    fn again<M: Message + Default>(payload: &[u8]) -> Vec<u8> {
        M::decode(payload).unwrap().encode_to_vec()
    }
    match event_type {
        types::DEBT_CASE_CREATED => again::<v1::DebtCaseCreated>(payload),
        types::DEBT_CASE_UPDATED => again::<v1::DebtCaseUpdated>(payload),
        types::DEBT_CASE_REVIEWED => again::<v1::DebtCaseReviewed>(payload),
        types::DEBT_CASE_PREPARED => again::<v1::DebtCasePrepared>(payload),
        types::DEBT_CASE_PROCESSING_STARTED => again::<v1::DebtCaseProcessingStarted>(payload),
        types::DEBT_CASE_PAYMENT_RECEIPT_ADDED => again::<v1::DebtCasePaymentReceiptAdded>(payload),
        types::DEBT_CASE_CLOSED => again::<v1::DebtCaseClosed>(payload),
        types::DEBT_CASE_FAILED => again::<v1::DebtCaseFailed>(payload),
        types::DEBT_CASE_DELETED => again::<v1::DebtCaseDeleted>(payload),
        types::ACCOUNT_SNAPSHOT_RECORDED => again::<v1::AccountSnapshotRecorded>(payload),
        types::ROW_REJECTED => again::<v1::RowRejected>(payload),
        types::COLLECTIONS_DEAL_OBSERVED => again::<v1::CollectionsDealObserved>(payload),
        types::EXPORT_ROW_REJECTED => again::<v1::ExportRowRejected>(payload),
        types::API_KEY_RECORDED => again::<v1::ApiKey>(payload),
        types::ACCOUNT_METRICS_CALCULATED => again::<v1::AccountMetricsCalculated>(payload),
        other => panic!("{other} is not an event type recoup writes"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `SHA256SUMS`: file name → hash.
fn sums() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(golden_dir().join("SHA256SUMS")).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(hash, name)| (name.to_owned(), hash.to_owned()))
        .collect()
}

/// With `RECOUP_WRITE_GOLDEN` set: the golden files of the current versions that are missing.
fn write_missing() {
    let dir = golden_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut sums = sums();
    let mut wanted: Vec<(&str, u32)> = EVENTS.iter().map(|e| (e.event_type, e.version)).collect();
    wanted.push((types::DEBT_CASE_CREATED, 1));
    for (event_type, version) in wanted {
        let name = format!("{event_type}.v{version}.bin");
        if dir.join(&name).exists() {
            continue;
        }
        let bytes = sample(event_type, version);
        std::fs::write(dir.join(&name), &bytes).unwrap();
        sums.insert(name, hex(&Sha256::digest(&bytes)));
    }
    let text: String = sums
        .iter()
        .map(|(name, hash)| format!("{hash}  {name}\n"))
        .collect();
    std::fs::write(dir.join("SHA256SUMS"), text).unwrap();
}

/// Every golden file, by name.
fn golden() -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "bin"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn golden_files_are_as_checked_in_and_every_current_version_has_one() {
    if std::env::var_os("RECOUP_WRITE_GOLDEN").is_some() {
        write_missing();
    }
    let files = golden();
    let sums = sums();
    let names: Vec<&String> = files.keys().collect();
    assert_eq!(
        names,
        sums.keys().collect::<Vec<_>>(),
        "every golden file is in SHA256SUMS"
    );
    for (name, bytes) in &files {
        assert_eq!(
            hex(&Sha256::digest(bytes)),
            sums[name],
            "{name} changed: a golden file is never rewritten; a new version adds its own"
        );
    }
    for event in EVENTS {
        let name = format!("{}.v{}.bin", event.event_type, event.version);
        assert!(
            files.contains_key(&name),
            "{name} is missing: write it (see the module's doc)"
        );
    }
}

#[test]
fn every_golden_event_is_read_at_the_current_version() {
    for (name, bytes) in golden() {
        let (event_type, version) = name
            .strip_suffix(".bin")
            .and_then(|n| n.rsplit_once(".v"))
            .unwrap_or_else(|| panic!("{name} is not EventType.vN.bin"));
        let version: u32 = version.parse().unwrap();
        let raw = v1::EventEnvelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(
            (raw.event_type.as_str(), raw.schema_version),
            (event_type, version),
            "{name}"
        );
        let read = decode_envelope(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(read.schema_version, current(event_type), "{name}");
        assert_eq!(
            reencoded(event_type, &read.payload),
            read.payload,
            "{name}: every field known"
        );
        assert_eq!(
            (read.event_id, read.tenant),
            (raw.event_id, raw.tenant),
            "{name}"
        );
    }
}

#[test]
fn a_version_one_creation_is_read_by_this_code_through_its_upcaster() {
    let bytes = std::fs::read(golden_dir().join("DebtCaseCreated.v1.bin")).unwrap();
    let raw = v1::EventEnvelope::decode(bytes.as_slice()).unwrap();
    let written = v1::DebtCaseCreated::decode(raw.payload.as_slice()).unwrap();
    assert_eq!((raw.schema_version, written.creator.as_str()), (1, ""));
    let read = decode_envelope(&bytes).unwrap();
    let created = v1::DebtCaseCreated::decode(read.payload.as_slice()).unwrap();
    assert_eq!(read.schema_version, 2);
    assert_eq!(created.creator, UNKNOWN_CREATOR);
    assert_eq!(created.content, written.content, "the rest as it was");
}
