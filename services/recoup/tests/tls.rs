//! TLS on the gRPC and HTTP listeners, and mTLS, with certificates the test makes: the served
//! certificate is checked by real clients (tonic, reqwest, the bundled CLI), plaintext is not
//! served, and with a client CA a client without a certificate signed by it is not served.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use chrono::Utc;
use common::cluster::TestBroker;
use common::{config, on_broker, start, tansu_if_asked};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use recoup::platform::{RunningPlatform, Security};
use recoup::tls::TlsFiles;
use recoup_access::{KeySpec, Role};
use recoup_proto::v1;
use recoup_proto::v1::query_client::QueryClient;
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A CA of the test's own.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` with `usage`, and its key, in PEM.
    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        params
            .distinguished_name
            .push(DnType::CommonName, "recoup test");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Pki {
    dir: TempDir,
    server_ca: Ca,
    client_ca: Ca,
}

impl Pki {
    fn new() -> Self {
        let pki = Self {
            dir: TempDir::new().unwrap(),
            server_ca: Ca::new("server CA"),
            client_ca: Ca::new("client CA"),
        };
        let (cert, key) = pki.server_ca.issue(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.write("server.pem", &cert);
        pki.write("server.key", &key);
        pki.write("ca.pem", &pki.server_ca.pem);
        pki.write("client-ca.pem", &pki.client_ca.pem);
        pki
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn files(&self, mtls: bool) -> TlsFiles {
        TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("client-ca.pem")),
        }
    }
}

/// A platform with API keys and TLS (mTLS with `mtls`) on `broker` (`None`: the embedded
/// one), and a viewer key of tenant acme.
async fn platform(
    dir: &Path,
    pki: &Pki,
    mtls: bool,
    broker: Option<&TestBroker>,
) -> (RunningPlatform, String) {
    let mut cfg = config(dir);
    cfg.security = Security {
        first_admin_key: false,
        tls: Some(pki.files(mtls)),
        ..Security::default()
    };
    let platform = start(on_broker(cfg, broker)).await;
    let spec = KeySpec {
        name: "tls".to_owned(),
        tenants: vec!["acme".to_owned()],
        role: Role::Viewer,
        expires_at: None,
        created_by: "test".to_owned(),
    };
    let registry = platform.keys().unwrap();
    let key = registry.create(&spec, Utc::now()).await.unwrap().key;
    (platform, key)
}

/// `ListCases` over gRPC to `port` with `tls` (`None`: plaintext): served, or why not.
async fn list_cases(port: u16, tls: Option<ClientTlsConfig>, key: &str) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Channel::from_shared(format!("{scheme}://127.0.0.1:{port}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
    let mut request = tonic::Request::new(v1::ListCasesRequest::default());
    let bearer = format!("Bearer {key}").parse().unwrap();
    request.metadata_mut().insert("authorization", bearer);
    QueryClient::new(channel)
        .list_cases(request)
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

fn trusting(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.server_ca.pem))
}

/// `GET /v1/imports/<id>` over HTTPS: the status, or the transport's error.
async fn import_report(port: u16, client: reqwest::Client, key: &str) -> Result<u16, String> {
    let url = format!("https://127.0.0.1:{port}/v1/imports/{}", "0".repeat(32));
    let answer = client.get(url).bearer_auth(key).send().await;
    answer
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

fn https_client(pki: &Pki, identity: Option<(String, String)>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(pki.server_ca.pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca);
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_serve_tls_with_the_certificate_given() {
    let pki = Pki::new();
    let dir = TempDir::new().unwrap();
    let broker = tansu_if_asked();
    let (platform, key) = platform(dir.path(), &pki, false, broker.as_ref()).await;
    let grpc = platform.grpc_addr.unwrap().port();
    let http = platform.http_addr.unwrap().port();

    list_cases(grpc, Some(trusting(&pki)), &key).await.unwrap();
    let plaintext = list_cases(grpc, None, &key).await;
    assert!(plaintext.is_err(), "plaintext gRPC is not served");
    let other_ca = Ca::new("someone else");
    let untrusted = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&other_ca.pem));
    let refused = list_cases(grpc, Some(untrusted), &key).await.unwrap_err();
    assert!(
        refused.contains("ransport"),
        "a certificate the client does not trust: {refused}"
    );

    assert_eq!(
        import_report(http, https_client(&pki, None), &key).await,
        Ok(404)
    );
    let plain = reqwest::get(format!("http://127.0.0.1:{http}/v1/imports/x")).await;
    assert!(plain.is_err(), "plaintext HTTP is not served: {plain:?}");
    // The console over TLS: its cookies are only sent back over TLS.
    let sign_in = https_client(&pki, None)
        .get(format!("https://127.0.0.1:{http}/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), 200);
    let cookie = sign_in.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("__Host-recoup_sign_in=")
            && cookie.contains("; Secure")
            && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // The bundled CLI, with --ca-cert.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args([
            "cases",
            "list",
            "--server",
            &format!("https://127.0.0.1:{grpc}"),
        ])
        .args(["--api-key", &key, "--ca-cert"])
        .arg(pki.path("ca.pem"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "recoup cases list over TLS: {stderr}");
    let health = std::process::Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args([
            "health",
            "--server",
            &format!("https://localhost:{grpc}"),
            "--ca-cert",
        ])
        .arg(pki.path("ca.pem"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    platform.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_only_clients_with_its_certificates_are_served() {
    let pki = Pki::new();
    let dir = TempDir::new().unwrap();
    let broker = tansu_if_asked();
    let (platform, key) = platform(dir.path(), &pki, true, broker.as_ref()).await;
    let grpc = platform.grpc_addr.unwrap().port();
    let http = platform.http_addr.unwrap().port();
    let client = || {
        pki.client_ca
            .issue(&["dialer"], ExtendedKeyUsagePurpose::ClientAuth)
    };
    let stranger = Ca::new("stranger").issue(&["dialer"], ExtendedKeyUsagePurpose::ClientAuth);

    let (cert, private) = client();
    let with = trusting(&pki).identity(Identity::from_pem(&cert, &private));
    list_cases(grpc, Some(with), &key).await.unwrap();
    let without = list_cases(grpc, Some(trusting(&pki)), &key).await;
    assert!(without.is_err(), "no client certificate: not served");
    let foreign = trusting(&pki).identity(Identity::from_pem(&stranger.0, &stranger.1));
    let foreign = list_cases(grpc, Some(foreign), &key).await;
    assert!(foreign.is_err(), "a certificate of another CA: not served");

    let served = import_report(http, https_client(&pki, Some(client())), &key).await;
    assert_eq!(served, Ok(404));
    let without = import_report(http, https_client(&pki, None), &key).await;
    assert!(
        without.is_err(),
        "HTTPS without a client certificate: {without:?}"
    );
    let foreign = import_report(http, https_client(&pki, Some(stranger)), &key).await;
    assert!(
        foreign.is_err(),
        "HTTPS with another CA's certificate: {foreign:?}"
    );

    // mTLS adds to the API key, it does not replace it.
    let (cert, private) = client();
    let with = trusting(&pki).identity(Identity::from_pem(&cert, &private));
    let no_key = list_cases(grpc, Some(with), "").await.unwrap_err();
    assert!(no_key.contains("Unauthenticated"), "{no_key}");
    platform.shutdown().await.unwrap();
}

/// With TLS a listener may be off loopback; a certificate file that is not one stops the
/// start, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_allows_listeners_off_loopback_and_bad_files_are_named() {
    let pki = Pki::new();
    let dir = TempDir::new().unwrap();
    let mut cfg = config(dir.path());
    cfg.grpc_addr = Some("0.0.0.0:0".parse().unwrap());
    cfg.security = Security {
        first_admin_key: false,
        tls: Some(pki.files(false)),
        ..Security::default()
    };
    let platform = start(cfg.clone()).await;
    platform.shutdown().await.unwrap();

    // --insecure does not go with TLS: requests would be encrypted and checked by nobody.
    let mut insecure = cfg.clone();
    insecure.security.authentication = false;
    let refused = format!(
        "{:#}",
        recoup::platform::start(insecure).await.err().unwrap()
    );
    assert!(
        refused.contains("--insecure") && refused.contains("--tls-cert"),
        "{refused}"
    );

    let not_pem = pki.write("not.pem", "hello\n");
    cfg.security.tls = Some(TlsFiles {
        cert: not_pem.clone(),
        ..pki.files(false)
    });
    let refused = recoup::platform::start(cfg.clone()).await.err().unwrap();
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("not.pem") && refused.contains("no certificate"),
        "{refused}"
    );
    cfg.security.tls = Some(TlsFiles {
        key: pki.path("ca.pem"),
        ..pki.files(false)
    });
    let refused = format!("{:#}", recoup::platform::start(cfg).await.err().unwrap());
    assert!(
        refused.contains("ca.pem") && refused.contains("private key"),
        "{refused}"
    );
}

/// `recoup tls init` in `dir` for localhost and 127.0.0.1, with `extra` flags.
fn tls_init(dir: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_recoup"))
        .args(["tls", "init", "--out-dir"])
        .arg(dir)
        .args(["--host", "localhost", "--host", "127.0.0.1"])
        .args(extra)
        .output()
        .unwrap()
}

/// `recoup tls init` makes a CA and a server certificate that a platform serves and a client
/// trusting only that CA accepts, by name and by address; the key is its owner's alone; with
/// `--if-absent` a second run leaves the files as they are, without it a new CA replaces them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_init_makes_certificates_that_the_platform_serves_and_clients_trust() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new().unwrap();
    let certs = dir.path().join("tls");
    let made = tls_init(&certs, &[]);
    assert!(made.status.success(), "{made:?}");
    let mode = |name: &str| {
        std::fs::metadata(certs.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("server.key"), 0o600);
    let ca = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    let kept = tls_init(&certs, &["--if-absent"]);
    assert!(kept.status.success(), "{kept:?}");
    assert_eq!(std::fs::read_to_string(certs.join("ca.pem")).unwrap(), ca);

    let mut cfg = config(&dir.path().join("data"));
    cfg.security = Security {
        first_admin_key: false,
        tls: Some(TlsFiles {
            cert: certs.join("server.pem"),
            key: certs.join("server.key"),
            client_ca: None,
        }),
        ..Security::default()
    };
    let platform = start(cfg).await;
    let grpc = platform.grpc_addr.unwrap().port();
    let health = |host: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_recoup"))
            .args(["health", "--server", &format!("https://{host}:{grpc}")])
            .arg("--ca-cert")
            .arg(certs.join("ca.pem"))
            .output()
            .unwrap()
    };
    for host in ["localhost", "127.0.0.1"] {
        let out = health(host);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "SERVING",
            "{host}: {out:?}"
        );
    }
    let trusting_it = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca));
    let refused = list_cases(grpc, Some(trusting_it), "").await.unwrap_err();
    assert!(refused.contains("Unauthenticated"), "TLS holds: {refused}");

    // Run again without --if-absent: a new CA replaces the old one.
    let again = tls_init(&certs, &[]);
    assert!(again.status.success(), "{again:?}");
    assert_ne!(std::fs::read_to_string(certs.join("ca.pem")).unwrap(), ca);
    let bad = tls_init(&dir.path().join("none"), &["--days", "0"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--days"));
    platform.shutdown().await.unwrap();
}
