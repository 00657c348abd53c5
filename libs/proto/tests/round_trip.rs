//! Domain ↔ wire conversions lose nothing.
#![allow(clippy::unwrap_used)]

use chrono::{NaiveDate, TimeZone, Utc};
use debt_cases::{
    BillingAddress, CaseChanges, CaseState, DebtCase, DebtCaseEvent, Environment, LineItem,
    NewCase, PaymentReceipt,
};
use recoup_proto::convert::{case_from_proto, case_to_proto, event_from_payload, event_to_payload};

fn content() -> NewCase {
    NewCase {
        external_id: "ext-1".into(),
        reference: "REF-1".into(),
        collector_configuration_id: Some("default".into()),
        environment: Environment::Test,
        currency: "CHF".into(),
        line_items: vec![LineItem {
            unique_id: "li-1".into(),
            name: "Solar kit".into(),
            quantity: 2,
            amount_minor: 12_345,
        }],
        due_date: NaiveDate::from_ymd_opt(2026, 1, 31).expect("date"),
        contract_date: Some(NaiveDate::from_ymd_opt(2025, 6, 1).expect("date")),
        language: "de-CH".into(),
        billing_address: BillingAddress {
            given_name: "Ada".into(),
            city: "Zürich".into(),
            country: "CH".into(),
            ..Default::default()
        },
        labels: vec!["vip".into()],
    }
}

#[test]
fn every_event_survives_the_wire() {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + chrono::Duration::nanoseconds(7);
    let events = vec![
        DebtCaseEvent::Created {
            case_id: "c1".into(),
            tenant: "t1".into(),
            content: content(),
            collector_configuration_id: "default".into(),
            state: CaseState::Reviewing,
            creator: "key:creator".into(),
            at,
        },
        DebtCaseEvent::Updated {
            changes: CaseChanges {
                reference: Some("REF-2".into()),
                line_items: Some(content().line_items),
                due_date: Some(NaiveDate::from_ymd_opt(2026, 2, 1).expect("date")),
                contract_date: None,
                language: Some("fr-CH".into()),
                billing_address: Some(BillingAddress::default()),
                labels: Some(vec![]),
            },
            at,
        },
        DebtCaseEvent::Reviewed {
            reviewer: "key:reviewer".into(),
            at,
        },
        DebtCaseEvent::Prepared { at },
        DebtCaseEvent::ProcessingStarted {
            at,
            timeout_on: at + chrono::Duration::days(14),
        },
        DebtCaseEvent::PaymentReceiptAdded {
            receipt: PaymentReceipt {
                external_id: "r1".into(),
                amount_minor: 100,
                recorded_on: at,
            },
        },
        DebtCaseEvent::Closed { at },
        DebtCaseEvent::Failed {
            reason: "processing timeout".into(),
            at,
        },
        DebtCaseEvent::Deleted { at },
    ];
    for event in events {
        let payload = event_to_payload(&event);
        let back = event_from_payload(
            recoup_proto::convert::event_type(&event),
            &payload,
            "c1",
            "t1",
            at,
        )
        .expect("decodes");
        assert_eq!(back, event);
    }
}

#[test]
fn a_case_survives_the_wire() {
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    let mut case = DebtCase::from_created(&DebtCaseEvent::Created {
        case_id: "c1".into(),
        tenant: "t1".into(),
        content: content(),
        collector_configuration_id: "default".into(),
        state: CaseState::Reviewing,
        creator: "key:creator".into(),
        at,
    })
    .expect("created");
    case.apply(&DebtCaseEvent::Reviewed {
        reviewer: "key:reviewer".into(),
        at,
    });
    case.apply(&DebtCaseEvent::Prepared { at });
    case.apply(&DebtCaseEvent::ProcessingStarted {
        at,
        timeout_on: at + chrono::Duration::days(1),
    });
    case.apply(&DebtCaseEvent::PaymentReceiptAdded {
        receipt: PaymentReceipt {
            external_id: "r1".into(),
            amount_minor: 45,
            recorded_on: at,
        },
    });
    case.apply(&DebtCaseEvent::Failed {
        reason: "x".into(),
        at,
    });
    assert_eq!(
        case_from_proto(case_to_proto(&case)).expect("decodes"),
        case
    );
}

#[test]
fn unknown_event_types_are_refused() {
    let at = Utc::now();
    assert!(event_from_payload("Nope", &[], "c", "t", at).is_err());
}
