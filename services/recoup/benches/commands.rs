//! Command throughput and latency through gRPC on loopback with durable appends, with API keys
//! checked (the default) and without (`--insecure`), beside a bare sled loop that writes the
//! same keys with the same flush policy, all measured in the same run.
//!
//! `cargo bench -p recoup --bench commands` (BENCH_CASES, BENCH_CLIENTS to change the load).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{content, env_or, percentile, request};

use chrono::Utc;
use recoup::platform::{self, PlatformConfig, Security};
use recoup_access::{KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

/// Drives `cases` cases through create, review, prepare, close from `clients` connections.
async fn grpc_load(
    channel: Channel,
    cases: usize,
    clients: usize,
    key: Option<AsciiMetadataValue>,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut client = DebtCollectionCasesClient::new(channel.clone());
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
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
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, started.elapsed())
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

/// One run of the load against a platform in `dir`, with API keys on or off: the latencies,
/// the elapsed time, the store's groups and requests, the mean event size.
async fn run(
    dir: &std::path::Path,
    keys: bool,
    cases: usize,
    clients: usize,
) -> (Vec<Duration>, Duration, u64, u64, usize) {
    let mut config = PlatformConfig::new(dir.to_path_buf());
    config.grpc_addr = Some("127.0.0.1:0".parse().unwrap());
    config.http_addr = Some("127.0.0.1:0".parse().unwrap());
    config.security = match keys {
        true => Security {
            first_admin_key: false,
            ..Security::default()
        },
        false => Security::insecure(),
    };
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
    let (mut latencies, elapsed) = grpc_load(channel, cases, clients, key).await;
    eprintln!("load (keys {keys}) done in {elapsed:?}");
    latencies.sort();
    let store = p.store().unwrap();
    let (groups, requests) = store.write_stats();
    let first = store.heads().next().unwrap().unwrap();
    let events = store.events_after(&first.0, &first.1, 0).unwrap();
    let event_bytes = events.iter().map(Vec::len).sum::<usize>() / events.len();
    p.shutdown().await.unwrap();
    (latencies, elapsed, groups, requests, event_bytes)
}

fn report(what: &str, latencies: &[Duration], elapsed: Duration, clients: usize) -> f64 {
    let commands = latencies.len();
    let rate = commands as f64 / elapsed.as_secs_f64();
    println!(
        "commands through gRPC (durable, {clients} clients, {what}): {commands} in {:.2} s = {rate:.0} commands/s",
        elapsed.as_secs_f64()
    );
    println!(
        "  latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(latencies, 0.50).as_secs_f64() * 1e3,
        percentile(latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    rate
}

fn main() {
    let cases = env_or("BENCH_CASES", 10_000);
    let clients = env_or("BENCH_CLIENTS", 64);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (on, off) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Keys off first, then on: each on a fresh data dir.
    let (open, open_elapsed, ..) = runtime.block_on(run(off.path(), false, cases, clients));
    let (latencies, elapsed, groups, requests, event_bytes) =
        runtime.block_on(run(on.path(), true, cases, clients));
    let open_rate = report("no credentials (--insecure)", &open, open_elapsed, clients);
    let rate = report(
        "API key checked on every call",
        &latencies,
        elapsed,
        clients,
    );
    println!("ratio with API keys / without: {:.2}", rate / open_rate);
    let commands = latencies.len();
    let group = (requests as f64 / groups.max(1) as f64).round().max(1.0) as usize;
    let bare = bare_sled(commands, group, event_bytes);
    let bare_rate = commands as f64 / bare.as_secs_f64();
    println!(
        "  group commit: {requests} requests in {groups} flushed batches (average {group} per flush)"
    );
    println!(
        "bare sled loop, same keys, one batch + flush per {group} commands: {bare_rate:.0} commands/s"
    );
    println!(
        "ratio recoup (with API keys) / bare sled: {:.2}",
        rate / bare_rate
    );
}
