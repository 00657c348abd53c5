//! Export pull rate: a generated D16 dataset served by the simulator on loopback, pulled with
//! limit 1000 end to end (download, JSON parse, normalise, compare with the store, encode,
//! publish to the embedded Kafka, await acks, commit the checkpoint), beside the rate of only
//! downloading and JSON-parsing the same pages (the client following the same chain, each row
//! then parsed into a `serde_json::Value`: the baseline) in the same run. A third figure is the
//! download alone: the client splits a page into its rows' JSON texts and the normaliser reads
//! each row from its text once, so this is the least any pull must spend.
//!
//! `cargo bench -p export-puller --bench pull` (BENCH_ROWS, default 200,000; BENCH_LIMIT,
//! default 1000; BENCH_ROUNDS, default 5). Each round downloads and then pulls, so the two are
//! interleaved; the report gives the median and range of each and of their ratio in the same
//! round. The simulator runs in this process: the CPU figures include its cost of serving the
//! pages.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use event_backbone::EmbeddedKafka;
use event_backbone::producer::{EventProducer, ProducerSettings};
use export_puller::client::{ClientConfig, ExportClient, PageRequest, Secret};
use export_puller::dataset;
use export_puller::pull::{PullSettings, Puller, Stream};
use export_puller::store::PullStore;
use export_sim::{SimConfig, Simulator};
use recoup_runtime::process::cpu_seconds;

// The allocator the recoup binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn client_config(url: &str, sim: &SimConfig) -> ClientConfig {
    let mut c = ClientConfig::new(
        url,
        &sim.lender,
        &sim.email,
        Secret::new(sim.password.clone()),
    );
    c.requests_per_second = std::num::NonZeroU32::new(1_000_000).unwrap();
    c
}

/// Only download (and parse each row into a JSON value, if `parse`): one chain over every row,
/// as the puller asks for it.
async fn download(client: &ExportClient, limit: u32, parse: bool) -> usize {
    let d16 = dataset::d16();
    let mut rows = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = client
            .fetch_page(PageRequest {
                dataset: &d16,
                since: None,
                until: None,
                cursor: cursor.as_deref(),
                limit,
            })
            .await
            .unwrap();
        rows += page.rows.len();
        if parse {
            for row in &page.rows {
                let value: serde_json::Value = serde_json::from_str(row.get()).unwrap();
                std::hint::black_box(value);
            }
        }
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return rows,
        }
    }
}

fn main() {
    let rows = env_or("BENCH_ROWS", 200_000);
    let limit = env_or("BENCH_LIMIT", 1000) as u32;
    let runs = bench_rounds::rounds();
    let variants = [
        "download + parse",
        "download (rows split)",
        "pull into Kafka",
    ];
    let mut rates = bench_rounds::Rounds::new("rows/s", &variants);
    let mut cpu_per_row = bench_rounds::Rounds::new("µs CPU/row", &variants);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = SimConfig {
            rows,
            malformed_share: 0.001,
            ..SimConfig::default()
        };
        let started = Instant::now();
        let sim = Simulator::new(config.clone());
        let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
        let url = running.base_url();
        println!(
            "export pull: {rows} D16 rows generated in {:.2} s, limit {limit}, {runs} rounds",
            started.elapsed().as_secs_f64()
        );
        for run in 1..=runs {
            let client = ExportClient::new(client_config(&url, &config)).unwrap();
            let mut downloads = [(0.0, 0.0); 2];
            for (parse, figures) in [true, false].into_iter().zip(&mut downloads) {
                let cpu = cpu_seconds();
                let started = Instant::now();
                assert_eq!(download(&client, limit, parse).await, rows);
                let secs = started.elapsed().as_secs_f64();
                *figures = (rows as f64 / secs, (cpu_seconds() - cpu) * 1e6 / rows as f64);
            }
            let download_rate = downloads[0].0;

            let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let producer = EventProducer::new(
                &kafka.kafka_config(),
                &ProducerSettings {
                    linger: Duration::from_millis(5),
                    ..ProducerSettings::default()
                },
                None,
            )
            .unwrap();
            let puller = Puller::new(
                PullStore::open(dir.path()).unwrap(),
                Arc::new(producer),
                kafka.kafka_config(),
                kafka.cluster_id().to_owned(),
                Arc::new(chrono::Utc::now),
                PullSettings::default(),
            );
            let stream = Stream {
                tenant: "bench".to_owned(),
                dataset: Arc::new(dataset::d16()),
                client: Arc::new(ExportClient::new(client_config(&url, &config)).unwrap()),
                limit,
            };
            let (_stop, stop_rx) = tokio::sync::watch::channel(false);
            let cpu = cpu_seconds();
            let started = Instant::now();
            let report = puller.pull(&stream, &stop_rx).await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu;
            assert_eq!(report.rows as usize, rows);
            assert_eq!((report.published + report.rejected) as usize, rows);
            let rate = rows as f64 / secs;
            println!(
                "round {run}: download + parse {download_rate:>8.0} rows/s | split only {:>8.0} rows/s | pull into Kafka {rate:>8.0} rows/s ({secs:.2} s), CPU {:.1} µs per row on {:.2} busy cores | ratio {:.2}",
                downloads[1].0,
                cpu * 1e6 / rows as f64,
                cpu / secs,
                rate / download_rate
            );
            for (variant, (rate, cpu_per)) in downloads.into_iter().enumerate() {
                rates.record(variant, rate);
                cpu_per_row.record(variant, cpu_per);
            }
            rates.record(2, rate);
            cpu_per_row.record(2, cpu * 1e6 / rows as f64);
            drop(puller);
            drop(kafka);
        }
        println!("\n{}\n{}", rates.report(), cpu_per_row.report());
        running.stop().await.unwrap();
    });
}
