//! The trust boundary's whole matrix: every RPC of the four gRPC APIs and every HTTP route ×
//! every role, no credential and an unknown key × the key's own tenant and another, each cell
//! asserted exactly: served (past the boundary, answered as the service answers),
//! UNAUTHENTICATED / 401, or PERMISSION_DENIED / 403.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use chrono::Utc;
use common::{channel, config, content, eventually, on_broker, secured, start, tansu_if_asked};
use recoup::platform::RunningPlatform;
use recoup_access::api_key::issue;
use recoup_access::{Action, KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::api_keys_client::ApiKeysClient;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

/// Declares `Call` and `ALL`, every one of its values, from one list.
macro_rules! calls {
    ($($(#[$doc:meta])* $call:ident),* $(,)?) => {
        /// Every call there is.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Call {
            $($(#[$doc])* $call),*
        }
        const ALL: &[Call] = &[$(Call::$call),*];
    };
}

calls![
    /// recoup.v1.DebtCollectionCases
    CreateCase, UpdateCase, MarkReviewed, MarkPrepared, StartProcessing, AddPaymentReceipt,
    CloseCase, FailCase, DeleteCase, CommandsGetCase, SearchCases,
    /// recoup.v1.Query
    GetCase, ListCases, CaseStats, GetCaseHistory, GetAccount, ListAccountSnapshots, PortfolioPar,
    PortfolioParSeries, ListDiscrepancies, GetDeal,
    ListDeals, CollectionsFunnel, PtpSummary, DpdBuckets, WatchDoNotContact,
    /// recoup.v1.SnapshotImports
    Upload, ImportRows, GetImport, ListImports,
    /// recoup.v1.ApiKeys
    CreateKey, ListKeys, RevokeKey,
    /// The importer's HTTP routes
    HttpUpload, HttpList, HttpReport, HttpErrorsCsv,
];

use Call::*;

impl Call {
    fn action(self) -> Action {
        match self {
            CreateCase | UpdateCase | MarkReviewed | MarkPrepared | StartProcessing
            | AddPaymentReceipt | CloseCase | FailCase | DeleteCase => Action::CaseCommand,
            Upload | ImportRows | HttpUpload => Action::Import,
            CreateKey | ListKeys | RevokeKey => Action::ManageKeys,
            _ => Action::Read,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Role(Role),
    Nobody,
    UnknownKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Served,
    Unauthenticated,
    Denied,
}

/// The answers a call gives once past the boundary (besides OK): the cases, imports and keys
/// it names do not exist.
const PAST: &[Code] = &[
    Code::NotFound,
    Code::InvalidArgument,
    Code::FailedPrecondition,
];

fn grpc<T>(result: Result<T, tonic::Status>) -> Outcome {
    match result {
        Ok(_) => Outcome::Served,
        Err(s) if s.code() == Code::Unauthenticated => Outcome::Unauthenticated,
        Err(s) if s.code() == Code::PermissionDenied => Outcome::Denied,
        Err(s) if PAST.contains(&s.code()) => Outcome::Served,
        Err(s) => panic!("unexpected answer {s:?}"),
    }
}

fn req<T>(message: T, tenant: &str, auth: Option<&str>) -> tonic::Request<T> {
    common::req_as(tenant, message, auth)
}

const CASE_ID: &str = "0190e3f4-0000-7000-8000-000000000000";

fn command() -> v1::CaseCommand {
    v1::CaseCommand {
        case_id: CASE_ID.to_owned(),
        expected_version: 1,
    }
}

async fn cases_call(ch: &Channel, call: Call, t: &str, auth: Option<&str>) -> Outcome {
    let mut cases = DebtCollectionCasesClient::new(ch.clone());
    match call {
        CreateCase => {
            let create = v1::CreateCaseRequest {
                content: Some(content("R-1", 1_000)),
            };
            grpc(cases.create_case(req(create, t, auth)).await)
        }
        UpdateCase => {
            let update = v1::UpdateCaseRequest {
                case_id: CASE_ID.to_owned(),
                expected_version: 1,
                ..Default::default()
            };
            grpc(cases.update_case(req(update, t, auth)).await)
        }
        MarkReviewed => grpc(cases.mark_reviewed(req(command(), t, auth)).await),
        MarkPrepared => grpc(cases.mark_prepared(req(command(), t, auth)).await),
        StartProcessing => grpc(cases.start_processing(req(command(), t, auth)).await),
        AddPaymentReceipt => {
            let receipt = v1::AddPaymentReceiptRequest {
                case_id: CASE_ID.to_owned(),
                expected_version: 1,
                receipt_external_id: "r-1".to_owned(),
                amount_minor: 10,
            };
            grpc(cases.add_payment_receipt(req(receipt, t, auth)).await)
        }
        CloseCase => grpc(cases.close_case(req(command(), t, auth)).await),
        FailCase => {
            let fail = v1::FailCaseRequest {
                case_id: CASE_ID.to_owned(),
                expected_version: 1,
                reason: "gone".to_owned(),
            };
            grpc(cases.fail_case(req(fail, t, auth)).await)
        }
        DeleteCase => grpc(cases.delete_case(req(command(), t, auth)).await),
        CommandsGetCase => {
            let get = v1::GetCaseRequest {
                case_id: CASE_ID.to_owned(),
            };
            grpc(cases.get_case(req(get, t, auth)).await)
        }
        SearchCases => {
            let search = v1::SearchCasesRequest {
                reference_prefix: "INV".to_owned(),
                ..Default::default()
            };
            grpc(cases.search_cases(req(search, t, auth)).await)
        }
        _ => unreachable!("{call:?} is no case command"),
    }
}

async fn query_call(ch: &Channel, call: Call, t: &str, auth: Option<&str>) -> Outcome {
    let mut q = QueryClient::new(ch.clone());
    match call {
        GetCase => {
            let get = v1::GetCaseRequest {
                case_id: CASE_ID.to_owned(),
            };
            grpc(q.get_case(req(get, t, auth)).await)
        }
        ListCases => grpc(q.list_cases(req(Default::default(), t, auth)).await),
        CaseStats => grpc(q.case_stats(req(v1::CaseStatsRequest {}, t, auth)).await),
        GetCaseHistory => {
            let history = v1::GetCaseHistoryRequest {
                case_id: CASE_ID.to_owned(),
                ..Default::default()
            };
            grpc(q.get_case_history(req(history, t, auth)).await)
        }
        GetAccount => {
            let get = v1::GetAccountRequest {
                account_uid: "crm/A1".to_owned(),
            };
            grpc(q.get_account(req(get, t, auth)).await)
        }
        ListAccountSnapshots => {
            let list = v1::ListAccountSnapshotsRequest {
                account_uid: "crm/A1".to_owned(),
                ..Default::default()
            };
            grpc(q.list_account_snapshots(req(list, t, auth)).await)
        }
        PortfolioPar => grpc(q.portfolio_par(req(Default::default(), t, auth)).await),
        PortfolioParSeries => {
            let series = v1::PortfolioParSeriesRequest {
                from_date: "2024-05-01".to_owned(),
                to_date: "2024-05-31".to_owned(),
                ..Default::default()
            };
            grpc(q.portfolio_par_series(req(series, t, auth)).await)
        }
        ListDiscrepancies => {
            let list = v1::ListDiscrepanciesRequest {
                snapshot_date: "2024-05-01".to_owned(),
                field: "days_to_cutoff".to_owned(),
                ..Default::default()
            };
            grpc(q.list_discrepancies(req(list, t, auth)).await)
        }
        GetDeal => grpc(q.get_deal(req(Default::default(), t, auth)).await),
        ListDeals => grpc(q.list_deals(req(Default::default(), t, auth)).await),
        CollectionsFunnel => grpc(q.collections_funnel(req(Default::default(), t, auth)).await),
        PtpSummary => grpc(q.ptp_summary(req(Default::default(), t, auth)).await),
        DpdBuckets => grpc(q.dpd_buckets(req(Default::default(), t, auth)).await),
        WatchDoNotContact => {
            let watch = q
                .watch_do_not_contact(req(Default::default(), t, auth))
                .await;
            grpc(watch)
        }
        _ => unreachable!("{call:?} is no query"),
    }
}

async fn imports_and_keys_call(ch: &Channel, call: Call, t: &str, auth: Option<&str>) -> Outcome {
    let mut imports = SnapshotImportsClient::new(ch.clone());
    let mut keys = ApiKeysClient::new(ch.clone());
    match call {
        Upload => {
            let header = v1::UploadRequest {
                part: Some(v1::upload_request::Part::Header(v1::UploadHeader {
                    format: v1::FileFormat::Csv as i32,
                    ..Default::default()
                })),
            };
            let stream = tokio_stream::iter(vec![header]);
            grpc(imports.upload(req(stream, t, auth)).await)
        }
        ImportRows => grpc(imports.import_rows(req(Default::default(), t, auth)).await),
        GetImport => {
            let get = v1::GetImportRequest {
                import_id: "0".repeat(32),
                ..Default::default()
            };
            grpc(imports.get_import(req(get, t, auth)).await)
        }
        ListImports => {
            let list = v1::ListImportsRequest::default();
            grpc(imports.list_imports(req(list, t, auth)).await)
        }
        CreateKey => {
            let create = v1::CreateKeyRequest {
                role: v1::Role::Viewer as i32,
                ..Default::default()
            };
            grpc(keys.create_key(req(create, t, auth)).await)
        }
        ListKeys => grpc(keys.list_keys(req(v1::ListKeysRequest {}, t, auth)).await),
        RevokeKey => {
            let revoke = v1::RevokeKeyRequest {
                id: "0000000000000000".to_owned(),
            };
            grpc(keys.revoke_key(req(revoke, t, auth)).await)
        }
        _ => unreachable!("{call:?} is no import or key call"),
    }
}

async fn http_status(addr: SocketAddr, head: &str, tenant: &str, auth: Option<&str>) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{head} HTTP/1.1\r\nhost: recoup\r\nx-recoup-tenant: {tenant}\r\ncontent-type: text/csv\r\ncontent-length: 0\r\nconnection: close\r\n",
    );
    if let Some(value) = auth {
        request.push_str(&format!("authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

async fn http_call(addr: SocketAddr, call: Call, t: &str, auth: Option<&str>) -> Outcome {
    let import = "0".repeat(32);
    let (head, served): (String, &[u16]) = match call {
        HttpUpload => ("POST /v1/paygo_snapshots_ts".to_owned(), &[200, 400, 422]),
        HttpList => ("GET /v1/imports".to_owned(), &[200]),
        HttpReport => (format!("GET /v1/imports/{import}"), &[404]),
        HttpErrorsCsv => (format!("GET /v1/imports/{import}/errors.csv"), &[404]),
        _ => unreachable!("{call:?} is no HTTP route"),
    };
    match http_status(addr, &head, t, auth).await {
        401 => Outcome::Unauthenticated,
        403 => Outcome::Denied,
        s if served.contains(&s) => Outcome::Served,
        s => panic!("unexpected HTTP status {s} of {head}"),
    }
}

async fn call(
    platform: &RunningPlatform,
    ch: &Channel,
    c: Call,
    t: &str,
    auth: Option<&str>,
) -> Outcome {
    match c {
        CreateCase | UpdateCase | MarkReviewed | MarkPrepared | StartProcessing
        | AddPaymentReceipt | CloseCase | FailCase | DeleteCase | CommandsGetCase | SearchCases => {
            cases_call(ch, c, t, auth).await
        }
        Upload | ImportRows | GetImport | ListImports | CreateKey | ListKeys | RevokeKey => {
            imports_and_keys_call(ch, c, t, auth).await
        }
        HttpUpload | HttpList | HttpReport | HttpErrorsCsv => {
            http_call(platform.http_addr.unwrap(), c, t, auth).await
        }
        _ => query_call(ch, c, t, auth).await,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_and_route_checks_the_credential_its_tenant_and_its_role() {
    let dir = TempDir::new().unwrap();
    let broker = tansu_if_asked();
    let platform = start(on_broker(secured(dir.path()), broker.as_ref())).await;
    let registry = platform.keys().unwrap();
    let spec = |role: Role| KeySpec {
        name: format!("{role}"),
        tenants: vec!["acme".to_owned()],
        role,
        expires_at: None,
        created_by: "test".to_owned(),
    };
    let mut keys = Vec::new();
    for role in Role::ALL {
        let key = registry.create(&spec(role), Utc::now()).await.unwrap().key;
        keys.push((Caller::Role(role), Some(format!("Bearer {key}"))));
    }
    let unknown = issue(&spec(Role::Admin), Utc::now()).unwrap().key;
    keys.push((Caller::UnknownKey, Some(format!("Bearer {unknown}"))));
    keys.push((Caller::Nobody, None));
    let ch = channel(&platform).await;

    let mut cells = 0;
    for (caller, auth) in &keys {
        for tenant in ["acme", "globex"] {
            for &c in ALL {
                let expected = match caller {
                    Caller::Nobody | Caller::UnknownKey => Outcome::Unauthenticated,
                    Caller::Role(_) if tenant != "acme" => Outcome::Denied,
                    Caller::Role(role) if role.allows(c.action()) => Outcome::Served,
                    Caller::Role(_) => Outcome::Denied,
                };
                let got = call(&platform, &ch, c, tenant, auth.as_deref()).await;
                assert_eq!(got, expected, "{caller:?} {c:?} for {tenant}");
                cells += 1;
            }
        }
    }
    assert_eq!(cells, 6 * 2 * 37);
    platform.shutdown().await.unwrap();
}

/// With `--insecure` (loopback only) every call is served for the tenant it names, without a
/// credential; the key administration API is not served at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_every_call_is_served_for_the_tenant_named() {
    let dir = TempDir::new().unwrap();
    let broker = tansu_if_asked();
    let platform = start(on_broker(config(dir.path()), broker.as_ref())).await;
    let ch = channel(&platform).await;
    for &c in ALL {
        if c.action() == Action::ManageKeys {
            let listed = ApiKeysClient::new(ch.clone())
                .list_keys(v1::ListKeysRequest {})
                .await
                .unwrap_err();
            assert_eq!(listed.code(), Code::Unimplemented);
            continue;
        }
        assert_eq!(
            call(&platform, &ch, c, "globex", None).await,
            Outcome::Served,
            "{c:?}"
        );
    }
    // The case CreateCase made was caused by nobody known.
    let store = platform.store().unwrap();
    let (tenant, case, _) = store.heads().next().unwrap().unwrap();
    let first = store.events_after(&tenant, &case, 0).unwrap();
    let envelope = <v1::EventEnvelope as prost::Message>::decode(first[0].as_slice()).unwrap();
    assert_eq!(
        (tenant.as_str(), envelope.actor.as_str()),
        ("globex", "anonymous")
    );
    platform.shutdown().await.unwrap();
}

/// Two tenants, each with a key of every role: nothing one tenant wrote can be read, changed
/// or revoked with the other's keys, whichever id is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_see_and_touch_nothing_of_each_other() {
    let dir = TempDir::new().unwrap();
    let broker = tansu_if_asked();
    let platform = start(on_broker(secured(dir.path()), broker.as_ref())).await;
    let registry = platform.keys().unwrap();
    let mut keys = std::collections::HashMap::new();
    for tenant in ["acme", "globex"] {
        for role in Role::ALL {
            let spec = KeySpec {
                name: format!("{tenant}-{role}"),
                tenants: vec![tenant.to_owned()],
                role,
                expires_at: None,
                created_by: "test".to_owned(),
            };
            let issued = registry.create(&spec, Utc::now()).await.unwrap();
            keys.insert(
                (tenant, role),
                (issued.record.id, format!("Bearer {}", issued.key)),
            );
        }
    }
    let auth = |tenant, role| Some(keys[&(tenant, role)].1.as_str());
    let ch = channel(&platform).await;
    let (mut cases, mut query) = (
        DebtCollectionCasesClient::new(ch.clone()),
        QueryClient::new(ch.clone()),
    );
    let mut imports = SnapshotImportsClient::new(ch.clone());

    // acme writes a case and an import (no tenant header: the key's tenant).
    let create = v1::CreateCaseRequest {
        content: Some(content("ISO-1", 700)),
    };
    let mut r = tonic::Request::new(create);
    r.metadata_mut().insert(
        "authorization",
        auth("acme", Role::Agent).unwrap().parse().unwrap(),
    );
    let case = cases
        .create_case(r)
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let row = v1::Row {
        cells: [
            ("snapshot_date", "2024-05-01"),
            ("account_external_id", "A-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    };
    let rows = v1::ImportRowsRequest {
        data_origin: "crm".into(),
        rows: vec![row],
    };
    let mut r = tonic::Request::new(rows);
    r.metadata_mut().insert(
        "authorization",
        auth("acme", Role::Importer).unwrap().parse().unwrap(),
    );
    let import = imports.import_rows(r).await.unwrap().into_inner().import_id;
    let search = v1::SearchCasesRequest {
        reference_prefix: "ISO-".to_owned(),
        ..Default::default()
    };
    let found = cases
        .search_cases(req(search, "acme", auth("acme", Role::Viewer)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.cases.len(), 1);
    assert_eq!(found.cases[0].id, case.id);
    let list = req(Default::default(), "acme", auth("acme", Role::Viewer));
    let listed = imports
        .list_imports(list)
        .await
        .unwrap()
        .into_inner()
        .imports;
    assert_eq!(
        listed.iter().map(|r| &r.import_id).collect::<Vec<_>>(),
        [&import]
    );
    let history = || v1::GetCaseHistoryRequest {
        case_id: case.id.clone(),
        ..Default::default()
    };
    let reader = query.clone();
    let trail = |n: usize| {
        let mut q = reader.clone();
        let r = req(history(), "acme", auth("acme", Role::Viewer));
        async move {
            q.get_case_history(r)
                .await
                .is_ok_and(|h| h.into_inner().entries.len() == n)
        }
    };
    assert!(eventually(Duration::from_secs(30), || trail(1)).await);

    // globex, with every role of its own, naming acme's ids.
    for role in Role::ALL {
        let a = auth("globex", role);
        let got = query.get_case_history(req(history(), "globex", a)).await;
        assert_eq!(got.unwrap_err().code(), Code::NotFound, "{role}");
        let get = || v1::GetCaseRequest {
            case_id: case.id.clone(),
        };
        let got = query.get_case(req(get(), "globex", a)).await.unwrap_err();
        assert_eq!(got.code(), Code::NotFound, "{role}");
        let got = cases.get_case(req(get(), "globex", a)).await.unwrap_err();
        assert_eq!(got.code(), Code::NotFound, "{role}");
        let listed = query
            .list_cases(req(Default::default(), "globex", a))
            .await
            .unwrap();
        assert!(listed.into_inner().cases.is_empty(), "{role}");
        let get = v1::GetImportRequest {
            import_id: import.clone(),
            ..Default::default()
        };
        let got = imports.get_import(req(get, "globex", a)).await.unwrap_err();
        assert_eq!(got.code(), Code::NotFound, "{role}");
        let search = v1::SearchCasesRequest {
            reference_prefix: "ISO-".to_owned(),
            ..Default::default()
        };
        let found = cases.search_cases(req(search, "globex", a)).await.unwrap();
        assert!(found.into_inner().cases.is_empty(), "{role}");
        let list = req(v1::ListImportsRequest::default(), "globex", a);
        let listed = imports.list_imports(list).await.unwrap().into_inner();
        assert!(listed.imports.is_empty(), "{role}");
        let http = platform.http_addr.unwrap();
        let report = format!("GET /v1/imports/{import}");
        assert_eq!(http_status(http, &report, "globex", a).await, 404, "{role}");
        let csv = format!("GET /v1/imports/{import}/errors.csv");
        assert_eq!(http_status(http, &csv, "globex", a).await, 404, "{role}");
    }
    let review = v1::CaseCommand {
        case_id: case.id.clone(),
        expected_version: 1,
    };
    let refused = cases
        .mark_reviewed(req(review, "globex", auth("globex", Role::Agent)))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::NotFound);
    let mut admin = ApiKeysClient::new(ch);
    let listed = admin.list_keys(req(
        v1::ListKeysRequest {},
        "globex",
        auth("globex", Role::Admin),
    ));
    let listed = listed.await.unwrap().into_inner().keys;
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|k| k.tenants == ["globex"]));
    let acme_key = keys[&("acme", Role::Viewer)].0.clone();
    let revoke = v1::RevokeKeyRequest { id: acme_key };
    let refused = admin
        .revoke_key(req(revoke, "globex", auth("globex", Role::Admin)))
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::NotFound);

    // acme's case and key are as they were.
    let get = v1::GetCaseRequest {
        case_id: case.id.clone(),
    };
    let mine = cases
        .get_case(req(get, "acme", auth("acme", Role::Viewer)))
        .await
        .unwrap();
    assert_eq!(mine.into_inner().case.unwrap().version, 1);

    // Who did it: acme's admin reviews what acme's agent created.
    let key_of = |role| format!("key:{}", keys[&("acme", role)].0);
    let mut review = req(
        v1::CaseCommand {
            case_id: case.id.clone(),
            expected_version: 1,
        },
        "acme",
        auth("acme", Role::Admin),
    );
    review
        .metadata_mut()
        .insert("x-correlation-id", "audit-42".parse().unwrap());
    let reviewed = cases.mark_reviewed(review).await.unwrap().into_inner();
    let reviewed = reviewed.case.unwrap();
    assert_eq!(reviewed.creator, key_of(Role::Agent));
    assert_eq!(reviewed.reviewer, key_of(Role::Admin));
    assert!(eventually(Duration::from_secs(30), || trail(2)).await);
    let trail = query
        .get_case_history(req(history(), "acme", auth("acme", Role::Viewer)))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let seen: Vec<(u64, &str, String)> = trail
        .iter()
        .map(|e| (e.version, e.event_type.as_str(), e.actor.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (1, "DebtCaseCreated", key_of(Role::Agent)),
            (2, "DebtCaseReviewed", key_of(Role::Admin)),
        ]
    );
    assert_eq!(trail[1].correlation_id, "audit-42");
    let projected = query
        .get_case(req(
            v1::GetCaseRequest {
                case_id: case.id.clone(),
            },
            "acme",
            auth("acme", Role::Viewer),
        ))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    assert_eq!(
        (projected.creator, projected.reviewer),
        (key_of(Role::Agent), key_of(Role::Admin))
    );
    platform.shutdown().await.unwrap();
}
