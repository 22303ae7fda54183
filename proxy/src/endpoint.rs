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
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, capture_connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use jalin_xds::model::traffic::{ConnectionPool, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::admission::{Breaker, Overflow, Permit};

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

/// How an endpoint's connections are made and pooled (DestinationRule `connectionPool`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// Idle pooled connections close after this long.
    pub idle_timeout: Duration,
    /// TCP keepalive on every upstream connection; `None` keeps the OS settings.
    pub keepalive: Option<TcpKeepalive>,
    /// A connection takes no new request after serving this many; 0 is unlimited.
    pub max_requests_per_connection: u32,
}

impl PoolSettings {
    /// The settings a cluster's `connectionPool` asks for.
    pub fn from_pool(pool: &ConnectionPool) -> Self {
        Self {
            connect_timeout: Duration::from_millis(pool.connect_timeout_ms),
            idle_timeout: pool
                .idle_timeout_ms
                .filter(|ms| *ms > 0)
                .map_or(POOL_IDLE_TIMEOUT, Duration::from_millis),
            keepalive: pool.tcp_keepalive.clone(),
            max_requests_per_connection: pool.max_requests_per_connection,
        }
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self::from_pool(&ConnectionPool::default())
    }
}

/// Requests a pooled connection has served, carried in the connection's metadata.
#[derive(Debug, Clone)]
struct Served(Arc<AtomicU32>);

/// A request body towards an upstream: streamed from the client, or buffered (replayable, so the
/// request can be retried or mirrored).
pub type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// One upstream address with its HTTP/1.1 and HTTP/2 pools.
pub struct Endpoint {
    addr: SocketAddr,
    h1: Client<Connector, UpstreamBody>,
    h2: Client<Connector, UpstreamBody>,
    /// The cluster breaker whose `maxConnections` every new connection counts against.
    breaker: Arc<ArcSwapOption<Breaker>>,
    settings: PoolSettings,
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

impl SendError {
    /// The connection-pool limit that refused a new connection, if that is why this failed.
    pub fn overflow(&self) -> Option<Overflow> {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(&self.source);
        while let Some(err) = e {
            if let Some(o) = err.downcast_ref::<Overflow>() {
                return Some(*o);
            }
            e = err.source();
        }
        None
    }
}

impl Endpoint {
    /// An endpoint at `addr` whose connections follow `settings`.
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        let breaker = Arc::new(ArcSwapOption::empty());
        let connector = Connector {
            addr,
            connect_timeout: settings.connect_timeout,
            keepalive: settings.keepalive.clone(),
            breaker: Arc::clone(&breaker),
        };
        let mut h1 = Client::builder(TokioExecutor::new());
        h1.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_ENDPOINT)
            // An HTTP/2 downstream request has no Host header; hyper adds it from the authority.
            .retry_canceled_requests(true);
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .http2_only(true)
            .http2_max_header_list_size(MAX_H2_HEADER_LIST_BYTES)
            .http2_initial_max_send_streams(MAX_CONCURRENT_STREAMS as usize)
            .http2_max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
            .http2_adaptive_window(true)
            .retry_canceled_requests(true);
        Self {
            addr,
            h1: h1.build(connector.clone()),
            h2: h2.build(connector),
            breaker,
            settings,
        }
    }

    /// The pool settings this endpoint was built with.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Counts this endpoint's new connections against `breaker`'s `maxConnections` (`None`:
    /// unlimited). An endpoint shared by several subsets counts against the last one set.
    pub fn set_connection_breaker(&self, breaker: Option<Breaker>) {
        self.breaker.store(breaker.map(Arc::new));
    }

    /// The address connections go to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends `req` on this endpoint's pool for `wire`. The request URI must be absolute
    /// (`http://authority/path`); the authority keys the pool, the connection goes to `addr`.
    pub fn send(
        &self,
        mut req: Request<UpstreamBody>,
        wire: Wire,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + Send + 'static {
        let addr = self.addr;
        let max_per_conn = self.settings.max_requests_per_connection;
        let capture = (max_per_conn != 0).then(|| capture_connection(&mut req));
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
            let rsp = fut.await.map_err(|source| SendError {
                addr,
                connect: source.is_connect(),
                source,
            })?;
            // maxRequestsPerConnection: a connection that served its share is not reused.
            if let (Some(capture), Some(Served(n))) = (capture, rsp.extensions().get::<Served>())
                && n.fetch_add(1, Ordering::AcqRel) + 1 >= max_per_conn
                && let Some(conn) = capture.connection_metadata().as_ref()
            {
                conn.poison();
            }
            Ok(rsp)
        }
    }
}

/// Connects every pool checkout to one fixed address, whatever the URI says.
#[derive(Debug, Clone)]
struct Connector {
    addr: SocketAddr,
    connect_timeout: Duration,
    keepalive: Option<TcpKeepalive>,
    breaker: Arc<ArcSwapOption<Breaker>>,
}

/// An upstream connection holding its `maxConnections` slot until it closes.
#[derive(Debug)]
pub struct LimitedStream {
    stream: TcpStream,
    _slot: Option<Permit>,
    served: Arc<AtomicU32>,
}

impl Connection for LimitedStream {
    fn connected(&self) -> Connected {
        self.stream.connected().extra(Served(self.served.clone()))
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<LimitedStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<LimitedStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _dst: Uri) -> Self::Future {
        let addr = self.addr;
        let timeout = self.connect_timeout;
        let slot = match self.breaker.load().as_deref().map(Breaker::try_connection) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(o)) => return Box::pin(async move { Err(io::Error::other(o)) }),
        };
        let keepalive = self.keepalive.clone();
        Box::pin(async move {
            let stream = connect(addr, timeout).await?;
            if let Some(k) = &keepalive {
                set_keepalive(&stream, k)?;
            }
            Ok(TokioIo::new(LimitedStream {
                stream,
                _slot: slot,
                served: Arc::new(AtomicU32::new(0)),
            }))
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

/// Turns on TCP keepalive with the given time, interval and probe count (unset: OS defaults).
fn set_keepalive(stream: &TcpStream, k: &TcpKeepalive) -> io::Result<()> {
    let mut ka = socket2::TcpKeepalive::new();
    if let Some(t) = k.time_ms {
        ka = ka.with_time(Duration::from_millis(t));
    }
    if let Some(i) = k.interval_ms {
        ka = ka.with_interval(Duration::from_millis(i));
    }
    if let Some(p) = k.probes {
        ka = ka.with_retries(p);
    }
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
}
