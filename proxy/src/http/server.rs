//! Serves one downstream HTTP connection (HTTP/1.1 with upgrades, or HTTP/2 prior knowledge)
//! with every limit in [`crate::limits`], and shuts it down gracefully when the proxy drains, or
//! closes it (GOAWAY, then a short grace) when its client resets too many streams prematurely
//! ([`crate::http::premature`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use crate::detect::Protocol;
use crate::http::body::RequestBody;
use crate::http::forward::forward;
use crate::http::keepalive::KeepAlive;
use crate::http::premature::{ConnTracker, PREMATURE_RESET_CLOSED, PrematureResetConfig};
use crate::limits::{
    DOWNSTREAM_IDLE_TIMEOUT, H2_KEEPALIVE_INTERVAL, H2_KEEPALIVE_TIMEOUT, HEADER_READ_TIMEOUT,
    MAX_CONCURRENT_STREAMS, MAX_H2_HEADER_LIST_BYTES, MAX_HEADER_BYTES,
    MAX_LOCAL_ERROR_RESET_STREAMS, MAX_PENDING_ACCEPT_RESET_STREAMS, PREMATURE_RESET_CLOSE_GRACE,
};
use crate::listener::ConnCtx;

/// Serves `io` as `protocol` until the client closes or the proxy drains.
pub async fn serve<I>(io: I, protocol: Protocol, conn: Arc<ConnCtx>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = conn.shared.drain.clone();
    let peer = conn.peer;
    let listener = conn.info.name.clone();
    let tracker = ConnTracker::new(PrematureResetConfig::default());
    let counts = tracker.clone();
    let svc = service_fn(move |req| {
        let conn = conn.clone();
        // Set while the listener's HTTP/3 endpoint runs (`http3: true`).
        let alt_svc = conn.info.alt_svc.clone();
        // Made when the request is accepted, before its future is first polled: a client reset
        // drops the future, and with it the guard, before the response head exists.
        let guard = tracker.stream();
        async move {
            let mut rsp = forward(req.map(RequestBody::Http), conn).await;
            if let Some(v) = alt_svc {
                rsp.headers_mut().insert(http::header::ALT_SVC, v);
            }
            guard.responded();
            Ok::<_, Infallible>(rsp)
        }
    });
    let ctl = Control {
        drain: &drain,
        tracker: &counts,
        peer,
        listener: &listener,
    };
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
            supervise(conn, |c| c.graceful_shutdown(), ctl).await
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
            supervise(conn, |c| c.graceful_shutdown(), ctl).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
    }
}

/// What may end a connection besides its client.
struct Control<'a> {
    drain: &'a CancellationToken,
    /// Requests a close on too many premature resets.
    tracker: &'a ConnTracker,
    peer: SocketAddr,
    listener: &'a str,
}

/// Runs `conn` to its end. On drain: GOAWAY (`shutdown`), then every in-flight stream finishes
/// (the drain deadline bounds it). On premature-reset abuse: GOAWAY, then at most
/// [`PREMATURE_RESET_CLOSE_GRACE`] before the connection is dropped.
async fn supervise<C>(
    mut conn: Pin<&mut C>,
    shutdown: impl FnOnce(Pin<&mut C>),
    ctl: Control<'_>,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::select! {
        // The connection first: streams dropped because the connection already ended (the
        // client went away) must not be taken for resets.
        biased;
        r = conn.as_mut() => r,
        () = ctl.drain.cancelled() => {
            shutdown(conn.as_mut());
            conn.await
        }
        () = ctl.tracker.close_requested().cancelled() => {
            metrics::counter!(PREMATURE_RESET_CLOSED, "listener" => ctl.listener.to_owned())
                .increment(1);
            let (streams, premature) = ctl.tracker.counts();
            tracing::warn!(
                peer = %ctl.peer,
                listener = ctl.listener,
                streams,
                premature,
                "closing downstream connection: too many streams reset before their response \
                 started (premature resets; a rapid-reset attack or a broken client)"
            );
            shutdown(conn.as_mut());
            // Past the grace, dropping the connection closes the socket and its streams.
            tokio::time::timeout(PREMATURE_RESET_CLOSE_GRACE, conn)
                .await
                .unwrap_or(Ok(()))
        }
    }
}
