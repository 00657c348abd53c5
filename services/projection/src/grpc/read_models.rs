//! gRPC service `recoup.v1.ReadModels`: rebuilds of the read models, for admins.

use recoup_access::{Access, Action};
use recoup_proto::to_timestamp;
use recoup_proto::v1;
use recoup_proto::v1::read_models_server::{ReadModels, ReadModelsServer};
use tonic::{Request, Response, Status};

use crate::generations::ReadModelName;
use crate::rebuild::{RebuildState, RebuildStatus, Rebuilds};

/// The API over a projection's rebuilds.
#[derive(Clone)]
pub struct ReadModelsApi {
    rebuilds: Rebuilds,
    access: Access,
}

impl ReadModelsApi {
    pub fn new(rebuilds: Rebuilds, access: Access) -> Self {
        Self { rebuilds, access }
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

fn to_proto(status: RebuildStatus) -> v1::RebuildStatus {
    v1::RebuildStatus {
        read_model: match status.read_model {
            ReadModelName::Cases => v1::ReadModel::Cases,
            ReadModelName::Accounts => v1::ReadModel::Accounts,
            ReadModelName::Deals => v1::ReadModel::Deals,
        }
        .into(),
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
}
