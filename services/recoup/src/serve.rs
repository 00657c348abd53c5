//! The process's listeners: gRPC (every service's API, health, reflection and `GET /metrics`),
//! the snapshot importer's HTTP API, and `/metrics` alone for a process without gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::connections::{ConnectionLimits, Gate};
use crate::throttle::{Peer, PlainListener};
use crate::tls::TlsListener;
use recoup_access::{Throttle, ThrottleSettings};

/// HTTP/2 connections are pinged this often, and closed when a ping is not answered in time.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams one HTTP/2 connection may have open at once.
const HTTP2_MAX_STREAMS: u32 = 100;

/// Where each listener serves, when it does.
#[derive(Debug, Clone, Copy, Default)]
pub struct Addresses {
    pub grpc: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
}

/// What stands in front of the gRPC and HTTP routes.
pub struct Guard {
    /// TLS on both listeners, when configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The slow-down of peers that keep failing to authenticate.
    pub throttle: ThrottleSettings,
    /// Connections let in, and how long a silent one may stay.
    pub connections: ConnectionLimits,
}

/// The running listeners; each finishes the requests it is answering after the shutdown
/// signal, then stops.
pub struct Servers {
    /// The bound addresses (port 0 resolved).
    pub bound: Addresses,
    grpc: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    http: Vec<JoinHandle<std::io::Result<()>>>,
}

/// What the HTTP listener serves: the importer's API, and the console when given its access
/// check (it calls the services through the gRPC router, so it needs one in this process).
pub struct Http {
    pub router: axum::Router,
    pub console: Option<(recoup_access::Access, recoup_console::ConsoleConfig)>,
}

/// Binds and serves: gRPC with `routes` (plus health and reflection) on `at.grpc`, `http` on
/// `at.http` — both behind the `guard`: TLS when configured, the slow-down —, metrics on
/// `at.metrics` (plaintext: no credential and no tenant's data cross it).
pub async fn serve(
    mut routes: RoutesBuilder,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    http: Option<Http>,
    at: Addresses,
    guard: Guard,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Servers> {
    let tls = guard.tls;
    // One per process: every listener's connections count against the same limits.
    let gate = Gate::new(guard.connections);
    let mut bound = Addresses::default();
    let mut grpc = None;
    let mut grpc_router = None;
    // One per process: gRPC and HTTP failures of a peer add up.
    let throttle = Arc::new(Throttle::new(guard.throttle));
    let slow_down =
        || axum::middleware::from_fn_with_state(throttle.clone(), crate::throttle::slow_down);
    if let Some(addr) = at.grpc {
        let listener = bind(addr, "gRPC").await?;
        bound.grpc = Some(listener.local_addr()?);
        routes.add_service(health);
        add_reflection(&mut routes)?;
        // Prometheus scrapes `GET /metrics` over HTTP/1.1 on the gRPC address.
        let router = routes
            .routes()
            .into_axum_router()
            .layer(slow_down())
            .layer(axum::middleware::from_fn(crate::metrics::time_grpc));
        grpc_router = Some(router.clone());
        let router = router.route("/metrics", axum::routing::get(crate::metrics::serve));
        let listener = PlainListener {
            listener,
            gate: gate.clone(),
        };
        grpc = Some(serve_grpc(listener, router, tls.clone(), shutdown.clone())?);
    }
    let mut servers = Vec::new();
    let metrics = at.metrics.map(|addr| {
        let router =
            axum::Router::new().route("/metrics", axum::routing::get(crate::metrics::serve));
        (addr, router, "metrics")
    });
    let http = http.zip(at.http).map(|(http, addr)| {
        let router = match (http.console, grpc_router) {
            (Some((access, config)), Some(grpc)) => {
                recoup_console::router(grpc, access, config).merge(http.router)
            }
            _ => http.router,
        };
        (addr, router.layer(slow_down()), "HTTP")
    });
    for (addr, router, what) in http.into_iter().chain(metrics) {
        let listener = bind(addr, what).await?;
        let local = Some(listener.local_addr()?);
        let tls = tls.as_ref().filter(|_| what == "HTTP");
        if what == "HTTP" {
            bound.http = local;
        } else {
            bound.metrics = local;
        }
        let limits = guard.connections;
        servers.push(match tls {
            Some(config) => {
                let listener =
                    TlsListener::new(listener, config.clone(), gate.clone(), shutdown.clone())?;
                serve_router(listener, router, limits, shutdown.clone())
            }
            None => {
                let listener = PlainListener {
                    listener,
                    gate: gate.clone(),
                };
                serve_router(listener, router, limits, shutdown.clone())
            }
        });
    }
    Ok(Servers {
        bound,
        grpc,
        http: servers,
    })
}

/// gRPC reflection of recoup's services and health: clients in the field speak both versions.
fn add_reflection(routes: &mut RoutesBuilder) -> anyhow::Result<()> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(recoup_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    routes.add_service(reflection().build_v1()?);
    routes.add_service(reflection().build_v1alpha()?);
    Ok(())
}

/// Serves the gRPC router (HTTP/1.1 too, for `/metrics`) on `listener`, over TLS with `tls`.
/// Idle connections are pinged; each is asked to close at its maximum age.
fn serve_grpc(
    listener: PlainListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let mut stop = shutdown.clone();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let limits = listener.gate.limits();
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_keepalive_interval(Some(HTTP2_PING_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_PING_TIMEOUT))
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_connection_age(limits.max_age)
        .add_routes(tonic::service::Routes::from(router));
    Ok(match tls {
        Some(config) => {
            let PlainListener { listener, gate } = listener;
            let incoming = TlsListener::new(listener, config, gate, shutdown)?;
            tokio::spawn(server.serve_with_incoming_shutdown(incoming.into_incoming(), stopped))
        }
        None => {
            let incoming = futures::stream::unfold(listener, |mut listener| async move {
                let (io, _) = axum::serve::Listener::accept(&mut listener).await;
                Some((Ok::<_, std::io::Error>(io), listener))
            });
            tokio::spawn(server.serve_with_incoming_shutdown(incoming, stopped))
        }
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

/// Serves `router` on `listener` (HTTP/1.1 and HTTP/2) until `shutdown`, then lets the
/// connections finish their requests. Headers must come within the header timeout, which
/// also closes idle keep-alive connections.
fn serve_router<L>(
    mut listener: L,
    router: axum::Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(HTTP2_PING_INTERVAL))
        .keep_alive_timeout(HTTP2_PING_TIMEOUT)
        .max_concurrent_streams(HTTP2_MAX_STREAMS);
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        loop {
            let (io, peer) = tokio::select! {
                accepted = listener.accept() => accepted,
                () = recoup_runtime::shutdown::stopped(&mut shutdown) => break,
            };
            // The peer's address reaches the slow-down as ConnectInfo.
            let app = router
                .clone()
                .layer(axum::Extension(ConnectInfo(Peer(peer))));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app))
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%peer, %error, "HTTP connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    })
}

impl Servers {
    /// Waits until every listener stopped (after the shutdown signal). Cancel-safe: a later
    /// call waits for those still running.
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        while let Some(http) = self.http.last_mut() {
            let stopped = http.await;
            self.http.pop();
            stopped?.context("HTTP server")?;
        }
        if let Some(grpc) = &mut self.grpc {
            let stopped = grpc.await;
            self.grpc = None;
            stopped??;
        }
        Ok(())
    }

    /// Stops the listeners now, whatever their connections are doing.
    pub fn abort(&mut self) {
        for http in self.http.drain(..) {
            http.abort();
        }
        if let Some(grpc) = self.grpc.take() {
            grpc.abort();
        }
    }
}
