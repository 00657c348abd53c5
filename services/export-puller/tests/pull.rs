//! The puller against the simulator over loopback HTTP and the embedded Kafka cluster: every row
//! published once per content, checkpoints, faults, credentials, crashes after the acks.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use export_puller::client::FetchError;
use export_puller::dataset::{self, Dataset};
use export_puller::normalise::{fingerprint, normalise};
use export_puller::pull::{PullError, Stream};
use export_puller::schedule::{self, Mode};
use export_puller::store::StreamId;
use export_sim::{FaultPlan, SimConfig, Simulator};
use recoup_proto::v1;
use tokio::sync::watch;

/// What the simulator holds now, normalised: row key → fingerprint; and how many rows refuse
/// normalisation.
fn expected(sim: &Simulator) -> (BTreeMap<String, u128>, usize) {
    let d16 = dataset::d16();
    let lender = sim.config().lender_public_id.clone();
    let mut good = BTreeMap::new();
    let mut bad = 0;
    for raw in sim.latest() {
        match normalise(&d16, &raw) {
            Ok(row) => {
                good.insert(row.key.clone(), fingerprint(&row.to_deal(&d16, &lender)));
            }
            Err(_) => bad += 1,
        }
    }
    (good, bad)
}

/// The latest content per row key on the topic, checking that revisions count up by one and no
/// content follows itself.
fn latest_on_topic(deals: &[(String, u64, v1::CollectionsDealObserved)]) -> BTreeMap<String, u128> {
    let mut latest: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    for (aggregate_id, revision, deal) in deals {
        let key = row_key_of(deal);
        assert_eq!(aggregate_id, &format!("S3/D16/{key}"));
        let hash = fingerprint(deal);
        match latest.get(&key) {
            None => assert_eq!(*revision, 1, "{key} starts at revision 1"),
            Some((before, before_hash)) => {
                assert_eq!(*revision, before + 1, "{key}: revisions count up by one");
                assert_ne!(
                    *before_hash, hash,
                    "{key}: revision {revision} repeats the content of {before}"
                );
            }
        }
        latest.insert(key, (*revision, hash));
    }
    latest.into_iter().map(|(k, (_, h))| (k, h)).collect()
}

/// `have == want`, or a panic naming how many row keys differ and a few of them.
fn assert_same(have: &BTreeMap<String, u128>, want: &BTreeMap<String, u128>) {
    if have == want {
        return;
    }
    let missing: Vec<&String> = want.keys().filter(|k| !have.contains_key(*k)).collect();
    let extra: Vec<&String> = have.keys().filter(|k| !want.contains_key(*k)).collect();
    let stale: Vec<&String> = want
        .iter()
        .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
        .map(|(k, _)| k)
        .collect();
    panic!(
        "{} missing (e.g. {:?}), {} not expected (e.g. {:?}), {} with other content (e.g. {:?})",
        missing.len(),
        &missing[..missing.len().min(3)],
        extra.len(),
        &extra[..extra.len().min(3)],
        stale.len(),
        &stale[..stale.len().min(3)]
    );
}

fn stop_never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

#[tokio::test]
async fn one_pull_publishes_every_row_once_and_the_next_pull_nothing() {
    let config = SimConfig {
        malformed_share: 0.02,
        ..sim_config(3000)
    };
    let Setup {
        sim,
        running: _running,
        kafka,
        dir: _dir,
        puller,
        stream,
    } = setup(&config, 500).await;

    let report = puller.pull(&stream, &stop_never()).await.unwrap();
    let (good, bad) = expected(&sim);
    assert!(bad > 20, "the simulator made malformed rows ({bad})");
    assert_eq!(report.rows, 3000);
    assert_eq!(report.pages, 6);
    assert_eq!(report.published as usize, good.len());
    assert_eq!(report.rejected as usize, bad);
    assert_eq!(report.chains, 1);
    assert!(!report.stopped);

    let on_topic = deals(&kafka.kafka_config()).await;
    assert_eq!(on_topic.len(), good.len());
    assert_same(&latest_on_topic(&on_topic), &good);
    let rejected = rejects(&kafka.kafka_config()).await;
    assert_eq!(rejected.len(), bad);
    for reject in &rejected {
        assert_eq!(reject.dataset, "S3/D16");
        assert_eq!(reject.lender_public_id, "lender-acme-0001");
        assert!(!reject.errors.is_empty());
        let raw: serde_json::Value = serde_json::from_str(&reject.raw_json).unwrap();
        assert!(raw.is_object(), "the raw row is kept: {}", reject.raw_json);
    }

    // The boundary rows come again (since is inclusive) and are found unchanged.
    let again = puller.pull(&stream, &stop_never()).await.unwrap();
    assert_eq!(again.published, 0);
    assert!(
        again.rows >= 1,
        "since is inclusive: the last rows come again"
    );
    assert_eq!(again.rejected, 0);
    assert_eq!(deals(&kafka.kafka_config()).await.len(), good.len());
    assert_eq!(rejects(&kafka.kafka_config()).await.len(), bad);
    let checkpoint = puller.store().checkpoint(&stream.id()).unwrap();
    assert_eq!(checkpoint.chain, None);
    assert_eq!(checkpoint.cycles, 2);
    assert_eq!(checkpoint.since, report.since);
}

#[tokio::test]
async fn changed_and_new_rows_are_published_with_the_next_revision() {
    let config = sim_config(2000);
    let Setup {
        sim,
        running: _running,
        kafka,
        dir: _dir,
        puller,
        stream,
    } = setup(&config, 1000).await;
    puller.pull(&stream, &stop_never()).await.unwrap();

    assert_eq!(sim.mutate(150), 150);
    sim.add_rows(40);
    let report = puller.pull(&stream, &stop_never()).await.unwrap();
    assert_eq!(report.published, 190);
    let on_topic = deals(&kafka.kafka_config()).await;
    assert_eq!(on_topic.len(), 2000 + 190);
    let revisions: Vec<u64> = on_topic.iter().map(|(_, r, _)| *r).collect();
    assert_eq!(revisions.iter().filter(|r| **r == 2).count(), 150);
    assert_same(&latest_on_topic(&on_topic), &expected(&sim).0);
}

#[tokio::test]
async fn rows_changed_during_a_pull_come_with_the_next_cycle() {
    let mut config = sim_config(3000);
    // Slow pages keep the chain open long enough to change rows under it.
    config.faults = FaultPlan {
        slow: 1.0,
        slow_delay: Duration::from_millis(30),
        ..FaultPlan::default()
    };
    let (sim, running) = serve(config.clone()).await;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = Arc::new(puller(
        &kafka.kafka_config(),
        kafka.cluster_id(),
        dir.path(),
    ));
    let stream = stream(client_config(&running, &config), 100);

    let first = tokio::spawn({
        let (puller, stream) = (puller.clone(), stream.clone());
        async move { puller.pull(&stream, &stop_never()).await }
    });
    while sim.stats().pages_served < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!first.is_finished(), "the chain is still being paged");
    assert_eq!(sim.mutate(60), 60);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.published, 3000, "the chain reads its snapshot");

    let second = puller.pull(&stream, &stop_never()).await.unwrap();
    assert_eq!(second.published, 60, "the next cycle picks up the changes");
    assert_same(
        &latest_on_topic(&deals(&kafka.kafka_config()).await),
        &expected(&sim).0,
    );
}

#[tokio::test]
async fn faults_of_every_kind_lose_nothing_and_repeat_nothing() {
    let mut config = SimConfig {
        malformed_share: 0.01,
        ..sim_config(6000)
    };
    config.faults = FaultPlan {
        seed: 42,
        too_many_requests: 0.08,
        retry_after_secs: 0,
        server_error: 0.08,
        invalid_cursor: 0.08,
        gateway_timeout: 0.5,
        gateway_timeout_above_limit: 250,
        slow: 0.05,
        slow_delay: Duration::from_millis(20),
        drop_connection: 0.08,
    };
    let Setup {
        sim,
        running: _running,
        kafka,
        dir: _dir,
        puller,
        stream,
    } = setup(&config, 1000).await;

    let mut reports = Vec::new();
    for round in 0..3 {
        if round > 0 {
            sim.mutate(200);
            sim.add_rows(100);
        }
        reports.push(puller.pull(&stream, &stop_never()).await.unwrap());
    }
    let stats = sim.stats();
    for kind in [
        "too_many_requests",
        "server_error",
        "invalid_cursor",
        "gateway_timeout",
        "drop_connection",
    ] {
        assert!(
            stats.faults_injected.get(kind).copied().unwrap_or(0) > 0,
            "{kind} was injected: {:?}",
            stats.faults_injected
        );
    }
    let restarts: u64 = reports.iter().map(|r| r.cursor_restarts).sum();
    let timeouts: u64 = reports.iter().map(|r| r.gateway_timeouts).sum();
    assert!(restarts > 0 && timeouts > 0, "{reports:?}");

    let (good, bad) = expected(&sim);
    assert_same(&latest_on_topic(&deals(&kafka.kafka_config()).await), &good);
    let rejected = rejects(&kafka.kafka_config()).await;
    let mut distinct: Vec<&str> = rejected.iter().map(|r| r.raw_json.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        rejected.len(),
        "no rejected row published twice"
    );
    assert!(rejected.len() >= bad);
}

#[tokio::test]
async fn a_restarted_vendor_invalidates_session_and_cursor_and_the_pull_recovers() {
    let mut config = sim_config(1500);
    // Slow pages, so that the test sees a chain in flight.
    config.faults = FaultPlan {
        slow: 1.0,
        slow_delay: Duration::from_millis(50),
        ..FaultPlan::default()
    };
    let (_sim, running) = serve(config.clone()).await;
    let addr = running.addr;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), dir.path());
    let stream = stream(client_config(&running, &config), 500);
    let store = puller.store().clone();

    // Stop once the first page is committed: the checkpoint keeps the chain's next cursor.
    let (stop_tx, stop_rx) = watch::channel(false);
    let pulling = {
        let stream = stream.clone();
        async move { puller.pull(&stream, &stop_rx).await.map(|r| (r, puller)) }
    };
    let stopper = async {
        while store.checkpoint(&stream.id()).unwrap().chain.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop_tx.send(true).unwrap();
    };
    let (pulled, ()) = tokio::join!(pulling, stopper);
    let (first, puller) = pulled.unwrap();
    assert!(first.stopped);
    let cp = puller.store().checkpoint(&stream.id()).unwrap();
    let chain = cp.chain.clone().expect("a chain in flight");
    assert!(
        first.pages >= 1 && chain.pages == first.pages,
        "{first:?} {chain:?}"
    );

    // The vendor restarts (same data, new signing secret, no sessions).
    running.stop().await.unwrap();
    config.faults = FaultPlan::default();
    let sim = Simulator::new(config.clone());
    let _running = sim.start(addr).await.unwrap();
    let report = puller.pull(&stream, &stop_never()).await.unwrap();
    assert_eq!(report.cursor_restarts, 1, "{report:?}");
    let stats = sim.stats();
    assert_eq!(
        stats.logins, 1,
        "the refresh token is refused, so it logs in again"
    );
    assert_eq!(stats.requests.get("refresh"), Some(&1));
    assert_same(
        &latest_on_topic(&deals(&kafka.kafka_config()).await),
        &expected(&sim).0,
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed() {
    let config = sim_config(600);
    let Setup {
        sim,
        running: _running,
        kafka: _kafka,
        dir: _dir,
        puller,
        stream,
    } = setup(&config, 200).await;
    puller.pull(&stream, &stop_never()).await.unwrap();
    sim.expire_tokens();
    sim.add_rows(10);
    let report = puller.pull(&stream, &stop_never()).await.unwrap();
    assert_eq!(report.published, 10);
    let stats = sim.stats();
    assert_eq!((stats.logins, stats.refreshes), (1, 1));
}

#[tokio::test]
async fn wrong_credentials_fail_at_once_without_retries() {
    let config = sim_config(10);
    let (sim, running) = serve(config.clone()).await;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), dir.path());
    let mut client = client_config(&running, &config);
    client.password = export_puller::client::Secret::new("wrong");
    let error = puller
        .pull(&stream(client, 100), &stop_never())
        .await
        .unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(
        matches!(error, PullError::Fetch(FetchError::LoginRefused { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("Invalid email or password"),
        "{error}"
    );
    assert!(
        !error.to_string().contains("wrong"),
        "the password is not repeated: {error}"
    );
    let stats = sim.stats();
    assert_eq!(stats.requests.get("login"), Some(&1));
    assert_eq!(stats.requests.get("export"), None);
}

#[tokio::test]
async fn an_unknown_dataset_fails_with_404_and_is_not_retried() {
    let config = sim_config(10);
    let (sim, running) = serve(config.clone()).await;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), dir.path());
    let d99 = Dataset {
        code: "D99".to_owned(),
        ..dataset::d16()
    };
    let stream = Stream {
        dataset: Arc::new(d99),
        ..stream(client_config(&running, &config), 100)
    };
    let error = puller.pull(&stream, &stop_never()).await.unwrap_err();
    assert!(error.is_permanent());
    assert!(error.to_string().contains("S3/D99"), "{error}");
    assert_eq!(sim.stats().requests.get("export"), Some(&1));
}

#[tokio::test]
async fn forbidden_is_not_retried() {
    use axum::routing::{get, post};
    let answers = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = answers.clone();
    let app = axum::Router::new()
        .route(
            "/admin/auth/{lender}/login",
            post(|| async {
                axum::Json(serde_json::json!({"lenderPublicId": "L1", "token": "t", "refreshToken": "r"}))
            }),
        )
        .route(
            "/admin/v3/lenders/{l}/exports/{s}/{d}",
            get(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async {
                    (
                        axum::http::StatusCode::FORBIDDEN,
                        axum::Json(serde_json::json!({"success": false, "message": "Access denied", "requestId": "req-9"})),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), dir.path());
    let mut client = export_puller::client::ClientConfig::new(
        &format!("http://{addr}"),
        "acme",
        "a@b.c",
        export_puller::client::Secret::new("pw"),
    );
    client.retry = fast_retries();
    let error = puller
        .pull(&stream(client, 100), &stop_never())
        .await
        .unwrap_err();
    assert!(error.is_permanent());
    let text = error.to_string();
    assert!(
        text.contains("Access denied") && text.contains("req-9"),
        "{text}"
    );
    assert_eq!(answers.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retry_after_is_honoured_and_retries_are_bounded() {
    let mut config = sim_config(10);
    config.faults = FaultPlan {
        too_many_requests: 1.0,
        retry_after_secs: 1,
        ..FaultPlan::default()
    };
    let (sim, running) = serve(config.clone()).await;
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), dir.path());
    let mut client = client_config(&running, &config);
    client.retry.max_attempts = 3;
    let started = Instant::now();
    let error = puller
        .pull(&stream(client, 100), &stop_never())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PullError::Fetch(FetchError::Exhausted { attempts: 3, .. })
        ),
        "{error}"
    );
    assert!(!error.is_permanent());
    assert_eq!(sim.stats().requests.get("export"), Some(&3));
    // Two waits of at least Retry-After: 1 s each (a lower bound: sleeps never end early).
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        puller
            .store()
            .checkpoint(&StreamId::new(TENANT, "S3/D16"))
            .unwrap()
            .since
            .is_none()
    );
}

#[tokio::test]
async fn a_puller_that_died_after_the_acks_publishes_nothing_twice() {
    let config = sim_config(100);
    let (sim, running) = serve(config.clone()).await;
    let kafka = kafka();
    let stream = stream(client_config(&running, &config), 500);
    let base = tempfile::tempdir().unwrap();
    let (alive, crashed) = (base.path().join("alive"), base.path().join("crashed"));
    {
        let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), &alive);
        puller.pull(&stream, &stop_never()).await.unwrap();
        puller.store().flush().unwrap();
    }
    // `crashed` is the store as it was here: what a puller killed after Kafka acknowledged the
    // next pages, but before it committed them, leaves behind.
    copy_dir(&alive, &crashed);
    sim.add_rows(2500);
    sim.mutate(30);
    {
        let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), &alive);
        let report = puller.pull(&stream, &stop_never()).await.unwrap();
        assert!(report.published >= 2500);
    }
    let before = deals(&kafka.kafka_config()).await.len();
    let puller = puller(&kafka.kafka_config(), kafka.cluster_id(), &crashed);
    let report = puller.pull(&stream, &stop_never()).await.unwrap();
    assert_eq!(report.published, 0, "{report:?}");
    assert!(report.recovered >= 2500, "{report:?}");
    let on_topic = deals(&kafka.kafka_config()).await;
    assert_eq!(on_topic.len(), before, "nothing published twice");
    assert_same(&latest_on_topic(&on_topic), &expected(&sim).0);
    // And the read-back left the store knowing every content.
    let store_keys = puller.store().fingerprint_count(&stream.id()).unwrap();
    assert_eq!(
        puller.store().fingerprints(&stream.id()).unwrap().len(),
        store_keys
    );
    assert_eq!(store_keys, expected(&sim).0.len());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn once_mode_pulls_every_stream_and_continuous_mode_keeps_pulling_until_stopped() {
    let kafka = kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = Arc::new(puller(
        &kafka.kafka_config(),
        kafka.cluster_id(),
        dir.path(),
    ));
    let mut sims = Vec::new();
    let mut streams = Vec::new();
    for (i, tenant) in ["north", "south", "east"].iter().enumerate() {
        let config = SimConfig {
            seed: 10 + i as u64,
            ..sim_config(700)
        };
        let (sim, running) = serve(config.clone()).await;
        streams.push(Stream {
            tenant: (*tenant).to_owned(),
            ..stream(client_config(&running, &config), 300)
        });
        sims.push((sim, running));
    }
    let outcomes =
        schedule::run(puller.clone(), streams.clone(), Mode::Once, 2, stop_never()).await;
    assert_eq!(outcomes.len(), 3);
    for outcome in &outcomes {
        assert_eq!(
            outcome.result.as_ref().unwrap().published,
            700,
            "{}",
            outcome.stream
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let running = tokio::spawn(schedule::run(
        puller.clone(),
        streams,
        Mode::Every(Duration::from_millis(20)),
        2,
        stop_rx,
    ));
    for (sim, _) in &sims {
        sim.add_rows(25);
    }
    let all = 3 * 725;
    let deadline = Instant::now() + Duration::from_secs(30);
    while deals(&kafka.kafka_config()).await.len() < all {
        assert!(
            Instant::now() < deadline,
            "continuous mode picks up new rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_tx.send(true).unwrap();
    let outcomes = running.await.unwrap();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(
        deals(&kafka.kafka_config()).await.len(),
        all,
        "nothing twice"
    );
}

/// librdkafka's mock cluster on a thread of its own (it is `!Send`), taking orders to make the
/// broker refuse produce requests.
struct RefusingBroker {
    bootstrap: String,
    orders: std::sync::mpsc::Sender<Option<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RefusingBroker {
    fn start() -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (orders, inbox) = std::sync::mpsc::channel::<Option<usize>>();
        let thread = std::thread::spawn(move || {
            let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
            for topic in event_backbone::topics::ALL {
                cluster
                    .create_topic(topic.name, topic.partitions, 1)
                    .unwrap();
            }
            ready_tx.send(cluster.bootstrap_servers()).unwrap();
            // `Some(n)`: the next n produce requests fail for good; `None`: stop.
            while let Ok(Some(n)) = inbox.recv() {
                let errors =
                    vec![rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; n];
                cluster.request_errors(rdkafka::types::RDKafkaApiKey::Produce, &errors);
            }
        });
        Self {
            bootstrap: ready_rx.recv().unwrap(),
            orders,
            thread: Some(thread),
        }
    }

    fn kafka(&self) -> event_backbone::KafkaConfig {
        event_backbone::KafkaConfig {
            brokers: self.bootstrap.clone(),
            embedded: true,
            properties: Vec::new(),
        }
    }
}

impl Drop for RefusingBroker {
    fn drop(&mut self) {
        let _ = self.orders.send(None);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test]
async fn a_page_kafka_partly_refused_is_neither_lost_nor_published_twice() {
    let mut config = sim_config(4000);
    config.faults = FaultPlan {
        slow: 1.0,
        slow_delay: Duration::from_millis(30),
        ..FaultPlan::default()
    };
    let (sim, running) = serve(config.clone()).await;
    let broker = RefusingBroker::start();
    let kafka = broker.kafka();
    let dir = tempfile::tempdir().unwrap();
    let puller = puller(&kafka, "refusing-cluster", dir.path());
    let stream = stream(client_config(&running, &config), 500);
    let store = puller.store().clone();

    let never = stop_never();
    let (first, ()) = tokio::join!(puller.pull(&stream, &never), async {
        while store.checkpoint(&stream.id()).unwrap().chain.is_none() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A page or two in: the broker refuses the next produce requests (whole batches of
        // some partitions, the others go through).
        broker.orders.send(Some(3)).unwrap();
    });
    let error = first.expect_err("the refusal fails the cycle");
    assert!(matches!(error, PullError::Publish(_)), "{error}");
    assert!(!error.is_permanent());

    // The next cycle reads back what did land and publishes the rest, once.
    let second = puller.pull(&stream, &stop_never()).await.unwrap();
    assert!(second.recovered > 0 || second.published > 0, "{second:?}");
    let on_topic = deals(&kafka).await;
    assert_same(&latest_on_topic(&on_topic), &expected(&sim).0);
    assert_eq!(on_topic.len(), expected(&sim).0.len(), "no content twice");
}
