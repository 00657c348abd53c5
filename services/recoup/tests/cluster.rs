//! The services as separate processes against a broker in its own process (or the one
//! `KAFKA_BROKERS` names): topics through the admin API and checked at start, consumer groups
//! spread over processes, SIGKILLs under load, broker outages. See `common/cluster.rs` for how
//! the broker is chosen; `.ci/run` runs this suite on the mock cluster and on tansu.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::cluster::{RECOUP, ServiceProcess, TestBroker};
use common::*;
use recoup_proto::v1;
use tokio::task::JoinHandle;

/// A tenant of this test alone: on a shared cluster other tests' events pass by too.
fn tenant() -> String {
    format!("t-{}", uuid::Uuid::now_v7().simple())
}

/// Cases (count, amount) over every state of the tenant, as a read model holds them.
async fn totals(query: &mut Query, tenant: &str) -> (u64, i64) {
    let Ok(stats) = query.case_stats(req(tenant, v1::CaseStatsRequest {})).await else {
        return (0, 0);
    };
    let stats = stats.into_inner();
    let count = stats.states.iter().map(|s| s.count).sum();
    let amount = stats
        .states
        .iter()
        .flat_map(|s| &s.totals)
        .map(|t| t.amount_minor)
        .sum();
    (count, amount)
}

/// The amount of every case the writers create.
const AMOUNT: i64 = 7;

/// Writers that create and review cases until stopped or refused; each returns the cases it
/// was answered for, with the version of the last acknowledged command.
struct Load {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Vec<(String, u64)>>>,
}

impl Load {
    fn start(channel: tonic::transport::Channel, tenant: &str, writers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..writers)
            .map(|w| {
                let mut cases = Cases::new(channel.clone());
                let (tenant, stop) = (tenant.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut acknowledged: Vec<(String, u64)> = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let create = v1::CreateCaseRequest {
                            content: Some(content(&format!("L-{w}-{i}-{tenant}"), AMOUNT)),
                        };
                        let Ok(c) = cases.create_case(req(&tenant, create)).await else {
                            break;
                        };
                        let c = c.into_inner().case.unwrap();
                        acknowledged.push((c.id.clone(), c.version));
                        let Ok(r) = cases.mark_reviewed(req(&tenant, cmd(&c))).await else {
                            break;
                        };
                        acknowledged.last_mut().unwrap().1 = r.into_inner().case.unwrap().version;
                    }
                    acknowledged
                })
            })
            .collect();
        Self { stop, writers }
    }

    /// Stops the writers (or collects them after their process died).
    async fn finish(self) -> Vec<(String, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for w in self.writers {
            all.extend(w.await.unwrap());
        }
        all
    }
}

/// Waits until the read model behind `query` holds every case of `expected` at its version
/// (the store's), counted once in the totals.
async fn converged(query: &Query, tenant: &str, expected: &HashMap<String, u64>) {
    let n = expected.len() as u64;
    let caught_up = eventually(Duration::from_secs(60), || {
        let mut q = query.clone();
        async move { totals(&mut q, tenant).await.0 >= n }
    })
    .await;
    let mut q = query.clone();
    assert!(
        caught_up,
        "the read model holds {:?} of {n} cases",
        totals(&mut q, tenant).await
    );
    assert_eq!(
        totals(&mut q, tenant).await,
        (n, AMOUNT * n as i64),
        "every case counted once"
    );
    for (id, version) in expected {
        let at = eventually(Duration::from_secs(20), || {
            let mut q = query.clone();
            async move {
                projected(&mut q, tenant, id)
                    .await
                    .is_ok_and(|c| c.version == *version)
            }
        })
        .await;
        assert!(at, "case {id} reaches version {version}");
    }
}

/// The versions the event store holds for the acknowledged cases; none lost.
async fn in_store(
    cases: &mut Cases,
    tenant: &str,
    acknowledged: &[(String, u64)],
) -> HashMap<String, u64> {
    let mut versions = HashMap::new();
    for (id, version) in acknowledged {
        let c = stored(cases, tenant, id).await;
        assert!(c.version >= *version, "case {id} lost version {version}");
        versions.insert(id.clone(), c.version);
    }
    versions
}

#[test]
fn topics_are_created_through_the_admin_api_and_checked_at_start() {
    let Some(broker) = TestBroker::start_empty() else {
        eprintln!("skipped: KAFKA_BROKERS is a shared cluster that already has its topics");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Every service names the topics it lacks, and how to create them.
    let refused = ServiceProcess::start("projection", &dir.path().join("p"), &broker, &[])
        .err()
        .expect("a projection without its topics does not start");
    assert!(
        refused.contains("lacks topics recoup needs: recoup.debt-cases.v1, recoup.paygo-snapshots.v1, recoup.collections-deals.v1"),
        "{refused}"
    );
    assert!(
        refused.contains("recoup topics ensure --kafka-brokers"),
        "{refused}"
    );
    let refused = ServiceProcess::start("case-lifecycle", &dir.path().join("c"), &broker, &[])
        .err()
        .expect("case-lifecycle without its topic does not start");
    assert!(
        refused.contains("lacks a topic recoup needs: recoup.debt-cases.v1;"),
        "{refused}"
    );

    let ensure = || {
        Command::new(RECOUP)
            .args(["topics", "ensure", "--kafka-brokers", &broker.brokers])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let first = ensure();
    if !broker.has_admin_api() {
        // The mock cluster has no admin API: the command says so and fails.
        assert!(!first.status.success());
        let stderr = String::from_utf8_lossy(&first.stderr);
        assert!(stderr.contains("creating topics on"), "{stderr}");
        return;
    }
    let text = String::from_utf8(first.stdout).unwrap();
    assert!(first.status.success(), "{text}");
    for topic in event_backbone::topics::ALL {
        let line = format!("{}\tCreated\tpartitions={}", topic.name, topic.partitions);
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
    let second = ensure();
    let text = String::from_utf8(second.stdout).unwrap();
    assert!(second.status.success(), "{text}");
    for topic in event_backbone::topics::ALL {
        let line = format!(
            "{}\tAlreadyExisted\tpartitions={}",
            topic.name, topic.partitions
        );
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
    let mut started = ServiceProcess::start("case-lifecycle", &dir.path().join("c"), &broker, &[])
        .expect("case-lifecycle starts once its topic exists");
    started.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projection_processes_share_the_partitions_and_one_takes_over_after_sigkill() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant();
    let group = format!("test-{tenant}");
    let commands =
        ServiceProcess::start("case-lifecycle", &dir.path().join("cases"), &broker, &[]).unwrap();
    let projection = |name: &str| {
        ServiceProcess::start(
            "projection",
            &dir.path().join(name),
            &broker,
            &["--consumer-group", &group],
        )
        .unwrap()
    };
    let mut a = projection("a");
    let b = projection("b");
    let mut query_a = Query::new(a.channel().await);
    let query_b = Query::new(b.channel().await);
    let ch = commands.channel().await;
    let load = Load::start(ch.clone(), &tenant, 4);

    // The group spreads the partitions: both read models fill.
    let shared = eventually(Duration::from_secs(60), || {
        let (mut qa, mut qb) = (query_a.clone(), query_b.clone());
        let tenant = tenant.clone();
        async move { totals(&mut qa, &tenant).await.0 > 0 && totals(&mut qb, &tenant).await.0 > 0 }
    })
    .await;
    assert!(
        shared,
        "both members get partitions ({}): a {:?}, b {:?}\n{}",
        broker.name(),
        totals(&mut query_a, &tenant).await,
        totals(&mut query_b.clone(), &tenant).await,
        b.log_text()
    );
    // Mid-stream, one member dies without a word; the load goes on.
    a.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acknowledged = load.finish().await;
    assert!(
        acknowledged.len() > 20,
        "load ran: {} cases",
        acknowledged.len()
    );
    let expected = in_store(&mut Cases::new(ch), &tenant, &acknowledged).await;

    // The survivor takes the dead member's partitions, reads them from its own offsets (the
    // beginning: it never held them) and ends with every case once.
    converged(&query_b, &tenant, &expected).await;
    let log = b.log_text();
    let last_assignment = log
        .lines()
        .rfind(|l| {
            l.contains("consumer group assigned partitions")
                && l.contains("topic=\"recoup.debt-cases.v1\"")
        })
        .unwrap_or_default();
    assert!(
        last_assignment.contains("partitions=[0, 1, 2, 3, 4, 5]"),
        "b holds every partition in the end:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_during_load_resume_where_they_stopped() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let tenant = tenant();
    let group = format!("test-{tenant}");
    let cases_dir = dir.path().join("cases");
    let projection_dir = dir.path().join("projection");
    let projection_args = ["--consumer-group", group.as_str()];
    let mut commands = ServiceProcess::start("case-lifecycle", &cases_dir, &broker, &[]).unwrap();
    let mut projection =
        ServiceProcess::start("projection", &projection_dir, &broker, &projection_args).unwrap();

    // case-lifecycle dies under load and comes back on the same files.
    let load = Load::start(commands.channel().await, &tenant, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    commands.kill();
    let mut acknowledged = load.finish().await;
    assert!(
        acknowledged.len() > 20,
        "load ran: {} cases",
        acknowledged.len()
    );
    let commands = ServiceProcess::start("case-lifecycle", &cases_dir, &broker, &[]).unwrap();
    let ch = commands.channel().await;
    in_store(&mut Cases::new(ch.clone()), &tenant, &acknowledged).await;

    // The projection dies under load and comes back on the same files.
    let load = Load::start(ch.clone(), &tenant, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    projection.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let projection =
        ServiceProcess::start("projection", &projection_dir, &broker, &projection_args).unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    acknowledged.extend(load.finish().await);

    let expected = in_store(&mut Cases::new(ch), &tenant, &acknowledged).await;
    converged(&Query::new(projection.channel().await), &tenant, &expected).await;
}
