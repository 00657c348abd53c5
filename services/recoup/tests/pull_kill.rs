//! The export puller as its own process (`recoup pull --once`), killed with SIGKILL at random
//! points of a 50,000-row pull from a faulty vendor, restarted, killed again: at the end every
//! row key is in the deals read model once with its latest content, and the topic holds no
//! second copy of an unchanged row.
//!
//! The broker (librdkafka's mock cluster), the simulated vendor and the projection live in this
//! test process and survive every kill; only the puller dies.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use event_backbone::consumer::EventConsumer;
use event_backbone::envelope::decode_envelope;
use event_backbone::topics::{COLLECTIONS_DEALS, REJECTS, TopicSpec};
use event_backbone::{EmbeddedKafka, KafkaConfig};
use export_puller::dataset;
use export_puller::normalise::{fingerprint, normalise};
use export_sim::{FaultPlan, SimConfig, Simulator};
use projection::Projection;
use projection::deals::DealReadModel;
use projection::{CaseReadModel, Projector};
use prost::Message;
use recoup_proto::v1;

const TENANT: &str = "acme";
const ROWS: usize = 50_000;
/// Runs killed before one is let finish.
const KILLS: usize = 8;

/// xorshift64*, seeded from the clock (printed, so a failing run can be repeated with
/// RECOUP_KILL_SEED).
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

fn pull_once(bin: &str, kafka: &str, data: &std::path::Path, host: &str, sim: &SimConfig) -> Child {
    Command::new(bin)
        .args([
            "pull",
            "--once",
            "--kafka-brokers",
            kafka,
            "--tenant",
            TENANT,
        ])
        .arg("--data-dir")
        .arg(data)
        .args([
            "--api-host",
            host,
            "--lender",
            &sim.lender,
            "--email",
            &sim.email,
        ])
        .args(["--limit", "1000", "--requests-per-second", "100000"])
        .env("RECOUP_EXPORT_PASSWORD", &sim.password)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "recoup pull --once did not finish"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The high watermarks of every partition of `topic`.
fn ends(kafka: &KafkaConfig, topic: &str) -> BTreeMap<i32, i64> {
    let consumer = EventConsumer::new(kafka, "test-ends", topic, None).unwrap();
    consumer
        .partitions(Duration::from_secs(5))
        .unwrap()
        .into_iter()
        .map(|p| (p, consumer.watermarks(p, Duration::from_secs(5)).unwrap().1))
        .collect()
}

async fn whole_topic(kafka: &KafkaConfig, topic: &str) -> Vec<Vec<u8>> {
    let consumer = EventConsumer::new(kafka, "test-reader", topic, None).unwrap();
    let mut pending: BTreeMap<i32, i64> = ends(kafka, topic)
        .into_iter()
        .filter(|(_, high)| *high > 0)
        .map(|(p, high)| (p, high - 1))
        .collect();
    let start: Vec<(i32, Option<i64>)> = ends(kafka, topic).keys().map(|p| (*p, None)).collect();
    consumer.assign(&start).unwrap();
    let mut out = Vec::new();
    while !pending.is_empty() {
        let batch = tokio::time::timeout(Duration::from_secs(20), consumer.recv_batch(5000))
            .await
            .expect("the topic's messages arrive")
            .unwrap();
        for m in batch {
            if pending
                .get(&m.partition)
                .is_some_and(|last| m.offset >= *last)
            {
                pending.remove(&m.partition);
            }
            out.push(m.value);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_puller_killed_at_random_points_loses_nothing_and_publishes_nothing_twice() {
    let seed = std::env::var("RECOUP_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64 | 1);
    println!("kill seed {seed} (repeat with RECOUP_KILL_SEED={seed})");
    let mut dice = Dice(seed);

    // Room enough that the mock broker's 5 MiB per partition keeps every event of the test.
    let deals_topic = TopicSpec {
        partitions: 24,
        ..COLLECTIONS_DEALS
    };
    let kafka = EmbeddedKafka::start(&[deals_topic, REJECTS]).unwrap();
    let kafka_config = kafka.kafka_config();

    let sim_config = SimConfig {
        rows: ROWS,
        seed: 7,
        lender: "acme".to_owned(),
        lender_public_id: "lender-acme-0001".to_owned(),
        email: "ops@acme.example".to_owned(),
        password: "s3cret".to_owned(),
        malformed_share: 0.002,
        faults: FaultPlan {
            seed: seed ^ 0x5eed,
            too_many_requests: 0.03,
            retry_after_secs: 0,
            server_error: 0.03,
            invalid_cursor: 0.03,
            gateway_timeout: 0.3,
            gateway_timeout_above_limit: 500,
            slow: 0.03,
            slow_delay: Duration::from_millis(100),
            drop_connection: 0.03,
        },
        ..SimConfig::default()
    };
    let sim = Simulator::new(sim_config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let host = running.base_url();

    let dir = tempfile::tempdir().unwrap();
    let read_model = CaseReadModel::open(&dir.path().join("projection")).unwrap();
    let deals = DealReadModel::open(&read_model).unwrap();
    let consumer = EventConsumer::new(
        &kafka_config,
        "test-projection",
        COLLECTIONS_DEALS.name,
        None,
    )
    .unwrap();
    let projector = Projector::start(
        deals.clone(),
        consumer,
        kafka.cluster_id().to_owned(),
        COLLECTIONS_DEALS.name,
    )
    .unwrap();
    let (stop_projection, stop_rx) = tokio::sync::watch::channel(false);
    let projection = tokio::spawn(projector.run(stop_rx));

    let bin = env!("CARGO_BIN_EXE_recoup");
    let data = dir.path().join("puller");
    let brokers = kafka.bootstrap_servers().to_owned();
    let mut kills = 0;
    let mut runs = 0;
    while kills < KILLS {
        runs += 1;
        assert!(runs < 60, "{kills} kills in {runs} runs");
        // Kill after a random number of pages served, a random moment later: while a page is
        // fetched, classified, published or committed.
        let served = sim.stats().pages_served;
        let pages = 1 + dice.below(12);
        let later = Duration::from_millis(dice.below(40));
        let mut child = pull_once(bin, &brokers, &data, &host, &sim_config);
        while child.try_wait().unwrap().is_none() && sim.stats().pages_served < served + pages {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(later).await;
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            println!("killed run {runs} after {pages} pages and {later:?}");
        } else {
            let status = child.wait().unwrap();
            assert!(status.success(), "run {runs} ended {status}");
            // A run that got to the end: give the next ones work again.
            sim.mutate(3000);
            sim.add_rows(500);
        }
        // The vendor's rows move on between runs.
        if dice.below(3) == 0 {
            sim.mutate(200);
            sim.add_rows(50);
        }
    }
    // Two runs to the end: the second picks up what changed during the first.
    for _ in 0..2 {
        let mut child = pull_once(bin, &brokers, &data, &host, &sim_config);
        let status =
            tokio::task::spawn_blocking(move || wait(&mut child, Duration::from_secs(300)))
                .await
                .unwrap();
        assert!(status.success(), "an unkilled run succeeds: {status}");
    }
    assert_eq!(kills, KILLS);

    // The projection takes everything the topic holds.
    let topic_ends = ends(&kafka_config, COLLECTIONS_DEALS.name);
    let partitions: Vec<i32> = topic_ends.keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = deals
            .offsets(kafka.cluster_id(), COLLECTIONS_DEALS.name, &partitions)
            .unwrap();
        if applied
            .iter()
            .all(|(p, next)| next.unwrap_or(0) >= topic_ends[p])
        {
            break;
        }
        assert!(Instant::now() < deadline, "the projection catches up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every row key once, with its latest content.
    let d16 = dataset::d16();
    let mut expected = BTreeMap::new();
    for raw in sim.latest() {
        if let Ok(row) = normalise(&d16, &raw) {
            let created_at = match row.value(&d16, "created_at") {
                Some(export_puller::normalise::Normalised::Instant(at)) => *at,
                other => panic!("created_at is an instant: {other:?}"),
            };
            let content = fingerprint(&row.to_deal(&d16, &sim_config.lender_public_id));
            expected.insert(
                row.key.clone(),
                (row.partition.clone(), created_at, content),
            );
        }
    }
    assert!(expected.len() > ROWS * 99 / 100);
    for (key, (public_id, created_at, content)) in &expected {
        let deal = deals
            .deal(TENANT, public_id, *created_at)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} is in the read model"));
        assert_eq!(fingerprint(&deal), *content, "{key} has its latest content");
    }
    let in_model: i128 = deals
        .funnel(TENANT)
        .unwrap()
        .iter()
        .map(|s| s.totals.deals)
        .sum();
    assert_eq!(in_model as usize, expected.len(), "no other deals");

    // No second copy of an unchanged row: per row key, revisions count up by one and every
    // revision changes the content.
    let mut last: BTreeMap<String, (u64, u128)> = BTreeMap::new();
    let messages = whole_topic(&kafka_config, COLLECTIONS_DEALS.name).await;
    for value in &messages {
        let envelope = decode_envelope(value).unwrap();
        let deal = v1::CollectionsDealObserved::decode(envelope.payload.as_slice()).unwrap();
        let created = deal.created_at.as_ref().unwrap();
        let at = DateTime::from_timestamp(created.seconds, created.nanos as u32).unwrap();
        let key = format!(
            "{}|{}",
            deal.public_id,
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        let content = fingerprint(&deal);
        if let Some((revision, before)) = last.get(&key) {
            assert_eq!(
                deal.revision,
                revision + 1,
                "{key}: revision after {revision}"
            );
            assert_ne!(
                content, *before,
                "{key}: revision {} repeats its content",
                deal.revision
            );
        } else {
            assert_eq!(deal.revision, 1, "{key} starts at revision 1");
        }
        last.insert(key, (deal.revision, content));
    }
    assert_eq!(last.len(), expected.len());
    println!(
        "{} deals, {} events on the topic after {kills} kills",
        expected.len(),
        messages.len()
    );

    stop_projection.send(true).unwrap();
    projection.await.unwrap().unwrap();
}
