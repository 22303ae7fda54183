//! The built-in upstream: a fast server that drains each request body and answers `200` with a
//! fixed-size body, over HTTP/1.1 and h2c (prior knowledge) on one port, or over TLS with ALPN.
//!
//! It runs on its own runtime and threads so it never shares the generator's, and stops when its
//! [`Upstream`] handle is dropped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Default response body size: 1 KiB.
pub const DEFAULT_RESPONSE_SIZE: usize = 1024;
/// Time a client has to send a request head (bounds idle half-open connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent HTTP/2 streams per connection (hyper's default; the generator's default is below).
const MAX_CONCURRENT_STREAMS: u32 = 200;

/// How to run the upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Bytes in every response body.
    pub response_size: usize,
    /// Worker threads of its runtime.
    pub threads: usize,
    /// TLS, or cleartext when `None`.
    pub tls: Option<Arc<ServerConfig>>,
}

/// The upstream could not start.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}; is the port already in use?")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or thread could not start.
    #[error("cannot start the upstream's runtime: {0}")]
    Runtime(std::io::Error),
}

/// A running upstream; dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct Upstream {
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Starts the upstream on its own runtime; returns once it is listening.
    pub fn start(config: UpstreamConfig) -> Result<Self, UpstreamError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.threads.max(1))
            .thread_name("upstream")
            .enable_all()
            .build()
            .map_err(UpstreamError::Runtime)?;
        let bind_err = |source| UpstreamError::Bind {
            addr: config.listen,
            source,
        };
        // Bound here (not on the runtime) so `start` also works from inside another runtime.
        let listener = std::net::TcpListener::bind(config.listen).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(UpstreamError::Runtime)?;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("upstream-main".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, &config, stopped).await,
                        Err(e) => {
                            tracing::error!(error = %e, "upstream cannot register its listener")
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(UpstreamError::Runtime)?;
        Ok(Self {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts and serves connections until `stop` turns true (or its sender is dropped).
pub async fn serve(
    listener: TcpListener,
    config: &UpstreamConfig,
    mut stop: watch::Receiver<bool>,
) {
    let body = Bytes::from(vec![b'a'; config.response_size]);
    let acceptor = config.tls.clone().map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let builder = Arc::new(builder);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let (tcp, _peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: log and keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(
            tcp,
            acceptor.clone(),
            builder.clone(),
            body.clone(),
        ));
    }
}

async fn connection(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    body: Bytes,
) {
    let service = service_fn(move |req| respond(req, body.clone()));
    let result = match acceptor {
        None => builder.serve_connection(TokioIo::new(tcp), service).await,
        Some(acceptor) => {
            let Ok(Ok(tls)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            builder.serve_connection(TokioIo::new(tls), service).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "upstream connection ended");
    }
}

async fn respond(req: Request<Incoming>, body: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut incoming = req.into_body();
    while let Some(frame) = incoming.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let mut response = Response::new(Full::new(body));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}
