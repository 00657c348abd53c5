//! API keys at the trust boundary (issue #13, first step): with `Access::Keys`, every gRPC call
//! and HTTP route checks the credential, the tenant it may act for and the role it needs.
//! Walks calls × credentials × own / other tenant and asserts each cell's exact outcome.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use chrono::Utc;
use common::{channel, config, content, start};
use recoup::platform::{RunningPlatform, Security};
use recoup_access::api_key::issue;
use recoup_access::{Action, KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::api_keys_client::ApiKeysClient;
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

fn spec(role: Role, tenants: &[&str]) -> KeySpec {
    KeySpec {
        name: format!("{role}-key"),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        role,
        expires_at: None,
        created_by: "test".to_owned(),
    }
}

/// A key of `role` for `tenants`, made through the platform's registry (the access topic).
async fn make_key(platform: &RunningPlatform, role: Role, tenants: &[&str]) -> String {
    let registry = platform.keys().expect("API keys are on");
    registry
        .create(&spec(role, tenants), Utc::now())
        .await
        .unwrap()
        .key
}

async fn keys(platform: &RunningPlatform) -> Keys {
    let mut by_role = Vec::new();
    for role in Role::ALL {
        by_role.push((role, make_key(platform, role, &["acme"]).await));
    }
    let make = |role| spec(role, &["acme"]);
    // Made like the others, never published.
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

/// A platform with API keys on, as `recoup up` runs by default, without the first admin key.
fn secured(dir: &std::path::Path) -> recoup::platform::PlatformConfig {
    let mut cfg = config(dir);
    cfg.security = Security {
        first_admin_key: false,
        ..Security::default()
    };
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_checks_the_credential_its_tenant_and_its_role() {
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let keys = keys(&platform).await;
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

/// Without keys (`--insecure`) the same calls are served for the tenant they name.
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

fn with_key<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// The keys `key` may see, through `recoup.v1.ApiKeys`.
async fn keys_seen(platform: &RunningPlatform, key: &str) -> Vec<v1::ApiKey> {
    let mut admin = ApiKeysClient::new(channel(platform).await);
    let list = admin.list_keys(with_key(v1::ListKeysRequest {}, key));
    list.await.unwrap().into_inner().keys
}

/// `recoup up` with no configuration: the first start makes an admin key for the default
/// tenant, in a file only its owner may read; a restart keeps it (and makes no other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_makes_an_admin_key_only_its_owner_can_read() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.security = Security::default();
    let platform = start(cfg.clone()).await;
    let path = dir.path().join("admin.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let key = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    let listed = keys_seen(&platform, &key).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tenants, ["default"]);
    assert_eq!(listed[0].role, v1::Role::Admin as i32);
    assert_eq!(listed[0].created_by, "bootstrap");
    assert!(listed[0].secret_sha256.is_empty(), "no hash is answered");
    platform.shutdown().await.unwrap();

    // Again, on a new embedded broker: the key store is the record, published again.
    let platform = start(cfg).await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        key,
        "no second key"
    );
    let listed = keys_seen(&platform, &key).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(platform.keys().unwrap().list().len(), 1);
    platform.shutdown().await.unwrap();
}

/// `recoup.v1.ApiKeys`: an admin makes, sees and revokes the keys of its own tenants, nobody
/// else's; other roles are refused; a revoked key is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_the_keys_of_their_tenants_only() {
    let dir = TempDir::new().unwrap();
    let platform = start(secured(dir.path())).await;
    let admin_key = make_key(&platform, Role::Admin, &["acme"]).await;
    let foreign = make_key(&platform, Role::Viewer, &["globex"]).await;
    let foreign_id = foreign[4..20].to_owned();
    let ch = channel(&platform).await;
    let mut keys = ApiKeysClient::new(ch.clone());
    let create = |role: v1::Role, tenants: &[&str]| v1::CreateKeyRequest {
        name: "dash".to_owned(),
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        role: role as i32,
        expires_in_days: 30,
    };

    let made = keys
        .create_key(with_key(create(v1::Role::Viewer, &[]), &admin_key))
        .await
        .unwrap()
        .into_inner();
    let record = made.record.unwrap();
    assert_eq!(record.tenants, ["acme"], "the admin's tenant");
    assert!(record.expires_at.is_some());
    assert!(record.created_by.starts_with("key:"));
    let mut query = QueryClient::new(ch.clone());
    let list = v1::ListCasesRequest::default();
    query.list_cases(with_key(list, &made.key)).await.unwrap();

    let refused = keys
        .create_key(with_key(create(v1::Role::Viewer, &["globex"]), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = keys
        .create_key(with_key(create(v1::Role::Admin, &[]), &made.key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("needs the admin role"),
        "{refused:?}"
    );
    let refused = keys
        .create_key(with_key(create(v1::Role::Unspecified, &[]), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let listed = keys_seen(&platform, &admin_key).await;
    assert_eq!(
        listed.len(),
        2,
        "the admin's own and the viewer: not globex's"
    );
    assert!(listed.iter().all(|k| k.tenants == ["acme"]));
    assert!(listed.iter().all(|k| k.secret_sha256.is_empty()));
    let revoke = |id: &str| v1::RevokeKeyRequest { id: id.to_owned() };
    let refused = keys
        .revoke_key(with_key(revoke(&foreign_id), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::NotFound,
        "another tenant's key is not named"
    );

    let revoked = keys
        .revoke_key(with_key(revoke(&record.id), &admin_key))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    let list = v1::ListCasesRequest::default();
    let refused = query
        .list_cases(with_key(list, &made.key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().ends_with("was revoked"), "{refused:?}");
    let again = keys
        .revoke_key(with_key(revoke(&record.id), &admin_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.revoked_at, revoked.revoked_at,
        "the first revocation stays"
    );
    platform.shutdown().await.unwrap();
}

/// Off loopback: `--insecure` is refused, and plaintext is refused unless a proxy terminates
/// TLS in front; the messages name the flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_off_loopback_need_tls_or_a_proxy_that_terminates_it() {
    let dir = TempDir::new().unwrap();
    let everywhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let mut cfg = config(dir.path());
    cfg.grpc_addr = Some(everywhere);
    let refused = recoup::platform::start(cfg.clone()).await.err().unwrap();
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("--insecure") && refused.contains("loopback"),
        "{refused}"
    );

    cfg.security = Security::default();
    let refused = recoup::platform::start(cfg.clone()).await.err().unwrap();
    let refused = format!("{refused:#}");
    for flag in ["--tls-cert", "--tls-key", "--tls-terminated-upstream"] {
        assert!(refused.contains(flag), "{flag}: {refused}");
    }

    cfg.security.tls_terminated_upstream = true;
    let platform = start(cfg).await;
    let refused = QueryClient::new(channel(&platform).await)
        .list_cases(v1::ListCasesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "credentials stay on");
    platform.shutdown().await.unwrap();
}
