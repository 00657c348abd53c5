//! The export puller on the command line: which sources to pull (one from flags, or many from a
//! sources file), `recoup pull [--once]` against an external Kafka, and `recoup export-sim`,
//! a simulated vendor to pull from.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use export_puller::client::{ClientConfig, DEFAULT_LIMIT, MAX_LIMIT, Secret};
use export_puller::dataset;
use export_puller::pull::PullSettings;
use export_puller::schedule;
use export_puller::sources::{self, Source, Sources};

use export_sim::{FaultPlan, SimConfig, Simulator};
use recoup::platform::{self, PlatformConfig, Services};

use crate::wait_for_signal;

/// The environment variable a single source's password is read from (never a flag: flags show
/// in process lists).
pub const PASSWORD_ENV: &str = "RECOUP_EXPORT_PASSWORD";

/// Which export sources to pull: one described by flags, or a sources file.
#[derive(Args, Clone, Debug, Default)]
pub struct SourceArgs {
    /// A JSON file of sources (tenants, API hosts, credentials, datasets; see README). Instead
    /// of the single-source flags below.
    #[arg(long, env = "RECOUP_EXPORT_SOURCES_FILE", value_name = "FILE")]
    pub sources_file: Option<PathBuf>,
    /// The export API's base URL, e.g. https://api.vendor.example (single source).
    #[arg(long, env = "RECOUP_EXPORT_API_HOST", value_name = "URL")]
    pub api_host: Option<String>,
    /// The tenant the pulled data belongs to in recoup.
    #[arg(long, env = "RECOUP_EXPORT_TENANT", default_value = "default")]
    pub tenant: String,
    /// The lender's slug in the API's auth paths (/admin/auth/{lender}/login).
    #[arg(long, env = "RECOUP_EXPORT_LENDER")]
    pub lender: Option<String>,
    /// The lenderPublicId login must answer; unset: whatever it answers.
    #[arg(long, env = "RECOUP_EXPORT_LENDER_PUBLIC_ID")]
    pub lender_public_id: Option<String>,
    /// The login email.
    #[arg(long, env = "RECOUP_EXPORT_EMAIL")]
    pub email: Option<String>,
    /// A file holding the password (e.g. a mounted secret); unset: the environment variable
    /// RECOUP_EXPORT_PASSWORD.
    #[arg(long, env = "RECOUP_EXPORT_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Datasets to pull, by path (repeatable); S3/D16 is built in.
    #[arg(
        long = "dataset",
        value_name = "SECTION/CODE",
        default_value = collections::d16::DATASET
    )]
    pub datasets: Vec<String>,
    /// Rows per page, 1-1000.
    #[arg(long, env = "RECOUP_EXPORT_LIMIT", default_value_t = DEFAULT_LIMIT,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
    pub limit: u32,
    /// Requests per second to the lender's API.
    #[arg(long, env = "RECOUP_EXPORT_REQUESTS_PER_SECOND", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub requests_per_second: u32,
    /// Seconds one request may take, body included.
    #[arg(long, env = "RECOUP_EXPORT_REQUEST_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_seconds: u64,
    /// Service mode: seconds between the end of a dataset's pull and the start of its next
    /// (a sources file sets its own).
    #[arg(long, env = "RECOUP_EXPORT_POLL_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub poll_seconds: u64,
    /// Pulls running at once, over every tenant and dataset (a sources file sets its own).
    #[arg(long, env = "RECOUP_EXPORT_MAX_CONCURRENT", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_concurrent: u64,
}

impl SourceArgs {
    /// The sources these arguments name; `None` when they name none.
    pub fn sources(&self) -> anyhow::Result<Option<Sources>> {
        let env = |name: &str| std::env::var(name).ok();
        if let Some(file) = &self.sources_file {
            if self.api_host.is_some() {
                bail!("give --sources-file or --api-host, not both");
            }
            return Ok(Some(sources::load(file, &env).map_err(anyhow::Error::msg)?));
        }
        let Some(host) = &self.api_host else {
            return Ok(None);
        };
        let lender = self
            .lender
            .as_deref()
            .context("--lender is required with --api-host")?;
        let email = self
            .email
            .as_deref()
            .context("--email is required with --api-host")?;
        let password = match &self.password_file {
            Some(file) => sources::read_secret(file).map_err(anyhow::Error::msg)?,
            None => std::env::var(PASSWORD_ENV).with_context(|| {
                format!("the password comes from --password-file or {PASSWORD_ENV}; neither is set")
            })?,
        };
        recoup_proto::tenant::validate_tenant(&self.tenant)
            .map_err(|e| anyhow::anyhow!("--tenant: {e}"))?;
        let mut client = ClientConfig::new(host, lender, email, Secret::new(password));
        client.lender_public_id = self.lender_public_id.clone();
        client.requests_per_second =
            NonZeroU32::new(self.requests_per_second).unwrap_or(NonZeroU32::MIN);
        client.request_timeout = Duration::from_secs(self.request_timeout_seconds);
        let known = dataset::d16();
        let datasets = self
            .datasets
            .iter()
            .map(|name| {
                if *name == known.path() {
                    Ok(Arc::new(known.clone()))
                } else {
                    bail!("dataset {name:?} is not built in (S3/D16 is); describe others in a --sources-file")
                }
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Some(Sources {
            poll_interval: Duration::from_secs(self.poll_seconds),
            max_concurrent: usize::try_from(self.max_concurrent).unwrap_or(usize::MAX),
            sources: vec![Source {
                tenant: self.tenant.clone(),
                client,
                datasets,
                limit: self.limit,
            }],
        }))
    }
}

#[derive(Args, Clone, Debug)]
pub struct PullArgs {
    /// One pull per dataset, then exit (0 when every dataset was pulled to its end, 1 if any
    /// failed). Without it: the export-puller service, pulling every --poll-seconds until
    /// SIGTERM.
    #[arg(long)]
    pub once: bool,
    /// Kafka bootstrap servers (host:port,...): the puller runs against an external cluster.
    #[arg(long, env = "RECOUP_KAFKA_BROKERS")]
    pub kafka_brokers: String,
    /// Extra librdkafka property KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = crate::parse_property)]
    pub kafka_properties: Vec<(String, String)>,
    /// Directory for the puller's checkpoints (in export-puller/ below it).
    #[arg(long, env = "RECOUP_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics on GET http://ADDR/metrics while pulling (pages by status,
    /// rows by outcome, events published). Unset: no HTTP.
    #[arg(long, env = "RECOUP_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// The puller's settings for `sources`, pulled every poll interval.
pub fn continuously(sources: Sources) -> export_puller::service::Settings {
    export_puller::service::Settings {
        sources,
        once: false,
        pull: PullSettings::default(),
    }
}

/// `recoup pull`: the puller alone, against an external Kafka, through the same start as in
/// `recoup up`.
pub async fn run_pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let sources = args.source.sources()?.context(
        "nothing to pull: give --api-host with --lender, --email and a password, or --sources-file",
    )?;
    let mut config = PlatformConfig::new(args.data_dir);
    config.services = Services::EXPORT_PULLER;
    config.grpc_addr = None;
    config.http_addr = None;
    config.metrics_addr = args.metrics_addr;
    config.kafka_brokers = Some(args.kafka_brokers);
    config.kafka_properties = args.kafka_properties;
    config.pull = Some(export_puller::service::Settings {
        once: args.once,
        ..continuously(sources)
    });
    let mut running = platform::start(config).await?;
    // Stdout carries the outcome of each stream; the readiness goes to the log.
    tracing::info!(ready = %running.ready_line(), once = args.once, "pulling");
    tokio::select! {
        () = running.pulls_finished(), if args.once => {}
        signal = wait_for_signal() => {
            signal?;
            tracing::info!("stopping: every pull stops after the page in flight");
        }
    }
    let outcomes = running.shutdown().await?;
    Ok(report(outcomes))
}

/// One line per stream on stdout (errors on stderr); failure when any stream failed.
fn report(outcomes: Vec<schedule::StreamOutcome>) -> ExitCode {
    let mut failed = false;
    for outcome in outcomes {
        match outcome.result {
            Ok(r) => println!(
                "{}: pages {}, rows {}, published {}, unchanged {}, rejected {}, since {}{}",
                outcome.stream,
                r.pages,
                r.rows,
                r.published,
                r.unchanged,
                r.rejected,
                r.since
                    .map(|s| s.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_else(|| "-".to_owned()),
                if r.stopped { " (stopped)" } else { "" },
            ),
            Err(error) => {
                failed = true;
                eprintln!("{}: error: {error}", outcome.stream);
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[derive(Args, Clone, Debug)]
pub struct SimArgs {
    /// Where the simulated export API listens.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// D16 rows at start.
    #[arg(long, default_value_t = 10_000)]
    pub rows: usize,
    /// Seeds the rows and their changes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The lender slug of the auth paths.
    #[arg(long, default_value = "demo")]
    pub lender: String,
    /// What login answers as lenderPublicId.
    #[arg(long, default_value = "lender-demo")]
    pub lender_public_id: String,
    #[arg(long, default_value = "demo@example.com")]
    pub email: String,
    /// The one password the simulator accepts (a stand-in vendor: not a secret).
    #[arg(long, default_value = "demo")]
    pub password: String,
    /// Seconds an access token lives.
    #[arg(long, default_value_t = 600)]
    pub token_ttl_seconds: u64,
    /// Fraction of rows with a value a normaliser must refuse (0-1).
    #[arg(long, default_value_t = 0.0)]
    pub malformed_share: f64,
    /// Every this many seconds, --change-rows rows change and --new-rows rows appear (0: never).
    #[arg(long, default_value_t = 0)]
    pub change_every_seconds: u64,
    #[arg(long, default_value_t = 100)]
    pub change_rows: usize,
    #[arg(long, default_value_t = 20)]
    pub new_rows: usize,
    /// Seeds the faults.
    #[arg(long, default_value_t = 0)]
    pub fault_seed: u64,
    /// Probability per export request of 429 Too Many Requests (with Retry-After).
    #[arg(long, default_value_t = 0.0)]
    pub fault_429: f64,
    /// Retry-After of the 429s, seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_seconds: u64,
    /// Probability of 500 Internal Server Error.
    #[arg(long, default_value_t = 0.0)]
    pub fault_500: f64,
    /// Probability of 500 "Invalid cursor" on requests carrying a cursor.
    #[arg(long, default_value_t = 0.0)]
    pub fault_invalid_cursor: f64,
    /// Probability of 504 Gateway Timeout on requests with limit above --fault-504-above-limit.
    #[arg(long, default_value_t = 0.0)]
    pub fault_504: f64,
    #[arg(long, default_value_t = 500)]
    pub fault_504_above_limit: u32,
    /// Probability of a slow answer (--slow-ms later).
    #[arg(long, default_value_t = 0.0)]
    pub fault_slow: f64,
    #[arg(long, default_value_t = 2000)]
    pub slow_ms: u64,
    /// Probability of a connection dropped mid-answer.
    #[arg(long, default_value_t = 0.0)]
    pub fault_drop: f64,
}

impl SimArgs {
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        for (name, p) in [
            ("--malformed-share", self.malformed_share),
            ("--fault-429", self.fault_429),
            ("--fault-500", self.fault_500),
            ("--fault-invalid-cursor", self.fault_invalid_cursor),
            ("--fault-504", self.fault_504),
            ("--fault-slow", self.fault_slow),
            ("--fault-drop", self.fault_drop),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("{name} is a probability from 0 to 1, got {p}");
            }
        }
        Ok(SimConfig {
            rows: self.rows,
            seed: self.seed,
            lender: self.lender.clone(),
            lender_public_id: self.lender_public_id.clone(),
            email: self.email.clone(),
            password: self.password.clone(),
            token_ttl: Duration::from_secs(self.token_ttl_seconds.max(1)),
            malformed_share: self.malformed_share,
            faults: FaultPlan {
                seed: self.fault_seed,
                too_many_requests: self.fault_429,
                retry_after_secs: self.retry_after_seconds,
                server_error: self.fault_500,
                invalid_cursor: self.fault_invalid_cursor,
                gateway_timeout: self.fault_504,
                gateway_timeout_above_limit: self.fault_504_above_limit,
                slow: self.fault_slow,
                slow_delay: Duration::from_millis(self.slow_ms),
                drop_connection: self.fault_drop,
            },
            ..SimConfig::default()
        })
    }
}

/// `recoup export-sim`: serves a simulated export API until SIGTERM.
pub async fn run_sim(args: SimArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let sim = Simulator::new(config.clone());
    let running = sim
        .start(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!(
        "export-sim ready url={} lender={} lender_public_id={} email={} rows={}",
        running.base_url(),
        config.lender,
        config.lender_public_id,
        config.email,
        sim.row_count()
    );
    let changes = spawn_changes(
        &sim,
        args.change_every_seconds,
        args.change_rows,
        args.new_rows,
    );
    wait_for_signal().await?;
    if let Some(changes) = changes {
        changes.abort();
    }
    running.stop().await?;
    Ok(())
}

/// Every `every_secs` seconds, `change` rows change and `add` rows appear (`None` for 0).
pub fn spawn_changes(
    sim: &Simulator,
    every_secs: u64,
    change: usize,
    add: usize,
) -> Option<tokio::task::JoinHandle<()>> {
    if every_secs == 0 {
        return None;
    }
    let sim = sim.clone();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every_secs));
        tick.tick().await;
        loop {
            tick.tick().await;
            let changed = sim.mutate(change);
            sim.add_rows(add);
            tracing::debug!(
                changed,
                added = add,
                rows = sim.row_count(),
                "export-sim rows moved on"
            );
        }
    }))
}

/// The simulated vendor of `recoup up --demo`; stops when dropped.
pub struct Demo {
    pub url: String,
    _running: export_sim::RunningSim,
    changes: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(changes) = self.changes.take() {
            changes.abort();
        }
    }
}

/// Tenant of the demo's data: the default one, which the first admin key acts for.
pub const DEMO_TENANT: &str = recoup_proto::tenant::DEFAULT_TENANT;

/// Starts a simulator of `rows` D16 rows on a free loopback port, whose rows change every 5
/// seconds, and the sources that pull it every 5 seconds as the default tenant.
pub async fn start_demo(rows: usize) -> anyhow::Result<(Sources, Demo)> {
    let config = SimConfig {
        rows,
        // A few rows a normaliser must refuse, to show the rejects topic.
        malformed_share: 0.002,
        ..SimConfig::default()
    };
    let sim = Simulator::new(config.clone());
    let running = sim
        .start(([127, 0, 0, 1], 0).into())
        .await
        .context("starting the demo's export simulator")?;
    let url = running.base_url();
    let changes = spawn_changes(&sim, 5, 50, 10);
    let mut client = ClientConfig::new(
        &url,
        &config.lender,
        &config.email,
        Secret::new(config.password.clone()),
    );
    client.requests_per_second = NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN);
    let sources = Sources {
        poll_interval: Duration::from_secs(5),
        max_concurrent: 1,
        sources: vec![Source {
            tenant: DEMO_TENANT.to_owned(),
            client,
            datasets: vec![Arc::new(dataset::d16())],
            limit: MAX_LIMIT,
        }],
    };
    Ok((
        sources,
        Demo {
            url,
            _running: running,
            changes,
        },
    ))
}
