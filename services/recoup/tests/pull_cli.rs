//! The real binary: `recoup export-sim` serves a vendor, `recoup pull --once` pulls it into a
//! Kafka cluster, and `recoup up --demo` shows deals flowing with nothing configured.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use common::{eventually, req};
use event_backbone::EmbeddedKafka;
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;

const BIN: &str = env!("CARGO_BIN_EXE_recoup");

/// Starts the binary with `args` and returns it with its first stdout line.
fn spawn(args: &[&str]) -> (Child, BufReader<ChildStdout>, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    (child, out, line.trim_end().to_owned())
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exits 0 on SIGTERM: {status}");
}

fn pull_command(kafka: &str, data: &std::path::Path, url: &str, password: Option<&str>) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "pull",
            "--once",
            "--kafka-brokers",
            kafka,
            "--tenant",
            "acme",
        ])
        .arg("--data-dir")
        .arg(data)
        .args([
            "--api-host",
            url,
            "--lender",
            "acme",
            "--email",
            "ops@acme.example",
        ])
        .env("RUST_LOG", "error")
        .env_remove("RECOUP_EXPORT_PASSWORD");
    if let Some(password) = password {
        command.env("RECOUP_EXPORT_PASSWORD", password);
    }
    command
}

fn pull_once(kafka: &str, data: &std::path::Path, url: &str, password: Option<&str>) -> Output {
    pull_command(kafka, data, url, password).output().unwrap()
}

/// Starts `recoup export-sim` with `rows` rows for lender acme; returns it with its stdout
/// (kept open while it runs) and its URL.
fn export_sim(rows: usize) -> (Child, BufReader<ChildStdout>, String) {
    let rows = rows.to_string();
    let (sim, out, ready) = spawn(&[
        "export-sim",
        "--addr",
        "127.0.0.1:0",
        "--rows",
        &rows,
        "--lender",
        "acme",
        "--email",
        "ops@acme.example",
        "--password",
        "pw-1",
    ]);
    assert!(
        ready.starts_with("export-sim ready url=http://127.0.0.1:"),
        "{ready}"
    );
    assert!(ready.ends_with(&format!("rows={rows}")), "{ready}");
    let url = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("url="))
        .unwrap()
        .to_owned();
    (sim, out, url)
}

/// `published N` of a stream's outcome line.
fn published(line: &str) -> u64 {
    line.split(", ")
        .find_map(|part| part.strip_prefix("published "))
        .unwrap_or_else(|| panic!("no published count in {line:?}"))
        .parse()
        .unwrap()
}

#[test]
fn export_sim_serves_a_vendor_that_pull_once_pulls() {
    let (mut sim, _out, url) = export_sim(1200);
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let data = tempfile::tempdir().unwrap();

    let first = pull_once(kafka.bootstrap_servers(), data.path(), &url, Some("pw-1"));
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout.starts_with(
            "acme/S3/D16: pages 3, rows 1200, published 1200, unchanged 0, rejected 0, since 2026-"
        ),
        "{stdout}"
    );

    let again = pull_once(kafka.bootstrap_servers(), data.path(), &url, Some("pw-1"));
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(
        stdout.contains(", published 0, "),
        "nothing again: {stdout}"
    );

    let refused = pull_once(
        kafka.bootstrap_servers(),
        data.path(),
        &url,
        Some("wrong-pw"),
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("acme/S3/D16: error: login refused")
            && stderr.contains("Invalid email or password"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wrong-pw"),
        "the password is not printed: {stderr}"
    );

    let no_password = pull_once(kafka.bootstrap_servers(), data.path(), &url, None);
    assert_eq!(no_password.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&no_password.stderr);
    assert!(stderr.contains("RECOUP_EXPORT_PASSWORD"), "{stderr}");

    terminate(&mut sim);
}

/// SIGTERM in the middle of `pull --once`: the pull stops after the page in flight, says so,
/// and exits 0; the next run pulls exactly the rest.
#[test]
fn a_pull_once_told_to_stop_reports_where_it_stopped_and_the_next_run_pulls_the_rest() {
    let (mut sim, _out, url) = export_sim(2000);
    let kafka = EmbeddedKafka::start(event_backbone::topics::ALL).unwrap();
    let data = tempfile::tempdir().unwrap();
    // 20 pages at 5 requests a second: about 4 s, stopped a second after it started.
    let mut slow = pull_command(kafka.bootstrap_servers(), data.path(), &url, Some("pw-1"));
    let mut child = slow
        .args(["--limit", "100", "--requests-per-second", "5"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The log says when it is pulling (its signal handlers are in place by then).
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (started_tx, started) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("pulling") {
                let _ = started_tx.send(());
            }
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    started.recv_timeout(Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&stopped.stdout);
    let log = log.join().unwrap();
    assert!(stopped.status.success(), "{stopped:?}\n{log}");
    let line = stdout.lines().next().unwrap_or_default();
    assert!(
        line.starts_with("acme/S3/D16: pages ") && line.ends_with(" (stopped)"),
        "the stopped pull reports its stream: {stdout:?}"
    );
    let first = published(line);
    assert!(first < 2000, "stopped before the end: {line}");

    let rest = pull_once(kafka.bootstrap_servers(), data.path(), &url, Some("pw-1"));
    let stdout = String::from_utf8_lossy(&rest.stdout);
    assert!(rest.status.success(), "{rest:?}");
    assert_eq!(
        first + published(&stdout),
        2000,
        "nothing lost, nothing twice: {stdout}"
    );
    terminate(&mut sim);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_pulls_a_simulated_vendor_into_the_read_models() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    let (mut child, mut out, ready) = spawn(&[
        "up",
        "--demo",
        "--demo-rows",
        "3000",
        "--data-dir",
        &dir,
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--insecure",
    ]);
    assert!(ready.starts_with("recoup ready grpc=127.0.0.1:"), "{ready}");
    let mut demo = String::new();
    out.read_line(&mut demo).unwrap();
    assert!(
        demo.starts_with("demo: export simulator at http://127.0.0.1:"),
        "{demo}"
    );
    let grpc = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .unwrap()
        .to_owned();
    let query = QueryClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let arrived = eventually(Duration::from_secs(30), || {
        let mut q = query.clone();
        async move {
            q.collections_funnel(req("default", v1::CollectionsFunnelRequest {}))
                .await
                .is_ok_and(|f| f.into_inner().deals >= 2950)
        }
    })
    .await;
    assert!(arrived, "the demo's deals reach the read models");
    terminate(&mut child);
}

#[test]
fn errors_never_show_a_secret_kafka_property() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    // librdkafka refuses these (no TLS in this build, or no broker) and quotes the value it
    // refuses; recoup masks the secret ones before it prints anything.
    let runs: [&[&str]; 2] = [
        &[
            "topics",
            "ensure",
            "--kafka-brokers",
            "127.0.0.1:1",
            "--kafka-property",
            "ssl.key.password=hunter2secret",
        ],
        &[
            "up",
            "--data-dir",
            data,
            "--kafka-brokers",
            "127.0.0.1:1",
            "--kafka-property",
            "sasl.password=hunter2secret",
            "--kafka-property",
            "sasl.oauthbearer.client.secret=hunter2secret",
            "--kafka-property",
            "ssl.key.password=hunter2secret",
        ],
    ];
    for args in runs {
        let out = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let all = [out.stdout, out.stderr].concat();
        let text = String::from_utf8_lossy(&all);
        assert!(text.contains("error: "), "{text}");
        assert!(!text.contains("hunter2secret"), "{args:?}: {text}");
    }
}
