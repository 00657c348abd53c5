//! gRPC service `recoup.v1.SnapshotImports`: uploads in chunks, batches of rows, reports.

use std::path::PathBuf;

use recoup_proto::tenant::tenant_of;
use recoup_proto::v1;
use recoup_proto::v1::snapshot_imports_server::{SnapshotImports, SnapshotImportsServer};
use tonic::{Request, Response, Status, Streaming};

use crate::import::{ImportError, ImportRequest, Importer};
use crate::store::StoreError;
use crate::upload::{RowsReader, Spool, SpoolError, open_file, rows_import_id};

/// Errors per `GetImport` page: default and most.
pub const DEFAULT_ERRORS_PAGE: u32 = 1000;
pub const MAX_ERRORS_PAGE: u32 = 10_000;

/// The import API.
#[derive(Clone)]
pub struct ImportService {
    importer: Importer,
    spool_dir: PathBuf,
    max_upload_bytes: u64,
}

impl ImportService {
    pub fn new(importer: Importer, spool_dir: PathBuf, max_upload_bytes: u64) -> Self {
        Self {
            importer,
            spool_dir,
            max_upload_bytes,
        }
    }

    /// The tonic service; messages up to 8 MiB (upload chunks should stay well below).
    pub fn into_server(self) -> SnapshotImportsServer<Self> {
        SnapshotImportsServer::new(self).max_decoding_message_size(8 * 1024 * 1024)
    }
}

/// The one place import errors become gRPC codes.
pub fn status_of(error: ImportError) -> Status {
    match error {
        ImportError::AlreadyRunning(_) => Status::aborted(error.to_string()),
        // The broker may come back: the client should send the same upload again.
        ImportError::Publish(_) => Status::unavailable(error.to_string()),
        ImportError::Store(_) | ImportError::Reader(_) => {
            tracing::error!(%error, "import failed");
            Status::internal(error.to_string())
        }
    }
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

fn origin(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

#[tonic::async_trait]
impl SnapshotImports for ImportService {
    async fn upload(
        &self,
        request: Request<Streaming<v1::UploadRequest>>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        let tenant = tenant_of(&request)?;
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
        let data_origin = origin(&header.data_origin);
        let mut spool = Spool::create(
            &self.spool_dir,
            format,
            data_origin.as_deref(),
            self.max_upload_bytes,
        )
        .await
        .map_err(spool_status)?;
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(v1::upload_request::Part::Chunk(bytes)) => {
                    spool.write(&bytes).await.map_err(spool_status)?
                }
                Some(v1::upload_request::Part::Header(_)) => {
                    return Err(Status::invalid_argument(
                        "an upload has one header, as its first message",
                    ));
                }
                None => {}
            }
        }
        let spooled = spool.finish().await.map_err(spool_status)?;
        let path = spooled.path.clone();
        let sheet = origin(&header.sheet);
        let report = self
            .importer
            .import(
                ImportRequest {
                    tenant,
                    import_id: spooled.import_id.clone(),
                    format,
                    data_origin,
                    file_name: header.file_name,
                },
                move || open_file(format, &path, sheet.as_deref()),
            )
            .await
            .map_err(status_of)?;
        drop(spooled);
        Ok(Response::new(report))
    }

    async fn import_rows(
        &self,
        request: Request<v1::ImportRowsRequest>,
    ) -> Result<Response<v1::ImportReport>, Status> {
        let tenant = tenant_of(&request)?;
        let v1::ImportRowsRequest { data_origin, rows } = request.into_inner();
        let data_origin = origin(&data_origin);
        let import_id = rows_import_id(data_origin.as_deref(), &rows);
        let report = self
            .importer
            .import(
                ImportRequest {
                    tenant,
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
        let tenant = tenant_of(&request)?;
        let r = request.get_ref();
        if r.import_id.is_empty() {
            return Err(Status::invalid_argument("import_id is required"));
        }
        let page = match r.errors_page_size {
            0 => DEFAULT_ERRORS_PAGE,
            n if n > MAX_ERRORS_PAGE => {
                return Err(Status::invalid_argument(format!(
                    "errors_page_size must be at most {MAX_ERRORS_PAGE}, got {n}"
                )));
            }
            n => n,
        } as usize;
        let from = match r.errors_page_token.as_str() {
            "" => 0,
            token => token.parse::<u64>().map_err(|_| {
                Status::invalid_argument("errors_page_token is not one this service issued")
            })?,
        };
        let report = self
            .importer
            .report(&tenant, &r.import_id, from, page)
            .map_err(store_status)?
            .ok_or_else(|| Status::not_found(format!("import {} not found", r.import_id)))?;
        Ok(Response::new(report))
    }
}
