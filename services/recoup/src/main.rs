//! `recoup`: runs the platform (all services in one process, or each alone) and talks to it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use api_keys::jwks::{JwksSource, Tokens};
use clap::{Args, Parser, Subcommand};
use recoup::platform::{self, PlatformConfig, Security, Services};
use recoup::settings::load_collectors;
use recoup::tls::TlsFiles;
use recoup_access::JwtSettings;

// mimalloc: an import frees its rows on another thread than the one that made them, which
// glibc's allocator handles poorly (the snapshot import benchmark runs 40 % faster with it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod accounts_cli;
mod client;
mod credential;
mod import_cli;
mod keys_cli;
mod limits_cli;
mod pull_cli;
mod rebuild_cli;
mod schema_cli;

/// recoup: one consistent, real-time picture of who owes what — debt collection cases, PAYGo
/// account snapshots and collections deals pulled from a vendor's exports, as events, through
/// Kafka, into queryable read models.
#[derive(Parser)]
#[command(name = "recoup", version)]
struct Cli {
    /// Write logs as JSON lines (to stderr). Log levels come from RUST_LOG (default: info).
    #[arg(long, global = true, env = "RECOUP_JSON_LOGS")]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run every service in this process. Without --kafka-brokers an embedded Kafka cluster
    /// (librdkafka's mock cluster, in memory) is started; the durable truth stays in --data-dir.
    /// The export puller runs when a source is given (--api-host or --sources-file) or with
    /// --demo.
    Up(UpArgs),
    /// Run only the case-lifecycle service (commands, event store, outbox relay) against an
    /// external Kafka.
    CaseLifecycle(RunArgs),
    /// Run only the projection service (read models, recoup.v1.Query) against an external
    /// Kafka; `recoup projection rebuild` rebuilds a read model of a running process.
    Projection(ProjectionArgs),
    /// Run only the snapshot importer (recoup.v1.SnapshotImports: PAYGo snapshot files and rows;
    /// the same over HTTP on --http-addr) against an external Kafka.
    SnapshotImporter(RunArgs),
    /// Pull a collections SaaS's exports (D16 "Collections Cases") into Kafka against an
    /// external cluster: continuously (the export-puller service) or once with --once.
    ///
    /// Each dataset's checkpoint (the committed since, the cursor in flight) and the
    /// fingerprint of every row published are kept in --data-dir/export-puller and advance only
    /// after Kafka acknowledged the page, so a stopped or killed puller resumes where it
    /// stopped, and a row that comes again unchanged is not published again.
    #[command(visible_alias = "export-puller")]
    Pull(pull_cli::PullArgs),
    /// Serve a simulated collections export API (ClearGrid-style, D16 rows, optional faults) to
    /// pull from: a stand-in vendor for trying the puller without credentials.
    ExportSim(pull_cli::SimArgs),
    /// Manage recoup's Kafka topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// The contract of recoup's events, for Kafka consumers downstream.
    #[command(subcommand)]
    Schema(schema_cli::SchemaCommand),
    /// Talk to a running recoup over gRPC.
    Cases(client::CasesArgs),
    /// Read the PAYGo portfolio from a running recoup over gRPC: PAR on the CRM's or recoup's
    /// numbers, and the accounts where they disagree.
    Accounts(accounts_cli::AccountsArgs),
    /// Make, list and revoke API keys (through a running process with an admin key, or on the
    /// access topic with --kafka-brokers).
    #[command(subcommand_required = true)]
    Keys(keys_cli::KeysArgs),
    /// Import files into a running recoup over gRPC, with progress and a summary per file.
    Import(import_cli::ImportArgs),
    /// Make TLS certificates for recoup's listeners.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Ask a running recoup process for its health (grpc.health.v1): prints the status, exits 0
    /// when SERVING, 1 otherwise (for container health checks).
    Health {
        /// The process's gRPC address.
        #[arg(long, env = "RECOUP_SERVER", default_value = "http://127.0.0.1:50051")]
        server: String,
        /// One service (e.g. recoup.v1.SnapshotImports); empty: the process as a whole.
        #[arg(long, default_value = "")]
        service: String,
        #[command(flatten)]
        tls: credential::TlsClientArgs,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ProjectionArgs {
    #[command(subcommand)]
    command: Option<rebuild_cli::ProjectionCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Directory for every service's files (sled databases).
    #[arg(long, env = "RECOUP_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Address the gRPC API listens on. Off loopback it needs TLS (--tls-cert, --tls-key), or
    /// --tls-terminated-upstream.
    #[arg(long, env = "RECOUP_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// PEM: the certificate chain the gRPC and HTTP listeners serve TLS with (rustls).
    #[arg(
        long,
        env = "RECOUP_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM: the private key of --tls-cert.
    #[arg(
        long,
        env = "RECOUP_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// PEM: CAs of client certificates; set, every client must present one signed by them
    /// (mTLS), on top of its API key.
    #[arg(
        long,
        env = "RECOUP_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
    /// Turn authentication off: every request acts for the tenant it names, with every right.
    /// Accepted only when every listener is on a loopback address (trying recoup on a laptop).
    #[arg(long, env = "RECOUP_INSECURE")]
    insecure: bool,
    /// Also take bearer tokens (JWT) of an identity provider, checked against its keys: a JWKS
    /// file, or an https:// URL (read again every 5 minutes and when a token names a new key).
    #[arg(long, env = "RECOUP_JWT_JWKS", value_name = "FILE|URL", requires_all = ["jwt_issuer", "jwt_audience"])]
    jwt_jwks: Option<String>,
    /// The issuer (`iss`) a token must name.
    #[arg(long, env = "RECOUP_JWT_ISSUER", requires = "jwt_jwks")]
    jwt_issuer: Option<String>,
    /// The audience (`aud`) a token must be for.
    #[arg(long, env = "RECOUP_JWT_AUDIENCE", requires = "jwt_jwks")]
    jwt_audience: Option<String>,
    /// The claim with a token's tenants (a string or an array).
    #[arg(
        long,
        env = "RECOUP_JWT_TENANT_CLAIM",
        default_value = "recoup_tenants"
    )]
    jwt_tenant_claim: String,
    /// The claim with a token's roles (viewer, agent, importer, admin; a string or an array).
    #[arg(long, env = "RECOUP_JWT_ROLE_CLAIM", default_value = "recoup_roles")]
    jwt_role_claim: String,
    /// Seconds a token is still taken after its expiry (clock skew).
    #[arg(long, env = "RECOUP_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    jwt_leeway_seconds: u64,
    /// A proxy or service mesh in front of recoup terminates TLS: listeners off loopback may
    /// then serve plaintext. Credentials are still required.
    #[arg(long, env = "RECOUP_TLS_TERMINATED_UPSTREAM")]
    tls_terminated_upstream: bool,
    /// Kafka bootstrap servers (host:port,...). Unset: the embedded cluster (`up` only).
    #[arg(long, env = "RECOUP_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Extra librdkafka property KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL).
    #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
    kafka_properties: Vec<(String, String)>,
    /// External Kafka: the consumer group of the projection (its read models use GROUP,
    /// GROUP-accounts and GROUP-deals). Projection processes with the same group share the
    /// partitions; each keeps the read model of the partitions it holds in its own --data-dir.
    #[arg(
        long,
        env = "RECOUP_CONSUMER_GROUP",
        default_value = projection::service::DEFAULT_CONSUMER_GROUP
    )]
    consumer_group: String,
    /// JSON file with collector configurations (see README); unset: one default configuration
    /// supporting PRODUCTION and TEST, with review, 14 days processing timeout.
    #[arg(long, env = "RECOUP_COLLECTORS_FILE")]
    collectors_file: Option<PathBuf>,
    /// Seconds between checks for cases whose processing timed out.
    #[arg(long, env = "RECOUP_TIMEOUT_CHECK_SECONDS", default_value_t = 5)]
    timeout_check_seconds: u64,
    /// Address the snapshot importer's HTTP API listens on (`up`, `snapshot-importer`). Off
    /// loopback it needs TLS, or --tls-terminated-upstream.
    #[arg(long, env = "RECOUP_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    #[command(flatten)]
    limits: limits_cli::LimitArgs,
}

#[derive(Args, Clone)]
struct UpArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    pull: pull_cli::SourceArgs,
    /// Also run a simulated export API in this process, with changing rows, and pull it as
    /// the default tenant: data flows into the deals read models without vendor credentials.
    #[arg(long)]
    demo: bool,
    /// --demo: rows of the simulated dataset.
    #[arg(long, default_value_t = 20_000)]
    demo_rows: usize,
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Write a new private CA (ca.pem) and a server certificate it signs (server.pem, and
    /// server.key readable only by you) into --out-dir, for the hosts given. Serve them with
    /// --tls-cert/--tls-key; clients trust ca.pem (--ca-cert). For a stack whose clients can be
    /// handed ca.pem (the compose stack, a trial); with a PKI of your own, serve its
    /// certificates instead. The CA's key is not kept: to renew, run it again (a new CA).
    Init {
        /// Directory for the three files (made if missing).
        #[arg(long)]
        out_dir: PathBuf,
        /// A host name or IP address clients reach the server by (repeat for more).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Do nothing when the three files are already there (a job run at every start).
        #[arg(long)]
        if_absent: bool,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// List recoup's topics with partitions and purpose.
    List,
    /// Create every recoup topic that is missing on an external cluster (idempotent).
    Ensure {
        #[arg(long, env = "RECOUP_KAFKA_BROKERS")]
        kafka_brokers: String,
        #[arg(long = "kafka-property", value_name = "KEY=VALUE", value_parser = parse_property)]
        kafka_properties: Vec<(String, String)>,
        /// Replication factor of created topics.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

pub(crate) fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| "expected KEY=VALUE".to_owned())?;
    if k.is_empty() {
        return Err("empty key".to_owned());
    }
    // Remembered so that no error this process prints can show a secret value.
    GIVEN_PROPERTIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((k.to_owned(), v.to_owned()));
    Ok((k.to_owned(), v.to_owned()))
}

/// Every `--kafka-property` of the command line.
static GIVEN_PROPERTIES: std::sync::Mutex<Vec<(String, String)>> =
    std::sync::Mutex::new(Vec::new());

/// An error as printed: secret Kafka property values masked (librdkafka quotes the value it
/// refuses).
fn printable(error: &anyhow::Error) -> String {
    let given = GIVEN_PROPERTIES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    event_backbone::config::redact(&format!("{error:#}"), &given)
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal: log files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs(cli.json_logs);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            // One line with the chain of causes; a backtrace helps nobody who mistyped a path.
            eprintln!("error: {}", printable(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let done = match command {
        Command::Up(args) => up(args).await,
        Command::Pull(args) => return pull_cli::run_pull(args).await,
        Command::ExportSim(args) => pull_cli::run_sim(args).await,
        Command::CaseLifecycle(args) => serve(args, Services::CASE_LIFECYCLE).await,
        Command::Projection(ProjectionArgs {
            command: Some(command),
            ..
        }) => rebuild_cli::run(command).await.map_err(named_refusal),
        Command::Projection(args) => serve(args.run, Services::PROJECTION).await,
        Command::SnapshotImporter(args) => serve(args, Services::SNAPSHOT_IMPORTER).await,
        Command::Topics(TopicsCommand::List) => {
            list_topics();
            Ok(())
        }
        Command::Topics(TopicsCommand::Ensure {
            kafka_brokers,
            kafka_properties,
            replication,
        }) => ensure_topics(kafka_brokers, kafka_properties, replication).await,
        Command::Schema(command) => schema_cli::run(command),
        Command::Health {
            server,
            service,
            tls,
        } => return health(server, service, tls).await,
        // Rejected rows are no error of the command, yet they fail it.
        Command::Import(args) => return import_cli::run(args).await,
        Command::Cases(args) => client::run(args).await.map_err(named_refusal),
        Command::Accounts(args) => accounts_cli::run(args).await.map_err(named_refusal),
        Command::Keys(args) => keys_cli::run(args).await,
        Command::Tls(TlsCommand::Init {
            out_dir,
            hosts,
            days,
            if_absent,
        }) => tls_init(&out_dir, hosts, days, if_absent),
    };
    done.map(|()| std::process::ExitCode::SUCCESS)
}

/// A refusal is an answer: name its gRPC code.
fn named_refusal(error: anyhow::Error) -> anyhow::Error {
    match error.downcast_ref::<tonic::Status>() {
        Some(status) => credential::refusal(status),
        None => error,
    }
}

/// `recoup tls init`.
fn tls_init(dir: &Path, hosts: Vec<String>, days: u32, if_absent: bool) -> anyhow::Result<()> {
    use recoup::certs::{CertFiles, CertSpec};
    let existing = CertFiles::in_dir(dir);
    if if_absent && existing.exist() {
        eprintln!(
            "{} holds a CA and a server certificate already: left as they are",
            dir.display()
        );
        return Ok(());
    }
    let files = recoup::certs::init(dir, &CertSpec { hosts, days })?;
    eprintln!(
        "wrote {} (trust it: --ca-cert), {} (--tls-cert) and {} (--tls-key, mode 0600), valid {days} days",
        files.ca.display(),
        files.cert.display(),
        files.key.display()
    );
    Ok(())
}

/// `recoup topics list`.
fn list_topics() {
    for t in event_backbone::topics::ALL {
        println!(
            "{}\tpartitions={}\tcompacted={}\t{}",
            t.name, t.partitions, t.compacted, t.description
        );
    }
}

/// `recoup topics ensure`: creates what is missing, then says of each topic how it stands.
async fn ensure_topics(
    brokers: String,
    properties: Vec<(String, String)>,
    replication: i32,
) -> anyhow::Result<()> {
    let mut kafka = event_backbone::KafkaConfig::external(brokers);
    kafka.properties = properties;
    let outcomes = event_backbone::admin::ensure_topics(
        &kafka,
        event_backbone::topics::ALL,
        replication,
        Duration::from_secs(15),
    )
    .await
    .with_context(|| format!("creating topics on {}", kafka.brokers))?;
    let states = tokio::task::spawn_blocking(move || {
        event_backbone::admin::describe_topics(
            &kafka,
            event_backbone::topics::ALL,
            Duration::from_secs(15),
        )
    })
    .await?
    .context("reading the topics back")?;
    let mut differ = false;
    for ((name, outcome), state) in outcomes.iter().zip(&states) {
        let note = match state.partitions {
            Some(n) if n == state.wanted_partitions => format!("partitions={n}"),
            Some(n) => {
                differ = true;
                format!(
                    "partitions={n} (recoup creates {}; keys keep their partition, so this works, but spreads load differently)",
                    state.wanted_partitions
                )
            }
            None => {
                differ = true;
                "not visible in the cluster's metadata yet".to_owned()
            }
        };
        println!("{name}\t{outcome:?}\t{note}");
    }
    if differ {
        tracing::warn!("some topics differ from what recoup creates; see above");
    }
    Ok(())
}

/// `recoup health`: the serving status of a process or one of its services.
async fn health(
    server: String,
    service: String,
    tls: credential::TlsClientArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let channel = tls
        .endpoint(&server)?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let answer = client
        .check(tonic_health::pb::HealthCheckRequest { service })
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?;
    let status = answer.into_inner().status();
    println!("{}", status.as_str_name());
    Ok(
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        },
    )
}

/// `recoup up`: every service, the puller when sources are given, a simulated vendor with
/// --demo.
async fn up(args: UpArgs) -> anyhow::Result<()> {
    let mut config = platform_config(args.run, Services::ALL)?;
    config.pull = args.pull.sources()?.map(pull_cli::continuously);
    let mut demo = None;
    if args.demo {
        if config.pull.is_some() {
            bail!(
                "--demo pulls from its own simulator: give it without --api-host or --sources-file"
            );
        }
        let (sources, sim) = pull_cli::start_demo(args.demo_rows).await?;
        config.pull = Some(pull_cli::continuously(sources));
        demo = Some(sim);
    }
    let header = match config.security.authentication {
        true => format!(
            "-H \"authorization: Bearer $(cat {})\" ",
            config.data_dir.join("admin.key").display()
        ),
        false => String::new(),
    };
    let running = platform::start(config).await?;
    println!("{}", running.ready_line());
    if let (Some(demo), Some(grpc)) = (&demo, running.grpc_addr) {
        println!(
            "demo: export simulator at {} pulled as tenant {} (try: grpcurl -plaintext {header}{grpc} recoup.v1.Query/CollectionsFunnel)",
            demo.url,
            pull_cli::DEMO_TENANT,
        );
    }
    wait_for_signal().await?;
    stop(running).await?;
    drop(demo);
    Ok(())
}

async fn serve(args: RunArgs, services: Services) -> anyhow::Result<()> {
    let config = platform_config(args, services)?;
    let running = platform::start(config).await?;
    println!("{}", running.ready_line());
    wait_for_signal().await?;
    stop(running).await
}

async fn stop(running: platform::RunningPlatform) -> anyhow::Result<()> {
    tracing::info!("shutting down: draining the outbox, committing offsets");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

fn platform_config(args: RunArgs, services: Services) -> anyhow::Result<PlatformConfig> {
    if services != Services::ALL && args.kafka_brokers.is_none() {
        bail!(
            "running one service alone needs an external Kafka: pass --kafka-brokers \
             (or RECOUP_KAFKA_BROKERS); `recoup up` runs everything on the embedded cluster"
        );
    }
    let tokens = args.jwt_jwks.as_deref().map(|jwks| Tokens {
        settings: JwtSettings {
            issuer: args.jwt_issuer.clone().unwrap_or_default(),
            audience: args.jwt_audience.clone().unwrap_or_default(),
            tenant_claim: args.jwt_tenant_claim.clone(),
            role_claim: args.jwt_role_claim.clone(),
            leeway_seconds: args.jwt_leeway_seconds,
        },
        jwks: JwksSource::parse(jwks),
    });
    let mut config = PlatformConfig::new(args.data_dir);
    // The platform refuses what does not go together (--insecure with TLS or tokens, or off
    // loopback).
    config.security = Security {
        authentication: !args.insecure,
        // Only `up` makes the first key: the services of a cluster get theirs from
        // `recoup keys create --kafka-brokers`.
        first_admin_key: !args.insecure && services == Services::ALL,
        tls_terminated_upstream: args.tls_terminated_upstream,
        tls: args.tls_cert.zip(args.tls_key).map(|(cert, key)| TlsFiles {
            cert,
            key,
            client_ca: args.tls_client_ca,
        }),
        tokens,
        ..Security::default()
    };
    config.grpc_addr = Some(args.grpc_addr);
    config.http_addr = Some(args.http_addr);
    config.kafka_brokers = args.kafka_brokers;
    config.kafka_properties = args.kafka_properties;
    config.services = services;
    config.projection.consumer_group = args.consumer_group;
    args.limits.apply(&mut config)?;
    config.cases.timeout_check_interval = Duration::from_secs(args.timeout_check_seconds.max(1));
    if let Some(path) = &args.collectors_file {
        config.cases.collectors = load_collectors(path)?;
    }
    Ok(config)
}

pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
