//! TLS on the process's listeners (rustls): a certificate and key from PEM files, and with a
//! client CA, certificates required of every client (mTLS).
//!
//! Handshakes run concurrently, each bounded in time, off the accept loop: a client that
//! connects and says nothing holds one task for [`HANDSHAKE_TIMEOUT`], never the listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::connections::{Gate, Gated};

/// Longest a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections handshaken and not yet taken by the server.
const READY_QUEUE: usize = 64;

/// Where the listeners' certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs whose client certificates are accepted; set, every client needs one.
    pub client_ca: Option<PathBuf>,
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{}: no certificate in it (PEM, BEGIN CERTIFICATE)",
            path.display()
        );
    }
    Ok(certs)
}

/// The rustls configuration of `files`: TLS 1.2 and 1.3, ALPN h2 and http/1.1 (gRPC, and
/// `/metrics` or the HTTP API).
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{}: no private key in it (PEM)", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(path)? {
                roots
                    .add(ca)
                    .with_context(|| format!("{}: not a CA certificate", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("client CAs from {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).with_context(|| {
        format!(
            "{} does not match {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener whose connections arrive with their TLS handshake done.
pub struct TlsListener {
    ready: mpsc::Receiver<(Gated<TlsStream<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` until `shutdown`, handshaking each connection in a task of its
    /// own; a failed or late handshake closes that connection only.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        gate: Gate,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            // Out of file descriptors, say: wait rather than spin.
                            tracing::warn!(%error, "accepting a connection");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    () = recoup_runtime::shutdown::stopped(&mut shutdown) => return,
                };
                // Over the limits: closed before the handshake costs anything.
                let Some(pass) = gate.admit(peer) else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx, gate) = (acceptor.clone(), tx.clone(), gate.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((gate.gated(tls, pass), peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }

    /// The connections, for tonic's server: the stream ends when the listener stops.
    pub fn into_incoming(
        self,
    ) -> impl futures::Stream<Item = Result<Gated<TlsStream<TcpStream>>, std::io::Error>> {
        futures::stream::unfold(self.ready, |mut ready| async move {
            let (tls, _) = ready.recv().await?;
            Some((Ok(tls), ready))
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Gated<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop ended (shutdown): wait for the graceful shutdown to end serving.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
