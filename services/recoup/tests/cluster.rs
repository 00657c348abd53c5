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

use common::cluster::{RECOUP, Reaped, ServiceProcess, TestBroker};
use common::*;
use recoup_proto::v1;
use tokio::task::JoinHandle;

/// A tenant of this test alone: on a shared cluster other tests' events pass by too.
fn tenant() -> String {
    format!("t-{}", uuid::Uuid::now_v7().simple())
}

/// One test's broker, files and tenant.
struct Setup {
    broker: TestBroker,
    dir: tempfile::TempDir,
    tenant: String,
}

impl Setup {
    fn new() -> Self {
        Self {
            broker: TestBroker::start(),
            dir: tempfile::tempdir().unwrap(),
            tenant: tenant(),
        }
    }

    /// `recoup SERVICE` with its files in the test's dir under `name`; projections join the
    /// test's own consumer group.
    fn start(&self, service: &str, name: &str) -> ServiceProcess {
        self.start_with(service, name, &[])
    }

    /// [`Setup::start`] with further arguments.
    fn start_with(&self, service: &str, name: &str, more: &[&str]) -> ServiceProcess {
        let group = format!("test-{}", self.tenant);
        let mut extra: Vec<&str> = Vec::new();
        if service == "projection" {
            extra.extend(["--consumer-group", &group]);
        }
        extra.extend(more);
        ServiceProcess::start(service, &self.dir.path().join(name), &self.broker, &extra)
            .unwrap_or_else(|log| panic!("recoup {service} did not start:\n{log}"))
    }
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
        // References are unique per tenant: each load makes its own.
        let run = uuid::Uuid::now_v7().simple().to_string();
        let writers = (0..writers)
            .map(|w| {
                let mut cases = Cases::new(channel.clone());
                let (tenant, stop, run) = (tenant.to_owned(), stop.clone(), run.clone());
                tokio::spawn(async move {
                    let mut acknowledged: Vec<(String, u64)> = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let create = v1::CreateCaseRequest {
                            content: Some(content(&format!("L-{run}-{w}-{i}"), AMOUNT)),
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

/// Every case of the tenant in the read model behind `query`, with its version.
async fn listed(query: &Query, tenant: &str) -> HashMap<String, u64> {
    let mut q = query.clone();
    let mut all = HashMap::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListCasesRequest {
            page_size: 1000,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = q
            .list_cases(req(tenant, request))
            .await
            .unwrap()
            .into_inner();
        for case in page.cases {
            assert!(
                all.insert(case.id.clone(), case.version).is_none(),
                "case {} listed twice",
                case.id
            );
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

/// Waits until the read model behind `query` holds every case of `expected` at its version
/// (the store's), then checks that it holds nothing else the store does not have at the same
/// version, and that its totals count each case once. (A case whose command was stored but
/// whose answer a SIGKILL took is in neither `expected` nor lost: it is checked in the store.)
async fn converged(query: &Query, cases: &Cases, tenant: &str, expected: &HashMap<String, u64>) {
    let all_there = eventually(Duration::from_secs(60), || async {
        let held = listed(query, tenant).await;
        expected.iter().all(|(id, v)| held.get(id) == Some(v))
    })
    .await;
    let held = listed(query, tenant).await;
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, v)| held.get(*id) != Some(*v))
        .collect();
    assert!(
        all_there,
        "the read model lacks {} of {} cases (at their versions): {:?}",
        missing.len(),
        expected.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let mut c = cases.clone();
    for (id, version) in held.iter().filter(|(id, _)| !expected.contains_key(*id)) {
        let in_store = stored(&mut c, tenant, id).await;
        assert_eq!(in_store.version, *version, "case {id}, answered to nobody");
    }
    let n = held.len() as u64;
    let mut q = query.clone();
    assert_eq!(
        totals(&mut q, tenant).await,
        (n, AMOUNT * n as i64),
        "every case counted once"
    );
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
    // Every topic, with what happened to it and its partitions.
    let says = |run: std::process::Output, outcome: &str| {
        let text = String::from_utf8(run.stdout).unwrap();
        assert!(run.status.success(), "{text}");
        for topic in event_backbone::topics::ALL {
            let line = format!("{}\t{outcome}\tpartitions={}", topic.name, topic.partitions);
            assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
        }
    };
    says(first, "Created");
    says(ensure(), "AlreadyExisted");
    let mut started = ServiceProcess::start("case-lifecycle", &dir.path().join("c"), &broker, &[])
        .expect("case-lifecycle starts once its topic exists");
    started.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projection_processes_share_the_partitions_and_one_takes_over_after_sigkill() {
    takeover(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_takeover_works_with_cooperative_rebalancing_too() {
    takeover(&[
        "--kafka-property",
        "partition.assignment.strategy=cooperative-sticky",
    ])
    .await;
}

/// Two projection processes (started with `args`) in one group; one is killed mid-stream.
async fn takeover(args: &[&str]) {
    let setup = Setup::new();
    let (broker, tenant) = (&setup.broker, &setup.tenant);
    let commands = setup.start("case-lifecycle", "cases");
    let mut a = setup.start_with("projection", "a", args);
    let b = setup.start_with("projection", "b", args);
    let mut query_a = Query::new(a.channel().await);
    let query_b = Query::new(b.channel().await);
    let ch = commands.channel().await;
    let load = Load::start(ch.clone(), tenant, 4);

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
        totals(&mut query_a, tenant).await,
        totals(&mut query_b.clone(), tenant).await,
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
    let expected = in_store(&mut Cases::new(ch.clone()), tenant, &acknowledged).await;

    // The survivor takes the dead member's partitions, reads them from its own offsets (the
    // beginning: it never held them) and ends with every case once.
    converged(&query_b, &Cases::new(ch), tenant, &expected).await;
    let partitions = event_backbone::admin::describe_topics(
        &broker.kafka_config(),
        &[event_backbone::topics::DEBT_CASES],
        Duration::from_secs(10),
    )
    .unwrap()[0]
        .partitions
        .unwrap();
    let every: Vec<i32> = (0..partitions).collect();
    let log = b.log_text();
    let last_assignment = log
        .lines()
        .rfind(|l| {
            l.contains("consumer group assigned partitions")
                && l.contains("topic=recoup.debt-cases.v1 ")
        })
        .unwrap_or_default();
    assert!(
        last_assignment.contains(&format!("partitions={every:?}")),
        "b holds every partition in the end:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_killed_during_load_resume_where_they_stopped() {
    let setup = Setup::new();
    let tenant = &setup.tenant;
    let mut commands = setup.start("case-lifecycle", "cases");
    let mut projection = setup.start("projection", "projection");

    // case-lifecycle dies under load and comes back on the same files.
    let load = Load::start(commands.channel().await, tenant, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    commands.kill();
    let mut acknowledged = load.finish().await;
    assert!(
        acknowledged.len() > 20,
        "load ran: {} cases",
        acknowledged.len()
    );
    let commands = setup.start("case-lifecycle", "cases");
    let ch = commands.channel().await;
    in_store(&mut Cases::new(ch.clone()), tenant, &acknowledged).await;

    // The projection dies under load and comes back on the same files.
    let load = Load::start(ch.clone(), tenant, 4);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    projection.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let projection = setup.start("projection", "projection");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = load.finish().await;
    assert!(second.len() > 20, "load ran: {} cases", second.len());
    acknowledged.extend(second);

    let cases = Cases::new(ch);
    let expected = in_store(&mut cases.clone(), tenant, &acknowledged).await;
    converged(
        &Query::new(projection.channel().await),
        &cases,
        tenant,
        &expected,
    )
    .await;
    // It resumed from its offsets: it did not read the topic from the beginning again.
    if setup.broker.can_fail() {
        let events: u64 = expected.values().sum();
        let text = scrape(addr_of(&projection.grpc));
        let consumed = series(
            &text,
            "recoup_events_consumed_total{topic=\"recoup.debt-cases.v1\"}",
        );
        assert!(
            consumed.is_some_and(|n| (n as u64) < events),
            "the restarted projection read {consumed:?} of {events} events: {text}\n{}",
            projection.log_text()
        );
    }
}

/// The serving status a process reports for `service` ("" for the process as a whole).
async fn health_of(channel: &tonic::transport::Channel, service: &str) -> i32 {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.to_owned(),
    };
    match health.check(request).await {
        Ok(answer) => answer.into_inner().status,
        Err(_) => -1,
    }
}

async fn turns_to(
    channel: &tonic::transport::Channel,
    service: &str,
    status: ServingStatus,
) -> bool {
    eventually(Duration::from_secs(30), || async move {
        health_of(channel, service).await == status as i32
    })
    .await
}

use tonic_health::pb::health_check_response::ServingStatus;

const IMPORTS: &str = "recoup.v1.SnapshotImports";
const COMMANDS: &str = "recoup.v1.DebtCollectionCases";

fn two_rows() -> v1::ImportRowsRequest {
    let row = |id: &str| v1::Row {
        cells: [
            ("snapshot_date".to_owned(), "2024-05-01".to_owned()),
            ("account_external_id".to_owned(), id.to_owned()),
        ]
        .into_iter()
        .collect(),
    };
    v1::ImportRowsRequest {
        data_origin: "outage".into(),
        rows: vec![row("A-1"), row("A-2")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_holds_commands_refuses_imports_and_heals() {
    let setup = Setup::new();
    let (broker, tenant) = (&setup.broker, &setup.tenant);
    if !broker.can_fail() {
        eprintln!("skipped: the broker in KAFKA_BROKERS is not this test's to take down");
        return;
    }
    let commands = setup.start("case-lifecycle", "cases");
    let projection = setup.start("projection", "projection");
    let importer = setup.start("snapshot-importer", "imports");
    let (commands_ch, importer_ch) = (commands.channel().await, importer.channel().await);
    let query = Query::new(projection.channel().await);
    let mut cases = Cases::new(commands_ch.clone());
    let mut acknowledged = Vec::new();
    let create_some = async |cases: &mut Cases, from: usize| {
        let mut created = Vec::new();
        for i in from..from + 10 {
            let c = create(cases, tenant, &format!("O-{i}"), AMOUNT).await;
            let c = case_of(cases.mark_reviewed(req(tenant, cmd(&c))).await).unwrap();
            created.push((c.id.clone(), c.version));
        }
        created
    };
    acknowledged.extend(create_some(&mut cases, 0).await);
    let expected = in_store(&mut cases, tenant, &acknowledged).await;
    converged(&query, &cases, tenant, &expected).await;
    assert_eq!(
        health_of(&importer_ch, IMPORTS).await,
        ServingStatus::Serving as i32
    );

    broker.set_down(true);
    assert!(
        turns_to(&importer_ch, IMPORTS, ServingStatus::NotServing).await,
        "the importer reports NOT_SERVING while {} is down",
        broker.name()
    );
    assert!(turns_to(&commands_ch, "", ServingStatus::NotServing).await);
    // Commands are still decided and stored: their events wait in the outbox.
    assert_eq!(
        health_of(&commands_ch, COMMANDS).await,
        ServingStatus::Serving as i32
    );
    let held = tokio::time::timeout(Duration::from_secs(30), create_some(&mut cases, 10))
        .await
        .expect("commands are answered while Kafka is down");
    acknowledged.extend(held);
    // Imports are refused at once, retryably, with nothing imported.
    let mut imports =
        recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient::new(importer_ch.clone());
    let refused = imports
        .import_rows(req(tenant, two_rows()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("send it again later"),
        "{refused:?}"
    );
    // What a container health check runs.
    let check = Command::new(RECOUP)
        .args(["health", "--server", &importer.grpc, "--service", IMPORTS])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "NOT_SERVING");
    assert!(
        !check.status.success(),
        "recoup health fails while not serving"
    );

    broker.set_down(false);
    assert!(
        turns_to(&importer_ch, IMPORTS, ServingStatus::Serving).await,
        "the importer serves again"
    );
    assert!(
        turns_to(&commands_ch, "", ServingStatus::Serving).await,
        "case-lifecycle serves again:\n{}",
        commands.log_text()
    );
    // Everything the outbox held arrives, once.
    let expected = in_store(&mut cases, tenant, &acknowledged).await;
    converged(&query, &cases, tenant, &expected).await;
    let report = imports
        .import_rows(req(tenant, two_rows()))
        .await
        .expect("the same rows are imported once Kafka is back")
        .into_inner();
    assert_eq!((report.rows_read, report.accepted), (2, 2), "{report:?}");
    let check = Command::new(RECOUP)
        .args(["health", "--server", &importer.grpc, "--service", IMPORTS])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "SERVING");
    assert!(check.status.success());
}

/// `GET /metrics` of a process (host:port), the body only.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// The value of one series (`name{labels}` exactly as exposed), if present.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn addr_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_process_serves_prometheus_metrics() {
    let setup = Setup::new();
    let (broker, tenant, dir) = (&setup.broker, &setup.tenant, &setup.dir);
    let commands = setup.start("case-lifecycle", "cases");
    let projection = setup.start("projection", "projection");
    let importer = setup.start("snapshot-importer", "imports");

    let mut cases = Cases::new(commands.channel().await);
    let mut created = Vec::new();
    for i in 0..5 {
        let c = create(&mut cases, tenant, &format!("M-{i}"), AMOUNT).await;
        let c = case_of(cases.mark_reviewed(req(tenant, cmd(&c))).await).unwrap();
        created.push((c.id.clone(), c.version));
    }
    // A stale version is refused: ABORTED (10).
    let stale = v1::CaseCommand {
        case_id: created[0].0.clone(),
        expected_version: 1,
    };
    assert!(cases.mark_reviewed(req(tenant, stale)).await.is_err());
    let query = Query::new(projection.channel().await);
    let expected = in_store(&mut cases, tenant, &created).await;
    converged(&query, &cases, tenant, &expected).await;
    let mut imports = recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient::new(
        importer.channel().await,
    );
    let mut rows = two_rows();
    rows.rows.push(v1::Row {
        cells: [("snapshot_date".to_owned(), "01/05/2024".to_owned())]
            .into_iter()
            .collect(),
    });
    let report = imports
        .import_rows(req(tenant, rows))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((report.accepted, report.rejected), (2, 1), "{report:?}");

    let text = scrape(addr_of(&commands.grpc));
    let published = "recoup_events_published_total{topic=\"recoup.debt-cases.v1\"}";
    assert_eq!(series(&text, published), Some(10.0), "{text}");
    assert_eq!(series(&text, "recoup_outbox_depth"), Some(0.0), "{text}");
    assert_eq!(series(&text, "recoup_kafka_up"), Some(1.0), "{text}");
    let created_ok = "recoup_grpc_request_duration_seconds_count{method=\"recoup.v1.DebtCollectionCases/CreateCase\",code=\"0\"}";
    assert_eq!(series(&text, created_ok), Some(5.0), "{text}");
    let aborted = "recoup_grpc_request_duration_seconds_count{method=\"recoup.v1.DebtCollectionCases/MarkReviewed\",code=\"10\"}";
    assert_eq!(series(&text, aborted), Some(1.0), "{text}");

    let text = scrape(addr_of(&projection.grpc));
    let consumed = "recoup_events_consumed_total{topic=\"recoup.debt-cases.v1\"}";
    assert!(series(&text, consumed).is_some_and(|n| n >= 10.0), "{text}");
    // Statistics come every 5 s: the lag of each partition this process holds appears.
    let lag_shown = eventually(Duration::from_secs(20), || async {
        scrape(addr_of(&projection.grpc)).lines().any(|l| {
            l.starts_with("recoup_consumer_lag{topic=\"recoup.debt-cases.v1\"") && l.ends_with(" 0")
        })
    })
    .await;
    assert!(
        lag_shown,
        "consumer lag: {}",
        scrape(addr_of(&projection.grpc))
    );

    let text = scrape(addr_of(&importer.grpc));
    let accepted = "recoup_import_rows_total{outcome=\"accepted\"}";
    let rejected = "recoup_import_rows_total{outcome=\"rejected\"}";
    assert_eq!(series(&text, accepted), Some(2.0), "{text}");
    assert_eq!(series(&text, rejected), Some(1.0), "{text}");

    // The export puller serves no gRPC: --metrics-addr.
    let sim = Reaped(
        Command::new(RECOUP)
            .args(["export-sim", "--addr", "127.0.0.1:0", "--rows", "300"])
            .args([
                "--lender",
                "acme",
                "--email",
                "ops@acme.example",
                "--password",
                "pw-1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut sim = sim;
    let mut ready = String::new();
    let mut sim_out = std::io::BufReader::new(sim.0.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut sim_out, &mut ready).unwrap();
    let url = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .unwrap()
        .to_owned();
    let metrics_addr = format!("127.0.0.1:{}", common::cluster::free_port());
    let _puller = Reaped(
        Command::new(RECOUP)
            .args(["export-puller", "--data-dir"])
            .arg(dir.path().join("puller"))
            .args(broker.args())
            .args(["--metrics-addr", &metrics_addr, "--tenant", tenant])
            .args([
                "--api-host",
                &url,
                "--lender",
                "acme",
                "--email",
                "ops@acme.example",
            ])
            .args(["--limit", "100"])
            .env("RECOUP_EXPORT_PASSWORD", "pw-1")
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rows = "recoup_pull_rows_total{outcome=\"published\"}";
    let pages = "recoup_pull_pages_total{status=\"200\"}";
    let deals = "recoup_events_published_total{topic=\"recoup.collections-deals.v1\"}";
    let pulled = eventually(Duration::from_secs(60), || async {
        let text = scrape(&metrics_addr);
        series(&text, rows) == Some(300.0)
            && series(&text, pages).is_some_and(|n| n >= 3.0)
            && series(&text, deals) == Some(300.0)
            && series(&text, "recoup_kafka_up") == Some(1.0)
    })
    .await;
    let text = scrape(&metrics_addr);
    assert!(pulled, "the puller's metrics: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_importer_killed_mid_import_loses_no_row() {
    let setup = Setup::new();
    let (tenant, dir) = (&setup.tenant, &setup.dir);
    let mut importer = setup.start("snapshot-importer", "imports");
    let projection = setup.start("projection", "projection");
    // 30,000 accounts, 10 outstanding each (small enough for the mock cluster's retention).
    let rows = 30_000;
    let file = dir.path().join("snapshots.csv");
    let mut csv =
        String::from("snapshot_date,account_external_id,amt_remaining_installment_source\n");
    for i in 0..rows {
        csv.push_str(&format!("2024-05-01,K-{i},10\n"));
    }
    std::fs::write(&file, csv).unwrap();
    let import = |grpc: &str| {
        Command::new(RECOUP)
            .args(["import", "snapshots"])
            .arg(&file)
            .args(["--tenant", tenant, "--origin", "kill", "--grpc-addr", grpc])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = import(&importer.grpc);
    // Killed as soon as the first batch was acknowledged.
    let accepted = "recoup_import_rows_total{outcome=\"accepted\"}";
    let metrics = addr_of(&importer.grpc).to_owned();
    let started = eventually(Duration::from_secs(60), || async {
        series(&scrape(&metrics), accepted).is_some_and(|n| n > 0.0)
    })
    .await;
    importer.kill();
    assert!(started, "the import started");
    let first = first.wait_with_output().unwrap();
    eprintln!(
        "first import: {} {}",
        first.status,
        String::from_utf8_lossy(&first.stderr)
    );

    // The same file again, to the restarted importer: what was acknowledged is not imported
    // twice, the rest is.
    let importer = setup.start("snapshot-importer", "imports");
    let again = import(&importer.grpc).wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        again.status.success(),
        "{summary}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Every row is either remembered from the killed run or imported now.
    let count = |word: &str| -> u64 {
        summary
            .split(", ")
            .find_map(|part| part.trim().strip_prefix(word)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {word:?} in {summary}"))
    };
    assert_eq!(count("accepted") + count("unchanged"), rows, "{summary}");
    eprintln!("second import: {summary}");
    let query = Query::new(projection.channel().await);
    let par = |query: Query| {
        let tenant = tenant.clone();
        async move {
            let mut q = query;
            q.portfolio_par(req(
                &tenant,
                v1::PortfolioParRequest {
                    snapshot_date: "2024-05-01".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(|r| r.into_inner())
            .ok()
        }
    };
    let complete = eventually(Duration::from_secs(60), || {
        let p = par(query.clone());
        async move { p.await.is_some_and(|p| p.accounts >= rows) }
    })
    .await;
    let last = par(query.clone()).await.unwrap();
    assert!(complete, "every account reaches the read model: {last:?}");
    assert_eq!(
        (last.accounts, last.outstanding),
        (rows, 10.0 * rows as f64),
        "each account once"
    );
}

/// `recoup keys ...` against the test's processes; stdout, or a panic with stderr.
fn keys_cli(args: &[&str]) -> String {
    let out = Command::new(RECOUP)
        .arg("keys")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "recoup keys {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Whether `process` serves a read with `key` (false: UNAUTHENTICATED, with its message).
async fn reads_with(process: &ServiceProcess, key: &str, query: bool) -> Result<(), String> {
    let mut request = tonic::Request::new(v1::GetCaseRequest {
        case_id: uuid::Uuid::now_v7().to_string(),
    });
    let bearer = format!("Bearer {key}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    let channel = process.channel().await;
    let answer = match query {
        true => Query::new(channel).get_case(request).await,
        false => Cases::new(channel).get_case(request).await,
    };
    match answer {
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            Err(status.message().to_owned())
        }
        // NOT_FOUND: past the boundary, and no such case.
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(()),
        Err(status) => panic!("unexpected answer {status:?}"),
    }
}

/// API keys reach every process through the access topic: the first key of a cluster is
/// written on the topic by an operator; a key made through one process works in another; a
/// key revoked through one process is refused by every process within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_through_one_process_is_refused_by_every_process_within_5_s() {
    let s = Setup::new();
    let start = |service: &str, name: &str, extra: &[&str]| {
        ServiceProcess::start_with_keys(service, &s.dir.path().join(name), &s.broker, extra)
            .unwrap_or_else(|log| panic!("recoup {service} did not start:\n{log}"))
    };
    let group = format!("test-{}", s.tenant);
    let commands = start("case-lifecycle", "c", &[]);
    let queries = start("projection", "p", &["--consumer-group", &group]);

    let admin_file = s.dir.path().join("admin.key");
    let admin_path = admin_file.to_str().unwrap();
    let brokers = ["--kafka-brokers", &s.broker.brokers];
    let create = [
        "create", "--tenant", &s.tenant, "--role", "admin", "--out", admin_path,
    ];
    keys_cli(&[&brokers[..], &create].concat());
    let admin = std::fs::read_to_string(&admin_file)
        .unwrap()
        .trim()
        .to_owned();
    let known = eventually(Duration::from_secs(10), || async {
        reads_with(&commands, &admin, false).await.is_ok()
    })
    .await;
    assert!(known, "the process took the key written on the topic");
    let through = ["--server", &commands.grpc, "--api-key", &admin];
    let agent = keys_cli(&[&through[..], &["create", "--role", "agent"]].concat());
    let agent = agent.trim();
    let agent_id = &agent[4..20];

    for (process, query) in [(&commands, false), (&queries, true)] {
        let known = eventually(Duration::from_secs(10), || async {
            reads_with(process, agent, query).await.is_ok()
        })
        .await;
        assert!(known, "{} took the new key", process.grpc);
    }

    keys_cli(&[&through[..], &["revoke", agent_id]].concat());
    let revoked = std::time::Instant::now();
    let why = reads_with(&commands, agent, false).await.unwrap_err();
    assert!(why.ends_with("was revoked"), "{why}");
    let mut refused = reads_with(&queries, agent, true).await;
    while refused.is_ok() && revoked.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        refused = reads_with(&queries, agent, true).await;
    }
    let took = revoked.elapsed();
    assert!(refused.unwrap_err().ends_with("was revoked"));
    // The bound: a revoked key stops working everywhere within 5 s.
    assert!(
        took < Duration::from_secs(5),
        "the other process refused it after {took:?}"
    );
    eprintln!(
        "revocation reached the other process in {took:?} ({})",
        s.broker.name()
    );
    let listed = keys_cli(&[&through[..], &["list"]].concat());
    assert!(listed.contains(&format!("{agent_id}\tagent")), "{listed}");
}
