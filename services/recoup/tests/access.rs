//! API keys at the trust boundary: the first admin key, the key administration API, the
//! listeners' rules, failed attempts counted and slowed down. The whole matrix of calls ×
//! credentials × tenants is `tests/matrix.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::{bearer, channel, config, envelopes, make_key, req_as, secured, start};
use recoup::platform::{RunningPlatform, Security};
use recoup_access::{Role, ThrottleSettings};
use recoup_proto::v1;
use recoup_proto::v1::api_keys_client::ApiKeysClient;
use recoup_proto::v1::query_client::QueryClient;
use tempfile::TempDir;
use tonic::Code;

/// The keys `key` may see, through `recoup.v1.ApiKeys`.
async fn keys_seen(platform: &RunningPlatform, key: &str) -> Vec<v1::ApiKey> {
    let mut admin = ApiKeysClient::new(channel(platform).await);
    let list = admin.list_keys(bearer(v1::ListKeysRequest {}, key));
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
        .create_key(bearer(create(v1::Role::Viewer, &[]), &admin_key))
        .await
        .unwrap()
        .into_inner();
    let record = made.record.unwrap();
    assert_eq!(record.tenants, ["acme"], "the admin's tenant");
    assert!(record.expires_at.is_some());
    assert!(record.created_by.starts_with("key:"));
    let mut query = QueryClient::new(ch.clone());
    let list = v1::ListCasesRequest::default();
    query.list_cases(bearer(list, &made.key)).await.unwrap();
    // A tenant, or a credential, sent twice is refused rather than guessed between.
    for (key, values) in [
        ("x-recoup-tenant", ["acme", "globex"].map(String::from)),
        (
            "authorization",
            [format!("Bearer {}", made.key), format!("Bearer {foreign}")],
        ),
    ] {
        let mut twice = bearer(v1::ListCasesRequest::default(), &made.key);
        let metadata = twice.metadata_mut();
        metadata.remove(key);
        for value in values {
            metadata.append(key, value.parse().unwrap());
        }
        let refused = query.list_cases(twice).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{key}");
        assert!(refused.message().contains("more than once"), "{refused:?}");
    }

    let refused = keys
        .create_key(bearer(create(v1::Role::Viewer, &["globex"]), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = keys
        .create_key(bearer(create(v1::Role::Admin, &[]), &made.key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("needs the admin role"),
        "{refused:?}"
    );
    let refused = keys
        .create_key(bearer(create(v1::Role::Unspecified, &[]), &admin_key))
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
        .revoke_key(bearer(revoke(&foreign_id), &admin_key))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::NotFound,
        "another tenant's key is not named"
    );

    let revoked = keys
        .revoke_key(bearer(revoke(&record.id), &admin_key))
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked_at.is_some());
    let list = v1::ListCasesRequest::default();
    let refused = query.list_cases(bearer(list, &made.key)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().ends_with("was revoked"), "{refused:?}");
    let again = keys
        .revoke_key(bearer(revoke(&record.id), &admin_key))
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

/// `GET /metrics` of a platform, over its gRPC address.
async fn scrape(platform: &RunningPlatform) -> String {
    let url = format!("http://{}/metrics", platform.grpc_addr.unwrap());
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Failed attempts are counted by kind (never by tenant or key), and a peer that keeps failing
/// is held back; `/metrics` and health need no credential and name no tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_counted_and_slow_their_peer_down() {
    let dir = TempDir::new().unwrap();
    let mut cfg = secured(dir.path());
    cfg.security.throttle = ThrottleSettings::default();
    let platform = start(cfg).await;
    let viewer = make_key(&platform, Role::Viewer, &["acme"]).await;
    let failures = r#"recoup_auth_failures_total{credential="api_key",outcome="unauthenticated"}"#;
    let denied = r#"recoup_auth_failures_total{credential="api_key",outcome="permission_denied"}"#;
    let throttled = "recoup_auth_throttled_total";
    let before = scrape(&platform).await;
    let mut query = QueryClient::new(channel(&platform).await);
    let list = v1::ListCasesRequest::default();
    query
        .list_cases(req_as(
            "globex",
            list.clone(),
            Some(&format!("Bearer {viewer}")),
        ))
        .await
        .unwrap_err();
    let wrong = format!("Bearer {}", &viewer[..viewer.len() - 1]);
    for _ in 0..8 {
        let refused = query
            .list_cases(req_as("acme", list.clone(), Some(&wrong)))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let after = scrape(&platform).await;
    assert!(
        sample(&after, failures) - sample(&before, failures) >= 8.0,
        "{after}"
    );
    assert!(
        sample(&after, denied) - sample(&before, denied) >= 1.0,
        "{after}"
    );
    assert!(
        sample(&after, throttled) - sample(&before, throttled) >= 2.0,
        "the 7th and 8th attempts were held back: {after}"
    );
    for tenant in ["acme", "globex"] {
        assert!(!after.contains(tenant), "/metrics names tenant {tenant}");
    }
    platform.shutdown().await.unwrap();
}

/// Every event names who caused it: the key of the request (commands, imports, key changes),
/// and each credential has its own rate limit in a tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_name_their_actor_and_each_credential_has_its_own_rate_limit() {
    use prost::Message;
    use recoup_proto::contract::topic;
    let dir = TempDir::new().unwrap();
    let mut cfg = secured(dir.path());
    cfg.importer.rate_limit_per_minute = std::num::NonZeroU32::new(2).unwrap();
    let platform = start(cfg).await;
    let agent = make_key(&platform, Role::Agent, &["acme"]).await;
    let importer = make_key(&platform, Role::Importer, &["acme"]).await;
    let other = make_key(&platform, Role::Importer, &["acme"]).await;
    let id_of = |key: &str| format!("key:{}", &key[4..20]);
    let ch = channel(&platform).await;

    let create = v1::CreateCaseRequest {
        content: Some(common::content("ACT-1", 100)),
    };
    let mut cases =
        recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient::new(ch.clone());
    let case = cases
        .create_case(bearer(create, &agent))
        .await
        .unwrap()
        .into_inner()
        .case
        .unwrap();
    let stored = platform
        .store()
        .unwrap()
        .events_after("acme", &case.id, 0)
        .unwrap();
    let created = v1::EventEnvelope::decode(stored[0].as_slice()).unwrap();
    assert_eq!(created.actor, id_of(&agent));
    let published = envelopes(&platform, topic::DEBT_CASES, 1).await;
    assert_eq!(
        published[0].actor,
        id_of(&agent),
        "the outbox keeps the actor"
    );

    let mut imports = recoup_proto::v1::snapshot_imports_client::SnapshotImportsClient::new(ch);
    let rows = |id: &str| v1::ImportRowsRequest {
        data_origin: "crm".into(),
        rows: vec![v1::Row {
            cells: [("snapshot_date", "2024-05-01"), ("account_external_id", id)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }],
    };
    imports
        .import_rows(bearer(rows("A-1"), &importer))
        .await
        .unwrap();
    let snapshot = envelopes(&platform, topic::PAYGO_SNAPSHOTS, 1).await;
    assert_eq!(snapshot[0].actor, id_of(&importer));
    let keys = envelopes(&platform, topic::ACCESS, 3).await;
    assert!(
        keys.iter().all(|k| k.actor == "test"),
        "made by the test's registry calls"
    );

    // A budget of 2 a minute per credential: the importer's third call waits, the other
    // importer key of the same tenant still has its own.
    imports
        .import_rows(bearer(rows("A-2"), &importer))
        .await
        .unwrap();
    let limited = imports
        .import_rows(bearer(rows("A-3"), &importer))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(
        limited
            .message()
            .contains(&format!("credential {}", id_of(&importer))),
        "{limited:?}"
    );
    imports
        .import_rows(bearer(rows("A-3"), &other))
        .await
        .unwrap();
    platform.shutdown().await.unwrap();
}
