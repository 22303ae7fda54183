//! The endpoint layer: one upstream address and its connection pools. Sending on an endpoint is
//! a separate step from choosing it, so per-endpoint limits (circuit breaking) and outlier
//! feedback can wrap [`Endpoint::send`] without touching how the endpoint was picked.
//!
//! Invariant: every request sent to one endpoint with one protocol shares one pool: HTTP/2
//! requests multiplex over one connection, HTTP/1.1 requests reuse idle keep-alive connections.
//! The pools are keyed by the request's authority, and every connection goes to `addr` whatever
//! the authority says, so the `Host` / `:authority` the client wrote reaches the upstream intact.
//! Every new connection, HTTP or opaque TCP, takes its cluster's `maxConnections` slot before
//! it is opened and holds it until it closes; with mTLS the slot covers the handshake too.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

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
use crate::http::body::{Counted, RequestBody};
use crate::limits::{
    MAX_CONCURRENT_STREAMS, MAX_H2_HEADER_LIST_BYTES, MAX_LOCAL_ERROR_RESET_STREAMS,
    POOL_IDLE_TIMEOUT, POOL_MAX_IDLE_PER_ENDPOINT,
};
use crate::tls::{EndpointTls, UpstreamIo};

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
pub type UpstreamBody = Either<Counted<RequestBody>, Full<Bytes>>;

/// One upstream address with its HTTP/1.1 and HTTP/2 pools.
pub struct Endpoint {
    addr: SocketAddr,
    /// mTLS origination, when the cluster (or this endpoint) says `tls: istio_mutual`.
    tls: Option<Arc<EndpointTls>>,
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
    /// A plaintext endpoint at `addr` whose connections follow `settings`.
    pub fn new(addr: SocketAddr, settings: PoolSettings) -> Self {
        Self::with_tls(addr, settings, None)
    }

    /// An endpoint at `addr` whose connections follow `settings` and originate mTLS with `tls`
    /// (when given).
    pub fn with_tls(
        addr: SocketAddr,
        settings: PoolSettings,
        tls: Option<Arc<EndpointTls>>,
    ) -> Self {
        let breaker = Arc::new(ArcSwapOption::empty());
        let connector = Connector {
            addr,
            connect_timeout: settings.connect_timeout,
            keepalive: settings.keepalive.clone(),
            breaker: Arc::clone(&breaker),
            tls: tls.clone().map(|t| (t, false)),
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
        let h2_connector = Connector {
            tls: tls.clone().map(|t| (t, true)),
            ..connector.clone()
        };
        Self {
            addr,
            tls,
            h1: h1.build(connector),
            h2: h2.build(h2_connector),
            breaker,
            settings,
        }
    }

    /// The server identity this endpoint's connections verify, if they originate mTLS.
    pub fn tls_identity(&self) -> Option<&jalin_ca::spiffe::SpiffeId> {
        self.tls.as_ref().map(|t| &t.identity)
    }

    /// Opens a connection for opaque TCP: it takes a `maxConnections` slot like a pooled one,
    /// gets the pool's TCP keepalive, and originates mTLS (with no ALPN protocol) when configured.
    pub async fn connect_stream(&self) -> io::Result<LimitedStream> {
        let slot = take_slot(&self.breaker)?;
        open(
            self.addr,
            self.settings.connect_timeout,
            self.settings.keepalive.as_ref(),
            self.tls.as_ref().map(|t| (&**t, None)),
            slot,
        )
        .await
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
    /// mTLS settings and whether this pool speaks HTTP/2 (its ALPN).
    tls: Option<(Arc<EndpointTls>, bool)>,
}

/// An upstream connection (plaintext or mTLS) holding its `maxConnections` slot until it closes.
#[derive(Debug)]
pub struct LimitedStream {
    stream: UpstreamIo,
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
        let slot = match take_slot(&self.breaker) {
            Ok(slot) => slot,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let keepalive = self.keepalive.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            let tls = tls.as_ref().map(|(t, h2)| (&**t, Some(*h2)));
            open(addr, timeout, keepalive.as_ref(), tls, slot)
                .await
                .map(TokioIo::new)
        })
    }
}

/// Takes a `maxConnections` slot of the endpoint's breaker (`None`: no breaker, unlimited).
fn take_slot(breaker: &ArcSwapOption<Breaker>) -> io::Result<Option<Permit>> {
    match breaker.load().as_deref().map(Breaker::try_connection) {
        None => Ok(None),
        Some(Ok(p)) => Ok(Some(p)),
        Some(Err(o)) => Err(io::Error::other(o)),
    }
}

/// Opens a connection holding `slot`: TCP within `timeout` (with `keepalive`), then the mTLS
/// handshake when `tls` is given (see [`crate::tls::handshake`]).
async fn open(
    addr: SocketAddr,
    timeout: Duration,
    keepalive: Option<&TcpKeepalive>,
    tls: Option<(&EndpointTls, Option<bool>)>,
    slot: Option<Permit>,
) -> io::Result<LimitedStream> {
    if let Some((t, _)) = tls {
        t.usable(addr)?;
    }
    let stream = connect(addr, timeout).await?;
    if let Some(k) = keepalive {
        set_keepalive(&stream, k)?;
    }
    let stream = crate::tls::handshake(stream, addr, timeout, tls).await?;
    Ok(LimitedStream {
        stream,
        _slot: slot,
        served: Arc::new(AtomicU32::new(0)),
    })
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::net::TcpListener;

    use super::*;
    use crate::admission::Limits;

    fn breaker(max_connections: u32) -> Breaker {
        let limits = Limits {
            max_connections,
            ..Limits::default()
        };
        Breaker::new("c", limits, Instant::now())
    }

    #[tokio::test]
    async fn opaque_connections_hold_a_max_connections_slot_until_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ep = Endpoint::new(listener.local_addr().unwrap(), PoolSettings::default());
        let b = breaker(1);
        ep.set_connection_breaker(Some(b.clone()));

        let first = ep.connect_stream().await.unwrap();
        assert_eq!(b.active_connections(), 1);
        let refused = ep.connect_stream().await.unwrap_err();
        let overflow = refused
            .get_ref()
            .and_then(|e| e.downcast_ref::<Overflow>())
            .copied();
        assert_eq!(overflow, Some(Overflow::Connections), "{refused}");

        drop(first);
        assert_eq!(b.active_connections(), 0);
        let _again = ep.connect_stream().await.unwrap();
        assert_eq!(b.active_connections(), 1);
    }

    #[tokio::test]
    async fn unusable_mtls_fails_closed_without_connecting_or_keeping_a_slot() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let id = jalin_ca::spiffe::SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let tls = Arc::new(EndpointTls::unusable(id.clone(), "no identity".into()));
        let ep = Endpoint::with_tls(
            listener.local_addr().unwrap(),
            PoolSettings::default(),
            Some(tls),
        );
        let b = breaker(1);
        ep.set_connection_breaker(Some(b.clone()));
        assert_eq!(ep.tls_identity(), Some(&id));

        let e = ep.connect_stream().await.unwrap_err();
        assert!(e.to_string().contains("not possible"), "{e}");
        assert_eq!(b.active_connections(), 0);
        // Nothing reached the upstream: the next accept finds only the plaintext probe below.
        let probe = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert_eq!(accepted.peer_addr().unwrap(), probe.local_addr().unwrap());
    }
}
