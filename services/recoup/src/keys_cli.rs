//! `recoup keys`: make, list and revoke API keys, through a running process's
//! `recoup.v1.ApiKeys` (with an admin key), or straight on the access topic for operators with
//! Kafka access (`--kafka-brokers`: the first key of a cluster).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use api_keys::Registry;
use api_keys::follow::catch_up;
use api_keys::service::write_secret;
use chrono::Utc;
use clap::{Args, Subcommand};
use event_backbone::topics::ACCESS;
use event_backbone::{EventConsumer, KafkaConfig};
use recoup_access::{KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::api_keys_client::ApiKeysClient;

use crate::client::request;
use crate::credential::{ServerArgs, refusal};

#[derive(Args)]
pub struct KeysArgs {
    /// The process whose recoup.v1.ApiKeys is asked, with an admin key.
    #[command(flatten)]
    server: ServerArgs,
    /// Write to the access topic of this Kafka cluster instead of asking a process: for the
    /// first key of a cluster, or an operator locked out. Needs no API key; whoever may write
    /// the topic may make keys, so guard it with Kafka ACLs.
    #[arg(long, global = true)]
    kafka_brokers: Option<String>,
    /// Extra librdkafka property KEY=VALUE for --kafka-brokers, repeatable.
    #[arg(long = "kafka-property", global = true, value_name = "KEY=VALUE", value_parser = crate::parse_property)]
    kafka_properties: Vec<(String, String)>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key and print it once (recoup keeps only its SHA-256).
    Create(CreateArgs),
    /// List the keys (of the admin key's tenants, through a process); no secrets.
    List,
    /// Revoke a key: every process refuses it within seconds.
    Revoke {
        /// The key's id (the 16 hex digits after "rk1_").
        id: String,
    },
}

#[derive(Args)]
struct CreateArgs {
    /// A tenant the key acts for; repeat for several (the first is the one a request without
    /// x-recoup-tenant acts for). Through a process: unset, the admin key's tenant.
    #[arg(long = "tenant", value_name = "TENANT")]
    tenants: Vec<String>,
    /// viewer (reads), agent (+ case commands), importer (+ snapshot imports) or admin
    /// (everything, keys included).
    #[arg(long)]
    role: Role,
    /// What to call it (shown in lists and logs).
    #[arg(long, default_value = "")]
    name: String,
    /// Days until it expires; unset: it does not expire.
    #[arg(long, value_name = "DAYS")]
    expires_in: Option<u32>,
    /// Write the key to FILE (readable only by you) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// With --out: do nothing when FILE exists (a set-up job that runs again).
    #[arg(long, requires = "out")]
    if_absent: bool,
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    if let KeysCommand::Create(CreateArgs {
        out: Some(out),
        if_absent: true,
        ..
    }) = &args.command
        && out.exists()
    {
        eprintln!("{} exists: no key made", out.display());
        return Ok(());
    }
    match args.kafka_brokers.clone() {
        Some(brokers) => on_topic(args, brokers).await,
        None => through_process(args).await,
    }
}

/// What `create` answers, by either path.
struct Made {
    key: String,
    record: v1::ApiKey,
}

async fn through_process(args: KeysArgs) -> anyhow::Result<()> {
    let mut client = ApiKeysClient::new(args.server.connect().await?);
    let refused = |status: tonic::Status| refusal(&status);
    match args.command {
        KeysCommand::Create(create) => {
            let asked = v1::CreateKeyRequest {
                name: create.name,
                tenants: create.tenants,
                role: create.role.to_proto() as i32,
                expires_in_days: create.expires_in.unwrap_or(0),
            };
            let made = client
                .create_key(request(None, asked)?)
                .await
                .map_err(refused)?
                .into_inner();
            let record = made.record.context("the server answered no record")?;
            show_made(
                Made {
                    key: made.key,
                    record,
                },
                create.out,
            )
        }
        KeysCommand::List => {
            let list = client
                .list_keys(request(None, v1::ListKeysRequest {})?)
                .await
                .map_err(refused)?
                .into_inner();
            print_keys(&list.keys);
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            let record = client
                .revoke_key(request(None, v1::RevokeKeyRequest { id })?)
                .await
                .map_err(refused)?
                .into_inner();
            print_keys(&[record]);
            Ok(())
        }
    }
}

async fn on_topic(args: KeysArgs, brokers: String) -> anyhow::Result<()> {
    let mut kafka = KafkaConfig::external(brokers);
    kafka.properties = args.kafka_properties;
    let registry = Registry::new(&kafka, None).context("kafka producer")?;
    let consumer = EventConsumer::new(&kafka, "recoup-keys-cli", ACCESS.name, None)
        .context("kafka consumer")?;
    catch_up(&registry, Arc::new(consumer), Duration::from_secs(15))
        .await
        .with_context(|| format!("reading {} on {}", ACCESS.name, kafka.brokers))?;
    let now = Utc::now();
    match args.command {
        KeysCommand::Create(create) => {
            if create.tenants.is_empty() {
                bail!(
                    "--tenant is needed with --kafka-brokers (there is no admin key to take it from)"
                );
            }
            let days = |d: u32| now + chrono::Duration::days(i64::from(d));
            let spec = KeySpec {
                name: create.name,
                tenants: create.tenants,
                role: create.role,
                expires_at: create.expires_in.map(days),
                created_by: "operator".to_owned(),
            };
            let issued = registry.create(&spec, now).await?;
            let made = Made {
                key: issued.key,
                record: issued.record,
            };
            show_made(made, create.out)
        }
        KeysCommand::List => {
            print_keys(&registry.list());
            Ok(())
        }
        KeysCommand::Revoke { id } => {
            print_keys(&[registry.revoke(&id, now, "operator").await?]);
            Ok(())
        }
    }
}

/// Prints the key once (or writes it to `out`), and its record to stderr.
fn show_made(made: Made, out: Option<PathBuf>) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            write_secret(&path, &made.key)
                .with_context(|| format!("writing the key to {}", path.display()))?;
            eprintln!("key {} written to {}", made.record.id, path.display());
        }
        None => println!("{}", made.key),
    }
    eprint!("made: ");
    let mut err = std::io::stderr();
    write_keys(&mut err, &[made.record]);
    Ok(())
}

fn print_keys(keys: &[v1::ApiKey]) {
    write_keys(&mut std::io::stdout(), keys);
}

/// One line per key: id, role, tenants, name, when made, by whom, expiry, revocation.
fn write_keys(out: &mut impl std::io::Write, keys: &[v1::ApiKey]) {
    let at = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(recoup_proto::from_timestamp)
            .map_or("-".to_owned(), |t| {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            })
    };
    for key in keys {
        let role = Role::from_proto(key.role).map_or("?".to_owned(), |r| r.to_string());
        let revoked = match &key.revoked_at {
            Some(_) => format!("revoked={} by {}", at(&key.revoked_at), key.revoked_by),
            None => "active".to_owned(),
        };
        let _ = writeln!(
            out,
            "{}\t{role}\ttenants={}\tname={:?}\tcreated={} by {}\texpires={}\t{revoked}",
            key.id,
            key.tenants.join(","),
            key.name,
            at(&key.created_at),
            key.created_by,
            at(&key.expires_at),
        );
    }
}
