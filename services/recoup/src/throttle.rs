//! The per-peer slow-down in front of the gRPC and HTTP routes: a request whose peer failed
//! to authenticate again and again waits first (`recoup_access::Throttle`); a refusal for a
//! missing or bad credential (HTTP 401, gRPC UNAUTHENTICATED) counts against its peer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use tokio::net::{TcpListener, TcpStream};

use crate::connections::{Gate, Gated};
use axum::middleware::Next;
use axum::response::Response;
use recoup_access::Throttle;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// The peer of an HTTP connection, plaintext or TLS, as the HTTP server records it.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A plaintext listener: connections over the [`Gate`]'s limits are closed at once, the others
/// get TCP_NODELAY (small answers should not wait for delayed ACKs).
pub struct PlainListener {
    pub listener: TcpListener,
    pub gate: Gate,
}

impl axum::serve::Listener for PlainListener {
    type Io = Gated<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, peer) = axum::serve::Listener::accept(&mut self.listener).await;
            let Some(pass) = self.gate.admit(peer) else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            return (self.gate.gated(tcp, pass), peer);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The middleware: `axum::middleware::from_fn_with_state(throttle, slow_down)`.
pub async fn slow_down(
    State(throttle): State<Arc<Throttle>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = peer_of(&request);
    if let Some(peer) = peer {
        let wait = throttle.wait(peer, Instant::now());
        if !wait.is_zero() {
            recoup_metrics::metrics().auth_throttled.inc();
            tracing::debug!(%peer, ?wait, "held back after repeated authentication failures");
            tokio::time::sleep(wait).await;
        }
    }
    let response = next.run(request).await;
    if let Some(peer) = peer
        && unauthenticated(&response)
    {
        throttle.failed(peer, Instant::now());
    }
    response
}

/// The peer's address, as the gRPC server (plaintext or TLS) or the HTTP server recorded it.
fn peer_of(request: &Request) -> Option<IpAddr> {
    let extensions = request.extensions();
    let addr: Option<SocketAddr> = extensions
        .get::<ConnectInfo<Peer>>()
        .map(|info| info.0.0)
        .or_else(|| {
            extensions
                .get::<TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
        })
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        });
    addr.map(|a| a.ip())
}

/// HTTP 401, or a gRPC answer whose headers carry UNAUTHENTICATED (16).
fn unauthenticated(response: &Response) -> bool {
    response.status() == axum::http::StatusCode::UNAUTHORIZED
        || response
            .headers()
            .get("grpc-status")
            .is_some_and(|code| code == "16")
}
