//! The out-of-process test setup: a Kafka-protocol broker and recoup services as separate
//! processes of the real binary.
//!
//! Which broker a test gets:
//! - `KAFKA_BROKERS=host:port,...`: that cluster (Apache Kafka, tansu, ...), shared by every
//!   test; its topics are ensured with `recoup topics ensure`. Tests that take the broker down
//!   cannot do so here and say that they skip it.
//! - `RECOUP_TEST_TANSU=/path/to/tansu`: a tansu broker per test, in its own process on a free
//!   port, with in-memory storage; topics through the admin API (`recoup topics ensure`);
//!   outages by stopping the process (SIGSTOP) and letting it go on (SIGCONT).
//! - neither: librdkafka's mock cluster per test, in this process (a real TCP listener the
//!   service processes connect to); topics created with its own call; outages with its
//!   `broker_down`.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use event_backbone::{EmbeddedKafka, KafkaConfig, topics};

/// The recoup binary under test.
pub const RECOUP: &str = env!("CARGO_BIN_EXE_recoup");

enum Kind {
    Mock(EmbeddedKafka),
    Tansu(Child),
    External,
}

/// A broker for one test.
pub struct TestBroker {
    pub brokers: String,
    kind: Kind,
    /// Tansu's log, for a test that failed.
    log: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    /// The broker the environment names (see the module docs), with every recoup topic.
    pub fn start() -> Self {
        Self::start_with_topics(true)
    }

    /// A broker without recoup's topics (not possible on a shared external cluster: `None`).
    pub fn start_empty() -> Option<Self> {
        if std::env::var_os("KAFKA_BROKERS").is_some() {
            return None;
        }
        Some(Self::start_with_topics(false))
    }

    fn start_with_topics(with_topics: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        if let Some(brokers) = std::env::var("KAFKA_BROKERS")
            .ok()
            .filter(|b| !b.is_empty())
        {
            let broker = Self {
                brokers,
                kind: Kind::External,
                log: None,
                _dir: dir,
            };
            broker.ensure_topics();
            return broker;
        }
        if let Some(tansu) = std::env::var_os("RECOUP_TEST_TANSU") {
            let port = free_port();
            let url = format!("tcp://127.0.0.1:{port}");
            let log = dir.path().join("tansu.log");
            let child = Command::new(tansu)
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("RECOUP_TEST_TANSU names a tansu executable");
            let broker = Self {
                brokers: format!("127.0.0.1:{port}"),
                kind: Kind::Tansu(child),
                log: Some(log),
                _dir: dir,
            };
            broker.wait_until_it_answers();
            if with_topics {
                broker.ensure_topics();
            }
            return broker;
        }
        let topics: &[event_backbone::TopicSpec] = if with_topics { topics::ALL } else { &[] };
        let mock = EmbeddedKafka::start(topics).unwrap();
        Self {
            brokers: mock.bootstrap_servers().to_owned(),
            kind: Kind::Mock(mock),
            log: None,
            _dir: dir,
        }
    }

    /// What kind of broker this is, for messages.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Mock(_) => "librdkafka mock cluster",
            Kind::Tansu(_) => "tansu",
            Kind::External => "KAFKA_BROKERS",
        }
    }

    /// True when the broker can be taken down by the test.
    pub fn can_fail(&self) -> bool {
        !matches!(self.kind, Kind::External)
    }

    /// True when topics are created through the admin API (not the mock cluster).
    pub fn has_admin_api(&self) -> bool {
        !matches!(self.kind, Kind::Mock(_))
    }

    /// Takes the broker away (`true`) or brings it back, keeping its data.
    pub fn set_down(&self, down: bool) {
        match &self.kind {
            Kind::Mock(mock) => mock.set_broker_down(down).unwrap(),
            Kind::Tansu(child) => {
                let signal = if down { "-STOP" } else { "-CONT" };
                let status = Command::new("kill")
                    .args([signal, &child.id().to_string()])
                    .status()
                    .unwrap();
                assert!(status.success(), "kill {signal} tansu");
            }
            Kind::External => panic!("an external broker cannot be taken down by a test"),
        }
    }

    /// `--kafka-brokers` and the properties every service process gets: a consumer group
    /// notices a dead member within seconds, not the default 45.
    pub fn args(&self) -> Vec<String> {
        [
            "--kafka-brokers",
            &self.brokers,
            "--kafka-property",
            "session.timeout.ms=6000",
            "--kafka-property",
            "heartbeat.interval.ms=500",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    pub fn kafka_config(&self) -> KafkaConfig {
        KafkaConfig::external(&self.brokers)
    }

    fn ensure_topics(&self) {
        let out = Command::new(RECOUP)
            .args(["topics", "ensure", "--kafka-brokers", &self.brokers])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "recoup topics ensure on {}: {}",
            self.brokers,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_until_it_answers(&self) {
        let kafka = self.kafka_config();
        for _ in 0..100 {
            if event_backbone::admin::describe_topics(&kafka, &[], Duration::from_secs(1)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{} at {} does not answer: {}",
            self.name(),
            self.brokers,
            self.log_text()
        );
    }

    /// Tansu's log so far (empty for other brokers).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Kind::Tansu(child) = &mut self.kind {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test lets go of it, also when the test panics.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One recoup service as its own process; killed (SIGKILL) when dropped.
pub struct ServiceProcess {
    child: Option<Child>,
    pub grpc: String,
    pub http: Option<String>,
    log: PathBuf,
    command: String,
}

impl ServiceProcess {
    /// Starts `recoup <service> --data-dir DIR ... --insecure` on free ports and waits for its
    /// ready line (or its exit). Without credentials: these tests are about Kafka and
    /// processes; [`ServiceProcess::start_with_keys`] checks them.
    pub fn start(
        service: &str,
        data_dir: &Path,
        broker: &TestBroker,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::start_inner(
            service,
            data_dir,
            broker,
            &[extra, &["--insecure"]].concat(),
        )
    }

    /// [`ServiceProcess::start`] with API keys on (the default of the binary).
    pub fn start_with_keys(
        service: &str,
        data_dir: &Path,
        broker: &TestBroker,
        extra: &[&str],
    ) -> Result<Self, String> {
        Self::start_inner(service, data_dir, broker, extra)
    }

    fn start_inner(
        service: &str,
        data_dir: &Path,
        broker: &TestBroker,
        extra: &[&str],
    ) -> Result<Self, String> {
        let port = free_port();
        let log = data_dir.with_extension(format!("{service}-{port}.log"));
        let mut child = Command::new(RECOUP)
            .arg(service)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(broker.args())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let command = format!("recoup {service} {}", extra.join(" "));
        let Some(rest) = line.trim().strip_prefix("recoup ready grpc=") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(&log).unwrap_or_default());
        };
        let mut grpc = rest.split(' ').next().unwrap().to_owned();
        grpc.insert_str(0, "http://");
        let http = rest
            .split(' ')
            .find_map(|part| part.strip_prefix("http="))
            .map(|addr| format!("http://{addr}"));
        Ok(Self {
            child: Some(child),
            grpc,
            http,
            log,
            command,
        })
    }

    /// A gRPC channel to the process.
    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
            let exit = child.wait().unwrap();
            assert!(
                exit.success(),
                "{} exited with {exit}: {}",
                self.command,
                self.log_text()
            );
        }
    }

    /// The process's log (stderr) so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
