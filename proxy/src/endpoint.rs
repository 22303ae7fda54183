//! The endpoint layer: one upstream address and its connection pools. Sending on an endpoint is
//! a separate step from choosing it, so per-endpoint limits (circuit breaking) and outlier
//! feedback can wrap [`Endpoint::send`] without touching how the endpoint was picked.
//!
//! Invariant: every request sent to one endpoint with one protocol shares one pool: HTTP/2
//! requests multiplex over one connection, HTTP/1.1 requests reuse idle keep-alive connections.
//! The pools are keyed by the request's authority, and every connection goes to `addr` whatever
//! the authority says, so the `Host` / `:authority` the client wrote reaches the upstream intact.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::limits::{
    MAX_CONCURRENT_STREAMS, MAX_H2_HEADER_LIST_BYTES, MAX_LOCAL_ERROR_RESET_STREAMS,
    POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_ENDPOINT,
};

/// The HTTP version the proxy speaks to one endpoint for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Http1,
    Http2,
}

/// One upstream address with its HTTP/1.1 and HTTP/2 pools.
pub struct Endpoint {
    addr: SocketAddr,
    /// mTLS origination, when the cluster says `tls: istio_mutual`.
    tls: Option<Arc<crate::tls::EndpointTls>>,
    connect_timeout: Duration,
    h1: Client<Connector, Incoming>,
    h2: Client<Connector, Incoming>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The error of one send: the connection could not be made or the exchange failed.
#[derive(Debug, thiserror::Error)]
#[error("upstream {addr}: {source}")]
pub struct SendError {
    pub addr: SocketAddr,
    /// True when no connection could be established (nothing reached the upstream).
    pub connect: bool,
    #[source]
    pub source: hyper_util::client::legacy::Error,
}

impl Endpoint {
    /// An endpoint at `addr`; connections time out after `connect_timeout`.
    pub fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Self::with_tls(addr, connect_timeout, None)
    }

    /// An endpoint whose connections originate mTLS with `tls` (when given).
    pub fn with_tls(
        addr: SocketAddr,
        connect_timeout: Duration,
        tls: Option<Arc<crate::tls::EndpointTls>>,
    ) -> Self {
        let connector = Connector {
            addr,
            connect_timeout,
            tls: tls.clone().map(|t| (t, false)),
        };
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_ENDPOINT)
            // An HTTP/2 downstream request has no Host header; hyper adds it from the authority.
            .retry_canceled_requests(true);
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http2_only(true)
            .http2_max_header_list_size(MAX_H2_HEADER_LIST_BYTES)
            .http2_initial_max_send_streams(MAX_CONCURRENT_STREAMS as usize)
            .http2_max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .http2_adaptive_window(true)
            .retry_canceled_requests(true);
        let h2_connector = Connector {
            tls: tls.clone().map(|t| (t, true)),
            ..connector
        };
        Self {
            addr,
            tls,
            connect_timeout,
            h1: h1.build(connector),
            h2: h2.build(h2_connector),
        }
    }

    /// The server identity this endpoint's connections verify, if they originate mTLS.
    pub fn tls_identity(&self) -> Option<&jalin_ca::spiffe::SpiffeId> {
        self.tls.as_ref().map(|t| &t.identity)
    }

    /// Opens a connection for opaque TCP (mTLS when configured, with no ALPN protocol).
    pub async fn connect_stream(&self) -> io::Result<crate::tls::UpstreamIo> {
        crate::tls::connect(
            self.addr,
            self.connect_timeout,
            self.tls.as_ref().map(|t| (&**t, None)),
        )
        .await
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` on this endpoint's pool for `wire`. The request URI must be absolute
    /// (`http://authority/path`); the authority keys the pool, the connection goes to `addr`.
    pub fn send(
        &self,
        mut req: Request<Incoming>,
        wire: Wire,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + Send + 'static {
        let addr = self.addr;
        let fut = match wire {
            Wire::Http1 => {
                *req.version_mut() = Version::HTTP_11;
                self.h1.request(req)
            }
            Wire::Http2 => {
                *req.version_mut() = Version::HTTP_2;
                self.h2.request(req)
            }
        };
        async move {
            fut.await.map_err(|source| SendError {
                addr,
                connect: source.is_connect(),
                source,
            })
        }
    }
}

/// Connects every pool checkout to one fixed address, whatever the URI says.
#[derive(Debug, Clone)]
struct Connector {
    addr: SocketAddr,
    connect_timeout: Duration,
    /// mTLS settings and whether this pool speaks HTTP/2 (its ALPN).
    tls: Option<(Arc<crate::tls::EndpointTls>, bool)>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<crate::tls::UpstreamIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let addr = self.addr;
        let timeout = self.connect_timeout;
        let tls = self.tls.clone();
        Box::pin(async move {
            let tls = tls.as_ref().map(|(t, h2)| (&**t, Some(*h2)));
            crate::tls::connect(addr, timeout, tls)
                .await
                .map(TokioIo::new)
        })
    }
}

/// Opens a TCP connection with `TCP_NODELAY`, bounded by `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {addr} timed out after {} ms",
                    timeout.as_millis()
                ),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}
