//! Two figures users ask about, through `recoup up`'s platform on loopback with API keys on:
//!
//! 1. **Reads**: `Query.GetCase` calls per second from many concurrent clients, beside
//!    `grpc.health.v1.Health/Check` on the same server in the same run (the cost of gRPC itself:
//!    the ratio says what the credential check and the read model add).
//! 2. **Visibility**: the time from an acknowledged command to its event in the case read model
//!    that `Query` reads, at a steady rate of commands (open loop), beside the same with one
//!    command at a time.
//!
//! Both in interleaved rounds (BENCH_ROUNDS, default 5), with the median and range of each
//! figure over the rounds. One platform serves every round, so the visibility rounds find a
//! store that grew by the cases of the rounds before (5,500 per round by default).
//!
//! `cargo bench -p recoup --bench queries` (BENCH_SECONDS, BENCH_CLIENTS, BENCH_RATE,
//! BENCH_ROUNDS).
#![allow(clippy::unwrap_used)]

// The allocator the recoup binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{content, env_or, ms, percentile, platform, request};

use recoup::platform::RunningPlatform;
use recoup_access::Role;
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Calls `call` from `clients` tasks for `seconds`: calls per second.
async fn rate<F, Fut>(clients: usize, seconds: f64, call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (call, done, stop) = (call.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                call(i).await;
                done.fetch_add(1, Ordering::Relaxed);
                i += clients;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

async fn reads(channel: &Channel, key: &Option<AsciiMetadataValue>, ids: Arc<Vec<String>>) {
    let clients = env_or("BENCH_CLIENTS", 64);
    let seconds = env_or("BENCH_SECONDS", 5) as f64;
    let query = QueryClient::new(channel.clone());
    let health = HealthClient::new(channel.clone());
    let mut rates =
        bench_rounds::Rounds::new("calls/s", &["grpc.health.v1.Health/Check", "Query.GetCase"]);
    // Interleaved, so that drift on a noisy machine touches both.
    for round in 1..=bench_rounds::rounds() {
        let (h, k) = (health.clone(), key.clone());
        let health_rate = rate(clients, seconds, move |_| {
            let mut h = h.clone();
            let k = k.clone();
            async move {
                h.check(request(HealthCheckRequest::default(), &k))
                    .await
                    .unwrap();
            }
        })
        .await;
        let (q, k, ids) = (query.clone(), key.clone(), ids.clone());
        let get_rate = rate(clients, seconds, move |i| {
            let mut q = q.clone();
            let k = k.clone();
            let id = ids[i % ids.len()].clone();
            async move {
                let case = q
                    .get_case(request(v1::GetCaseRequest { case_id: id }, &k))
                    .await
                    .unwrap();
                assert!(case.into_inner().case.is_some());
            }
        })
        .await;
        println!(
            "round {round}: Query.GetCase {get_rate:.0} calls/s, Health/Check {health_rate:.0} calls/s ({clients} clients)"
        );
        rates.record(0, health_rate);
        rates.record(1, get_rate);
    }
    println!("\n{}", rates.report());
}

/// Commands at `per_second` (0: one at a time) for `count` commands: each one's time from its
/// answer to its version in the case read model.
async fn visibility(
    p: &RunningPlatform,
    channel: &Channel,
    key: &Option<AsciiMetadataValue>,
    per_second: usize,
    (first, count): (usize, usize),
) -> Vec<Duration> {
    let model = p.read_model().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, u64, Instant)>();
    // One watcher polls the read model (what Query reads) for every command answered.
    let watcher = tokio::spawn(async move {
        let mut pending: Vec<(String, u64, Instant)> = Vec::new();
        let mut seen = Vec::new();
        let mut open = true;
        while open || !pending.is_empty() {
            loop {
                match rx.try_recv() {
                    Ok(item) => pending.push(item),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            pending.retain(|(id, version, at)| {
                let applied = model.applied_version("default", id).unwrap();
                if applied >= *version {
                    seen.push(at.elapsed());
                    false
                } else {
                    true
                }
            });
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        seen
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..count {
        if per_second > 0 {
            let due = started + Duration::from_secs_f64(i as f64 / per_second as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let mut cases = DebtCollectionCasesClient::new(channel.clone());
        let (key, tx) = (key.clone(), tx.clone());
        let task = tokio::spawn(async move {
            let create = v1::CreateCaseRequest {
                content: Some(content("q", first + i)),
            };
            let case = cases
                .create_case(request(create, &key))
                .await
                .unwrap()
                .into_inner()
                .case
                .unwrap();
            let _ = tx.send((case.id, case.version, Instant::now()));
        });
        if per_second > 0 {
            tasks.push(task);
        } else {
            task.await.unwrap();
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(tx);
    let mut seen = watcher.await.unwrap();
    seen.sort();
    seen
}

fn main() {
    tokio::runtime::Runtime::new().unwrap().block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let (p, key, channel) = platform(dir.path(), Role::Agent, |_| {}).await;
    let key: Option<AsciiMetadataValue> = Some(format!("Bearer {key}").parse().unwrap());
    let mut cases = DebtCollectionCasesClient::new(channel.clone());
    let mut ids = Vec::new();
    for i in 0..1000 {
        let create = v1::CreateCaseRequest {
            content: Some(content("q", i)),
        };
        let case = cases.create_case(request(create, &key)).await.unwrap();
        ids.push(case.into_inner().case.unwrap().id);
    }
    let last = ids.last().unwrap().clone();
    while p
        .read_model()
        .unwrap()
        .applied_version("default", &last)
        .unwrap()
        == 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reads(&channel, &key, Arc::new(ids)).await;

    let per_second = env_or("BENCH_RATE", 1000);
    let seconds = env_or("BENCH_SECONDS", 5);
    let loads = [
        ("one at a time".to_owned(), 0, 500),
        (
            format!("{per_second} commands/s"),
            per_second,
            per_second * seconds,
        ),
    ];
    let names: Vec<&str> = loads.iter().map(|(name, ..)| name.as_str()).collect();
    let mut p50 = bench_rounds::Rounds::without_baseline("p50 ms", &names);
    let mut p99 = bench_rounds::Rounds::without_baseline("p99 ms", &names);
    let mut first = 1_000_000;
    for round in 1..=bench_rounds::rounds() {
        let mut line = format!("round {round}: command answered → visible in the read model:");
        for (variant, (name, per_second, count)) in loads.iter().enumerate() {
            let seen = visibility(&p, &channel, &key, *per_second, (first, *count)).await;
            first += count;
            p50.record(variant, ms(percentile(&seen, 0.5)));
            p99.record(variant, ms(percentile(&seen, 0.99)));
            line += &format!(
                " {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms;",
                ms(percentile(&seen, 0.5)),
                ms(percentile(&seen, 0.99)),
                ms(*seen.last().unwrap())
            );
        }
        println!("{line}");
    }
    println!("\n{}\n{}", p50.report(), p99.report());
    p.shutdown().await.unwrap();
}
