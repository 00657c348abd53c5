//! Integration tests of the sled event store (real files in a temp dir, no mocks), the processing
//! timeout sweep and the outbox relay against the embedded Kafka cluster. One rule per test.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use case_lifecycle::relay::OutboxRelay;
use case_lifecycle::store::decode_event;
use case_lifecycle::timeouts::{PROCESSING_TIMEOUT_REASON, fail_timed_out};
use case_lifecycle::{CaseCommand, CommandError, EventStore, StoreSettings};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use debt_cases::{
    BillingAddress, CaseChanges, CaseState, CollectorConfiguration, CollectorConfigurations,
    Command, DebtCase, DebtCaseEvent, DomainError, Environment, LineItem, NewCase,
};
use event_backbone::envelope::{EventMetadata, decode_envelope};
use event_backbone::producer::ProducerSettings;
use event_backbone::topics::DEBT_CASES;
use event_backbone::{EmbeddedKafka, EventConsumer, EventProducer};
use tempfile::TempDir;
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const TENANT: &str = "tenant-a";
const OTHER_TENANT: &str = "tenant-b";

/// A clock the test moves by hand; the store reads it once per group.
#[derive(Clone)]
struct TestClock(Arc<Mutex<DateTime<Utc>>>);

impl TestClock {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(
            Utc.with_ymd_and_hms(2024, 6, 15, 12, 0, 0).unwrap(),
        )))
    }

    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }

    fn advance(&self, by: Duration) -> DateTime<Utc> {
        let mut now = self.0.lock().unwrap();
        *now += by;
        *now
    }

    fn as_fn(&self) -> Arc<dyn Fn() -> DateTime<Utc> + Send + Sync> {
        let clock = self.clone();
        Arc::new(move || clock.now())
    }
}

/// `default`: both environments, with review, 60 s processing timeout.
fn collectors() -> CollectorConfigurations {
    CollectorConfigurations::new(
        vec![CollectorConfiguration {
            id: "default".into(),
            environments: vec![Environment::Production, Environment::Test],
            skip_review: false,
            processing_timeout: Duration::seconds(60),
        }],
        "default",
    )
    .unwrap()
}

fn open(dir: &Path, clock: &TestClock) -> EventStore {
    EventStore::open(
        dir,
        StoreSettings {
            collectors: collectors(),
            store: Default::default(),
        },
        clock.as_fn(),
    )
    .unwrap()
}

/// Opens the store again after the previous handle was dropped: sled keeps its file lock until
/// the old writer thread has finished, so this retries for a while.
fn reopen(dir: &Path, clock: &TestClock) -> EventStore {
    let deadline = Instant::now() + StdDuration::from_secs(20);
    loop {
        match EventStore::open(
            dir,
            StoreSettings {
                collectors: collectors(),
                store: Default::default(),
            },
            clock.as_fn(),
        ) {
            Ok(store) => return store,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                std::thread::sleep(StdDuration::from_millis(20));
            }
            Err(error) => panic!("store did not reopen: {error}"),
        }
    }
}

fn metadata() -> EventMetadata {
    EventMetadata {
        correlation_id: "test-correlation".into(),
        causation_id: "test-causation".into(),
        actor: "key:0123456789abcdef".into(),
    }
}

/// A valid creation request: EUR 100.00 in two line items, external id `ext-{n}`, reference
/// `REF-{n}`.
fn new_case(n: &str) -> NewCase {
    NewCase {
        external_id: format!("ext-{n}"),
        reference: format!("REF-{n}"),
        collector_configuration_id: None,
        environment: Environment::Production,
        currency: "EUR".into(),
        line_items: vec![
            LineItem {
                unique_id: "li-1".into(),
                name: "first".into(),
                quantity: 1,
                amount_minor: 7_000,
            },
            LineItem {
                unique_id: "li-2".into(),
                name: "second".into(),
                quantity: 2,
                amount_minor: 3_000,
            },
        ],
        due_date: NaiveDate::from_ymd_opt(2024, 5, 31).unwrap(),
        contract_date: NaiveDate::from_ymd_opt(2024, 1, 10),
        language: "de-CH".into(),
        billing_address: BillingAddress {
            given_name: "Erika".into(),
            family_name: "Muster".into(),
            city: "Bern".into(),
            country: "CH".into(),
            ..BillingAddress::default()
        },
        labels: vec!["initial".into()],
    }
}

async fn create(
    store: &EventStore,
    tenant: &str,
    content: NewCase,
) -> Result<DebtCase, CommandError> {
    store
        .execute(tenant, CaseCommand::Create(content), metadata())
        .await
}

async fn run(
    store: &EventStore,
    tenant: &str,
    case_id: &str,
    expected_version: u64,
    command: Command,
) -> Result<DebtCase, CommandError> {
    let command = CaseCommand::Existing {
        case_id: case_id.to_owned(),
        expected_version,
        command,
    };
    store.execute(tenant, command, metadata()).await
}

fn labels(labels: &[&str]) -> Command {
    Command::Update(CaseChanges {
        labels: Some(labels.iter().map(|l| (*l).to_owned()).collect()),
        ..CaseChanges::default()
    })
}

fn reference(reference: &str) -> Command {
    Command::Update(CaseChanges {
        reference: Some(reference.to_owned()),
        ..CaseChanges::default()
    })
}

/// The domain rejection of a command that must have been rejected.
fn rejection(result: Result<DebtCase, CommandError>) -> DomainError {
    match result {
        Err(CommandError::Rejected(e)) => e,
        Err(CommandError::Failed(e)) => panic!("expected a rejection, got a store failure: {e}"),
        Ok(case) => panic!("expected a rejection, got case at version {}", case.version),
    }
}

fn events(store: &EventStore, tenant: &str, case_id: &str) -> Vec<DebtCaseEvent> {
    store
        .events_after(tenant, case_id, 0)
        .unwrap()
        .iter()
        .map(|bytes| decode_event(bytes).unwrap())
        .collect()
}

fn event_count(store: &EventStore, tenant: &str, case_id: &str) -> usize {
    store.events_after(tenant, case_id, 0).unwrap().len()
}

/// (case id, version) of every outbox record, in append order.
fn outbox_versions(store: &EventStore) -> Vec<(String, u64)> {
    store
        .outbox_batch(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, record)| {
            let envelope = decode_envelope(&record.envelope).unwrap();
            assert_eq!(record.key, envelope.aggregate_id);
            assert_eq!(record.event_id, envelope.event_id);
            assert_eq!(record.event_type, envelope.event_type);
            assert_eq!(record.topic, DEBT_CASES.name);
            (record.key, envelope.aggregate_version)
        })
        .collect()
}

/// Empties the outbox as if the relay had published everything.
fn drain_outbox(store: &EventStore) {
    let keys: Vec<_> = store
        .outbox_batch(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    store.remove_from_outbox(&keys).unwrap();
    assert_eq!(store.outbox_len(), 0);
}

/// Creates a case and takes it to PROCESSING; returns it (version 4).
async fn processing_case(store: &EventStore, n: &str) -> DebtCase {
    let case = create(store, TENANT, new_case(n)).await.unwrap();
    let case = run(store, TENANT, &case.id, 1, Command::MarkReviewed)
        .await
        .unwrap();
    let case = run(store, TENANT, &case.id, 2, Command::MarkPrepared)
        .await
        .unwrap();
    let case = run(store, TENANT, &case.id, 3, Command::StartProcessing)
        .await
        .unwrap();
    assert_eq!(case.state, CaseState::Processing);
    assert_eq!(case.version, 4);
    case
}

// ---------------------------------------------------------------------------------------------
// Creation and durability
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn create_starts_at_version_1_reviewing_and_the_answer_is_durable_across_reopen() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);

    let created = create(&store, TENANT, new_case("1")).await.unwrap();
    assert_eq!(created.version, 1);
    assert_eq!(created.state, CaseState::Reviewing);
    assert_eq!(created.amount_minor, 10_000);
    assert_eq!(created.created_on, clock.now());
    assert_eq!(
        store.get(TENANT, &created.id).unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.outbox_len(), 1);

    drop(store);
    let store = reopen(dir.path(), &clock);
    assert_eq!(
        store.get(TENANT, &created.id).unwrap(),
        Some(created.clone())
    );
    assert_eq!(event_count(&store, TENANT, &created.id), 1);
    // The outbox survived, and the reopened writer appends after it instead of over it.
    assert_eq!(store.outbox_len(), 1);
    let second = create(&store, TENANT, new_case("2")).await.unwrap();
    let outbox = outbox_versions(&store);
    assert_eq!(
        outbox,
        vec![(created.id.clone(), 1), (second.id.clone(), 1)]
    );
    // The reopened store knows the first case: commands on it see its version.
    let updated = run(&store, TENANT, &created.id, 1, labels(&["after-reopen"]))
        .await
        .unwrap();
    assert_eq!(updated.version, 2);
}

// ---------------------------------------------------------------------------------------------
// Optimistic concurrency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_commands_at_one_version_have_exactly_one_winner_and_no_lost_update() {
    const RACERS: usize = 16;
    const ROUNDS: u64 = 8;
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let case = create(&store, TENANT, new_case("race")).await.unwrap();

    let mut winners: Vec<(u64, String)> = Vec::new();
    for round in 0..ROUNDS {
        let version = 1 + round;
        let mut tasks = JoinSet::new();
        for racer in 0..RACERS {
            let store = store.clone();
            let id = case.id.clone();
            let label = format!("v{version}-racer{racer}");
            tasks.spawn(async move {
                let result = run(&store, TENANT, &id, version, labels(&[&label])).await;
                (label, result)
            });
        }
        let mut round_winners = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (label, result) = joined.unwrap();
            match result {
                Ok(updated) => {
                    assert_eq!(updated.version, version + 1);
                    assert_eq!(updated.labels, vec![label.clone()]);
                    round_winners.push(label);
                }
                Err(CommandError::Rejected(DomainError::VersionConflict { expected, actual })) => {
                    assert_eq!(expected, version);
                    assert_eq!(actual, version + 1);
                }
                Err(other) => panic!("unexpected answer: {other}"),
            }
        }
        assert_eq!(round_winners.len(), 1, "round at version {version}");
        winners.push((version + 1, round_winners.remove(0)));
    }

    let final_case = store.get(TENANT, &case.id).unwrap().unwrap();
    assert_eq!(final_case.version, 1 + winners.len() as u64);
    assert_eq!(final_case.labels, vec![winners.last().unwrap().1.clone()]);
    // Every winner's change is in the stream, at the version it was answered with.
    let stream = events(&store, TENANT, &case.id);
    assert_eq!(stream.len() as u64, final_case.version);
    for (version, label) in &winners {
        match &stream[(*version - 1) as usize] {
            DebtCaseEvent::Updated { changes, .. } => {
                assert_eq!(
                    changes.labels,
                    Some(vec![label.clone()]),
                    "version {version}"
                );
            }
            other => panic!(
                "version {version} is {}",
                recoup_proto::convert::event_type(other)
            ),
        }
    }
    assert_eq!(store.outbox_len() as u64, final_case.version);
}

// ---------------------------------------------------------------------------------------------
// Group commit and the outbox
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_all_succeed_and_each_event_is_in_the_outbox_once_in_order() {
    const TASKS: usize = 16;
    const CASES_PER_TASK: usize = 8;
    const UPDATES_PER_CASE: u64 = 2;
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);

    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for n in 0..CASES_PER_TASK {
                let content = new_case(&format!("{task}-{n}"));
                let case = create(&store, TENANT, content).await.unwrap();
                assert_eq!(case.version, 1);
                ids.push(case.id);
            }
            for id in &ids {
                for version in 1..=UPDATES_PER_CASE {
                    let label = format!("update-{version}");
                    let case = run(&store, TENANT, id, version, labels(&[&label]))
                        .await
                        .unwrap();
                    assert_eq!(case.version, version + 1);
                }
            }
            ids
        });
    }
    let mut ids = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        for id in joined.unwrap() {
            assert!(ids.insert(id), "two creates got the same case id");
        }
    }
    assert_eq!(ids.len(), TASKS * CASES_PER_TASK);

    let events_per_case = 1 + UPDATES_PER_CASE;
    let mut stored_events = 0;
    for id in &ids {
        let n = event_count(&store, TENANT, id);
        assert_eq!(n as u64, events_per_case);
        stored_events += n;
    }
    let outbox = outbox_versions(&store);
    assert_eq!(outbox.len(), stored_events);
    assert_eq!(store.outbox_len(), stored_events);
    // Each event exactly once; per case, versions strictly increase in append order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (id, version) in &outbox {
        assert!(ids.contains(id), "outbox record of unknown case {id}");
        let previous = last.insert(id, *version).unwrap_or(0);
        assert_eq!(
            *version,
            previous + 1,
            "case {id}: {previous} then {version}"
        );
    }
    assert_eq!(last.len(), ids.len());
    assert!(last.values().all(|v| *v == events_per_case));
}

// ---------------------------------------------------------------------------------------------
// External-id idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn external_id_same_content_returns_the_original_case_other_content_conflicts() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let original = create(&store, TENANT, new_case("1")).await.unwrap();
    assert_eq!(store.outbox_len(), 1);

    clock.advance(Duration::seconds(5));
    let again = create(&store, TENANT, new_case("1")).await.unwrap();
    assert_eq!(again, original);
    assert_eq!(store.outbox_len(), 1);
    assert_eq!(event_count(&store, TENANT, &original.id), 1);

    let mut other = new_case("1");
    other.labels = vec!["something else".into()];
    other.reference = "REF-other".into();
    assert_eq!(
        rejection(create(&store, TENANT, other).await),
        DomainError::ExternalIdConflict {
            external_id: "ext-1".into(),
            case_id: original.id.clone(),
        }
    );
    assert_eq!(store.outbox_len(), 1);
    assert_eq!(event_count(&store, TENANT, &original.id), 1);
    // The conflicting request did not take its reference either.
    let mut free = new_case("2");
    free.reference = "REF-other".into();
    create(&store, TENANT, free).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_id_idempotency_holds_for_creates_in_flight_together() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);

    // Same content, in flight together: one case, one event.
    for round in 0..10 {
        let content = new_case(&format!("same-{round}"));
        let a = tokio::spawn({
            let (store, content) = (store.clone(), content.clone());
            async move { create(&store, TENANT, content).await }
        });
        let b = tokio::spawn({
            let store = store.clone();
            async move { create(&store, TENANT, content).await }
        });
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        assert_eq!(a.id, b.id);
        assert_eq!(a, b);
        assert_eq!(event_count(&store, TENANT, &a.id), 1);
    }
    assert_eq!(store.outbox_len(), 10);

    // Other content, in flight together: one wins, the other conflicts with the winner.
    for round in 0..10 {
        let first = new_case(&format!("other-{round}"));
        let mut second = first.clone();
        second.labels = vec!["different".into()];
        let a = tokio::spawn({
            let store = store.clone();
            async move { create(&store, TENANT, first).await }
        });
        let b = tokio::spawn({
            let store = store.clone();
            async move { create(&store, TENANT, second).await }
        });
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let (winner, loser) = match (a, b) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            (a, b) => panic!("expected one winner: {a:?} / {b:?}"),
        };
        assert_eq!(
            rejection(Err(loser)),
            DomainError::ExternalIdConflict {
                external_id: format!("ext-other-{round}"),
                case_id: winner.id.clone(),
            }
        );
        assert_eq!(event_count(&store, TENANT, &winner.id), 1);
    }
    assert_eq!(store.outbox_len(), 20);
}

// ---------------------------------------------------------------------------------------------
// Reference uniqueness
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reference_is_unique_per_tenant_and_freed_by_update_and_delete() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let a = create(&store, TENANT, new_case("a")).await.unwrap();

    // Same reference, other external id, same tenant: taken.
    let mut b = new_case("b");
    b.reference = a.reference.clone();
    assert_eq!(
        rejection(create(&store, TENANT, b.clone()).await),
        DomainError::ReferenceTaken {
            reference: a.reference.clone(),
            case_id: a.id.clone(),
        }
    );
    // The same reference in another tenant is fine.
    let in_other_tenant = create(&store, OTHER_TENANT, b.clone()).await.unwrap();
    assert_eq!(in_other_tenant.reference, a.reference);

    // After `a` moved to another reference, its old one is free.
    let a = run(&store, TENANT, &a.id, 1, reference("REF-a-renamed"))
        .await
        .unwrap();
    let b = create(&store, TENANT, b).await.unwrap();
    assert_eq!(b.reference, "REF-a");
    // ... and the new one is taken.
    let mut c = new_case("c");
    c.reference = "REF-a-renamed".into();
    assert_eq!(
        rejection(create(&store, TENANT, c).await),
        DomainError::ReferenceTaken {
            reference: "REF-a-renamed".into(),
            case_id: a.id.clone(),
        }
    );

    // After deleting `b`, both its reference and its external id are free.
    let deleted = run(&store, TENANT, &b.id, 1, Command::Delete)
        .await
        .unwrap();
    assert!(deleted.deleted_on.is_some());
    let mut d = new_case("b");
    d.reference = "REF-a".into();
    d.labels = vec!["new content".into()];
    let d = create(&store, TENANT, d).await.unwrap();
    assert_ne!(d.id, b.id);
    assert_eq!(d.version, 1);
    assert_eq!(d.reference, "REF-a");
    assert_eq!(d.external_id, "ext-b");
    // A re-sent create of the deleted case's content now meets `d`, not the deleted case.
    let again = create(&store, TENANT, new_case("b")).await;
    assert_eq!(
        rejection(again),
        DomainError::ExternalIdConflict {
            external_id: "ext-b".into(),
            case_id: d.id.clone(),
        }
    );
}

#[tokio::test]
async fn update_to_a_reference_of_another_case_is_rejected() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let a = create(&store, TENANT, new_case("a")).await.unwrap();
    let b = create(&store, TENANT, new_case("b")).await.unwrap();
    let outbox_before = store.outbox_len();

    assert_eq!(
        rejection(run(&store, TENANT, &b.id, 1, reference(&a.reference)).await),
        DomainError::ReferenceTaken {
            reference: a.reference.clone(),
            case_id: a.id.clone(),
        }
    );
    assert_eq!(store.get(TENANT, &b.id).unwrap().unwrap(), b);
    assert_eq!(store.outbox_len(), outbox_before);

    // `a` still owns its reference even after `b` changes its own.
    run(&store, TENANT, &b.id, 1, reference("REF-b2"))
        .await
        .unwrap();
    let mut c = new_case("c");
    c.reference = a.reference.clone();
    assert_eq!(
        rejection(create(&store, TENANT, c).await),
        DomainError::ReferenceTaken {
            reference: a.reference.clone(),
            case_id: a.id.clone(),
        }
    );
    // Naming one's own reference again is no conflict.
    let a2 = run(&store, TENANT, &a.id, 1, reference(&a.reference))
        .await
        .unwrap();
    assert_eq!(a2.version, 2);
}

// ---------------------------------------------------------------------------------------------
// Tenancy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_case_of_one_tenant_is_invisible_to_another() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let case = create(&store, TENANT, new_case("1")).await.unwrap();

    assert_eq!(store.get(OTHER_TENANT, &case.id).unwrap(), None);
    assert!(
        store
            .events_after(OTHER_TENANT, &case.id, 0)
            .unwrap()
            .is_empty()
    );
    for command in [
        labels(&["intruder"]),
        Command::MarkReviewed,
        Command::Close,
        Command::Delete,
    ] {
        assert_eq!(
            rejection(run(&store, OTHER_TENANT, &case.id, 1, command).await),
            DomainError::NotFound
        );
    }
    assert_eq!(
        store
            .republish_after(OTHER_TENANT, &case.id, 0)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.get(TENANT, &case.id).unwrap(), Some(case.clone()));
    assert_eq!(store.outbox_len(), 1);
    assert!(
        store
            .due_timeouts(clock.now() + Duration::days(365))
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Rejections
// ---------------------------------------------------------------------------------------------

/// Whether a rejection is the one a command must get.
type IsExpected = fn(&DomainError) -> bool;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rejected_command_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let case = create(&store, TENANT, new_case("1")).await.unwrap();
    let outbox_before = store.outbox_len();
    let events_before = event_count(&store, TENANT, &case.id);

    let rejected: Vec<(CaseCommand, IsExpected)> = vec![
        (
            CaseCommand::Existing {
                case_id: case.id.clone(),
                expected_version: 7,
                command: labels(&["stale"]),
            },
            |e| {
                matches!(
                    e,
                    DomainError::VersionConflict {
                        expected: 7,
                        actual: 1
                    }
                )
            },
        ),
        (
            CaseCommand::Existing {
                case_id: case.id.clone(),
                expected_version: 1,
                command: Command::MarkPrepared,
            },
            |e| matches!(e, DomainError::IllegalTransition { .. }),
        ),
        (
            CaseCommand::Existing {
                case_id: case.id.clone(),
                expected_version: 1,
                command: Command::Update(CaseChanges::default()),
            },
            |e| matches!(e, DomainError::InvalidArgument { .. }),
        ),
        (
            CaseCommand::Create(NewCase {
                currency: "XXX".into(),
                ..new_case("bad-currency")
            }),
            |e| matches!(e, DomainError::InvalidArgument { .. }),
        ),
        (
            CaseCommand::Create(NewCase {
                due_date: clock.now().date_naive() + Duration::days(1),
                ..new_case("future-due-date")
            }),
            |e| matches!(e, DomainError::InvalidArgument { .. }),
        ),
        (
            CaseCommand::Existing {
                case_id: "no-such-case".into(),
                expected_version: 1,
                command: Command::Close,
            },
            |e| matches!(e, DomainError::NotFound),
        ),
    ];

    // One at a time...
    for (command, expected) in &rejected {
        let error = rejection(store.execute(TENANT, command.clone(), metadata()).await);
        assert!(expected(&error), "unexpected rejection {error:?}");
        assert_eq!(store.outbox_len(), outbox_before);
        assert_eq!(event_count(&store, TENANT, &case.id), events_before);
    }
    assert_eq!(store.get(TENANT, &case.id).unwrap(), Some(case.clone()));

    // ... and all together with one accepted command of another case, likely in one group:
    // only the accepted one is written.
    let mut tasks = JoinSet::new();
    for (command, expected) in rejected {
        let store = store.clone();
        tasks.spawn(async move {
            let error = rejection(store.execute(TENANT, command, metadata()).await);
            assert!(expected(&error), "unexpected rejection {error:?}");
        });
    }
    let accepted = create(&store, TENANT, new_case("accepted")).await.unwrap();
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    assert_eq!(store.outbox_len(), outbox_before + 1);
    assert_eq!(event_count(&store, TENANT, &accepted.id), 1);
    assert_eq!(event_count(&store, TENANT, &case.id), events_before);
    assert_eq!(store.get(TENANT, &case.id).unwrap(), Some(case.clone()));
    assert!(store.get(TENANT, "no-such-case").unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Processing timeout
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn processing_timeout_fails_the_case_once_and_only_after_the_timeout() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let started_at = clock.now();
    let case = processing_case(&store, "1").await;
    assert_eq!(
        case.processing_timeout_on,
        Some(started_at + Duration::seconds(60))
    );

    let before = clock.advance(Duration::seconds(59));
    assert!(store.due_timeouts(before).unwrap().is_empty());
    assert_eq!(fail_timed_out(&store, before).await.unwrap(), 0);
    assert_eq!(
        store.get(TENANT, &case.id).unwrap().unwrap().state,
        CaseState::Processing
    );

    let after = clock.advance(Duration::seconds(2));
    assert_eq!(
        store.due_timeouts(after).unwrap(),
        vec![(TENANT.to_owned(), case.id.clone())]
    );
    assert_eq!(fail_timed_out(&store, after).await.unwrap(), 1);
    let failed = store.get(TENANT, &case.id).unwrap().unwrap();
    assert_eq!(failed.state, CaseState::Failed);
    assert_eq!(failed.version, case.version + 1);
    assert_eq!(
        failed.failure_reason.as_deref(),
        Some(PROCESSING_TIMEOUT_REASON)
    );
    assert_eq!(PROCESSING_TIMEOUT_REASON, "processing timeout");
    assert_eq!(failed.failed_on, Some(after));

    // The index entry is gone: nothing is due any more, a second sweep fails nothing.
    let later = clock.advance(Duration::days(30));
    assert!(store.due_timeouts(later).unwrap().is_empty());
    assert_eq!(fail_timed_out(&store, later).await.unwrap(), 0);
    assert_eq!(event_count(&store, TENANT, &case.id) as u64, failed.version);
}

#[tokio::test]
async fn a_case_closed_before_its_processing_timeout_is_never_failed() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let case = processing_case(&store, "1").await;

    clock.advance(Duration::seconds(30));
    let closed = run(&store, TENANT, &case.id, case.version, Command::Close)
        .await
        .unwrap();
    assert_eq!(closed.state, CaseState::Closed);

    let later = clock.advance(Duration::days(30));
    assert!(store.due_timeouts(later).unwrap().is_empty());
    assert_eq!(fail_timed_out(&store, later).await.unwrap(), 0);
    assert_eq!(store.get(TENANT, &case.id).unwrap(), Some(closed));
}

// ---------------------------------------------------------------------------------------------
// Republishing
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn republish_after_requeues_exactly_the_later_events() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let case = processing_case(&store, "1").await;
    let case = run(&store, TENANT, &case.id, 4, labels(&["v5"]))
        .await
        .unwrap();
    assert_eq!(case.version, 5);
    // Another case's events must not be requeued with it.
    create(&store, TENANT, new_case("2")).await.unwrap();
    drain_outbox(&store);

    assert_eq!(store.republish_after(TENANT, &case.id, 2).await.unwrap(), 3);
    let stored: Vec<String> = store
        .events_after(TENANT, &case.id, 2)
        .unwrap()
        .iter()
        .map(|bytes| decode_envelope(bytes).unwrap().event_id)
        .collect();
    let outbox = store.outbox_batch(usize::MAX).unwrap();
    let requeued: Vec<String> = outbox.iter().map(|(_, r)| r.event_id.clone()).collect();
    assert_eq!(requeued, stored);
    assert_eq!(
        outbox_versions(&store),
        vec![
            (case.id.clone(), 3),
            (case.id.clone(), 4),
            (case.id.clone(), 5)
        ]
    );
    // Republishing writes no new event.
    assert_eq!(event_count(&store, TENANT, &case.id), 5);
    assert_eq!(store.republish_after(TENANT, &case.id, 5).await.unwrap(), 0);
    assert_eq!(store.outbox_len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Relay to Kafka
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_every_outbox_record_once_in_order_per_case() {
    const CASES: usize = 20;
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..CASES {
        let case = create(&store, TENANT, new_case(&n.to_string()))
            .await
            .unwrap();
        let mut version = case.version;
        for step in 0..(n % 4) {
            let label = format!("step-{step}");
            version = run(&store, TENANT, &case.id, version, labels(&[&label]))
                .await
                .unwrap()
                .version;
        }
        let ids = store
            .events_after(TENANT, &case.id, 0)
            .unwrap()
            .iter()
            .map(|bytes| decode_envelope(bytes).unwrap().event_id)
            .collect();
        expected.insert(case.id, ids);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(store.outbox_len(), total);

    let embedded = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let kafka = embedded.kafka_config();
    let producer = EventProducer::new(&kafka, &ProducerSettings::default(), None).unwrap();
    let relay = OutboxRelay::new(store.clone(), Arc::new(producer));
    assert_eq!(relay.publish_pending().await.unwrap(), total);
    assert_eq!(store.outbox_len(), 0);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);

    let consumer = EventConsumer::new(&kafka, "store-test", DEBT_CASES.name, None).unwrap();
    let partitions = consumer.partitions(StdDuration::from_secs(10)).unwrap();
    assert_eq!(partitions.len(), DEBT_CASES.partitions as usize);
    let start: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    consumer.assign(&start).unwrap();

    let mut received: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + StdDuration::from_secs(20);
    while count < total && Instant::now() < deadline {
        let Ok(batch) =
            tokio::time::timeout(StdDuration::from_secs(1), consumer.recv_batch(256)).await
        else {
            continue;
        };
        for event in batch.unwrap() {
            let envelope = decode_envelope(&event.value).unwrap();
            assert_eq!(event.key, envelope.aggregate_id.as_bytes());
            assert_eq!(envelope.tenant, TENANT);
            received
                .entry(envelope.aggregate_id)
                .or_default()
                .push((envelope.aggregate_version, envelope.event_id));
            count += 1;
        }
    }
    // Nothing beyond what was expected arrives (no duplicate).
    if let Ok(extra) =
        tokio::time::timeout(StdDuration::from_millis(500), consumer.recv_batch(256)).await
    {
        panic!("unexpected extra messages: {}", extra.unwrap().len());
    }
    assert_eq!(count, total);
    assert_eq!(received.len(), expected.len());
    for (case_id, ids) in &expected {
        let got = &received[case_id];
        let versions: Vec<u64> = got.iter().map(|(v, _)| *v).collect();
        let want: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(versions, want, "case {case_id}");
        let got_ids: Vec<String> = got.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(&got_ids, ids, "case {case_id}");
    }
}

// ---------------------------------------------------------------------------------------------
// Upgrade of the key layout
// ---------------------------------------------------------------------------------------------

/// A key of the codec's layout written as layout 1 wrote it: parts separated by 0 bytes.
fn layout_one(key: &[u8]) -> Vec<u8> {
    use recoup_keys::KeyReader;
    let prefix = key[0];
    let mut r = KeyReader::new(key, prefix).unwrap();
    let mut old = vec![prefix];
    let mut part = |bytes: &[u8]| {
        old.push(0);
        old.extend_from_slice(bytes);
    };
    match prefix {
        b'e' => {
            part(r.str_bytes().unwrap());
            part(r.str_bytes().unwrap());
            part(&r.u64().unwrap().to_be_bytes());
        }
        b'x' | b'r' => {
            part(r.str_bytes().unwrap());
            part(r.last_str().unwrap().as_bytes());
        }
        b't' => {
            part(&r.u64().unwrap().to_be_bytes());
            part(r.str_bytes().unwrap());
            part(r.last_str().unwrap().as_bytes());
        }
        b'o' => return key.to_vec(),
        _ => panic!("unknown key {key:?}"),
    }
    old
}

#[tokio::test]
async fn a_store_of_the_old_key_layout_opens_with_every_case_index_timeout_and_outbox_record() {
    let new_dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(new_dir.path(), &clock);
    let processing = processing_case(&store, "p").await;
    let reviewing = create(&store, TENANT, new_case("r")).await.unwrap();
    let outbox = outbox_versions(&store);
    assert!(store.close(StdDuration::from_secs(10)));

    // The same entries, as the store wrote them before the key codec (tree `events`).
    let old_dir = TempDir::new().unwrap();
    {
        let new = open_when_released(new_dir.path());
        let old = sled::open(old_dir.path()).unwrap();
        let events = old.open_tree("events").unwrap();
        for entry in new.open_tree("event_store").unwrap().iter() {
            let (key, value) = entry.unwrap();
            if !key.starts_with(b"~") {
                events.insert(layout_one(&key), value).unwrap();
            }
        }
        old.flush().unwrap();
    }

    let store = reopen(old_dir.path(), &clock);
    assert_eq!(
        store.get(TENANT, &processing.id).unwrap(),
        Some(processing.clone())
    );
    assert_eq!(
        store.get(TENANT, &reviewing.id).unwrap(),
        Some(reviewing.clone())
    );
    assert_eq!(event_count(&store, TENANT, &processing.id), 4);
    assert_eq!(outbox_versions(&store), outbox);
    let heads: HashSet<_> = store.heads().map(|h| h.unwrap()).collect();
    assert!(heads.contains(&(TENANT.to_owned(), processing.id.clone(), 4)));
    // The external-id and reference indexes.
    let again = create(&store, TENANT, new_case("r")).await.unwrap();
    assert_eq!(again.id, reviewing.id);
    let mut taken = new_case("other");
    taken.reference = reviewing.reference.clone();
    assert!(matches!(
        rejection(create(&store, TENANT, taken).await),
        DomainError::ReferenceTaken { .. }
    ));
    // The processing timeout index.
    let now = clock.advance(Duration::seconds(61));
    assert_eq!(
        store.due_timeouts(now).unwrap(),
        [(TENANT.to_owned(), processing.id.clone())]
    );
}

/// A timeout checker whose stop sender is gone (its process is going away) stops, instead of
/// checking in a busy loop.
#[tokio::test]
async fn the_timeout_checks_stop_when_their_stop_sender_is_gone() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    drop(stop);
    let checks = case_lifecycle::timeouts::run(
        store.clone(),
        clock.as_fn(),
        StdDuration::from_secs(3600),
        stopped,
    );
    tokio::time::timeout(StdDuration::from_secs(30), checks)
        .await
        .expect("the checks end");
}

/// The database in `dir`, once the store closed just before has let go of its file lock (the
/// release can trail the close by a moment on a loaded machine).
fn open_when_released(dir: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + StdDuration::from_secs(10);
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(error)
                if error.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(StdDuration::from_millis(50));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[tokio::test]
async fn cases_are_found_by_a_prefix_of_their_reference_page_by_page() {
    let dir = TempDir::new().unwrap();
    let clock = TestClock::new();
    let store = open(dir.path(), &clock);
    for n in ["inv-3", "inv-1", "inv-2", "inv-10", "ord-1"] {
        create(&store, TENANT, new_case(n)).await.unwrap();
    }
    create(&store, OTHER_TENANT, new_case("inv-9"))
        .await
        .unwrap();
    let references = |found: &case_lifecycle::store::Found| {
        found
            .cases
            .iter()
            .map(|c| c.reference.clone())
            .collect::<Vec<_>>()
    };
    let all = store
        .search_references(TENANT, "REF-inv", None, 10, 100)
        .unwrap();
    assert_eq!(
        references(&all),
        ["REF-inv-1", "REF-inv-10", "REF-inv-2", "REF-inv-3"]
    );
    assert_eq!(all.after, None);
    // Two per page: the token is the last reference read.
    let first = store
        .search_references(TENANT, "REF-inv", None, 2, 20)
        .unwrap();
    assert_eq!(references(&first), ["REF-inv-1", "REF-inv-10"]);
    assert_eq!(first.after.as_deref(), Some("REF-inv-10"));
    let second = store
        .search_references(TENANT, "REF-inv", first.after.as_deref(), 2, 20)
        .unwrap();
    assert_eq!(references(&second), ["REF-inv-2", "REF-inv-3"]);
    assert_eq!(second.after, None);
    // A whole reference finds its case; another tenant's are not found.
    let one = store
        .search_references(TENANT, "REF-ord-1", None, 10, 100)
        .unwrap();
    assert_eq!(references(&one), ["REF-ord-1"]);
    let other = store
        .search_references(TENANT, "REF-inv-9", None, 10, 100)
        .unwrap();
    assert!(other.cases.is_empty());
    // A deleted case is not found; a renamed one is found by its new reference only.
    let deleted = &all.cases[0];
    run(&store, TENANT, &deleted.id, 1, Command::Delete)
        .await
        .unwrap();
    let renamed = &all.cases[1];
    run(&store, TENANT, &renamed.id, 1, reference("REF-zz"))
        .await
        .unwrap();
    let now = store
        .search_references(TENANT, "REF-", None, 10, 100)
        .unwrap();
    assert_eq!(
        references(&now),
        ["REF-inv-2", "REF-inv-3", "REF-ord-1", "REF-zz"]
    );
    // At most `examine` entries are read: the page ends early and says where to go on.
    let bounded = store
        .search_references(TENANT, "REF-", None, 10, 2)
        .unwrap();
    assert_eq!(references(&bounded), ["REF-inv-2", "REF-inv-3"]);
    assert_eq!(bounded.after.as_deref(), Some("REF-inv-3"));
}
