//! What the data dir costs per snapshot row, against the events themselves.
//!
//! `recoup up`'s platform in process (embedded Kafka, no credentials) imports STORAGE_ROWS
//! accepted rows, then as many rejected rows, over HTTP. After each import the events Kafka holds
//! for it are read back (their keys and values: the baseline), the platform stops cleanly, and
//! the data dir is measured: bytes on disk per service, and the live bytes (keys + values) of
//! each service's sled trees, so that sled's own overhead shows apart from recoup's records.
//!
//! Both are run twice, into a data dir of plain databases and into one of compressed ones
//! (`--store-compression`), each timed from the upload until the projection took every event.
//!
//! Every round does all four imports; the first prints the details, and the tables at the end
//! give each figure's median and range over the rounds.
//!
//! `cargo bench -p recoup --bench storage` (STORAGE_ROWS, default 100,000; BENCH_ROUNDS,
//! default 5).
#![allow(clippy::unwrap_used)]

// The allocator the recoup binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use event_backbone::consumer::EventConsumer;
use event_backbone::topics::{PAYGO_SNAPSHOTS, REJECTS};
use recoup::platform::{self, PlatformConfig, Security};
use recoup_keys::store::StoreOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICES: [&str; 3] = ["snapshot-importer", "projection", "case-lifecycle"];

fn rows() -> usize {
    std::env::var("STORAGE_ROWS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn config(dir: &Path, compression: bool) -> PlatformConfig {
    let mut config = PlatformConfig::new(dir.to_path_buf());
    config.store.compression = compression;
    config.security = Security::insecure();
    config.grpc_addr = Some("127.0.0.1:0".parse().unwrap());
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    config
}

/// A CSV of `n` accounts on one day; `rejected`: each row with a decimal comma, refused.
fn csv(n: usize, rejected: bool) -> Vec<u8> {
    let mut csv = String::from(
        "snapshot_date,account_external_id,amt_remaining_installment_source,\
         days_arrears_consecutive_source\n",
    );
    for i in 0..n {
        if rejected {
            csv += &format!("2021-05-04,R{i:07},\"1,5\",{}\n", i % 90);
        } else {
            csv += &format!("2021-05-03,A{i:07},{},{}\n", 100 + i % 900, i % 90);
        }
    }
    csv.into_bytes()
}

async fn upload(http: SocketAddr, body: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(http).await.unwrap();
    let head = format!(
        "POST /v1/paygo_snapshots_ts HTTP/1.1\r\nhost: x\r\nx-recoup-tenant: default\r\n\
         content-type: text/csv\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
}

/// How many events of `topic` the projection consumed, as `GET /metrics` counts them. The
/// counter is the process's: it goes on across the platform's restarts in this benchmark.
async fn consumed(grpc: SocketAddr, topic: &str) -> f64 {
    let label = format!("topic=\"{topic}\"");
    let mut tcp = tokio::net::TcpStream::connect(grpc).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("recoup_events_consumed_total{") && l.contains(&label))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the projection's count of consumed events of `topic` reaches `target`.
async fn projected(grpc: SocketAddr, topic: &str, target: f64) {
    while consumed(grpc, topic).await < target {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bytes (keys and values) of one event of `topic` on average: the embedded cluster keeps
/// the last 5 MiB of each partition, so the average is taken over the events it still has.
async fn event_bytes(bootstrap: &str, topic: &str) -> f64 {
    let kafka = event_backbone::KafkaConfig::external(bootstrap);
    let consumer = EventConsumer::new(&kafka, "bench-storage", topic, None).unwrap();
    let partitions = consumer.partitions(Duration::from_secs(5)).unwrap();
    let mut retained = 0;
    for partition in &partitions {
        let (low, high) = consumer
            .watermarks(*partition, Duration::from_secs(5))
            .unwrap();
        retained += high - low;
    }
    let start: Vec<(i32, Option<i64>)> = partitions.iter().map(|p| (*p, None)).collect();
    consumer.assign(&start).unwrap();
    let (mut seen, mut bytes) = (0, 0u64);
    while seen < retained {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.recv_batch(10_000))
            .await
            .expect("the events are there")
            .unwrap();
        for event in batch {
            seen += 1;
            bytes += (event.key.len() + event.value.len()) as u64;
        }
    }
    bytes as f64 / seen.max(1) as f64
}

/// Bytes of the files below `path`.
fn disk(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                disk(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// Live bytes (keys + values) of every tree of the sled db in `path`, by tree and first key byte.
fn live(path: &Path) -> BTreeMap<String, u64> {
    let mut live = BTreeMap::new();
    // Opening creates: a database not there yet (measured before the first start) has nothing.
    if !matches!(recoup_keys::store::created_compressed(path), Ok(Some(_))) {
        return live;
    }
    let db = recoup_keys::store::open(path, StoreOptions::default()).unwrap();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        for item in tree.iter() {
            let (key, value) = item.unwrap();
            let prefix = key.first().map_or('-', |b| char::from(*b));
            let name = format!("{}/{prefix}", String::from_utf8_lossy(&name));
            *live.entry(name).or_default() += (key.len() + value.len()) as u64;
        }
    }
    live
}

struct Measure {
    disk: BTreeMap<&'static str, u64>,
    live: BTreeMap<String, u64>,
}

fn measure(dir: &Path) -> Measure {
    let disk = SERVICES
        .iter()
        .map(|service| (*service, disk(&dir.join(service))))
        .collect();
    let live = SERVICES
        .iter()
        .flat_map(|service| {
            live(&dir.join(service))
                .into_iter()
                .map(move |(tree, bytes)| (format!("{service}: {tree}"), bytes))
        })
        .collect();
    Measure { disk, live }
}

/// One import on a fresh start of the platform over `dir`, measured after a clean stop: the data
/// dir, the events' bytes and the seconds from the upload until the projection took them all
/// (`projected`: the events of that topic it consumes).
async fn import(
    dir: &Path,
    compression: bool,
    body: Vec<u8>,
    (topic, projected_topic): (&str, Option<&str>),
    n: usize,
) -> (Measure, u64, f64) {
    let running = platform::start(config(dir, compression)).await.unwrap();
    let grpc = running.grpc_addr.unwrap();
    let before = match projected_topic {
        Some(topic) => consumed(grpc, topic).await,
        None => 0.0,
    };
    let started = Instant::now();
    let answer = upload(running.http_addr.unwrap(), &body).await;
    if let Some(topic) = projected_topic {
        projected(grpc, topic, before + n as f64).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    // One event per row.
    let events = (event_bytes(&running.kafka_bootstrap, topic).await * n as f64) as u64;
    assert!(answer.contains(&format!("\"rows_read\":{n}")), "{answer}");
    running.shutdown().await.unwrap();
    (measure(dir), events, seconds)
}

/// Prints what grew when `verbose`; returns the bytes on disk per row and their ratio to the
/// events' bytes.
fn report(
    what: &str,
    n: usize,
    (before, after): (&Measure, &Measure),
    (events, seconds): (u64, f64),
    verbose: bool,
) -> (f64, f64) {
    let per_row = |bytes: u64| bytes as f64 / n as f64;
    let disk: u64 = SERVICES
        .iter()
        .map(|s| after.disk[s].saturating_sub(before.disk[s]))
        .sum();
    let live: u64 = after
        .live
        .iter()
        .map(|(tree, bytes)| bytes.saturating_sub(*before.live.get(tree).unwrap_or(&0)))
        .sum();
    if !verbose {
        return (per_row(disk), disk as f64 / events as f64);
    }
    println!(
        "{what}: {n} rows in {seconds:.1} s ({:.0} rows/s)",
        n as f64 / seconds
    );
    println!("  events (baseline)   {:>8.0} B/row", per_row(events));
    println!(
        "  data dir on disk    {:>8.0} B/row  {:>5.1}x the events",
        per_row(disk),
        disk as f64 / events as f64
    );
    println!(
        "  live keys + values  {:>8.0} B/row  {:>5.1}x the events (sled's overhead: {:.1}x)",
        per_row(live),
        live as f64 / events as f64,
        disk as f64 / live.max(1) as f64
    );
    for service in SERVICES {
        let grown = after.disk[service].saturating_sub(before.disk[service]);
        if per_row(grown) >= 0.5 {
            println!("    {service:<18} on disk {:>8.0} B/row", per_row(grown));
        }
    }
    for (tree, bytes) in &after.live {
        let grown = bytes.saturating_sub(*before.live.get(tree).unwrap_or(&0));
        if per_row(grown) >= 0.5 {
            println!("    {tree:<40} live {:>6.0} B/row", per_row(grown));
        }
    }
    (per_row(disk), disk as f64 / events as f64)
}

const VARIANTS: [&str; 4] = [
    "plain, accepted rows",
    "plain, rejected rows",
    "compressed, accepted rows",
    "compressed, rejected rows",
];

fn main() {
    let n = rows();
    let rounds = bench_rounds::rounds();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rate = bench_rounds::Rounds::without_baseline("rows/s", &VARIANTS);
    let mut disk = bench_rounds::Rounds::without_baseline("B/row on disk", &VARIANTS);
    let mut ratio = bench_rounds::Rounds::without_baseline("x the events", &VARIANTS);
    for round in 1..=rounds {
        // The details of the first round; the figures of every round go to the tables.
        let verbose = round == 1;
        for compression in [false, true] {
            if verbose {
                println!(
                    "{}",
                    ["plain databases", "compressed databases"][compression as usize]
                );
            }
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let variant = 2 * compression as usize;
            runtime.block_on(async {
                let empty = measure(dir);
                let topics = (PAYGO_SNAPSHOTS.name, Some(PAYGO_SNAPSHOTS.name));
                let (accepted, events, s) =
                    import(dir, compression, csv(n, false), topics, n).await;
                let (b, x) = report("accepted", n, (&empty, &accepted), (events, s), verbose);
                rate.record(variant, n as f64 / s);
                disk.record(variant, b);
                ratio.record(variant, x);
                let topics = (REJECTS.name, None);
                let (rejected, events, s) = import(dir, compression, csv(n, true), topics, n).await;
                let (b, x) = report("rejected", n, (&accepted, &rejected), (events, s), verbose);
                rate.record(variant + 1, n as f64 / s);
                disk.record(variant + 1, b);
                ratio.record(variant + 1, x);
            });
        }
        println!("round {round} done");
    }
    println!("\n{}\n{}\n{}", rate.report(), disk.report(), ratio.report());
}
