//! Bearer tokens end to end: a platform that takes JWTs of an identity provider whose JWKS it
//! reads from a URL, a token acting for its tenant with its roles over gRPC and HTTP, and a
//! key the provider rotates in, fetched when a token first names it; the console signs in with
//! a token, and refuses a tenant it does not name, a forged token and an expired one.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_keys::jwks::{JwksSource, Tokens};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use common::browser::Browser;
use common::{channel, config, content, eventually, on_broker, start, tansu_if_asked};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use recoup::platform::Security;
use recoup_access::JwtSettings;
use recoup_proto::v1;
use recoup_proto::v1::debt_collection_cases_client::DebtCollectionCasesClient;
use recoup_proto::v1::query_client::QueryClient;
use serde_json::{Value, json};
use tempfile::TempDir;
use tonic::Code;

/// A signing key of the provider and its JWK.
struct SigningKey {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl SigningKey {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        let point = pair.public_key_raw();
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        Self {
            kid: kid.to_owned(),
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({"kty": "EC", "kid": kid, "crv": "P-256", "alg": "ES256",
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
        }
    }

    fn token(&self, tenants: &[&str], roles: &[&str]) -> String {
        self.token_until(tenants, roles, Utc::now().timestamp() + 300)
    }

    fn token_until(&self, tenants: &[&str], roles: &[&str], exp: i64) -> String {
        let claims = json!({"iss": "https://idp.example", "aud": "recoup", "sub": "ana",
            "exp": exp, "recoup_tenants": tenants, "recoup_roles": roles});
        let header = Header {
            kid: Some(self.kid.clone()),
            ..Header::new(Algorithm::ES256)
        };
        encode(&header, &claims, &self.key).unwrap()
    }
}

/// A JWKS endpoint whose keys the test changes.
async fn jwks_server(keys: Arc<Mutex<Vec<Value>>>) -> String {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let keys = keys.lock().unwrap().clone();
            async move { axum::Json(json!({"keys": keys})) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A request with `token`, naming `tenant` when given.
fn bearer<T>(message: T, token: &str, tenant: Option<&str>) -> tonic::Request<T> {
    match tenant {
        Some(tenant) => common::req_as(tenant, message, Some(&format!("Bearer {token}"))),
        None => common::bearer(message, token),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_acts_for_its_tenants_with_its_roles_and_rotated_keys_are_fetched() {
    let first = SigningKey::new("k1");
    let rotated = SigningKey::new("k2");
    let keys = Arc::new(Mutex::new(vec![first.jwk.clone()]));
    let url = jwks_server(keys.clone()).await;
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.security = Security {
        first_admin_key: false,
        tokens: Some(Tokens {
            settings: JwtSettings::new("https://idp.example", "recoup"),
            jwks: JwksSource::parse(&url),
        }),
        ..Security::default()
    };
    let broker = tansu_if_asked();
    let platform = start(on_broker(cfg, broker.as_ref())).await;
    let ch = channel(&platform).await;
    let mut cases = DebtCollectionCasesClient::new(ch.clone());
    let mut query = QueryClient::new(ch);

    let agent = first.token(&["acme"], &["agent"]);
    let create = || v1::CreateCaseRequest {
        content: Some(content(&format!("T-{}", uuid::Uuid::now_v7()), 500)),
    };
    cases
        .create_case(bearer(create(), &agent, None))
        .await
        .unwrap();
    let refused = cases
        .create_case(bearer(create(), &agent, Some("globex")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let viewer = first.token(&["acme"], &["viewer"]);
    let refused = cases
        .create_case(bearer(create(), &viewer, None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("jwt:ana has the viewer role"),
        "{refused:?}"
    );
    let list = v1::ListCasesRequest::default();
    query.list_cases(bearer(list, &viewer, None)).await.unwrap();

    // HTTP takes the same token.
    let http = platform.http_addr.unwrap();
    let report = reqwest::Client::new()
        .get(format!("http://{http}/v1/imports/{}", "0".repeat(32)))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(
        report.status().as_u16(),
        404,
        "past the gate: no such import"
    );

    // The provider rotates: a token of the new key is refused until the JWKS is read again,
    // which the unknown key id itself asks for.
    keys.lock().unwrap().push(rotated.jwk.clone());
    let fresh = rotated.token(&["acme"], &["viewer"]);
    let refused = query
        .list_cases(bearer(v1::ListCasesRequest::default(), &fresh, None))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("no key \"k2\""), "{refused:?}");
    let served = eventually(Duration::from_secs(10), || {
        let mut query = query.clone();
        let fresh = fresh.clone();
        async move {
            let list = v1::ListCasesRequest::default();
            query.list_cases(bearer(list, &fresh, None)).await.is_ok()
        }
    })
    .await;
    assert!(served, "the rotated key was fetched");

    // The console signs in with a token as with a key: the tenant and roles are the token's.
    let mut browser = Browser::new(http);
    let signed = browser.sign_in(&agent).await;
    assert_eq!(
        signed.location.as_deref(),
        Some("/cases"),
        "{}",
        signed.body
    );
    let cases_page = browser.get("/cases").await;
    assert!(cases_page.body.contains("jwt:ana"), "{}", cases_page.body);
    assert!(cases_page.body.contains("<strong>acme</strong>"));
    assert!(cases_page.body.contains("New case"), "an agent may create");
    let mut reader = Browser::new(http);
    reader.sign_in(&viewer).await;
    let cases_page = reader.get("/cases").await;
    assert_eq!(cases_page.status.as_u16(), 200);
    assert!(!cases_page.body.contains("New case"), "a viewer may not");
    // Refused: a tenant the token does not name, a token of a key the provider never had, and
    // an expired one.
    let mut stranger = Browser::new(http);
    let form = stranger.get("/sign-in").await.hidden("form_token");
    let asked = [
        ("credential", agent.as_str()),
        ("tenant", "globex"),
        ("form_token", &form),
    ];
    let refused = stranger.post("/sign-in", &asked).await;
    assert_eq!(refused.status.as_u16(), 401, "{}", refused.body);
    assert!(refused.body.contains("Not signed in"), "{}", refused.body);
    let forged = SigningKey::new("k1").token(&["acme"], &["admin"]);
    assert_eq!(stranger.sign_in(&forged).await.status.as_u16(), 401);
    let expired = first.token_until(&["acme"], &["admin"], Utc::now().timestamp() - 600);
    assert_eq!(stranger.sign_in(&expired).await.status.as_u16(), 401);
    assert_eq!(
        stranger.get("/cases").await.location.as_deref(),
        Some("/sign-in")
    );
    platform.shutdown().await.unwrap();
}
