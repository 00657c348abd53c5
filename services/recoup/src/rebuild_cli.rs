//! `recoup projection rebuild`: rebuilds a read model of a running recoup, blue/green, through
//! `recoup.v1.ReadModels` (admin role), and follows it until the new generation is live.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use recoup_proto::v1;
use recoup_proto::v1::read_models_client::ReadModelsClient;
use serde_json::json;

use crate::credential::{Link, ServerArgs};

/// What `recoup projection` does besides running the projection.
#[derive(Subcommand)]
pub enum ProjectionCommand {
    /// Rebuild a read model of a running recoup from its stream's record, blue/green: the new
    /// generation is built beside the live one, which keeps answering, and takes its place once
    /// it caught up with the live stream. Needs an admin key.
    Rebuild(RebuildArgs),
}

#[derive(Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The read model to rebuild: its new generation is built from the stream's record beside
    /// the live one, which keeps answering, and takes its place once it caught up.
    #[arg(long, value_enum)]
    read_model: ReadModelArg,
    /// Return once the rebuild started, rather than once the new generation is live.
    #[arg(long)]
    no_wait: bool,
    /// Print the final status as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReadModelArg {
    Cases,
    Accounts,
    Deals,
}

impl ReadModelArg {
    fn proto(self) -> v1::ReadModel {
        match self {
            ReadModelArg::Cases => v1::ReadModel::Cases,
            ReadModelArg::Accounts => v1::ReadModel::Accounts,
            ReadModelArg::Deals => v1::ReadModel::Deals,
        }
    }
}

/// How often the status is asked for while waiting.
const POLL: Duration = Duration::from_millis(250);

/// Starts (or follows) the rebuild; fails when it failed.
pub async fn run(command: ProjectionCommand) -> anyhow::Result<()> {
    let ProjectionCommand::Rebuild(args) = command;
    let mut client = ReadModelsClient::new(args.server.connect().await?);
    let read_model = args.read_model.proto() as i32;
    let started = Instant::now();
    let mut status = match client.rebuild(v1::RebuildRequest { read_model }).await {
        Ok(answer) => answer.into_inner().status.unwrap_or_default(),
        Err(refused) if refused.code() == tonic::Code::AlreadyExists && !args.no_wait => {
            eprintln!("{}; following it", refused.message());
            get(&mut client, read_model).await?
        }
        Err(refused) => return Err(refused.into()),
    };
    if !args.no_wait {
        let mut said = Instant::now();
        while status.state() == v1::RebuildState::Running {
            tokio::time::sleep(POLL).await;
            status = get(&mut client, read_model).await?;
            if said.elapsed() >= Duration::from_secs(2) {
                eprintln!(
                    "rebuilding {}: {} from the record, {} from the topic",
                    name(&status),
                    events(status.from_record),
                    events(status.from_topic)
                );
                said = Instant::now();
            }
        }
    }
    if args.json {
        println!("{}", as_json(&status));
    } else {
        println!("{}", as_line(&status, started.elapsed()));
    }
    if status.state() == v1::RebuildState::Failed {
        bail!("the rebuild of {} failed: {}", name(&status), status.error);
    }
    Ok(())
}

async fn get(
    client: &mut ReadModelsClient<Link>,
    read_model: i32,
) -> anyhow::Result<v1::RebuildStatus> {
    Ok(client
        .get_rebuild(v1::GetRebuildRequest { read_model })
        .await?
        .into_inner()
        .status
        .unwrap_or_default())
}

fn events(n: u64) -> String {
    if n == 1 {
        "1 event".to_owned()
    } else {
        format!("{n} events")
    }
}

fn name(status: &v1::RebuildStatus) -> String {
    status
        .read_model()
        .as_str_name()
        .trim_start_matches("READ_MODEL_")
        .to_ascii_lowercase()
}

fn state(status: &v1::RebuildStatus) -> String {
    status
        .state()
        .as_str_name()
        .trim_start_matches("REBUILD_STATE_")
        .to_ascii_lowercase()
}

fn as_line(status: &v1::RebuildStatus, took: Duration) -> String {
    let counts = format!(
        "{} from the record, {} from the topic",
        events(status.from_record),
        events(status.from_topic)
    );
    match status.state() {
        v1::RebuildState::Done => format!(
            "{}: generation {} is live ({counts}, {:.1} s)",
            name(status),
            status.generation,
            took.as_secs_f64()
        ),
        v1::RebuildState::Running => format!(
            "{}: building generation {} ({counts})",
            name(status),
            status.generation
        ),
        _ => format!(
            "{}: {} {} ({counts})",
            name(status),
            state(status),
            status.error
        ),
    }
}

fn as_json(status: &v1::RebuildStatus) -> serde_json::Value {
    json!({
        "read_model": name(status),
        "state": state(status),
        "generation": status.generation,
        "from_record": status.from_record,
        "from_topic": status.from_topic,
        "error": (!status.error.is_empty()).then_some(&status.error),
    })
}
