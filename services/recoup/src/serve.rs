//! The process's listeners: gRPC (every service's API, health, reflection and `GET /metrics`),
//! the snapshot importer's HTTP API, and `/metrics` alone for a process without gRPC.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::RoutesBuilder;

use crate::throttle::{Peer, PlainListener};
use crate::tls::TlsListener;
use recoup_access::{Throttle, ThrottleSettings};

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
}

/// The running listeners; each finishes the requests it is answering after the shutdown
/// signal, then stops.
pub struct Servers {
    /// The bound addresses (port 0 resolved).
    pub bound: Addresses,
    grpc: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    http: Vec<JoinHandle<std::io::Result<()>>>,
}

/// Binds and serves: gRPC with `routes` (plus health and reflection) on `at.grpc`, `http` on
/// `at.http` — both behind the `guard`: TLS when configured, the slow-down —, metrics on
/// `at.metrics` (plaintext: no credential and no tenant's data cross it).
pub async fn serve(
    mut routes: RoutesBuilder,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    http: Option<axum::Router>,
    at: Addresses,
    guard: Guard,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Servers> {
    let tls = guard.tls;
    let mut bound = Addresses::default();
    let mut grpc = None;
    // One per process: gRPC and HTTP failures of a peer add up.
    let throttle = Arc::new(Throttle::new(guard.throttle));
    let slow_down =
        || axum::middleware::from_fn_with_state(throttle.clone(), crate::throttle::slow_down);
    if let Some(addr) = at.grpc {
        let listener = bind(addr, "gRPC").await?;
        bound.grpc = Some(listener.local_addr()?);
        routes.add_service(health);
        // Clients in the field speak both reflection versions.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(recoup_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);
        // Prometheus scrapes `GET /metrics` over HTTP/1.1 on the gRPC address.
        let router = routes
            .routes()
            .into_axum_router()
            .layer(slow_down())
            .layer(axum::middleware::from_fn(crate::metrics::time_grpc))
            .route("/metrics", axum::routing::get(crate::metrics::serve));
        grpc = Some(serve_grpc(listener, router, tls.clone(), shutdown.clone())?);
    }
    let mut servers = Vec::new();
    let metrics = at.metrics.map(|addr| {
        let router =
            axum::Router::new().route("/metrics", axum::routing::get(crate::metrics::serve));
        (addr, router, "metrics")
    });
    let http = http
        .zip(at.http)
        .map(|(router, addr)| (addr, router.layer(slow_down()), "HTTP"));
    for (addr, router, what) in http.into_iter().chain(metrics) {
        let listener = bind(addr, what).await?;
        let local = Some(listener.local_addr()?);
        let tls = tls.as_ref().filter(|_| what == "HTTP");
        if what == "HTTP" {
            bound.http = local;
        } else {
            bound.metrics = local;
        }
        servers.push(match tls {
            Some(config) => {
                let listener = TlsListener::new(listener, config.clone(), shutdown.clone())?;
                serve_router(listener, router, shutdown.clone())
            }
            None => serve_http(listener, router, shutdown.clone()),
        });
    }
    Ok(Servers {
        bound,
        grpc,
        http: servers,
    })
}

/// Serves the gRPC router (HTTP/1.1 too, for `/metrics`) on `listener`, over TLS with `tls`.
fn serve_grpc(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
    let mut stop = shutdown.clone();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(router));
    Ok(match tls {
        Some(config) => {
            let incoming = TlsListener::new(listener, config, shutdown)?;
            tokio::spawn(server.serve_with_incoming_shutdown(incoming.into_incoming(), stopped))
        }
        // Without TCP_NODELAY small replies wait for delayed ACKs (~40 ms each).
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            tokio::spawn(server.serve_with_incoming_shutdown(incoming, stopped))
        }
    })
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({what})"))
}

fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    serve_router(PlainListener(listener), router, shutdown)
}

fn serve_router<L>(
    listener: L,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> Peer: Connected<IncomingStream<'a, L>>,
{
    // The peer's address reaches the slow-down as ConnectInfo.
    let app = router.into_make_service_with_connect_info::<Peer>();
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    });
    tokio::spawn(serve.into_future())
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
