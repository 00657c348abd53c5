//! gRPC service `recoup.v1.DebtCollectionCases`.

use debt_cases::{Command, DomainError};
use event_backbone::envelope::{EventMetadata, new_event_id};
use recoup_access::{Access, Action};
use recoup_proto::convert::{
    case_to_proto, changes_from_proto, check_changes_dates, check_content_dates, content_from_proto,
};
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_server::{
    DebtCollectionCases, DebtCollectionCasesServer,
};
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::store::{CaseCommand, CommandError, EventStore, StoreError};

/// The metadata key a client may set to trace a request through every event it causes.
pub const CORRELATION_METADATA_KEY: &str = recoup_proto::contract::metadata::CORRELATION_ID;

/// Cases per page of `SearchCases` when the request names no size, and at most.
const DEFAULT_SEARCH_PAGE: u32 = 20;
const MAX_SEARCH_PAGE: u32 = 100;
/// Index entries one `SearchCases` page reads at most, per case it may return.
const SEARCH_EXAMINE_FACTOR: usize = 10;
/// What a `SearchCases` page token starts with; the prefix's length in bytes and the last
/// reference read follow (`after:7:INV-OTHER-2`).
const SEARCH_TOKEN_PREFIX: &str = "after:";

/// The page token of a search for a prefix of `prefix_len` bytes that read up to `after`.
fn search_token(prefix_len: usize, after: &str) -> String {
    format!("{SEARCH_TOKEN_PREFIX}{prefix_len}:{after}")
}

/// Where a search for `prefix` goes on from `token`: only a token issued for that very prefix
/// (the same length, and its reference starts with it, so it started with this prefix).
fn search_after(token: &str, prefix: &str) -> Option<String> {
    let (len, after) = token.strip_prefix(SEARCH_TOKEN_PREFIX)?.split_once(':')?;
    let fits = len.parse::<usize>().ok()? == prefix.len()
        && after.starts_with(prefix)
        && after.len() <= debt_cases::MAX_TEXT_LEN;
    fits.then(|| after.to_owned())
}

/// The command API over the event store.
#[derive(Clone)]
pub struct CaseCommands {
    store: EventStore,
    access: Access,
}

impl CaseCommands {
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            access: Access::Open,
        }
    }

    /// Checks every request's credential against `access` (default: [`Access::Open`]).
    pub fn with_access(self, access: Access) -> Self {
        Self { access, ..self }
    }

    /// The tonic service, ready to be added to a server.
    pub fn into_server(self) -> DebtCollectionCasesServer<Self> {
        DebtCollectionCasesServer::new(self)
    }

    async fn run<T>(
        &self,
        request: &Request<T>,
        command: CaseCommand,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let acting = self.access.grpc(request, Action::CaseCommand)?;
        let metadata = EventMetadata {
            correlation_id: correlation_id(request),
            causation_id: new_event_id(),
            actor: acting.actor().to_owned(),
        };
        let tenant = acting.tenant;
        let (name, case_id) = match &command {
            CaseCommand::Create(_) => ("CreateCase", String::new()),
            CaseCommand::Existing {
                case_id, command, ..
            } => (command.name(), case_id.clone()),
        };
        let span = tracing::info_span!(
            "command",
            %tenant,
            command = name,
            case_id = %case_id,
            correlation_id = %metadata.correlation_id
        );
        let case = self
            .store
            .execute(&tenant, command, metadata)
            .instrument(span.clone())
            .await
            .map_err(|e| span.in_scope(|| status_of(e)))?;
        span.in_scope(
            || tracing::debug!(case_id = %case.id, version = case.version, "command accepted"),
        );
        Ok(Response::new(v1::CaseReply {
            case: Some(case_to_proto(&case)),
        }))
    }

    /// A command that names only the case and the version: `MarkReviewed`, `Close`, ...
    async fn on_case(
        &self,
        request: Request<v1::CaseCommand>,
        command: Command,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let r = request.get_ref();
        self.existing(&request, &r.case_id, r.expected_version, command)
            .await
    }

    async fn existing<T>(
        &self,
        request: &Request<T>,
        case_id: &str,
        expected_version: u64,
        command: Command,
    ) -> Result<Response<v1::CaseReply>, Status> {
        check_case_id(case_id)?;
        if expected_version == 0 {
            return Err(Status::invalid_argument(
                "expected_version is required: the version of the case you last read",
            ));
        }
        let command = CaseCommand::Existing {
            case_id: case_id.to_owned(),
            expected_version,
            command,
        };
        self.run(request, command).await
    }
}

fn correlation_id<T>(request: &Request<T>) -> String {
    request
        .metadata()
        .get(CORRELATION_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(new_event_id)
}

fn check_case_id(case_id: &str) -> Result<(), Status> {
    if case_id.is_empty() {
        return Err(Status::invalid_argument("case_id is required"));
    }
    Uuid::parse_str(case_id)
        .map(|_| ())
        .map_err(|_| Status::invalid_argument(format!("case_id must be a UUID, got {case_id:?}")))
}

/// The one place a command failure becomes a gRPC status.
pub fn status_of(error: CommandError) -> Status {
    match error {
        CommandError::Rejected(rejection) => {
            let message = rejection.to_string();
            match rejection {
                DomainError::VersionConflict { .. } => Status::aborted(message),
                DomainError::IllegalTransition { .. }
                | DomainError::Terminal { .. }
                | DomainError::AmountFrozen { .. }
                | DomainError::CollectedExceedsAmount { .. } => {
                    Status::failed_precondition(message)
                }
                DomainError::InvalidArgument { .. } => Status::invalid_argument(message),
                DomainError::NotFound => Status::not_found(message),
                DomainError::ExternalIdConflict { .. }
                | DomainError::ReceiptConflict { .. }
                | DomainError::ReferenceTaken { .. } => Status::already_exists(message),
            }
        }
        CommandError::Failed(StoreError::Closed) => {
            Status::unavailable("the case service is shutting down; retry")
        }
        CommandError::Failed(failure) => {
            tracing::error!(error = %failure, "command failed in the event store");
            Status::internal(format!("event store failure, retry later: {failure}"))
        }
    }
}

#[tonic::async_trait]
impl DebtCollectionCases for CaseCommands {
    async fn create_case(
        &self,
        request: Request<v1::CreateCaseRequest>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let content = request
            .get_ref()
            .content
            .clone()
            .ok_or_else(|| Status::invalid_argument("content is required"))?;
        check_content_dates(&content).map_err(|e| status_of(e.into()))?;
        let content = content_from_proto(content).map_err(|e| status_of(e.into()))?;
        self.run(&request, CaseCommand::Create(content)).await
    }

    async fn update_case(
        &self,
        request: Request<v1::UpdateCaseRequest>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let r = request.get_ref();
        let changes = r.changes.clone().unwrap_or_default();
        check_changes_dates(&changes).map_err(|e| status_of(e.into()))?;
        let changes = changes_from_proto(changes).map_err(|e| status_of(e.into()))?;
        self.existing(
            &request,
            &r.case_id,
            r.expected_version,
            Command::Update(changes),
        )
        .await
    }

    async fn mark_reviewed(
        &self,
        request: Request<v1::CaseCommand>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        self.on_case(request, Command::MarkReviewed).await
    }

    async fn mark_prepared(
        &self,
        request: Request<v1::CaseCommand>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        self.on_case(request, Command::MarkPrepared).await
    }

    async fn start_processing(
        &self,
        request: Request<v1::CaseCommand>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        self.on_case(request, Command::StartProcessing).await
    }

    async fn add_payment_receipt(
        &self,
        request: Request<v1::AddPaymentReceiptRequest>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let r = request.get_ref();
        let command = Command::AddPaymentReceipt {
            external_id: r.receipt_external_id.clone(),
            amount_minor: r.amount_minor,
        };
        self.existing(&request, &r.case_id, r.expected_version, command)
            .await
    }

    async fn close_case(
        &self,
        request: Request<v1::CaseCommand>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        self.on_case(request, Command::Close).await
    }

    async fn fail_case(
        &self,
        request: Request<v1::FailCaseRequest>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let r = request.get_ref();
        let command = Command::Fail {
            reason: r.reason.clone(),
        };
        self.existing(&request, &r.case_id, r.expected_version, command)
            .await
    }

    async fn delete_case(
        &self,
        request: Request<v1::CaseCommand>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        self.on_case(request, Command::Delete).await
    }

    async fn get_case(
        &self,
        request: Request<v1::GetCaseRequest>,
    ) -> Result<Response<v1::CaseReply>, Status> {
        let tenant = self.access.grpc(&request, Action::Read)?.tenant;
        let case_id = request.get_ref().case_id.as_str();
        check_case_id(case_id)?;
        let case = self
            .store
            .get(&tenant, case_id)
            .map_err(|e| status_of(e.into()))?
            .filter(|c| c.deleted_on.is_none())
            .ok_or_else(|| Status::not_found(format!("case {case_id} not found")))?;
        Ok(Response::new(v1::CaseReply {
            case: Some(case_to_proto(&case)),
        }))
    }

    async fn search_cases(
        &self,
        request: Request<v1::SearchCasesRequest>,
    ) -> Result<Response<v1::SearchCasesResponse>, Status> {
        let tenant = self.access.grpc(&request, Action::Read)?.tenant;
        let r = request.get_ref();
        let prefix = r.reference_prefix.as_str();
        if prefix.is_empty() {
            return Err(Status::invalid_argument("reference_prefix is required"));
        }
        if prefix.len() > debt_cases::MAX_TEXT_LEN {
            return Err(Status::invalid_argument(format!(
                "reference_prefix is {} bytes long; a reference has at most {}",
                prefix.len(),
                debt_cases::MAX_TEXT_LEN
            )));
        }
        let size = match r.page_size {
            0 => DEFAULT_SEARCH_PAGE,
            n if n > MAX_SEARCH_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "page_size must be at most {MAX_SEARCH_PAGE}, got {n}"
                )));
            }
            n => n,
        } as usize;
        let after = match r.page_token.as_str() {
            "" => None,
            token => Some(search_after(token, prefix).ok_or_else(|| {
                Status::invalid_argument(
                    "page_token is not one this service issued for this reference_prefix",
                )
            })?),
        };
        // Up to a page of case streams replayed: off the async runtime's threads.
        let (store, prefix) = (self.store.clone(), prefix.to_owned());
        let found = tokio::task::spawn_blocking(move || {
            store.search_references(
                &tenant,
                &prefix,
                after.as_deref(),
                size,
                size * SEARCH_EXAMINE_FACTOR,
            )
        })
        .await
        .map_err(|e| Status::internal(format!("the search failed: {e}")))?
        .map_err(|e| status_of(e.into()))?;
        Ok(Response::new(v1::SearchCasesResponse {
            cases: found.cases.iter().map(case_to_proto).collect(),
            next_page_token: found
                .after
                .map(|after| search_token(r.reference_prefix.len(), &after))
                .unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_token_goes_on_only_for_the_prefix_it_was_issued_for() {
        let token = search_token("INV-O".len(), "INV-OTHER-2");
        assert_eq!(
            search_after(&token, "INV-O").as_deref(),
            Some("INV-OTHER-2")
        );
        // A shorter or another prefix of the same length would skip or leave the search.
        assert_eq!(search_after(&token, "INV-"), None);
        assert_eq!(search_after(&token, "INV-A"), None);
        assert_eq!(search_after("INV-OTHER-2", "INV-O"), None);
        assert_eq!(search_after("after:x:INV-OTHER-2", "INV-O"), None);
        let long = search_token(1, &"I".repeat(debt_cases::MAX_TEXT_LEN + 1));
        assert_eq!(search_after(&long, "I"), None);
    }
}
