//! API keys at the trust boundary (issue #13, first step): with `Access::Keys`, every gRPC call
//! and HTTP route checks the credential, the tenant it may act for and the role it needs.
//! Walks calls × credentials × own / other tenant and asserts each cell's exact outcome.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use common::{channel, config, content, start};
use recoup_access::api_key::issue;
use recoup_access::{Access, Action, KeyRing, KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

/// Who calls: a role's key of tenant acme, no credential, or a key recoup does not know.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Role(Role),
    Nobody,
    UnknownKey,
}

/// Every call of the matrix, with the right it needs and what it answers once allowed.
#[derive(Debug, Clone, Copy)]
enum Call {
    CreateCase,
    CommandsGetCase,
    QueryGetCase,
    ListCases,
    GetImport,
    ImportRows,
    HttpReport,
    HttpUpload,
}

impl Call {
    const ALL: [Call; 8] = [
        Call::CreateCase,
        Call::CommandsGetCase,
        Call::QueryGetCase,
        Call::ListCases,
        Call::GetImport,
        Call::ImportRows,
        Call::HttpReport,
        Call::HttpUpload,
    ];

    fn action(self) -> Action {
        match self {
            Call::CreateCase => Action::CaseCommand,
            Call::ImportRows | Call::HttpUpload => Action::Import,
            _ => Action::Read,
        }
    }
}

/// How a call ended, gRPC and HTTP alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The call passed the boundary and was answered as the service answers it.
    Served,
    Unauthenticated,
    Denied,
}

struct Keys {
    by_role: Vec<(Role, String)>,
    unknown: String,
}

fn keys(ring: &KeyRing) -> Keys {
    let make = |role| KeySpec {
        name: format!("{role}-key"),
        tenants: vec!["acme".to_owned()],
        role,
        expires_at: None,
        created_by: "test".to_owned(),
    };
    let by_role = Role::ALL
        .into_iter()
        .map(|role| {
            let issued = issue(&make(role), Utc::now()).unwrap();
            ring.upsert(issued.record);
            (role, issued.key)
        })
        .collect();
    // Made like the others, never added to the ring.
    let unknown = issue(&make(Role::Admin), Utc::now()).unwrap().key;
    Keys { by_role, unknown }
}

fn credential(keys: &Keys, caller: Caller) -> Option<String> {
    match caller {
        Caller::Role(role) => keys
            .by_role
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, key)| format!("Bearer {key}")),
        Caller::Nobody => None,
        Caller::UnknownKey => Some(format!("Bearer {}", keys.unknown)),
    }
}

fn request<T>(message: T, tenant: &str, authorization: Option<&str>) -> tonic::Request<T> {
    let mut r = common::req(tenant, message);
    if let Some(value) = authorization {
        r.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    r
}

fn grpc_outcome<T>(result: Result<T, tonic::Status>, served: &[Code]) -> Outcome {
    match result {
        Ok(_) => Outcome::Served,
        Err(status) if status.code() == Code::Unauthenticated => Outcome::Unauthenticated,
        Err(status) if status.code() == Code::PermissionDenied => Outcome::Denied,
        Err(status) if served.contains(&status.code()) => Outcome::Served,
        Err(status) => panic!("unexpected answer {status:?}"),
    }
}

fn http_outcome(status: u16, served: &[u16]) -> Outcome {
    match status {
        401 => Outcome::Unauthenticated,
        403 => Outcome::Denied,
        s if served.contains(&s) => Outcome::Served,
        s => panic!("unexpected HTTP status {s}"),
    }
}

async fn http_status(
    addr: SocketAddr,
    head: &str,
    tenant: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{head} HTTP/1.1\r\nhost: recoup\r\nx-recoup-tenant: {tenant}\r\ncontent-type: text/csv\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    if let Some(value) = authorization {
        request.push_str(&format!("authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

async fn call(
    ch: &Channel,
    http: SocketAddr,
    call: Call,
    tenant: &str,
    auth: Option<&str>,
) -> Outcome {
    let mut cases = DebtCollectionCasesClient::new(ch.clone());
    let mut query = QueryClient::new(ch.clone());
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let get_case = || v1::GetCaseRequest {
        case_id: "0190e3f4-0000-7000-8000-000000000000".to_owned(),
    };
    match call {
        Call::CreateCase => {
            let create = v1::CreateCaseRequest {
                content: Some(content("R-1", 1_000)),
            };
            grpc_outcome(cases.create_case(request(create, tenant, auth)).await, &[])
        }
        Call::CommandsGetCase => grpc_outcome(
            cases.get_case(request(get_case(), tenant, auth)).await,
            &[Code::NotFound],
        ),
        Call::QueryGetCase => grpc_outcome(
            query.get_case(request(get_case(), tenant, auth)).await,
            &[Code::NotFound],
        ),
        Call::ListCases => grpc_outcome(
            query
                .list_cases(request(v1::ListCasesRequest::default(), tenant, auth))
                .await,
            &[],
        ),
        Call::GetImport => {
            let get = v1::GetImportRequest {
                import_id: "0".repeat(32),
                ..Default::default()
            };
            grpc_outcome(
                imports.get_import(request(get, tenant, auth)).await,
                &[Code::NotFound],
            )
        }
        Call::ImportRows => {
            let rows = v1::ImportRowsRequest::default();
            grpc_outcome(
                imports.import_rows(request(rows, tenant, auth)).await,
                &[Code::InvalidArgument],
            )
        }
        Call::HttpReport => {
            let head = format!("GET /v1/imports/{}", "0".repeat(32));
            http_outcome(http_status(http, &head, tenant, auth, b"").await, &[404])
        }
        Call::HttpUpload => http_outcome(
            http_status(http, "POST /v1/paygo_snapshots_ts", tenant, auth, b"").await,
            &[200, 400, 422],
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_checks_the_credential_its_tenant_and_its_role() {
    let dir = TempDir::new().unwrap();
    let ring = Arc::new(KeyRing::new());
    let keys = keys(&ring);
    let mut cfg = config(dir.path());
    cfg.access = Access::Keys(ring);
    let platform = start(cfg).await;
    let ch = channel(&platform).await;
    let http = platform.http_addr.unwrap();

    let callers = Role::ALL
        .map(Caller::Role)
        .into_iter()
        .chain([Caller::Nobody, Caller::UnknownKey]);
    let mut cells = 0;
    for caller in callers {
        let auth = credential(&keys, caller);
        for tenant in ["acme", "globex"] {
            for c in Call::ALL {
                let expected = match caller {
                    Caller::Nobody | Caller::UnknownKey => Outcome::Unauthenticated,
                    Caller::Role(_) if tenant != "acme" => Outcome::Denied,
                    Caller::Role(role) if role.allows(c.action()) => Outcome::Served,
                    Caller::Role(_) => Outcome::Denied,
                };
                let got = call(&ch, http, c, tenant, auth.as_deref()).await;
                assert_eq!(got, expected, "{caller:?} {c:?} for {tenant}");
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 6 * 2 * 8);
    platform.shutdown().await.unwrap();
}

/// Without keys (`Access::Open`, today's default) the same calls are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_access_serves_every_call_for_the_tenant_named() {
    let dir = TempDir::new().unwrap();
    let platform = start(config(dir.path())).await;
    let ch = channel(&platform).await;
    let http = platform.http_addr.unwrap();
    for c in Call::ALL {
        assert_eq!(
            call(&ch, http, c, "globex", None).await,
            Outcome::Served,
            "{c:?}"
        );
    }
    platform.shutdown().await.unwrap();
}
