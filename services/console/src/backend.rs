//! The console's only way to the data: the gRPC services of this process, called through the
//! same router the gRPC listener serves — the credential check, the throttle and the metrics
//! included — without a socket in between. The browser's address goes along (as the
//! listener's connection info), so the throttle holds back the browser, not the console.

use axum::Router;
use axum::http::Extensions;
use recoup_proto::contract::metadata::{AUTHORIZATION, TENANT};
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::session::Session;

pub type Cases = DebtCollectionCasesClient<Router>;
pub type Query = QueryClient<Router>;
pub type Imports = SnapshotImportsClient<Router>;

/// The gRPC router of this process.
#[derive(Clone)]
pub struct Backend {
    grpc: Router,
}

impl Backend {
    pub fn new(grpc: Router) -> Self {
        Self { grpc }
    }

    /// The router itself, for clients of other services (the health service).
    pub fn grpc(&self) -> Router {
        self.grpc.clone()
    }

    pub fn cases(&self) -> Cases {
        DebtCollectionCasesClient::new(self.grpc.clone())
    }

    pub fn query(&self) -> Query {
        QueryClient::new(self.grpc.clone())
    }

    /// The importer. Its answers carry up to 1,000 errors with their raw cells: more than
    /// tonic's default of 4 MiB may come.
    pub fn imports(&self) -> Imports {
        SnapshotImportsClient::new(self.grpc.clone()).max_decoding_message_size(64 << 20)
    }
}

/// A request as `session`, carrying what the browser's request carried for the listener (its
/// peer address).
pub fn request<T>(session: &Session, browser: &Extensions, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::new(),
        browser.clone(),
        message,
    );
    let metadata = request.metadata_mut();
    if let Ok(tenant) = MetadataValue::try_from(session.tenant.as_str()) {
        metadata.insert(TENANT, tenant);
    }
    if let Some(value) = session
        .authorization
        .as_deref()
        .and_then(|v| MetadataValue::try_from(v).ok())
    {
        metadata.insert(AUTHORIZATION, value);
    }
    request
}

/// What a page says of a refusal or failure of a service.
pub fn explain(status: &Status) -> String {
    match status.code() {
        Code::Unimplemented => {
            "this process does not run the service the page needs (run `recoup up`, or open the \
             console of the process that runs it)"
                .to_owned()
        }
        Code::Unauthenticated => format!("signed out: {}", status.message()),
        _ => status.message().to_owned(),
    }
}
