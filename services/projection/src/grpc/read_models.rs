//! gRPC service `recoup.v1.ReadModels`: rebuilds of the read models and their consumers' lag,
//! for admins.

use event_backbone::consumer::LagView;
use recoup_access::{Access, Action};
use recoup_proto::to_timestamp;
use recoup_proto::v1;
use recoup_proto::v1::read_models_server::{ReadModels, ReadModelsServer};
use tonic::{Request, Response, Status};

use crate::generations::ReadModelName;
use crate::rebuild::{RebuildState, RebuildStatus, Rebuilds};

/// The consumers' lag of the read models a process runs, in the order they were added.
#[derive(Clone, Default)]
pub struct Lags(Vec<(ReadModelName, String, LagView)>);

impl Lags {
    /// Read model `name` is fed from `topic` by the consumer whose lag `view` holds.
    pub fn add(&mut self, name: ReadModelName, topic: &str, view: LagView) {
        self.0.push((name, topic.to_owned(), view));
    }
}

/// The API over a projection's rebuilds and its consumers' lag.
#[derive(Clone)]
pub struct ReadModelsApi {
    rebuilds: Rebuilds,
    lags: Lags,
    access: Access,
}

impl ReadModelsApi {
    pub fn new(rebuilds: Rebuilds, lags: Lags, access: Access) -> Self {
        Self {
            rebuilds,
            lags,
            access,
        }
    }

    pub fn into_server(self) -> ReadModelsServer<Self> {
        ReadModelsServer::new(self)
    }

    fn rebuild_of(
        &self,
        read_model: i32,
    ) -> Result<std::sync::Arc<dyn crate::rebuild::Rebuild>, Status> {
        let name = match v1::ReadModel::try_from(read_model) {
            Ok(v1::ReadModel::Cases) => ReadModelName::Cases,
            Ok(v1::ReadModel::Accounts) => ReadModelName::Accounts,
            Ok(v1::ReadModel::Deals) => ReadModelName::Deals,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "read_model {read_model} is not one of cases (1), accounts (2), deals (3)"
                )));
            }
        };
        self.rebuilds.of(name).ok_or_else(|| {
            Status::failed_precondition(format!("the {name} read model does not run here"))
        })
    }
}

fn read_model(name: ReadModelName) -> i32 {
    match name {
        ReadModelName::Cases => v1::ReadModel::Cases,
        ReadModelName::Accounts => v1::ReadModel::Accounts,
        ReadModelName::Deals => v1::ReadModel::Deals,
    }
    .into()
}

fn lag_to_proto(name: ReadModelName, topic: &str, view: &LagView) -> v1::ReadModelLag {
    let mut lag = v1::ReadModelLag {
        read_model: read_model(name),
        topic: topic.to_owned(),
        ..Default::default()
    };
    if let Some(measured) = view.last() {
        lag.measured = true;
        lag.measured_at = Some(to_timestamp(measured.measured_at.into()));
        lag.unknown_partitions = measured.unknown.into_iter().collect();
        for (partition, behind) in measured.partitions {
            let messages = u64::try_from(behind).unwrap_or(0);
            lag.messages = lag.messages.saturating_add(messages);
            lag.partitions.push(v1::PartitionLag {
                partition,
                messages,
            });
        }
    }
    lag
}

fn to_proto(status: RebuildStatus) -> v1::RebuildStatus {
    v1::RebuildStatus {
        read_model: read_model(status.read_model),
        state: match status.state {
            RebuildState::Idle => v1::RebuildState::Idle,
            RebuildState::Running => v1::RebuildState::Running,
            RebuildState::Done => v1::RebuildState::Done,
            RebuildState::Failed => v1::RebuildState::Failed,
        }
        .into(),
        generation: status.generation,
        from_record: status.from_record,
        from_topic: status.from_topic,
        started_at: status.started_at.map(to_timestamp),
        finished_at: status.finished_at.map(to_timestamp),
        error: status.error.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl ReadModels for ReadModelsApi {
    async fn rebuild(
        &self,
        request: Request<v1::RebuildRequest>,
    ) -> Result<Response<v1::RebuildResponse>, Status> {
        let acting = self.access.grpc(&request, Action::Operate)?;
        let rebuild = self.rebuild_of(request.get_ref().read_model)?;
        match rebuild.start() {
            Ok(status) => {
                tracing::info!(read_model = %status.read_model, by = %acting.actor(), "rebuild requested");
                Ok(Response::new(v1::RebuildResponse {
                    status: Some(to_proto(status)),
                }))
            }
            Err(running) => Err(Status::already_exists(format!(
                "a rebuild of the {} read model is running (generation {})",
                running.read_model, running.generation
            ))),
        }
    }

    async fn get_rebuild(
        &self,
        request: Request<v1::GetRebuildRequest>,
    ) -> Result<Response<v1::GetRebuildResponse>, Status> {
        self.access.grpc(&request, Action::Operate)?;
        let rebuild = self.rebuild_of(request.get_ref().read_model)?;
        Ok(Response::new(v1::GetRebuildResponse {
            status: Some(to_proto(rebuild.status())),
        }))
    }

    async fn get_lag(
        &self,
        request: Request<v1::GetLagRequest>,
    ) -> Result<Response<v1::GetLagResponse>, Status> {
        self.access.grpc(&request, Action::Operate)?;
        Ok(Response::new(v1::GetLagResponse {
            read_models: self
                .lags
                .0
                .iter()
                .map(|(name, topic, view)| lag_to_proto(*name, topic, view))
                .collect(),
        }))
    }
}
