//! Crashes and restarts: nothing accepted is lost, nothing is applied twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use event_backbone::EmbeddedKafka;
use event_backbone::consumer::EventConsumer;
use event_backbone::topics::DEBT_CASES;
use projection::{CaseReadModel, Projector};
use recoup::platform::Services;
use recoup_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_before_a_crash_reach_the_read_model_once() {
    let dir = tempfile::tempdir().unwrap();
    // First run: the relay never publishes, as if the process died right after the appends.
    let mut first = config(dir.path());
    first.cases.relay = false;
    let p = start(first).await;
    let (mut cases, _) = clients(&p).await;
    let mut expected = HashMap::new();
    for i in 0..20 {
        let c = create(&mut cases, "t", &format!("C-{i}"), 1000 + i).await;
        let c = case_of(cases.mark_reviewed(req("t", cmd(&c))).await).unwrap();
        expected.insert(c.id.clone(), c.version);
    }
    assert_eq!(
        p.store().unwrap().outbox_len(),
        40,
        "every event waits in the outbox"
    );
    assert_eq!(p.read_model().unwrap().applied_versions().unwrap().len(), 0);
    p.shutdown().await.unwrap();

    // Second run: the outbox is published and the projection applies each event once.
    let p = start(config(dir.path())).await;
    let (_, mut query) = clients(&p).await;
    let done = eventually(Duration::from_secs(20), || {
        let mut q = query.clone();
        async move { stats_of(&mut q, "t", v1::CaseState::Preparing).await.0 == 20 }
    })
    .await;
    assert!(done, "every case reaches the read model");
    let amount: i64 = (0..20).map(|i| 1000 + i).sum();
    assert_eq!(
        stats_of(&mut query, "t", v1::CaseState::Preparing).await,
        (20, amount, 0)
    );
    assert_eq!(
        stats_of(&mut query, "t", v1::CaseState::Reviewing).await,
        (0, 0, 0)
    );
    for (id, version) in &expected {
        assert_eq!(
            p.read_model().unwrap().applied_version("t", id).unwrap(),
            *version
        );
    }
    // The relay removes what Kafka acknowledged after the acknowledgement, which may come
    // after the projection already applied the events.
    let store = p.store().unwrap();
    let drained = eventually(Duration::from_secs(20), || async move {
        store.outbox_len() == 0
    })
    .await;
    assert!(drained, "the outbox still holds {}", store.outbox_len());
    p.shutdown().await.unwrap();
}

/// The read model in `dir`, once the handle dropped just before has let go of its lock: a
/// process another test forks at that moment holds the lock's file until it execs.
fn open_read_model(dir: &std::path::Path) -> CaseReadModel {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match CaseReadModel::open(dir) {
            Ok(model) => return model,
            Err(error)
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// Runs the projection by hand against a cluster the test owns, so it can stop mid-stream.
async fn project_some(
    dir: &std::path::Path,
    brokers: &str,
    cluster: &str,
    at_least: usize,
) -> (usize, usize) {
    let rm = open_read_model(dir);
    let consumer = EventConsumer::new(
        &event_backbone::KafkaConfig::external(brokers),
        "test-projection",
        DEBT_CASES.name,
        None,
    )
    .unwrap();
    let projector =
        Projector::start(rm.clone(), consumer, cluster.to_owned(), DEBT_CASES.name).unwrap();
    let (mut applied, mut duplicates) = (0, 0);
    while applied + duplicates < at_least {
        let outcome = tokio::time::timeout(Duration::from_secs(20), projector.step())
            .await
            .expect("events keep coming")
            .unwrap();
        assert_eq!(outcome.rejected, 0);
        applied += outcome.applied;
        duplicates += outcome.duplicates;
    }
    (applied, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_projection_neither_skips_nor_repeats() {
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let brokers = kafka.bootstrap_servers().to_owned();
    let commands_dir = tempfile::tempdir().unwrap();
    let projection_dir = tempfile::tempdir().unwrap();
    let p = start(config_for(
        commands_dir.path(),
        &brokers,
        Services {
            case_lifecycle: true,
            ..Services::NONE
        },
    ))
    .await;
    let (mut cases, _) = clients(&p).await;
    for i in 0..200 {
        let c = create(&mut cases, "t", &format!("P-{i}"), 10).await;
        cases.mark_reviewed(req("t", cmd(&c))).await.unwrap();
    }
    // 400 events. Apply some, stop, apply the rest from a new projector on the same files.
    let (first, dup_first) = project_some(projection_dir.path(), &brokers, "c1", 150).await;
    assert!((150..=400).contains(&first));
    let (second, dup_second) =
        project_some(projection_dir.path(), &brokers, "c1", 400 - first).await;
    assert_eq!(first + second, 400, "every event applied exactly once");
    assert_eq!(
        dup_first + dup_second,
        0,
        "offsets resume exactly where the batch ended"
    );

    // A resend of already-applied events (as after a relay crash) is dropped as duplicates.
    let store = p.store().unwrap();
    let ids: Vec<String> = store.heads().map(|h| h.unwrap().1).take(10).collect();
    for id in &ids {
        assert_eq!(store.republish_after("t", id, 0).await.unwrap(), 2);
    }
    let rm = open_read_model(projection_dir.path());
    let before = rm.stats("t").unwrap();
    drop(rm);
    let consumer = EventConsumer::new(
        &event_backbone::KafkaConfig::external(&brokers),
        "test-projection",
        DEBT_CASES.name,
        None,
    )
    .unwrap();
    let rm = open_read_model(projection_dir.path());
    let projector = Projector::start(rm.clone(), consumer, "c1".into(), DEBT_CASES.name).unwrap();
    let mut duplicates = 0;
    while duplicates < 20 {
        let outcome = tokio::time::timeout(Duration::from_secs(20), projector.step())
            .await
            .expect("the resent events arrive")
            .unwrap();
        assert_eq!(outcome.applied, 0, "nothing is applied twice");
        duplicates += outcome.duplicates;
    }
    assert_eq!(rm.stats("t").unwrap(), before);

    // A projection that meets a new cluster (new id) reads it from the beginning.
    let rm2_dir = tempfile::tempdir().unwrap();
    let (fresh, resent) = project_some(rm2_dir.path(), &brokers, "c2", 420).await;
    assert_eq!((fresh, resent), (400, 20));
    p.shutdown().await.unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the real binary and waits for its ready line.
fn spawn_recoup(data_dir: &std::path::Path, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
        // Any free port: parallel tests must not fight over the default 8080.
        .args(["--http-addr", "127.0.0.1:0"])
        // Crashes are the subject here, not credentials (tests/access.rs).
        .arg("--insecure")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(
        line.starts_with("recoup ready grpc="),
        "ready line: {line:?}"
    );
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_load_loses_nothing_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = spawn_recoup(dir.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let ch = tonic::transport::Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    // Writers create and review cases until the process dies under them.
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut cases = Cases::new(ch.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged: Vec<(String, u64)> = Vec::new();
            for i in 0.. {
                let Ok(c) = cases
                    .create_case(req(
                        "t",
                        v1::CreateCaseRequest {
                            content: Some(content(&format!("K-{w}-{i}"), 7)),
                        },
                    ))
                    .await
                else {
                    break;
                };
                let c = c.into_inner().case.unwrap();
                acknowledged.push((c.id.clone(), 1));
                let Ok(r) = cases.mark_reviewed(req("t", cmd(&c))).await else {
                    break;
                };
                acknowledged.last_mut().unwrap().1 = r.into_inner().case.unwrap().version;
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 50,
        "load ran: {} cases",
        acknowledged.len()
    );

    let mut child = spawn_recoup(dir.path(), port);
    let ch = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut cases = Cases::new(ch.clone());
    let mut query = Query::new(ch);
    // Every acknowledged command is in the store ...
    let mut store_versions = HashMap::new();
    for (id, version) in &acknowledged {
        let c = stored(&mut cases, "t", id).await;
        assert!(c.version >= *version, "case {id} lost version {version}");
        store_versions.insert(id.clone(), c.version);
    }
    // ... and the read model converges to exactly the store, with nothing applied twice.
    let cases_in_store = acknowledged.len() as u64;
    let converged = eventually(Duration::from_secs(30), || {
        let mut q = query.clone();
        async move {
            let r = stats_of(&mut q, "t", v1::CaseState::Reviewing).await.0;
            let p = stats_of(&mut q, "t", v1::CaseState::Preparing).await.0;
            r + p >= cases_in_store
        }
    })
    .await;
    assert!(converged, "the read model catches up after the restart");
    for (id, version) in &store_versions {
        let c = projected(&mut query, "t", id).await.unwrap();
        assert_eq!(c.version, *version, "read model of {id}");
    }
    let reviewing = stats_of(&mut query, "t", v1::CaseState::Reviewing).await;
    let preparing = stats_of(&mut query, "t", v1::CaseState::Preparing).await;
    let total_cases = reviewing.0 + preparing.0;
    assert_eq!(
        reviewing.1 + preparing.1,
        7 * total_cases as i64,
        "totals count each case once"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Runs the bundled client against `up` and returns what it printed; it must succeed.
fn client(up: &common::binary::Up, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args(args)
        .args(["--server", &format!("http://{}", up.grpc), "--data-dir"])
        .arg(&up.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn databases_made_compressed_stay_so_and_keep_their_data() {
    use recoup_keys::store::created_compressed;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = common::binary::Up::start(
        &data,
        &["--store-compression", "--store-cache-bytes", "1048576"],
    );
    let created = client(
        &up,
        &[
            "cases",
            "create",
            "--reference",
            "INV-Z1",
            "--amount-minor",
            "12500",
        ],
    );
    let id = created.split_whitespace().next().unwrap().to_owned();
    assert!(created.contains("REVIEWING"), "{created}");
    assert!(up.stop().success());
    for service in [
        "case-lifecycle",
        "projection",
        "snapshot-importer",
        "access",
    ] {
        let compressed = created_compressed(&data.join(service)).unwrap();
        assert_eq!(compressed, Some(true), "{service}");
    }
    // Started again without the flag, the databases open as they were made, data whole.
    let up = common::binary::Up::start(&data, &[]);
    let stored = client(&up, &["cases", "get", &id]);
    assert!(stored.contains("INV-Z1"), "{stored}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !client(&up, &["cases", "list"]).contains("INV-Z1") {
        assert!(
            std::time::Instant::now() < deadline,
            "the read model lost the case"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(up.stop().success());
    let compressed = created_compressed(&data.join("projection")).unwrap();
    assert_eq!(compressed, Some(true));
}
