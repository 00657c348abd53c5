//! gRPC service `recoup.v1.SnapshotImports`: uploads in chunks, batches of rows, reports.
//! Every call counts against its tenant's rate limit first.

use futures::StreamExt;
use recoup_access::Action;
use recoup_proto::contract::metadata::AUTHORIZATION;
use recoup_proto::tenant::{TENANT_METADATA_KEY, single_value};
use recoup_proto::v1;
use recoup_proto::v1::snapshot_imports_server::{SnapshotImports, SnapshotImportsServer};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{Admission, Admitted, Refused};
use crate::import::{ImportError, ImportRequest, Stop};
use crate::limits::RateLimited;
use crate::reports::{ErrorsPage, ImportsPage, list_imports};
use crate::store::StoreError;
use crate::upload::{
    FileUpload, RowsReader, SpoolError, UploadError, Uploads, check_data_origin, non_blank,
    rows_import_id,
};

/// The metadata key of a refusal's wait, in whole seconds (as HTTP's `Retry-After`).
pub const RETRY_AFTER_METADATA_KEY: &str = "retry-after";

/// The import API.
#[derive(Clone)]
pub struct ImportService {
    uploads: Uploads,
    admission: Admission,
}

impl ImportService {
    /// Imports through `uploads`; every call passes `admission` first.
    pub fn new(uploads: Uploads, admission: Admission) -> Self {
        Self { uploads, admission }
    }

    /// The tonic service; messages up to 8 MiB (upload chunks should stay well below).
    pub fn into_server(self) -> SnapshotImportsServer<Self> {
        SnapshotImportsServer::new(self).max_decoding_message_size(8 * 1024 * 1024)
    }

    /// The request's tenant, once its caller may do `action` there and its rate limit allows
    /// the request.
    fn admit<T>(&self, request: &Request<T>, action: Action) -> Result<Admitted, Status> {
        let metadata = request.metadata();
        let value = |key: &str| single_value(metadata, key).map_err(Status::invalid_argument);
        self.admission
            .admit(
                value(AUTHORIZATION)?,
                value(TENANT_METADATA_KEY)?,
                "metadata",
                action,
            )
            .map_err(|refused| match refused {
                Refused::Tenant(why) => Status::invalid_argument(why),
                Refused::Access(error) => error.into(),
                Refused::Limited(limited) => limited_status(limited),
            })
    }
}

/// The one place import errors become gRPC codes.
pub fn status_of(error: ImportError) -> Status {
    match error {
        // The broker may come back: the client should send the same upload again.
        ImportError::Publish(_) | ImportError::KafkaUnreachable => {
            Status::unavailable(error.to_string())
        }
        ImportError::Store(_) | ImportError::Reader(_) => {
            tracing::error!(%error, "import failed");
            Status::internal(error.to_string())
        }
        ImportError::Busy {
            retry_after_secs, ..
        } => with_retry_after(
            Status::resource_exhausted(error.to_string()),
            retry_after_secs,
        ),
        ImportError::Stopped(Stop::Deadline(_)) => Status::deadline_exceeded(error.to_string()),
        ImportError::Stopped(Stop::Shutdown) => Status::unavailable(error.to_string()),
    }
}

/// `status` with the wait in metadata `retry-after`.
fn with_retry_after(mut status: Status, secs: u64) -> Status {
    status
        .metadata_mut()
        .insert(RETRY_AFTER_METADATA_KEY, MetadataValue::from(secs));
    status
}

/// `RESOURCE_EXHAUSTED` with the wait in metadata `retry-after`.
pub fn limited_status(refused: RateLimited) -> Status {
    let secs = refused.retry_after_secs();
    with_retry_after(Status::resource_exhausted(refused.to_string()), secs)
}

fn store_status(error: StoreError) -> Status {
    tracing::error!(%error, "importer store failure");
    Status::internal(error.to_string())
}

fn spool_status(error: SpoolError) -> Status {
    match error {
        SpoolError::TooLarge { .. } => Status::resource_exhausted(error.to_string()),
        SpoolError::Io(_) => {
            tracing::error!(%error, "cannot spool upload");
            Status::internal(error.to_string())
        }
    }
}

fn upload_status(error: UploadError<Status>) -> Status {
    match error {
        UploadError::Body(status) => status,
        UploadError::Invalid(why) => Status::invalid_argument(why),
        UploadError::Idle { .. } => Status::deadline_exceeded(error.to_string()),
        UploadError::Spool(error) => spool_status(error),
        UploadError::Import(error) => status_of(error),
    }
}

#[tonic::async_trait]
impl SnapshotImports for ImportService {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        let admitted = self.admit(&request, Action::Import)?;
        let mut stream = request.into_inner();
        let header = match stream.message().await? {
            Some(v1::UploadRequest {
                part: Some(v1::upload_request::Part::Header(header)),
            }) => header,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of an upload must be its header (format, data_origin)",
                ));
            }
        };
        let format = match v1::FileFormat::try_from(header.format) {
            Ok(f @ (v1::FileFormat::Csv | v1::FileFormat::Xlsx | v1::FileFormat::Json)) => f,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "header.format must be FILE_FORMAT_CSV, FILE_FORMAT_XLSX or FILE_FORMAT_JSON, \
                     got {}",
                    header.format
                )));
            }
        };
        let upload = FileUpload::new(
            format,
            &header.data_origin,
            &header.file_name,
            &header.sheet,
        );
        let chunks = stream.map(|message| match message?.part {
            Some(v1::upload_request::Part::Chunk(bytes)) => Ok(bytes),
            Some(v1::upload_request::Part::Header(_)) => Err(Status::invalid_argument(
                "an upload has one header, as its first message",
            )),
            None => Ok(Vec::new()),
        });
        let report = self
            .uploads
            .import(admitted, upload, chunks)
            .await
            .map_err(upload_status)?;
        Ok(Response::new(report))
    }

    async fn import_rows(
        &self,
        request: Request<v1::ImportRowsRequest>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        let Admitted { tenant, actor } = self.admit(&request, Action::Import)?;
        let v1::ImportRowsRequest { data_origin, rows } = request.into_inner();
        let data_origin = non_blank(&data_origin);
        check_data_origin(data_origin.as_deref()).map_err(Status::invalid_argument)?;
        let import_id = rows_import_id(data_origin.as_deref(), &rows);
        let importer = self.uploads.importer();
        let permit = importer.admit().map_err(status_of)?;
        let report = importer
            .import(
                permit,
                ImportRequest {
                    tenant,
                    actor,
                    import_id,
                    format: v1::FileFormat::Rows,
                    data_origin,
                    file_name: String::new(),
                },
                move || Ok(Box::new(RowsReader::new(rows))),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(report))
    }

    async fn get_import(
        &self,
        request: Request<v1::GetImportRequest>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        let tenant = self.admit(&request, Action::Read)?.tenant;
        let r = request.get_ref();
        if r.import_id.is_empty() {
            return Err(Status::invalid_argument("import_id is required"));
        }
        let page = ErrorsPage::parse(r.errors_page_size, &r.errors_page_token)
            .map_err(Status::invalid_argument)?;
        let report = self
            .uploads
            .importer()
            .report(&tenant, &r.import_id, page.from, page.size)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("import {} not found", r.import_id)))?;
        Ok(Response::new(report))
    }

    async fn list_imports(
        &self,
        request: Request<v1::ListImportsRequest>,
    ) -> Result<Response<v1::ListImportsResponse>, Status> {
        let tenant = self.admit(&request, Action::Read)?.tenant;
        let r = request.get_ref();
        let page =
            ImportsPage::parse(r.page_size, &r.page_token).map_err(Status::invalid_argument)?;
        let store = self.uploads.importer().store();
        let listed = list_imports(store, &tenant, &page).map_err(store_status)?;
        Ok(Response::new(listed))
    }
}
