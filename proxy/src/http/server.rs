//! Serves one downstream HTTP connection (HTTP/1.1 with upgrades, or HTTP/2 prior knowledge)
//! with every limit in [`crate::limits`], and shuts it down gracefully when the proxy drains.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::detect::Protocol;
use crate::http::forward::forward;
use crate::http::keepalive::KeepAlive;
use crate::limits::{
    DOWNSTREAM_IDLE_TIMEOUT, H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT, HEADER_READ_TIMEOUT,
    MAX_CONCURRENT_STREAMS, MAX_H2_HEADER_LIST_BYTES, MAX_HEADER_BYTES,
    MAX_LOCAL_ERROR_RESET_STREAMS, MAX_PENDING_ACCEPT_RESET_STREAMS,
};
use crate::listener::ConnCtx;

/// Serves `io` as `protocol` until the client closes or the proxy drains.
pub async fn serve<I>(io: I, protocol: Protocol, conn: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = conn.shared.drain.clone();
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(forward(req, conn).await) }
    });
    let result = match protocol {
        Protocol::Http2 => {
            let io = TokioIo::new(io);
            let mut b = http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
                .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
                .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS)
                .max_header_list_size(MAX_H2_HEADER_LIST_BYTES)
                .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
                .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
                .adaptive_window(true);
            let conn = b.serve_connection(io, svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                () = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        Protocol::Http1 | Protocol::Opaque => {
            // Idle keep-alive waits get the idle timeout; a head, once started, the header one.
            let keepalive = KeepAlive::new(DOWNSTREAM_IDLE_TIMEOUT);
            let io = TokioIo::new(keepalive.io(io));
            let mut b = http1::Builder::new();
            b.timer(keepalive.timer())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                // hyper's default header count (100) is MAX_HEADERS; setting it explicitly
                // would move header parsing from the stack to the heap.
                .max_header_size(MAX_HEADER_BYTES)
                .keep_alive(true);
            let conn = b.serve_connection(io, svc).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                () = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
    }
}
