//! Read models rebuilt from the streams' records, blue/green: a projection whose files were
//! deleted is built again with every answer as before, and a rebuild under live load ends where
//! a read model that never stopped is.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use event_backbone::consumer::EventConsumer;
use event_backbone::topics::DEBT_CASES;
use export_sim::{SimConfig, Simulator};
use projection::generations::ReadModelName;
use projection::kernel::Projection;
use projection::rebuild::RebuildState;
use projection::{CaseReadModel, Projector};
use recoup::platform::RunningPlatform;
use recoup_proto::v1;
use recoup_proto::v1::read_models_client::ReadModelsClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tempfile::TempDir;

/// Every entry of a read model's tree but its offsets, rejects and the metrics outbox (which
/// are about where it read and what it has still to send, not what it shows).
fn contents<P: Projection>(model: &P) -> BTreeMap<Vec<u8>, Vec<u8>> {
    model
        .tree()
        .iter()
        .map(Result::unwrap)
        .filter(|(k, _)| !matches!(k.first(), Some(b'o' | b'x' | b'O' | b'P')))
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// The case read model's contents, its audit trail entry by entry (its chunks follow batches).
fn case_contents(model: &CaseReadModel) -> BTreeMap<Vec<u8>, Vec<u8>> {
    contents(model)
        .into_iter()
        .flat_map(|(k, v)| {
            projection::cases::history_by_version(&k, &v).unwrap_or_else(|| vec![(k, v)])
        })
        .collect()
}

type Dump = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

fn dump(platform: &RunningPlatform) -> Dump {
    [
        case_contents(&platform.read_model().unwrap()),
        contents(&platform.accounts().unwrap()),
        contents(&platform.deals().unwrap()),
    ]
}

async fn rebuilt(platform: &RunningPlatform, name: ReadModelName) {
    let rebuild = platform.rebuilds().unwrap().of(name).unwrap();
    let done = eventually(Duration::from_secs(60), || {
        let state = rebuild.status().state;
        async move { state == RebuildState::Done }
    })
    .await;
    assert!(done, "{name}: {:?}", rebuild.status());
}

fn row(date: &str, id: &str, arrears: &str) -> v1::Row {
    v1::Row {
        cells: [
            ("snapshot_date", date),
            ("account_external_id", id),
            ("days_arrears_consecutive_source", arrears),
            ("amt_outstanding_source", "150.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

/// Cases with a few commands each, and PAYGo snapshots of two days.
async fn write_some(platform: &RunningPlatform, prefix: &str) {
    let (mut cases, _) = clients(platform).await;
    for i in 0..20 {
        let case = create(&mut cases, "acme", &format!("{prefix}-{i}"), 1000 + i).await;
        if i % 2 == 0 {
            cases.mark_reviewed(req("acme", cmd(&case))).await.unwrap();
        }
    }
    let mut imports = SnapshotImportsClient::new(channel(platform).await);
    for (date, arrears) in [("2024-04-01", "3"), ("2024-04-02", "4")] {
        let rows = (0..25)
            .map(|i| row(date, &format!("{prefix}{i}"), arrears))
            .collect();
        let report = imports
            .import_rows(req(
                "acme",
                v1::ImportRowsRequest {
                    data_origin: String::new(),
                    rows,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(report.accepted, 25, "{report:?}");
    }
}

fn rebuild_of(read_model: v1::ReadModel) -> v1::RebuildRequest {
    v1::RebuildRequest {
        read_model: read_model.into(),
    }
}

/// The status a started rebuild answers, checked to be running.
fn running(
    answer: Result<tonic::Response<v1::RebuildResponse>, tonic::Status>,
) -> v1::RebuildStatus {
    let status = answer.unwrap().into_inner().status.unwrap();
    assert_eq!(status.state(), v1::RebuildState::Running, "{status:?}");
    status
}

/// Entries of `tree` under one prefix.
fn count(tree: &BTreeMap<Vec<u8>, Vec<u8>>, prefix: u8) -> usize {
    tree.keys().filter(|k| k.first() == Some(&prefix)).count()
}

/// Waits until `ready` holds and the read models stopped changing (everything published was
/// applied).
async fn settled(platform: &RunningPlatform, ready: impl Fn(&Dump) -> bool) -> Dump {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = dump(platform);
    let mut still = 0;
    while still < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read models settle"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = dump(platform);
        still = if now == last && ready(&now) {
            still + 1
        } else {
            0
        };
        last = now;
    }
    last
}

/// On the embedded broker, or on tansu with `RECOUP_TEST_TANSU` (where the topics are the
/// record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_read_models_are_built_again_from_the_records() {
    let broker = tansu_if_asked();
    let sim_config = SimConfig {
        rows: 600,
        lender: "acme".to_owned(),
        lender_public_id: "lender-acme-0001".to_owned(),
        email: "ops@acme.example".to_owned(),
        password: "s3cret".to_owned(),
        malformed_share: 0.01,
        ..SimConfig::default()
    };
    let sim = Simulator::new(sim_config.clone());
    let running = sim.start(([127, 0, 0, 1], 0).into()).await.unwrap();
    let dir = TempDir::new().unwrap();
    let mut config = on_broker(config(dir.path()), broker.as_ref());
    config.pull = Some(pull_settings(&running.base_url(), &sim_config, true));
    let platform = start(config.clone()).await;
    write_some(&platform, "A").await;
    // Everything applied: 20 cases, 50 snapshots, the deals of 600 rows but the malformed.
    let before = settled(&platform, |[cases, accounts, deals]| {
        count(cases, b'c') == 20 && count(accounts, b'n') == 50 && count(deals, b'd') > 500
    })
    .await;
    let (_, mut query) = clients(&platform).await;
    let stats = stats_of(&mut query, "acme", v1::CaseState::Reviewing).await;
    platform.shutdown().await.unwrap();

    // Every read model's files go; the records stay.
    std::fs::remove_dir_all(dir.path().join("projection")).unwrap();
    config.pull = None;
    let platform = start(config).await;
    let rebuilds = platform.rebuilds().unwrap();
    for name in ReadModelName::ALL {
        // Embedded, a read model without a generation is built from the records at start;
        // on external Kafka its projector reads the topic from the beginning. Either way, a
        // rebuild asked for now is built from the record beside it and switched to.
        if broker.is_none() {
            rebuilt(&platform, name).await;
        }
        assert!(rebuilds.of(name).unwrap().start().is_ok(), "{name}");
        rebuilt(&platform, name).await;
    }
    let same = eventually(Duration::from_secs(60), || {
        let now = dump(&platform);
        let before = before.clone();
        async move { now == before }
    })
    .await;
    let after = dump(&platform);
    for (i, name) in ReadModelName::ALL.iter().enumerate() {
        assert_eq!(before[i].len(), after[i].len(), "{name}: entries");
    }
    assert!(same, "the same contents");
    let (_, mut query) = clients(&platform).await;
    assert_eq!(
        stats_of(&mut query, "acme", v1::CaseState::Reviewing).await,
        stats
    );
    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_ends_where_a_read_model_that_never_stopped_is() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    // The reference: a case read model of its own that reads the topic from the beginning
    // and is never rebuilt.
    let reference_dir = TempDir::new().unwrap();
    let reference = CaseReadModel::open(reference_dir.path()).unwrap();
    let kafka = platform.kafka_config();
    let consumer = EventConsumer::new(&kafka, "reference", DEBT_CASES.name, None).unwrap();
    let projector = Projector::start(
        reference.clone(),
        consumer,
        platform.cluster_id().to_owned(),
        DEBT_CASES.name,
    )
    .unwrap();
    let (stop_reference, stopping) = tokio::sync::watch::channel(false);
    let referenced = tokio::spawn(projector.run(stopping));

    // A new data dir has nothing to build from: no rebuild runs at its first start.
    for name in ReadModelName::ALL {
        let status = platform.rebuilds().unwrap().of(name).unwrap().status();
        assert_eq!(status.state, RebuildState::Idle, "{status:?}");
    }
    write_some(&platform, "B").await;
    // Load: commands keep coming while the rebuild runs.
    let loading = Arc::new(AtomicBool::new(true));
    let load = {
        let (mut cases, _) = clients(&platform).await;
        let loading = loading.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while loading.load(Ordering::Relaxed) {
                let case = create(&mut cases, "acme", &format!("L-{n}"), 500 + n).await;
                cases.mark_reviewed(req("acme", cmd(&case))).await.unwrap();
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin = ReadModelsClient::new(channel(&platform).await);
    running(
        admin
            .rebuild(req("acme", rebuild_of(v1::ReadModel::Cases)))
            .await,
    );
    let again = admin
        .rebuild(req("acme", rebuild_of(v1::ReadModel::Cases)))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    rebuilt(&platform, ReadModelName::Cases).await;
    loading.store(false, Ordering::Relaxed);
    let created = load.await.unwrap();
    assert!(created > 0);
    let status = admin
        .get_rebuild(req(
            "acme",
            v1::GetRebuildRequest {
                read_model: v1::ReadModel::Cases.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state(), v1::RebuildState::Done, "{status:?}");
    assert!(status.from_record >= 40, "{status:?}");
    let live = settled(&platform, |_| true).await;
    assert_ne!(
        platform.read_model().unwrap().tree().name(),
        b"cases".as_slice(),
        "a new generation is live"
    );
    let reference_contents = loop {
        let now = case_contents(&reference);
        if now == live[0] {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        if now == case_contents(&reference) {
            break now;
        }
    };
    let differing: Vec<_> = reference_contents
        .iter()
        .filter(|(k, v)| live[0].get(*k) != Some(*v))
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .chain(
            live[0]
                .keys()
                .filter(|k| !reference_contents.contains_key(*k))
                .map(|k| format!("only rebuilt: {}", String::from_utf8_lossy(k))),
        )
        .take(5)
        .collect();
    assert!(
        differing.is_empty(),
        "rebuilt = never stopped; {} against {} entries, differing: {differing:?}",
        live[0].len(),
        reference_contents.len()
    );
    let _ = stop_reference.send(true);
    referenced.await.unwrap().unwrap();
    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_rebuild_read_models_and_see_their_lag() {
    use recoup_access::{KeySpec, Role};
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let registry = platform.keys().unwrap();
    let key = |role: Role| {
        let spec = KeySpec {
            name: format!("{role}-key"),
            tenants: vec!["acme".to_owned()],
            role,
            expires_at: None,
            created_by: "test".to_owned(),
        };
        let registry = registry.clone();
        async move {
            registry
                .create(&spec, chrono::Utc::now())
                .await
                .unwrap()
                .key
        }
    };
    let (viewer, agent, admin_key) = (
        key(Role::Viewer).await,
        key(Role::Agent).await,
        key(Role::Admin).await,
    );
    let mut admin = ReadModelsClient::new(channel(&platform).await);
    let request = || v1::GetRebuildRequest {
        read_model: v1::ReadModel::Deals.into(),
    };
    let anonymous = admin.get_rebuild(request()).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    for refused in [&viewer, &agent] {
        let status = admin
            .rebuild(bearer(rebuild_of(v1::ReadModel::Deals), refused))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("admin"), "{status:?}");
    }
    let unknown = admin
        .rebuild(bearer(v1::RebuildRequest { read_model: 9 }, &admin_key))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::InvalidArgument, "{unknown:?}");
    running(
        admin
            .rebuild(bearer(rebuild_of(v1::ReadModel::Deals), &admin_key))
            .await,
    );
    rebuilt(&platform, ReadModelName::Deals).await;

    // The consumers' lag: admins only, each read model with every partition of its topic
    // (embedded, one process holds them all), measured within a few statistics intervals.
    let anonymous = admin.get_lag(v1::GetLagRequest {}).await.unwrap_err();
    assert_eq!(anonymous.code(), tonic::Code::Unauthenticated);
    for refused in [&viewer, &agent] {
        let status = admin
            .get_lag(bearer(v1::GetLagRequest {}, refused))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let measured = loop {
        let asked = bearer(v1::GetLagRequest {}, &admin_key);
        let lag = admin.get_lag(asked).await.unwrap().into_inner();
        // Measured, and every partition's position known (each is fetched once taken).
        let known = |m: &v1::ReadModelLag| m.measured && m.unknown_partitions.is_empty();
        if lag.read_models.len() == 3 && lag.read_models.iter().all(known) {
            break lag;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never measured: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let topics: Vec<(i32, &str, usize)> = measured
        .read_models
        .iter()
        .map(|m| (m.read_model, m.topic.as_str(), m.partitions.len()))
        .collect();
    use event_backbone::topics::{COLLECTIONS_DEALS, PAYGO_SNAPSHOTS};
    assert_eq!(
        topics,
        [
            (
                v1::ReadModel::Cases as i32,
                DEBT_CASES.name,
                DEBT_CASES.partitions as usize
            ),
            (
                v1::ReadModel::Accounts as i32,
                PAYGO_SNAPSHOTS.name,
                PAYGO_SNAPSHOTS.partitions as usize
            ),
            (
                v1::ReadModel::Deals as i32,
                COLLECTIONS_DEALS.name,
                COLLECTIONS_DEALS.partitions as usize
            ),
        ]
    );
    for m in &measured.read_models {
        let sum: u64 = m.partitions.iter().map(|p| p.messages).sum();
        assert_eq!(m.messages, sum, "{m:?}");
        assert!(m.measured_at.is_some(), "{m:?}");
    }
    platform.shutdown().await.unwrap();
}

/// `recoup` the binary: a client command against `up`, its stdout.
fn recoup(up: &common::binary::Up, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args(args)
        .args(["--server", &format!("http://{}", up.grpc), "--data-dir"])
        .arg(&up.data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn par_total(up: &common::binary::Up) -> String {
    let out = recoup(up, &["accounts", "par", "--date", "2024-05-01", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let par: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    par["accounts"].to_string()
}

fn rebuild_status(up: &common::binary::Up) -> serde_json::Value {
    let out = recoup(
        up,
        &[
            "projection",
            "rebuild",
            "--read-model",
            "accounts",
            "--no-wait",
            "--json",
        ],
    );
    // A rebuild running already is reported, not started again.
    if out.status.success() {
        serde_json::from_slice(&out.stdout).unwrap()
    } else {
        serde_json::json!({ "refused": String::from_utf8_lossy(&out.stderr) })
    }
}

#[test]
fn sigkill_mid_rebuild_leaves_the_live_generation_and_the_rebuild_completes() {
    const ROWS: usize = 60_000;
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("snapshots.csv");
    let mut csv = String::from(
        "snapshot_date,account_external_id,days_arrears_consecutive_source,amt_outstanding_source\n",
    );
    for i in 0..ROWS {
        csv.push_str(&format!(
            "2024-05-01,K{i},{},{}.25\n",
            i % 120,
            100 + i % 900
        ));
    }
    std::fs::write(&file, csv).unwrap();
    let up = common::binary::Up::start(&data, &[]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args(["import", "snapshots"])
        .arg(&file)
        .args(["--grpc-addr", &up.grpc, "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while par_total(&up) != ROWS.to_string() {
        assert!(
            std::time::Instant::now() < deadline,
            "the import is projected"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Started, then killed while it reads the record.
    let started = rebuild_status(&up);
    assert_eq!(started["state"], "running", "{started}");
    let generation = started["generation"].clone();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        par_total(&up),
        ROWS.to_string(),
        "the live generation answers meanwhile"
    );
    up.kill();

    // Restarted: the rebuild starts again by itself, the live generation answers meanwhile.
    let up = common::binary::Up::start(&data, &[]);
    let again = rebuild_status(&up);
    assert!(
        again["refused"]
            .as_str()
            .unwrap_or_default()
            .contains("running"),
        "the interrupted rebuild runs again: {again}"
    );
    assert_eq!(par_total(&up), ROWS.to_string());
    let out = recoup(
        &up,
        &[
            "projection",
            "rebuild",
            "--read-model",
            "accounts",
            "--json",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let done: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(done["state"], "done", "{done}");
    assert_ne!(
        done["generation"], generation,
        "a generation of its own: {done}"
    );
    assert!(
        done["from_record"].as_u64().unwrap() >= ROWS as u64,
        "{done}"
    );
    assert_eq!(par_total(&up), ROWS.to_string());
    assert!(up.stop().success());
}
