//! What the listeners let in: at most so many connections in all and per peer address, and
//! none that stays silent. A connection over a limit is closed at once, before TLS or HTTP
//! cost anything; one that sends no byte within the header timeout is closed too (HTTP/1
//! then times out its headers and its idle keep-alive with the same timeout, HTTP/2 pings).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The listeners' budgets; [`ConnectionLimits::default`] suits a public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, every listener of the process together.
    pub max: usize,
    /// Connections open at once from one IP address (behind a proxy, raise it: every client
    /// comes from the proxy).
    pub per_peer: usize,
    /// How long a connection may take to send its first byte, an HTTP/1 request its headers,
    /// and how long an idle HTTP/1 keep-alive connection stays open.
    pub header_timeout: Duration,
    /// gRPC: a connection is asked to close after this age (its calls in flight may finish
    /// within the import deadline); clients reconnect transparently.
    pub max_age: Duration,
}

/// Connections open at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Connections from one address by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;
/// Default header timeout.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default age of a gRPC connection.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(3600);

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: DEFAULT_MAX_CONNECTIONS,
            per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Counts open connections against the limits; cheap to clone, clones share the counts.
#[derive(Clone)]
pub struct Gate {
    limits: ConnectionLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

impl Gate {
    pub fn new(limits: ConnectionLimits) -> Self {
        Self {
            limits,
            open: Arc::default(),
        }
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// A pass for one more connection of `peer`, or `None` over a limit.
    pub fn admit(&self, peer: SocketAddr) -> Option<Pass> {
        let ip = peer.ip();
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let of_peer = open.by_peer.get(&ip).copied().unwrap_or(0);
        if open.total >= self.limits.max || of_peer >= self.limits.per_peer {
            let (total, limits) = (open.total, self.limits);
            drop(open);
            tracing::debug!(
                %peer, total, of_peer, max = limits.max, per_peer = limits.per_peer,
                "connection refused: over the connection limits"
            );
            recoup_metrics::metrics().connections_refused.inc();
            return None;
        }
        open.total += 1;
        open.by_peer.insert(ip, of_peer + 1);
        Some(Pass {
            open: self.open.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// `io`, counted by `pass` and closed unless it sends a byte within the header timeout.
    pub fn gated<IO>(&self, io: IO, pass: Pass) -> Gated<IO> {
        Gated {
            io,
            _pass: pass,
            first_byte: Some(Box::pin(tokio::time::sleep(self.limits.header_timeout))),
            timeout: self.limits.header_timeout,
        }
    }
}

/// One admitted connection; dropping it frees its place.
pub struct Pass {
    open: Arc<Mutex<Open>>,
    ip: IpAddr,
}

impl Drop for Pass {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_peer.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.by_peer.remove(&self.ip);
            }
        }
    }
}

/// A connection holding its pass, failing its first read if no byte came in time.
pub struct Gated<IO> {
    io: IO,
    _pass: Pass,
    first_byte: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl<IO> Gated<IO> {
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Gated<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Some(first_byte) = &mut this.first_byte {
            match polled {
                Poll::Ready(Ok(())) if buf.filled().len() > before => this.first_byte = None,
                Poll::Ready(_) => {}
                Poll::Pending => {
                    if first_byte.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "no byte within {} s of connecting",
                                this.timeout.as_secs_f64()
                            ),
                        )));
                    }
                }
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Gated<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Gated<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn passes_count_in_all_and_per_peer_and_free_their_place() {
        let gate = Gate::new(ConnectionLimits {
            max: 3,
            per_peer: 2,
            ..ConnectionLimits::default()
        });
        let a1 = gate.admit(peer([10, 0, 0, 1], 1)).unwrap();
        let _a2 = gate.admit(peer([10, 0, 0, 1], 2)).unwrap();
        assert!(gate.admit(peer([10, 0, 0, 1], 3)).is_none(), "per peer");
        let _b1 = gate.admit(peer([10, 0, 0, 2], 1)).unwrap();
        assert!(gate.admit(peer([10, 0, 0, 3], 1)).is_none(), "in all");
        assert_eq!(gate.open(), 3);
        drop(a1);
        assert_eq!(gate.open(), 2);
        assert!(gate.admit(peer([10, 0, 0, 1], 4)).is_some());
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_first_read_one_that_speaks_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let gate = Gate::new(ConnectionLimits {
            header_timeout: Duration::from_millis(200),
            ..ConnectionLimits::default()
        });
        let (client, server) = tokio::io::duplex(64);
        let mut silent = gate.gated(server, gate.admit(peer([10, 0, 0, 1], 1)).unwrap());
        let mut byte = [0u8; 1];
        let error = silent.read(&mut byte).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);

        let (mut client, server) = tokio::io::duplex(64);
        let mut speaking = gate.gated(server, gate.admit(peer([10, 0, 0, 1], 2)).unwrap());
        client.write_all(b"G").await.unwrap();
        assert_eq!(speaking.read(&mut byte).await.unwrap(), 1);
        // Once it spoke, waiting is up to the protocol, not to this timer.
        let later = tokio::time::timeout(Duration::from_millis(400), speaking.read(&mut byte));
        assert!(later.await.is_err(), "still waiting, not failed");
    }
}
