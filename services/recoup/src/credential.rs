//! The credential the bundled clients send: `--api-key` (or `RECOUP_API_KEY`), else the first
//! admin key a local `recoup up` wrote to `{data_dir}/admin.key`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use recoup_proto::contract::metadata::AUTHORIZATION;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the clients' credential comes from.
#[derive(Args, Clone, Debug)]
pub struct CredentialArgs {
    /// The API key sent as `authorization: Bearer <key>`. Unset: the first admin key of a local
    /// `recoup up`, read from DATA_DIR/admin.key when that file exists.
    #[arg(long, global = true, env = "RECOUP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// The data dir of a local `recoup up`, where it wrote its first admin key.
    #[arg(long, global = true, env = "RECOUP_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

impl CredentialArgs {
    /// The `authorization` value to send, if any key is given or found.
    pub fn authorization(&self) -> anyhow::Result<Option<AsciiMetadataValue>> {
        let key = match &self.api_key {
            Some(key) => key.trim().to_owned(),
            None => {
                let path = self.data_dir.join(api_keys::service::FIRST_ADMIN_KEY_FILE);
                match std::fs::read_to_string(&path) {
                    Ok(text) => text.trim().to_owned(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        };
        if key.is_empty() {
            bail!("the API key is empty");
        }
        // Never name the key itself in an error.
        let value = format!("Bearer {key}")
            .parse()
            .ok()
            .context("the API key holds characters a header cannot carry")?;
        Ok(Some(value))
    }
}

/// TLS towards a process that serves it (`recoup up --tls-cert ...`).
#[derive(Args, Clone, Debug, Default)]
pub struct TlsClientArgs {
    /// PEM: the CA that signed the server's certificate; set, the connection is TLS (https).
    #[arg(long, global = true, env = "RECOUP_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// PEM: this client's certificate, for a server that requires one (mTLS).
    #[arg(
        long,
        global = true,
        env = "RECOUP_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// PEM: the key of --client-cert.
    #[arg(
        long,
        global = true,
        env = "RECOUP_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
}

impl TlsClientArgs {
    /// The endpoint of `server` (`http(s)://host:port` or `host:port`), with TLS when a CA is
    /// given or the address says https.
    pub fn endpoint(&self, server: &str) -> anyhow::Result<Endpoint> {
        let tls = self.ca_cert.is_some() || server.starts_with("https://");
        let uri = match server.split_once("://") {
            Some((_, rest)) if tls => format!("https://{rest}"),
            Some(_) => server.to_owned(),
            None if tls => format!("https://{server}"),
            None => format!("http://{server}"),
        };
        let endpoint = Endpoint::from_shared(uri)
            .with_context(|| format!("not a server address: {server}"))?
            .connect_timeout(Duration::from_secs(5));
        if !tls {
            return Ok(endpoint);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut config = ClientTlsConfig::new().with_webpki_roots();
        if let Some(ca) = &self.ca_cert {
            config = config.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint.tls_config(config).context("TLS settings")
    }
}

/// A running process to ask, and the credential to ask it with.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// The recoup gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "RECOUP_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    #[command(flatten)]
    pub credential: CredentialArgs,
    #[command(flatten)]
    pub tls: TlsClientArgs,
}

impl ServerArgs {
    /// A channel to the server whose requests carry the credential.
    pub async fn connect(&self) -> anyhow::Result<Link> {
        connect(&self.server, &self.credential, &self.tls).await
    }
}

/// Adds the credential to every request of a client.
#[derive(Clone)]
pub struct Authorize(Option<AsciiMetadataValue>);

impl tonic::service::Interceptor for Authorize {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A channel whose requests carry the credential.
pub type Link = InterceptedService<Channel, Authorize>;

/// Connects to `server` (`http(s)://host:port`, or `host:port`) with the credential of
/// `args`, over TLS as `tls` says.
pub async fn connect(
    server: &str,
    args: &CredentialArgs,
    tls: &TlsClientArgs,
) -> anyhow::Result<Link> {
    let authorization = args.authorization()?;
    let channel = tls
        .endpoint(server)?
        .connect()
        .await
        .with_context(|| format!("cannot reach recoup at {server}"))?;
    Ok(InterceptedService::new(channel, Authorize(authorization)))
}

/// A refusal as the command line says it: its gRPC code and message, and for a missing
/// credential, where one comes from.
pub fn refusal(status: &tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        tonic::Code::Unauthenticated if status.message().starts_with("no credential") => {
            " (pass --api-key or set RECOUP_API_KEY; a local `recoup up` writes its first admin \
             key to DATA_DIR/admin.key, found with --data-dir)"
        }
        _ => "",
    };
    anyhow::anyhow!("{:?}: {}{hint}", status.code(), status.message())
}
