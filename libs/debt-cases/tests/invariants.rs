//! Property test: random command sequences run through `decide` + `apply` from a valid Create
//! keep the aggregate's invariants (docs/domain.md §3) after every step.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use debt_cases::{
    BillingAddress, CaseChanges, CaseState, CollectorConfiguration, CollectorConfigurations,
    Command, DebtCase, DebtCaseEvent, DecisionContext, DomainError, Environment, LineItem, NewCase,
    decide, decide_create,
};
use proptest::prelude::*;

fn base_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 15, 10, 0, 0).unwrap()
}

fn today() -> NaiveDate {
    base_now().date_naive()
}

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

/// Which version a command names.
#[derive(Debug, Clone, Copy)]
enum VersionChoice {
    Correct,
    Below(u64),
    Above(u64),
}

impl VersionChoice {
    fn pick(self, actual: u64) -> u64 {
        match self {
            VersionChoice::Correct => actual,
            // `actual` is at least 1, so this is always another version.
            VersionChoice::Below(k) => actual.saturating_sub(k),
            VersionChoice::Above(k) => actual + k,
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    action: Action,
    version: VersionChoice,
}

/// A receipt amount: fixed, or relative to what is still open when the step runs.
#[derive(Debug, Clone, Copy)]
enum ReceiptAmount {
    Fixed(i64),
    /// Exactly what is still open (0 once fully collected, which is refused).
    Remaining,
    /// One minor unit more than is still open.
    RemainingPlusOne,
    /// The amount already recorded under this receipt id (a retry); 100 if there is none.
    AsRecorded,
}

/// A command, with receipt amounts resolved against the case when the step runs.
#[derive(Debug, Clone)]
enum Action {
    Plain(Box<Command>),
    Receipt {
        external_id: &'static str,
        amount: ReceiptAmount,
    },
}

impl Action {
    fn command(&self, case: &DebtCase) -> Command {
        match self {
            Action::Plain(command) => (**command).clone(),
            Action::Receipt {
                external_id,
                amount,
            } => {
                let open = case.amount_minor - case.collected_minor;
                Command::AddPaymentReceipt {
                    external_id: (*external_id).into(),
                    amount_minor: match amount {
                        ReceiptAmount::Fixed(a) => *a,
                        ReceiptAmount::Remaining => open,
                        ReceiptAmount::RemainingPlusOne => open + 1,
                        ReceiptAmount::AsRecorded => case
                            .receipts
                            .iter()
                            .find(|r| r.external_id == *external_id)
                            .map_or(100, |r| r.amount_minor),
                    },
                }
            }
        }
    }
}

fn version_choice() -> impl Strategy<Value = VersionChoice> {
    prop_oneof![
        8 => Just(VersionChoice::Correct),
        1 => (1u64..4).prop_map(VersionChoice::Below),
        1 => (1u64..4).prop_map(VersionChoice::Above),
    ]
}

fn date_around_today() -> impl Strategy<Value = NaiveDate> {
    // Mostly in the past, sometimes today or in the future (rejected).
    (-60i64..3).prop_map(|days| today() + Duration::days(days))
}

/// Line items that are sometimes invalid: duplicate ids, zero quantity, non-positive or huge amounts.
fn line_items() -> impl Strategy<Value = Vec<LineItem>> {
    let item = (
        prop::sample::select(vec!["a", "b", "c", "d", "e"]),
        prop_oneof![
            10 => 1i64..5_000,
            1 => -3i64..=0,
            1 => Just(i64::MAX),
        ],
        prop_oneof![9 => 1u32..5, 1 => Just(0u32)],
    )
        .prop_map(|(id, amount_minor, quantity)| LineItem {
            unique_id: id.into(),
            name: format!("item {id}"),
            quantity,
            amount_minor,
        });
    prop::collection::vec(item, 0..4)
}

fn changes() -> impl Strategy<Value = CaseChanges> {
    (
        prop::option::weighted(0.3, prop::sample::select(vec!["REF-2", "REF-3", " "])),
        prop::option::weighted(0.4, line_items()),
        prop::option::weighted(0.3, date_around_today()),
        prop::option::weighted(0.2, date_around_today()),
        prop::option::weighted(0.2, prop::sample::select(vec!["de-CH", "fr-CH", ""])),
        prop::option::weighted(0.2, prop::sample::select(vec!["Bern", "Basel"])),
        prop::option::weighted(0.2, prop::collection::vec("[a-z]{1,5}", 0..3)),
    )
        .prop_map(
            |(reference, line_items, due_date, contract_date, language, city, labels)| {
                CaseChanges {
                    reference: reference.map(Into::into),
                    line_items,
                    due_date,
                    contract_date,
                    language: language.map(Into::into),
                    billing_address: city.map(|c| BillingAddress {
                        city: c.into(),
                        ..BillingAddress::default()
                    }),
                    labels,
                }
            },
        )
}

fn new_case(
    items: Vec<LineItem>,
    config: Option<&str>,
    due_date: NaiveDate,
    external_id: &str,
) -> NewCase {
    NewCase {
        external_id: external_id.into(),
        reference: "REF-1".into(),
        collector_configuration_id: config.map(Into::into),
        environment: Environment::Production,
        currency: "EUR".into(),
        line_items: items,
        due_date,
        contract_date: None,
        language: "de-CH".into(),
        billing_address: BillingAddress::default(),
        labels: vec![],
    }
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => changes().prop_map(|c| Action::Plain(Box::new(Command::Update(c)))),
        3 => Just(Action::Plain(Box::new(Command::MarkReviewed))),
        3 => Just(Action::Plain(Box::new(Command::MarkPrepared))),
        3 => Just(Action::Plain(Box::new(Command::StartProcessing))),
        8 => (
            prop::sample::select(vec!["r1", "r2", "r3", "r4", ""]),
            prop_oneof![
                4 => prop::sample::select(vec![100i64, 250, 500, 1_000]).prop_map(ReceiptAmount::Fixed),
                2 => (1i64..3_000).prop_map(ReceiptAmount::Fixed),
                2 => Just(ReceiptAmount::Remaining),
                1 => Just(ReceiptAmount::RemainingPlusOne),
                4 => Just(ReceiptAmount::AsRecorded),
                1 => (-2i64..=0).prop_map(ReceiptAmount::Fixed),
                1 => Just(ReceiptAmount::Fixed(i64::MAX)),
            ],
        )
            .prop_map(|(external_id, amount)| Action::Receipt { external_id, amount }),
        1 => Just(Action::Plain(Box::new(Command::Close))),
        1 => prop::sample::select(vec!["", "processing timeout"])
            .prop_map(|r| Action::Plain(Box::new(Command::Fail { reason: r.into() }))),
        1 => Just(Action::Plain(Box::new(Command::Delete))),
        1 => Just(Action::Plain(Box::new(Command::Create(new_case(
            vec![LineItem {
                unique_id: "x".into(),
                name: "x".into(),
                quantity: 1,
                amount_minor: 1,
            }],
            None,
            NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            "ext-1",
        ))))),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (action(), version_choice()).prop_map(|(action, version)| Step { action, version })
}

/// A valid first Create: distinct ids, positive amounts, due date in the past.
fn valid_creation() -> impl Strategy<Value = NewCase> {
    (
        prop::collection::vec(1i64..2_500, 1..4),
        prop::sample::select(vec![None, Some("default"), Some("fast")]),
        1i64..60,
    )
        .prop_map(|(amounts, config, days_ago)| {
            let items = amounts
                .into_iter()
                .enumerate()
                .map(|(i, amount_minor)| LineItem {
                    unique_id: format!("li-{i}"),
                    name: format!("line {i}"),
                    quantity: 1,
                    amount_minor,
                })
                .collect();
            new_case(items, config, today() - Duration::days(days_ago), "ext-1")
        })
}

/// Position in the lifecycle; states never move backwards.
fn rank(state: CaseState) -> u8 {
    match state {
        CaseState::Create => 0,
        CaseState::Reviewing => 1,
        CaseState::Preparing => 2,
        CaseState::Pending => 3,
        CaseState::Processing => 4,
        CaseState::Closed | CaseState::Failed => 5,
    }
}

fn check_case_invariants(case: &DebtCase, accepted: u64) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        case.version,
        1 + accepted,
        "version counts accepted commands"
    );
    prop_assert!(case.collected_minor >= 0);
    prop_assert!(
        case.collected_minor <= case.amount_minor,
        "collected {} above amount {}",
        case.collected_minor,
        case.amount_minor
    );
    let receipts: Option<i64> = case
        .receipts
        .iter()
        .try_fold(0i64, |acc, r| acc.checked_add(r.amount_minor));
    prop_assert_eq!(
        Some(case.collected_minor),
        receipts,
        "collected = sum of receipts"
    );
    let items: Option<i64> = case
        .line_items
        .iter()
        .try_fold(0i64, |acc, i| acc.checked_add(i.amount_minor));
    prop_assert_eq!(Some(case.amount_minor), items, "amount = sum of line items");
    prop_assert!(case.amount_minor > 0);
    prop_assert!(case.receipts.iter().all(|r| r.amount_minor > 0));
    prop_assert_eq!(&case.creator, "key:creator", "the creator never changes");
    prop_assert_eq!(
        case.reviewer.as_deref(),
        case.reviewed_on.map(|_| "key:agent"),
        "a reviewed case names its reviewer, an unreviewed one none"
    );
    for (i, r) in case.receipts.iter().enumerate() {
        prop_assert!(
            case.receipts[..i]
                .iter()
                .all(|o| o.external_id != r.external_id),
            "receipt {:?} recorded twice",
            r.external_id
        );
    }
    for (i, item) in case.line_items.iter().enumerate() {
        prop_assert!(
            case.line_items[..i]
                .iter()
                .all(|o| o.unique_id != item.unique_id)
        );
    }
    Ok(())
}

fn run(creation: &NewCase, steps: &[Step]) -> Result<(), TestCaseError> {
    let collectors = collectors();
    let created = decide_create(
        "case-1",
        "tenant-a",
        creation,
        DecisionContext {
            now: base_now(),
            collectors: &collectors,
            actor: "key:creator",
        },
    );
    prop_assert!(created.is_ok(), "valid create refused: {:?}", created);
    let mut log = created.unwrap();
    prop_assert_eq!(log.len(), 1);
    let mut case = DebtCase::replay(&log).unwrap();
    let mut accepted = 0u64;
    let mut terminal: Option<CaseState> = None;
    check_case_invariants(&case, accepted)?;

    for (i, step) in steps.iter().enumerate() {
        let ctx = DecisionContext {
            now: base_now() + Duration::minutes(i as i64 + 1),
            collectors: &collectors,
            actor: "key:agent",
        };
        let before = case.clone();
        let expected_version = step.version.pick(before.version);
        let command = step.action.command(&before);
        let result = decide(&before, expected_version, &command, ctx);

        let recorded = match &command {
            Command::AddPaymentReceipt {
                external_id,
                amount_minor,
            } => before
                .receipts
                .iter()
                .find(|r| r.external_id == *external_id)
                .map(|r| (r.amount_minor == *amount_minor, r.amount_minor)),
            _ => None,
        };

        // Which answer the rules dictate, in their order of precedence.
        if before.deleted_on.is_some() {
            prop_assert_eq!(&result, &Err(DomainError::NotFound));
        } else if let Some((same_amount, recorded_minor)) = recorded {
            if same_amount {
                prop_assert_eq!(&result, &Ok(vec![]), "duplicate receipt is idempotent");
            } else {
                let Command::AddPaymentReceipt { external_id, .. } = &command else {
                    unreachable!()
                };
                prop_assert_eq!(
                    &result,
                    &Err(DomainError::ReceiptConflict {
                        external_id: external_id.clone(),
                        recorded_minor,
                    })
                );
            }
        } else if expected_version != before.version {
            prop_assert_eq!(
                &result,
                &Err(DomainError::VersionConflict {
                    expected: expected_version,
                    actual: before.version,
                })
            );
        } else if before.state.is_terminal() {
            prop_assert_eq!(
                &result,
                &Err(DomainError::Terminal {
                    command: command.name(),
                    state: before.state,
                })
            );
        } else if let (
            CaseState::Processing,
            Command::AddPaymentReceipt {
                external_id,
                amount_minor,
            },
        ) = (before.state, &command)
            && !external_id.is_empty()
        {
            // A new receipt: accepted exactly when positive and within the open amount.
            let fits = before
                .collected_minor
                .checked_add(*amount_minor)
                .is_some_and(|c| c <= before.amount_minor);
            if *amount_minor <= 0 {
                let is_invalid = matches!(&result, Err(DomainError::InvalidArgument { .. }));
                prop_assert!(is_invalid, "non-positive receipt: {:?}", result);
            } else if fits {
                prop_assert_eq!(result.as_ref().map(Vec::len), Ok(1), "receipt that fits");
            } else {
                prop_assert_eq!(
                    &result,
                    &Err(DomainError::CollectedExceedsAmount {
                        collected_minor: before.collected_minor,
                        receipt_minor: *amount_minor,
                        amount_minor: before.amount_minor,
                    })
                );
            }
        }

        match &result {
            Ok(events) if events.is_empty() => {
                prop_assert!(recorded.is_some(), "only a receipt retry answers no event");
            }
            Ok(events) => {
                prop_assert_eq!(events.len(), 1, "one event per accepted command");
                prop_assert!(!before.state.is_terminal());
                prop_assert_eq!(expected_version, before.version);
                for event in events {
                    let is_created = matches!(event, DebtCaseEvent::Created { .. });
                    prop_assert!(!is_created, "Created on an existing case");
                    case.apply(event);
                    log.push(event.clone());
                }
                accepted += 1;
            }
            Err(_) => {}
        }

        if result.is_err() || result.as_ref().is_ok_and(Vec::is_empty) {
            // A rejected (or idempotently answered) command changes nothing.
            prop_assert_eq!(&case, &before);
        }
        prop_assert!(
            rank(case.state) >= rank(before.state),
            "state went backwards"
        );
        if let Some(final_state) = terminal {
            // Refused: an error, or (for a retried receipt, checked above) no event at all.
            prop_assert_eq!(case.state, final_state, "terminal state changed");
            prop_assert!(
                result.as_ref().map_or(true, Vec::is_empty),
                "a command was accepted after {}",
                final_state
            );
        } else if case.state.is_terminal() {
            terminal = Some(case.state);
        }
        check_case_invariants(&case, accepted)?;
        prop_assert_eq!(log.len() as u64, 1 + accepted);
        let replayed = DebtCase::replay(&log);
        prop_assert_eq!(replayed.as_ref(), Some(&case), "replay differs");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_command_sequences_keep_the_invariants(
        creation in valid_creation(),
        steps in prop::collection::vec(step(), 0..60),
    ) {
        run(&creation, &steps)?;
    }
}
