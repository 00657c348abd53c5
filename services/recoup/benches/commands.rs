//! Command throughput and latency through gRPC on loopback with durable appends, beside a bare
//! sled loop that writes the same keys with the same flush policy, in interleaved rounds. Each
//! round runs, each on a fresh data dir:
//! - the whole platform (`recoup up`) with API keys checked (the default): the clients, the gRPC
//!   server, the store, the outbox relay, the embedded Kafka broker and the projection consuming
//!   the case events all share the machine's cores;
//! - the same without credentials (`--insecure`);
//! - the command path alone: the outbox relay stopped, so the clients, gRPC, the API key check,
//!   the aggregate and the store work, and the broker and the projection stay idle;
//! - gRPC alone: the same platform, the same clients and number of calls, each call
//!   `grpc.health.v1.Health/Check` (which checks no key; what the key check costs shows between
//!   the first two variants): the round trip through the client, the loopback connection and
//!   recoup's server stack without the aggregate and the store, so the command path's CPU
//!   above the bare loop splits into gRPC's and the rest;
//! - the bare sled loop, grouped as the store grouped the first run's requests.
//!
//! `cargo bench -p recoup --bench commands` (BENCH_CASES, BENCH_CLIENTS to change the load,
//! BENCH_ROUNDS, default 5).
#![allow(clippy::unwrap_used)]

// The allocator the recoup binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::time::{Duration, Instant};

use common::{content, env_or, ms, percentile, request};

use chrono::Utc;
use recoup::platform::{self, PlatformConfig, Security};
use recoup_access::{KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_runtime::process::cpu_seconds;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Runs `client(c)` as a task for each of `clients` clients; their latencies, and how long
/// all took.
async fn gather<F, Fut>(clients: usize, client: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Vec<Duration>> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients).map(|c| tokio::spawn(client(c))).collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, started.elapsed())
}

/// Drives `cases` cases through create, review, prepare, close from `clients` clients.
async fn grpc_load(
    channel: Channel,
    cases: usize,
    clients: usize,
    key: Option<AsciiMetadataValue>,
) -> (Vec<Duration>, Duration) {
    gather(clients, |c| {
        let mut client = DebtCollectionCasesClient::new(channel.clone());
        let key = key.clone();
        async move {
            let mut latencies = Vec::new();
            for i in (c..cases).step_by(clients) {
                let t = Instant::now();
                let create = v1::CreateCaseRequest {
                    content: Some(content("bench", i)),
                };
                let case = client
                    .create_case(request(create, &key))
                    .await
                    .unwrap()
                    .into_inner()
                    .case
                    .unwrap();
                latencies.push(t.elapsed());
                let mut version = case.version;
                for step in 0..3 {
                    let command = v1::CaseCommand {
                        case_id: case.id.clone(),
                        expected_version: version,
                    };
                    let t = Instant::now();
                    let command = request(command, &key);
                    let reply = match step {
                        0 => client.mark_reviewed(command).await,
                        1 => client.mark_prepared(command).await,
                        _ => client.close_case(command).await,
                    };
                    latencies.push(t.elapsed());
                    version = reply.unwrap().into_inner().case.unwrap().version;
                }
            }
            latencies
        }
    })
    .await
}

/// `calls` health checks from `clients` clients: gRPC's round trip alone.
async fn health_load(
    channel: Channel,
    calls: usize,
    clients: usize,
    key: Option<AsciiMetadataValue>,
) -> (Vec<Duration>, Duration) {
    gather(clients, |c| {
        let mut client = HealthClient::new(channel.clone());
        let key = key.clone();
        async move {
            let mut latencies = Vec::new();
            for _ in (c..calls).step_by(clients) {
                let t = Instant::now();
                client
                    .check(request(HealthCheckRequest::default(), &key))
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }
    })
    .await
}

/// The same writes without gRPC, the aggregate or the outbox relay: per command one event and
/// one outbox record (plus the index entry on creation), one batch and one flush per group.
fn bare_sled(commands: usize, group: usize, event_bytes: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let tree = db.open_tree("events").unwrap();
    let value = vec![7u8; event_bytes];
    let started = Instant::now();
    let mut done = 0;
    let mut seq: u64 = 0;
    while done < commands {
        let mut batch = sled::Batch::default();
        for i in done..(done + group).min(commands) {
            let case = i / 4;
            let mut k = format!("e\0default\0{case:036}\0").into_bytes();
            k.extend_from_slice(&((i % 4) as u64 + 1).to_be_bytes());
            batch.insert(k, value.clone());
            let mut o = b"o".to_vec();
            o.extend_from_slice(&seq.to_be_bytes());
            seq += 1;
            batch.insert(o, value.clone());
            if i % 4 == 0 {
                batch.insert(format!("x\0default\0bench-{case}").into_bytes(), &b"id"[..]);
                batch.insert(
                    format!("r\0default\0BENCH-{case:08}").into_bytes(),
                    &b"id"[..],
                );
            }
        }
        tree.apply_batch(batch).unwrap();
        db.flush().unwrap();
        done = (done + group).min(commands);
    }
    started.elapsed()
}

/// What one run measures.
struct Run {
    /// Sorted.
    latencies: Vec<Duration>,
    elapsed: Duration,
    /// The whole process's CPU during the load, seconds.
    cpu: f64,
    groups: u64,
    requests: u64,
    event_bytes: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_per_command(&self) -> f64 {
        self.cpu * 1e6 / self.latencies.len() as f64
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Platform {
        keys: bool,
    },
    CommandsAlone,
    /// Health checks instead of commands, on the platform of `CommandsAlone`.
    GrpcAlone,
}

/// One run of the load against a platform of `shape` in `dir`.
async fn run(dir: &std::path::Path, shape: Shape, cases: usize, clients: usize) -> Run {
    let mut config = PlatformConfig::new(dir.to_path_buf());
    config.grpc_addr = Some("127.0.0.1:0".parse().unwrap());
    config.http_addr = None;
    config.security = match shape {
        Shape::Platform { keys: false } => Security::insecure(),
        _ => Security {
            first_admin_key: false,
            ..Security::default()
        },
    };
    if matches!(shape, Shape::CommandsAlone | Shape::GrpcAlone) {
        // The embedded broker needs every service in the process; with the relay stopped
        // nothing reaches it, and the projection has nothing to consume.
        config.cases.relay = false;
    }
    let p = platform::start(config).await.unwrap();
    let key = match p.keys() {
        Some(registry) => {
            let spec = KeySpec {
                name: "bench".to_owned(),
                tenants: vec!["default".to_owned()],
                role: Role::Agent,
                expires_at: None,
                created_by: "bench".to_owned(),
            };
            let issued = registry.create(&spec, Utc::now()).await.unwrap();
            Some(format!("Bearer {}", issued.key).parse().unwrap())
        }
        None => None,
    };
    let channel = Channel::from_shared(format!("http://{}", p.grpc_addr.unwrap()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let cpu = cpu_seconds();
    let (mut latencies, elapsed) = match shape {
        Shape::GrpcAlone => health_load(channel, cases * 4, clients, key).await,
        _ => grpc_load(channel, cases, clients, key).await,
    };
    let cpu = cpu_seconds() - cpu;
    latencies.sort();
    let store = p.store().unwrap();
    let (groups, requests) = store.write_stats();
    let event_bytes = match store.heads().next() {
        Some(first) => {
            let first = first.unwrap();
            let events = store.events_after(&first.0, &first.1, 0).unwrap();
            events.iter().map(Vec::len).sum::<usize>() / events.len()
        }
        // Health checks write nothing.
        None => 0,
    };
    p.shutdown().await.unwrap();
    Run {
        latencies,
        elapsed,
        cpu,
        groups,
        requests,
        event_bytes,
    }
}

const VARIANTS: [&str; 5] = [
    "bare sled loop, same keys and flushes",
    "platform, API key checked (default)",
    "platform, no credentials (--insecure)",
    "command path alone (no relay)",
    "gRPC alone (Health/Check)",
];

fn main() {
    let cases = env_or("BENCH_CASES", 10_000);
    let clients = env_or("BENCH_CLIENTS", 64);
    let rounds = bench_rounds::rounds();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{} commands per run ({cases} cases through create, review, prepare, close) from {clients} clients on one connection, durable appends; {rounds} rounds",
        cases * 4
    );
    let mut rate = bench_rounds::Rounds::new("commands/s", &VARIANTS);
    let mut cpu = bench_rounds::Rounds::new("µs CPU/command", &VARIANTS);
    let mut p50 = bench_rounds::Rounds::without_baseline("p50 ms", &VARIANTS[1..]);
    let mut p99 = bench_rounds::Rounds::without_baseline("p99 ms", &VARIANTS[1..]);
    let mut group = 1;
    for round in 1..=rounds {
        let shapes = [
            Shape::Platform { keys: true },
            Shape::Platform { keys: false },
            Shape::CommandsAlone,
            Shape::GrpcAlone,
        ];
        let mut line = format!("round {round}:");
        for (variant, shape) in (1..).zip(shapes) {
            let dir = tempfile::tempdir().unwrap();
            let r = runtime.block_on(run(dir.path(), shape, cases, clients));
            rate.record(variant, r.rate());
            cpu.record(variant, r.cpu_per_command());
            p50.record(variant - 1, ms(percentile(&r.latencies, 0.50)));
            p99.record(variant - 1, ms(percentile(&r.latencies, 0.99)));
            line += &format!(
                " {:.0}/s (p99 {:.1} ms) |",
                r.rate(),
                ms(percentile(&r.latencies, 0.99))
            );
            if variant == 1 {
                group = (r.requests as f64 / r.groups.max(1) as f64)
                    .round()
                    .max(1.0) as usize;
                let commands = r.latencies.len();
                let started = cpu_seconds();
                let bare = bare_sled(commands, group, r.event_bytes);
                rate.record(0, commands as f64 / bare.as_secs_f64());
                cpu.record(0, (cpu_seconds() - started) * 1e6 / commands as f64);
            }
        }
        println!("{line} group commit {group} per flush");
    }
    println!(
        "\n{}\n{}\n{}\n{}",
        rate.report(),
        cpu.report(),
        p50.report(),
        p99.report()
    );
}
