//! Given/when/then tests of the debt collection case aggregate against docs/domain.md §3:
//! one test per row of the transition table, one per rule.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use debt_cases::{
    BillingAddress, CaseChanges, CaseState, CollectorConfiguration, CollectorConfigurations,
    Command, ConfigurationError, DebtCase, DebtCaseEvent, DecisionContext, DomainError,
    Environment, LineItem, NewCase, commands_in, decide, decide_create, line_items_total,
    same_creation,
};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const CASE_ID: &str = "case-1";
const TENANT: &str = "tenant-a";
/// Who asks for every decision of these tests.
const ACTOR: &str = "key:agent-1";

/// The fixed clock of every decision.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 15, 12, 0, 0).unwrap()
}

/// Timestamps of the history the cases are given (before `now`).
fn earlier(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 8, 0, 0).unwrap() + Duration::hours(hours)
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn today() -> NaiveDate {
    now().date_naive()
}

/// `default`: both environments, with review, 14 days timeout.
/// `fast`: production only, skips review, 2 days timeout.
fn collectors() -> CollectorConfigurations {
    CollectorConfigurations::new(
        vec![
            CollectorConfiguration {
                id: "default".into(),
                environments: vec![Environment::Production, Environment::Test],
                skip_review: false,
                processing_timeout: Duration::days(14),
            },
            CollectorConfiguration {
                id: "fast".into(),
                environments: vec![Environment::Production],
                skip_review: true,
                processing_timeout: Duration::days(2),
            },
        ],
        "default",
    )
    .unwrap()
}

fn item(unique_id: &str, amount_minor: i64) -> LineItem {
    LineItem {
        unique_id: unique_id.into(),
        name: format!("item {unique_id}"),
        quantity: 1,
        amount_minor,
    }
}

/// A valid creation request: EUR 100.00 in two line items.
fn new_case() -> NewCase {
    NewCase {
        external_id: "ext-1".into(),
        reference: "REF-1".into(),
        collector_configuration_id: None,
        environment: Environment::Production,
        currency: "EUR".into(),
        line_items: vec![item("li-1", 7_000), item("li-2", 3_000)],
        due_date: date(2024, 5, 31),
        contract_date: Some(date(2024, 1, 10)),
        language: "de-CH".into(),
        billing_address: BillingAddress {
            given_name: "Ada".into(),
            family_name: "Muster".into(),
            organization_name: String::new(),
            street: "Bahnhofstrasse 1".into(),
            postcode: "8001".into(),
            city: "Zürich".into(),
            country: "CH".into(),
            email_address: "ada@example.com".into(),
        },
        labels: vec!["vip".into()],
    }
}

const AMOUNT: i64 = 10_000;

fn created_with(config: &str, state: CaseState) -> DebtCaseEvent {
    DebtCaseEvent::Created {
        case_id: CASE_ID.into(),
        tenant: TENANT.into(),
        content: new_case(),
        collector_configuration_id: config.into(),
        state,
        creator: "key:creator".into(),
        at: earlier(0),
    }
}

/// A stream that leads (with the `default` configuration) to `state`.
fn history(state: CaseState) -> Vec<DebtCaseEvent> {
    use CaseState::*;
    if state == Create {
        return vec![created_with("default", Create)];
    }
    let mut events = vec![created_with("default", Reviewing)];
    if matches!(state, Preparing | Pending | Processing | Closed | Failed) {
        events.push(DebtCaseEvent::Reviewed {
            reviewer: "key:reviewer".into(),
            at: earlier(1),
        });
    }
    if matches!(state, Pending | Processing | Closed | Failed) {
        events.push(DebtCaseEvent::Prepared { at: earlier(2) });
    }
    if matches!(state, Processing | Closed | Failed) {
        events.push(DebtCaseEvent::ProcessingStarted {
            at: earlier(3),
            timeout_on: earlier(3) + Duration::days(14),
        });
    }
    match state {
        Closed => events.push(DebtCaseEvent::Closed { at: earlier(4) }),
        Failed => events.push(DebtCaseEvent::Failed {
            reason: "collector unreachable".into(),
            at: earlier(4),
        }),
        _ => {}
    }
    events
}

fn receipt_added(external_id: &str, amount_minor: i64, hours: i64) -> DebtCaseEvent {
    DebtCaseEvent::PaymentReceiptAdded {
        receipt: debt_cases::PaymentReceipt {
            external_id: external_id.into(),
            amount_minor,
            recorded_on: earlier(hours),
        },
    }
}

fn given(events: &[DebtCaseEvent]) -> DebtCase {
    DebtCase::replay(events).expect("the given stream starts with Created")
}

fn in_state(state: CaseState) -> DebtCase {
    let case = given(&history(state));
    assert_eq!(case.state, state, "fixture for {state}");
    case
}

/// Decides `command` at the case's current version.
fn when(case: &DebtCase, command: &Command) -> Result<Vec<DebtCaseEvent>, DomainError> {
    when_at(case, case.version, command)
}

/// Decides `command` naming `expected_version`.
fn when_at(
    case: &DebtCase,
    expected_version: u64,
    command: &Command,
) -> Result<Vec<DebtCaseEvent>, DomainError> {
    let collectors = collectors();
    decide(
        case,
        expected_version,
        command,
        DecisionContext {
            now: now(),
            collectors: &collectors,
            actor: ACTOR,
        },
    )
}

fn when_create(content: &NewCase) -> Result<Vec<DebtCaseEvent>, DomainError> {
    let collectors = collectors();
    decide_create(
        CASE_ID,
        TENANT,
        content,
        DecisionContext {
            now: now(),
            collectors: &collectors,
            actor: ACTOR,
        },
    )
}

/// Applies the decided events to a copy of the case.
fn then_case(case: &DebtCase, events: &[DebtCaseEvent]) -> DebtCase {
    let mut next = case.clone();
    for e in events {
        next.apply(e);
    }
    next
}

#[track_caller]
fn assert_invalid(result: Result<Vec<DebtCaseEvent>, DomainError>, expected_field: &str) {
    match result {
        Err(DomainError::InvalidArgument { field, .. }) => assert_eq!(field, expected_field),
        other => panic!("expected InvalidArgument naming {expected_field:?}, got {other:?}"),
    }
}

fn update(changes: CaseChanges) -> Command {
    Command::Update(changes)
}

fn change_reference() -> CaseChanges {
    CaseChanges {
        reference: Some("REF-2".into()),
        ..CaseChanges::default()
    }
}

fn receipt(external_id: &str, amount_minor: i64) -> Command {
    Command::AddPaymentReceipt {
        external_id: external_id.into(),
        amount_minor,
    }
}

fn fail(reason: &str) -> Command {
    Command::Fail {
        reason: reason.into(),
    }
}

/// One command of every kind, each valid on its own.
fn every_command() -> Vec<Command> {
    vec![
        Command::Create(new_case()),
        update(change_reference()),
        Command::MarkReviewed,
        Command::MarkPrepared,
        Command::StartProcessing,
        receipt("rcpt-1", 1_000),
        Command::Close,
        fail("collector unreachable"),
        Command::Delete,
    ]
}

/// Every state outside `allowed` refuses `command`: `Terminal` in `CLOSED`/`FAILED`,
/// `IllegalTransition` elsewhere.
#[track_caller]
fn assert_refused_outside(command: &Command, allowed: &[CaseState]) {
    for state in CaseState::ALL {
        if allowed.contains(&state) {
            continue;
        }
        let expected = if state.is_terminal() {
            DomainError::Terminal {
                command: command.name(),
                state,
            }
        } else {
            DomainError::IllegalTransition {
                command: command.name(),
                state,
            }
        };
        assert_eq!(
            when(&in_state(state), command),
            Err(expected),
            "{} in {state}",
            command.name()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Transition table, row by row
// ---------------------------------------------------------------------------------------------

#[test]
fn create_goes_to_reviewing() {
    let events = when_create(&new_case()).unwrap();
    assert_eq!(
        events,
        vec![DebtCaseEvent::Created {
            case_id: CASE_ID.into(),
            tenant: TENANT.into(),
            content: new_case(),
            collector_configuration_id: "default".into(),
            state: CaseState::Reviewing,
            creator: ACTOR.into(),
            at: now(),
        }]
    );
    let case = given(&events);
    assert_eq!(case.state, CaseState::Reviewing);
    assert_eq!(case.creator, ACTOR);
    assert_eq!(case.reviewer, None);
    assert_eq!(case.version, 1);
    assert_eq!(case.amount_minor, AMOUNT);
    assert_eq!(case.collected_minor, 0);
    assert_eq!(case.review_started_on, Some(now()));
    assert_eq!(case.created_on, now());
}

#[test]
fn create_is_refused_on_an_existing_case_in_every_state() {
    assert_refused_outside(&Command::Create(new_case()), &[]);
}

#[test]
fn mark_reviewed_moves_reviewing_to_preparing() {
    let case = in_state(CaseState::Reviewing);
    let events = when(&case, &Command::MarkReviewed).unwrap();
    assert_eq!(
        events,
        vec![DebtCaseEvent::Reviewed {
            reviewer: ACTOR.into(),
            at: now()
        }]
    );
    let case = then_case(&case, &events);
    assert_eq!(case.state, CaseState::Preparing);
    assert_eq!(case.reviewed_on, Some(now()));
    assert_eq!(case.reviewer.as_deref(), Some(ACTOR));
    assert_eq!(
        case.creator, "key:creator",
        "the creator stays who created it"
    );
}

#[test]
fn mark_reviewed_is_refused_outside_reviewing() {
    assert_refused_outside(&Command::MarkReviewed, &[CaseState::Reviewing]);
}

#[test]
fn mark_prepared_moves_preparing_to_pending() {
    let case = in_state(CaseState::Preparing);
    let events = when(&case, &Command::MarkPrepared).unwrap();
    assert_eq!(events, vec![DebtCaseEvent::Prepared { at: now() }]);
    let case = then_case(&case, &events);
    assert_eq!(case.state, CaseState::Pending);
    assert_eq!(case.prepared_on, Some(now()));
}

#[test]
fn mark_prepared_is_refused_outside_preparing() {
    assert_refused_outside(&Command::MarkPrepared, &[CaseState::Preparing]);
}

#[test]
fn start_processing_moves_pending_to_processing() {
    let case = in_state(CaseState::Pending);
    let events = when(&case, &Command::StartProcessing).unwrap();
    assert_eq!(
        events,
        vec![DebtCaseEvent::ProcessingStarted {
            at: now(),
            timeout_on: now() + Duration::days(14),
        }]
    );
    let case = then_case(&case, &events);
    assert_eq!(case.state, CaseState::Processing);
    assert_eq!(case.processing_started_on, Some(now()));
    assert_eq!(case.processing_timeout_on, Some(now() + Duration::days(14)));
}

#[test]
fn start_processing_is_refused_outside_pending() {
    assert_refused_outside(&Command::StartProcessing, &[CaseState::Pending]);
}

#[test]
fn add_payment_receipt_in_processing_stays_processing_and_adds_to_collected() {
    let case = in_state(CaseState::Processing);
    let events = when(&case, &receipt("rcpt-1", 2_500)).unwrap();
    assert_eq!(
        events,
        vec![DebtCaseEvent::PaymentReceiptAdded {
            receipt: debt_cases::PaymentReceipt {
                external_id: "rcpt-1".into(),
                amount_minor: 2_500,
                recorded_on: now(),
            },
        }]
    );
    let case = then_case(&case, &events);
    assert_eq!(case.state, CaseState::Processing);
    assert_eq!(case.collected_minor, 2_500);
    assert_eq!(case.receipts.len(), 1);

    let events = when(&case, &receipt("rcpt-2", 500)).unwrap();
    let case = then_case(&case, &events);
    assert_eq!(case.state, CaseState::Processing);
    assert_eq!(case.collected_minor, 3_000);
}

#[test]
fn add_payment_receipt_is_refused_outside_processing() {
    assert_refused_outside(&receipt("rcpt-1", 1_000), &[CaseState::Processing]);
}

#[test]
fn close_goes_to_closed_from_reviewing_preparing_pending_and_processing() {
    for state in [
        CaseState::Reviewing,
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        let case = in_state(state);
        let events = when(&case, &Command::Close).unwrap();
        assert_eq!(events, vec![DebtCaseEvent::Closed { at: now() }], "{state}");
        let case = then_case(&case, &events);
        assert_eq!(case.state, CaseState::Closed, "{state}");
        assert_eq!(case.closed_on, Some(now()), "{state}");
    }
}

#[test]
fn close_is_refused_in_create_and_terminal_states() {
    assert_refused_outside(
        &Command::Close,
        &[
            CaseState::Reviewing,
            CaseState::Preparing,
            CaseState::Pending,
            CaseState::Processing,
        ],
    );
}

#[test]
fn fail_goes_to_failed_from_preparing_pending_and_processing() {
    for state in [
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        let case = in_state(state);
        let events = when(&case, &fail("processing timeout")).unwrap();
        assert_eq!(
            events,
            vec![DebtCaseEvent::Failed {
                reason: "processing timeout".into(),
                at: now(),
            }],
            "{state}"
        );
        let case = then_case(&case, &events);
        assert_eq!(case.state, CaseState::Failed, "{state}");
        assert_eq!(case.failed_on, Some(now()), "{state}");
        assert_eq!(
            case.failure_reason.as_deref(),
            Some("processing timeout"),
            "{state}"
        );
    }
}

#[test]
fn fail_is_refused_in_create_reviewing_and_terminal_states() {
    assert_refused_outside(
        &fail("collector unreachable"),
        &[
            CaseState::Preparing,
            CaseState::Pending,
            CaseState::Processing,
        ],
    );
}

#[test]
fn update_keeps_the_state_in_reviewing_preparing_pending_and_processing() {
    for state in [
        CaseState::Reviewing,
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        let case = in_state(state);
        let events = when(&case, &update(change_reference())).unwrap();
        assert_eq!(
            events,
            vec![DebtCaseEvent::Updated {
                changes: change_reference(),
                at: now(),
            }],
            "{state}"
        );
        let case = then_case(&case, &events);
        assert_eq!(case.state, state);
        assert_eq!(case.reference, "REF-2", "{state}");
        assert_eq!(case.updated_on, now(), "{state}");
    }
}

#[test]
fn update_is_refused_in_create_and_terminal_states() {
    assert_refused_outside(
        &update(change_reference()),
        &[
            CaseState::Reviewing,
            CaseState::Preparing,
            CaseState::Pending,
            CaseState::Processing,
        ],
    );
}

#[test]
fn delete_tombstones_a_reviewing_case() {
    let case = in_state(CaseState::Reviewing);
    let events = when(&case, &Command::Delete).unwrap();
    assert_eq!(events, vec![DebtCaseEvent::Deleted { at: now() }]);
    let case = then_case(&case, &events);
    assert_eq!(case.deleted_on, Some(now()));
}

#[test]
fn delete_is_refused_outside_reviewing() {
    assert_refused_outside(&Command::Delete, &[CaseState::Reviewing]);
}

#[test]
fn terminal_states_are_final() {
    for state in [CaseState::Closed, CaseState::Failed] {
        let case = in_state(state);
        for command in every_command() {
            assert_eq!(
                when(&case, &command),
                Err(DomainError::Terminal {
                    command: command.name(),
                    state,
                }),
                "{} in {state}",
                command.name()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

#[test]
fn version_conflict_names_expected_and_actual_version() {
    let case = in_state(CaseState::Pending);
    assert_eq!(case.version, 3);
    for command in every_command() {
        for stale in [0, 1, 2, 4, 99] {
            assert_eq!(
                when_at(&case, stale, &command),
                Err(DomainError::VersionConflict {
                    expected: stale,
                    actual: 3,
                }),
                "{} naming version {stale}",
                command.name()
            );
        }
    }
}

#[test]
fn version_starts_at_1_and_grows_by_1_per_accepted_command() {
    let events = when_create(&new_case()).unwrap();
    let mut case = given(&events);
    assert_eq!(case.version, 1);
    let script = [
        update(change_reference()),
        Command::MarkReviewed,
        Command::MarkPrepared,
        Command::StartProcessing,
        receipt("rcpt-1", 1_000),
        receipt("rcpt-2", 2_000),
        Command::Close,
    ];
    for (i, command) in script.iter().enumerate() {
        let events = when(&case, command).unwrap();
        assert_eq!(events.len(), 1, "{}", command.name());
        case = then_case(&case, &events);
        assert_eq!(case.version, 2 + i as u64, "after {}", command.name());
    }
    // An idempotent receipt retry is no accepted command: no event, no version bump.
    let before = case.clone();
    assert_eq!(when_at(&case, 1, &receipt("rcpt-1", 1_000)), Ok(vec![]));
    assert_eq!(case, before);
}

#[test]
fn create_goes_to_preparing_when_the_collector_configuration_skips_review() {
    let content = NewCase {
        collector_configuration_id: Some("fast".into()),
        ..new_case()
    };
    let events = when_create(&content).unwrap();
    assert_eq!(
        events,
        vec![DebtCaseEvent::Created {
            case_id: CASE_ID.into(),
            tenant: TENANT.into(),
            content: content.clone(),
            collector_configuration_id: "fast".into(),
            state: CaseState::Preparing,
            creator: ACTOR.into(),
            at: now(),
        }]
    );
    let case = given(&events);
    assert_eq!(case.state, CaseState::Preparing);
    assert_eq!(
        case.reviewer, None,
        "a case that skips review has no reviewer"
    );
    assert_eq!(case.review_started_on, None);
    assert_eq!(case.version, 1);
}

#[test]
fn create_without_collector_configuration_uses_the_default() {
    for id in [None, Some(String::new())] {
        let content = NewCase {
            collector_configuration_id: id,
            ..new_case()
        };
        let case = given(&when_create(&content).unwrap());
        assert_eq!(case.collector_configuration_id, "default");
        assert_eq!(case.state, CaseState::Reviewing);
    }
}

#[test]
fn external_id_idempotency_same_content_is_the_same_creation() {
    let case = given(&when_create(&new_case()).unwrap());
    assert!(same_creation(&case, &new_case()));
    // Naming the configuration the default resolved to is the same request.
    let named = NewCase {
        collector_configuration_id: Some("default".into()),
        ..new_case()
    };
    assert!(same_creation(&case, &named));
}

#[test]
fn external_id_idempotency_other_content_is_not_the_same_creation() {
    let case = given(&when_create(&new_case()).unwrap());
    let variants: Vec<(&str, NewCase)> = vec![
        (
            "external_id",
            NewCase {
                external_id: "ext-2".into(),
                ..new_case()
            },
        ),
        (
            "reference",
            NewCase {
                reference: "REF-9".into(),
                ..new_case()
            },
        ),
        (
            "collector_configuration_id",
            NewCase {
                collector_configuration_id: Some("fast".into()),
                ..new_case()
            },
        ),
        (
            "environment",
            NewCase {
                environment: Environment::Test,
                ..new_case()
            },
        ),
        (
            "currency",
            NewCase {
                currency: "CHF".into(),
                ..new_case()
            },
        ),
        (
            "line_items",
            NewCase {
                line_items: vec![item("li-1", 7_000), item("li-2", 3_001)],
                ..new_case()
            },
        ),
        (
            "due_date",
            NewCase {
                due_date: date(2024, 5, 30),
                ..new_case()
            },
        ),
        (
            "contract_date",
            NewCase {
                contract_date: None,
                ..new_case()
            },
        ),
        (
            "language",
            NewCase {
                language: "fr-CH".into(),
                ..new_case()
            },
        ),
        (
            "billing_address",
            NewCase {
                billing_address: BillingAddress {
                    city: "Bern".into(),
                    ..new_case().billing_address
                },
                ..new_case()
            },
        ),
        (
            "labels",
            NewCase {
                labels: vec![],
                ..new_case()
            },
        ),
    ];
    for (field, content) in variants {
        assert!(!same_creation(&case, &content), "differs in {field}");
    }
}

#[test]
fn amount_is_the_sum_of_the_line_items() {
    let content = NewCase {
        line_items: vec![item("a", 1), item("b", 20), item("c", 300)],
        ..new_case()
    };
    assert_eq!(line_items_total(&content.line_items), Ok(321));
    let case = given(&when_create(&content).unwrap());
    assert_eq!(case.amount_minor, 321);

    let changes = CaseChanges {
        line_items: Some(vec![item("x", 4_000), item("y", 4)]),
        ..CaseChanges::default()
    };
    let case = then_case(&case, &when(&case, &update(changes)).unwrap());
    assert_eq!(case.amount_minor, 4_004);
    assert_eq!(case.line_items, vec![item("x", 4_000), item("y", 4)]);
}

/// Bad line items are refused by Create and by Update (in `REVIEWING`) naming the field.
#[track_caller]
fn assert_line_items_rejected(items: Vec<LineItem>, field: &str) {
    assert_invalid(
        when_create(&NewCase {
            line_items: items.clone(),
            ..new_case()
        }),
        field,
    );
    let changes = CaseChanges {
        line_items: Some(items),
        ..CaseChanges::default()
    };
    assert_invalid(
        when(&in_state(CaseState::Reviewing), &update(changes)),
        field,
    );
}

#[test]
fn amount_empty_line_items_are_rejected() {
    assert_line_items_rejected(vec![], "line_items");
}

#[test]
fn amount_zero_line_item_amount_is_rejected_naming_the_item() {
    assert_line_items_rejected(
        vec![item("a", 100), item("b", 0)],
        "line_items[1].amount_minor",
    );
}

#[test]
fn amount_negative_line_item_amount_is_rejected_naming_the_item() {
    assert_line_items_rejected(vec![item("a", -1)], "line_items[0].amount_minor");
    // A negative line cannot hide in a positive total.
    assert_line_items_rejected(
        vec![item("a", 500), item("b", -100)],
        "line_items[1].amount_minor",
    );
}

#[test]
fn amount_duplicate_line_item_unique_id_is_rejected() {
    assert_line_items_rejected(
        vec![item("a", 100), item("a", 200)],
        "line_items[1].unique_id",
    );
}

#[test]
fn amount_line_item_sum_overflow_is_rejected() {
    assert_line_items_rejected(vec![item("a", i64::MAX), item("b", 1)], "line_items");
}

#[test]
fn amount_zero_quantity_and_blank_unique_id_are_rejected() {
    let mut zero_quantity = item("b", 100);
    zero_quantity.quantity = 0;
    assert_line_items_rejected(
        vec![item("a", 100), zero_quantity],
        "line_items[1].quantity",
    );
    assert_line_items_rejected(vec![item(" ", 100)], "line_items[0].unique_id");
}

#[test]
fn amount_frozen_after_review() {
    let changes = CaseChanges {
        line_items: Some(vec![item("li-1", 1_000)]),
        ..CaseChanges::default()
    };
    for state in [
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        assert_eq!(
            when(&in_state(state), &update(changes.clone())),
            Err(DomainError::AmountFrozen { state }),
            "{state}"
        );
        // Together with other fields the whole update is refused.
        let mixed = CaseChanges {
            reference: Some("REF-2".into()),
            ..changes.clone()
        };
        assert_eq!(
            when(&in_state(state), &update(mixed)),
            Err(DomainError::AmountFrozen { state }),
            "{state}"
        );
    }
    // Before review the same update is fine.
    assert!(when(&in_state(CaseState::Reviewing), &update(changes)).is_ok());
}

#[test]
fn amount_frozen_after_review_other_fields_may_still_be_updated() {
    let changes = CaseChanges {
        reference: Some("REF-2".into()),
        line_items: None,
        due_date: Some(date(2024, 6, 1)),
        contract_date: Some(date(2024, 2, 1)),
        language: Some("fr-CH".into()),
        billing_address: Some(BillingAddress {
            city: "Genève".into(),
            ..new_case().billing_address
        }),
        labels: Some(vec!["legal".into()]),
    };
    for state in [
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        let case = in_state(state);
        let events = when(&case, &update(changes.clone())).unwrap();
        let case = then_case(&case, &events);
        assert_eq!(case.reference, "REF-2");
        assert_eq!(case.due_date, date(2024, 6, 1));
        assert_eq!(case.contract_date, Some(date(2024, 2, 1)));
        assert_eq!(case.language, "fr-CH");
        assert_eq!(case.billing_address.city, "Genève");
        assert_eq!(case.labels, vec!["legal".to_string()]);
        assert_eq!(case.amount_minor, AMOUNT);
        assert_eq!(case.line_items, new_case().line_items);
    }
}

#[test]
fn due_date_must_be_in_the_past_on_create() {
    for due_date in [today(), today().succ_opt().unwrap(), date(2030, 1, 1)] {
        assert_invalid(
            when_create(&NewCase {
                due_date,
                ..new_case()
            }),
            "due_date",
        );
    }
    let yesterday = today().pred_opt().unwrap();
    assert!(
        when_create(&NewCase {
            due_date: yesterday,
            ..new_case()
        })
        .is_ok()
    );
}

#[test]
fn due_date_must_be_in_the_past_on_update() {
    let case = in_state(CaseState::Pending);
    for due_date in [today(), today().succ_opt().unwrap(), date(2030, 1, 1)] {
        let changes = CaseChanges {
            due_date: Some(due_date),
            ..CaseChanges::default()
        };
        assert_invalid(when(&case, &update(changes)), "due_date");
    }
    let changes = CaseChanges {
        due_date: Some(today().pred_opt().unwrap()),
        ..CaseChanges::default()
    };
    assert!(when(&case, &update(changes)).is_ok());
}

#[test]
fn unknown_currency_is_rejected() {
    for currency in ["XXX", "eur", "EURO", "", "ZZZ"] {
        assert_invalid(
            when_create(&NewCase {
                currency: currency.into(),
                ..new_case()
            }),
            "currency",
        );
    }
    for currency in ["CHF", "JPY", "KWD", "USD"] {
        assert!(
            when_create(&NewCase {
                currency: currency.into(),
                ..new_case()
            })
            .is_ok(),
            "{currency}"
        );
    }
}

#[test]
fn environment_not_supported_by_the_collector_configuration_is_rejected() {
    let content = NewCase {
        collector_configuration_id: Some("fast".into()),
        environment: Environment::Test,
        ..new_case()
    };
    assert_invalid(when_create(&content), "environment");
    // The default configuration supports TEST.
    let content = NewCase {
        environment: Environment::Test,
        ..new_case()
    };
    assert!(when_create(&content).is_ok());
}

#[test]
fn unknown_collector_configuration_id_is_rejected() {
    let content = NewCase {
        collector_configuration_id: Some("nope".into()),
        ..new_case()
    };
    assert_invalid(when_create(&content), "collector_configuration_id");
}

#[test]
fn collected_may_not_exceed_amount() {
    let case = in_state(CaseState::Processing);
    let case = then_case(&case, &when(&case, &receipt("rcpt-1", 6_000)).unwrap());
    assert_eq!(
        when(&case, &receipt("rcpt-2", 4_001)),
        Err(DomainError::CollectedExceedsAmount {
            collected_minor: 6_000,
            receipt_minor: 4_001,
            amount_minor: AMOUNT,
        })
    );
    // Even a receipt that would overflow the counter is refused, not wrapped.
    assert_eq!(
        when(&case, &receipt("rcpt-3", i64::MAX)),
        Err(DomainError::CollectedExceedsAmount {
            collected_minor: 6_000,
            receipt_minor: i64::MAX,
            amount_minor: AMOUNT,
        })
    );
}

#[test]
fn collected_may_reach_exactly_the_amount() {
    let case = in_state(CaseState::Processing);
    let case = then_case(&case, &when(&case, &receipt("rcpt-1", 6_000)).unwrap());
    let case = then_case(&case, &when(&case, &receipt("rcpt-2", 4_000)).unwrap());
    assert_eq!(case.collected_minor, AMOUNT);
    assert_eq!(
        when(&case, &receipt("rcpt-3", 1)),
        Err(DomainError::CollectedExceedsAmount {
            collected_minor: AMOUNT,
            receipt_minor: 1,
            amount_minor: AMOUNT,
        })
    );
}

#[test]
fn receipt_is_idempotent_by_its_external_id_even_with_a_stale_version() {
    let mut events = history(CaseState::Processing);
    events.push(receipt_added("rcpt-1", 2_500, 5));
    events.push(receipt_added("rcpt-2", 1_000, 6));
    let case = given(&events);
    assert_eq!(case.version, 6);
    for version in [case.version, 4, 5, 0, 100] {
        assert_eq!(
            when_at(&case, version, &receipt("rcpt-1", 2_500)),
            Ok(vec![]),
            "naming version {version}"
        );
    }
    // A new receipt with a stale version is still a conflict.
    assert_eq!(
        when_at(&case, 5, &receipt("rcpt-3", 100)),
        Err(DomainError::VersionConflict {
            expected: 5,
            actual: 6,
        })
    );
}

#[test]
fn receipt_with_a_known_external_id_and_another_amount_conflicts() {
    let mut events = history(CaseState::Processing);
    events.push(receipt_added("rcpt-1", 2_500, 5));
    let case = given(&events);
    for version in [case.version, 1] {
        assert_eq!(
            when_at(&case, version, &receipt("rcpt-1", 2_499)),
            Err(DomainError::ReceiptConflict {
                external_id: "rcpt-1".into(),
                recorded_minor: 2_500,
            })
        );
    }
}

#[test]
fn receipt_retry_after_close_is_still_answered_as_success() {
    // Idempotency takes precedence over the terminal rule: the retry changes nothing.
    let mut events = history(CaseState::Processing);
    events.push(receipt_added("rcpt-1", 2_500, 5));
    events.push(DebtCaseEvent::Closed { at: earlier(6) });
    let case = given(&events);
    assert_eq!(when(&case, &receipt("rcpt-1", 2_500)), Ok(vec![]));
    assert_eq!(
        when(&case, &receipt("rcpt-2", 2_500)),
        Err(DomainError::Terminal {
            command: "AddPaymentReceipt",
            state: CaseState::Closed,
        })
    );
}

#[test]
fn non_positive_receipt_is_rejected() {
    let case = in_state(CaseState::Processing);
    for amount in [0, -1, i64::MIN] {
        assert_invalid(
            when(&case, &receipt("rcpt-1", amount)),
            "receipt.amount_minor",
        );
    }
    assert_invalid(when(&case, &receipt("  ", 100)), "receipt.external_id");
}

#[test]
fn delete_only_in_reviewing_and_a_deleted_case_answers_not_found() {
    let mut events = history(CaseState::Reviewing);
    events.push(DebtCaseEvent::Deleted { at: earlier(1) });
    let case = given(&events);
    assert_eq!(case.version, 2);
    for command in every_command() {
        for version in [case.version, 1, 7] {
            assert_eq!(
                when_at(&case, version, &command),
                Err(DomainError::NotFound),
                "{} naming version {version}",
                command.name()
            );
        }
    }
}

#[test]
fn fail_requires_a_non_empty_reason() {
    for state in [
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        for reason in ["", "   ", "\n\t"] {
            assert_invalid(when(&in_state(state), &fail(reason)), "reason");
        }
    }
}

#[test]
fn start_processing_sets_processing_timeout_from_the_collector_configuration() {
    let events = vec![
        created_with("fast", CaseState::Preparing),
        DebtCaseEvent::Prepared { at: earlier(1) },
    ];
    let case = given(&events);
    assert_eq!(case.state, CaseState::Pending);
    let events = when(&case, &Command::StartProcessing).unwrap();
    assert_eq!(
        events,
        vec![DebtCaseEvent::ProcessingStarted {
            at: now(),
            timeout_on: now() + Duration::days(2),
        }]
    );
    let case = then_case(&case, &events);
    assert_eq!(case.processing_timeout_on, Some(now() + Duration::days(2)));
    assert_eq!(case.processing_started_on, Some(now()));
}

#[test]
fn update_with_no_changes_is_rejected() {
    for state in [
        CaseState::Reviewing,
        CaseState::Preparing,
        CaseState::Pending,
        CaseState::Processing,
    ] {
        assert_invalid(
            when(&in_state(state), &update(CaseChanges::default())),
            "changes",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// CollectorConfigurations::new
// ---------------------------------------------------------------------------------------------

fn configuration(id: &str) -> CollectorConfiguration {
    CollectorConfiguration {
        id: id.into(),
        environments: vec![Environment::Production],
        skip_review: false,
        processing_timeout: Duration::days(1),
    }
}

#[test]
fn collector_configurations_accept_a_valid_set() {
    let set =
        CollectorConfigurations::new(vec![configuration("a"), configuration("b")], "b").unwrap();
    assert_eq!(set.default_configuration().id, "b");
    assert_eq!(set.get("a"), Some(&configuration("a")));
    assert_eq!(set.get("c"), None);
    assert_eq!(set.iter().count(), 2);
}

#[test]
fn collector_configurations_reject_an_empty_set() {
    assert_eq!(
        CollectorConfigurations::new(vec![], "a"),
        Err(ConfigurationError::Empty)
    );
}

#[test]
fn collector_configurations_reject_a_duplicate_id() {
    assert_eq!(
        CollectorConfigurations::new(
            vec![configuration("a"), configuration("b"), configuration("a")],
            "a"
        ),
        Err(ConfigurationError::Duplicate("a".into()))
    );
}

#[test]
fn collector_configurations_reject_an_unknown_default() {
    assert_eq!(
        CollectorConfigurations::new(vec![configuration("a")], "z"),
        Err(ConfigurationError::UnknownDefault("z".into()))
    );
}

#[test]
fn collector_configurations_reject_a_configuration_without_environment() {
    let mut bare = configuration("b");
    bare.environments.clear();
    assert_eq!(
        CollectorConfigurations::new(vec![configuration("a"), bare], "a"),
        Err(ConfigurationError::NoEnvironment("b".into()))
    );
}

#[test]
fn collector_configurations_reject_a_non_positive_timeout() {
    for timeout in [Duration::zero(), Duration::seconds(-1)] {
        let mut c = configuration("b");
        c.processing_timeout = timeout;
        assert_eq!(
            CollectorConfigurations::new(vec![configuration("a"), c], "a"),
            Err(ConfigurationError::NonPositiveTimeout("b".into()))
        );
    }
}

#[test]
fn labels_are_bounded_in_count_and_length_and_may_not_be_blank() {
    let mut content = new_case();
    content.labels = vec!["x".to_owned(); debt_cases::MAX_LABELS + 1];
    assert_invalid(when_create(&content), "labels");
    content.labels = vec!["ok".into(), " ".into()];
    assert_invalid(when_create(&content), "labels[1]");
    content.labels = vec!["y".repeat(debt_cases::MAX_TEXT_LEN + 1)];
    assert_invalid(when_create(&content), "labels[0]");
    let case = in_state(CaseState::Pending);
    let changes = CaseChanges {
        labels: Some(vec![String::new()]),
        ..Default::default()
    };
    assert_invalid(when(&case, &update(changes)), "labels[0]");
}

#[test]
fn billing_address_fields_are_bounded() {
    let mut content = new_case();
    content.billing_address.street = "s".repeat(debt_cases::MAX_TEXT_LEN + 1);
    assert_invalid(when_create(&content), "billing_address.street");
    let case = in_state(CaseState::Processing);
    let mut address = new_case().billing_address;
    address.email_address = "e".repeat(debt_cases::MAX_TEXT_LEN + 1);
    let changes = CaseChanges {
        billing_address: Some(address),
        ..Default::default()
    };
    assert_invalid(
        when(&case, &update(changes)),
        "billing_address.email_address",
    );
}

/// A recorded event whose line items sum past i64 (written by something other than this
/// aggregate, which refuses such a command) is held at the bound when replayed: never wrapped
/// to a negative amount, never a panic.
#[test]
fn replaying_line_items_that_overflow_holds_the_amount_at_the_bound() {
    let mut content = new_case();
    content.line_items = vec![item("1", i64::MAX), item("2", i64::MAX)];
    let created = DebtCaseEvent::Created {
        case_id: CASE_ID.into(),
        tenant: TENANT.into(),
        content,
        collector_configuration_id: "default".into(),
        state: CaseState::Reviewing,
        creator: ACTOR.into(),
        at: earlier(1),
    };
    let case = given(&[created]);
    assert_eq!(case.amount_minor, i64::MAX);
    // The same items as a command are refused.
    let mut refused = new_case();
    refused.line_items = vec![item("1", i64::MAX), item("2", 1)];
    assert_invalid(when_create(&refused), "line_items");
}

/// `commands_in` offers exactly the commands `decide` takes in each state (with valid
/// arguments): what a client shows as buttons never disagrees with the aggregate.
#[test]
fn the_commands_offered_in_each_state_are_those_decide_takes() {
    let commands = [
        Command::MarkReviewed,
        Command::MarkPrepared,
        Command::StartProcessing,
        Command::AddPaymentReceipt {
            external_id: "r-1".into(),
            amount_minor: 1,
        },
        Command::Close,
        Command::Fail {
            reason: "unreachable".into(),
        },
        Command::Delete,
    ];
    for state in CaseState::ALL {
        if state == CaseState::Create {
            assert!(commands_in(state).is_empty());
            continue;
        }
        let case = in_state(state);
        let taken: Vec<&str> = commands
            .iter()
            .filter(|c| when(&case, c).is_ok())
            .map(Command::name)
            .collect();
        let mut offered = commands_in(state).to_vec();
        offered.sort_unstable();
        let mut taken_sorted = taken.clone();
        taken_sorted.sort_unstable();
        assert_eq!(offered, taken_sorted, "{state:?}");
    }
}
