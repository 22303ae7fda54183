//! Opaque TCP: bytes are copied both ways between the client and one endpoint of the
//! destination service, until either side closes or the connection is idle for
//! [`TCP_IDLE_TIMEOUT`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::SharedString;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::detect::Rewind;
use crate::limits::TCP_IDLE_TIMEOUT;
use crate::listener::ConnCtx;
use crate::telemetry::TcpMeter;

/// Forwards `downstream` (with the bytes detection read replayed) to the destination.
pub async fn forward<T>(mut downstream: Rewind<T>, conn: Arc<ConnCtx>)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    if conn.info.direction == jalin_xds::model::listener::Direction::Inbound
        && !crate::authz::check_tcp(&conn, &conn.shared.security.load())
    {
        return;
    }
    let snapshot = conn.shared.snapshot.load_full();
    let service = match conn.destination(&snapshot) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, peer = %conn.peer, "opaque connection refused");
            return;
        }
    };
    drop(snapshot);
    let Some(ep) = service.pick() else {
        tracing::warn!(service = %service.name, "opaque connection refused: no endpoints");
        return;
    };
    let mut upstream = match ep.connect_stream().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, service = %service.name, "opaque connection failed");
            return;
        }
    };
    let mut meter = TcpMeter::open(
        conn.info.direction,
        SharedString::from(service.name.clone()),
    );
    let (received, sent, result) =
        copy_with_idle_timeout(&mut downstream, &mut upstream, TCP_IDLE_TIMEOUT).await;
    meter.received = received;
    meter.sent = sent;
    if let Err(e) = result {
        tracing::debug!(error = %e, service = %service.name, "opaque connection ended");
    }
}

/// Copies both ways until both directions are done, an error, or `idle` passes with no byte
/// read on either side. Returns bytes read from `a`, bytes read from `b`, and the outcome.
pub async fn copy_with_idle_timeout<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
) -> (u64, u64, io::Result<()>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let mut a = Activity {
        inner: a,
        epoch,
        last: &last,
        read: 0,
    };
    let mut b = Activity {
        inner: b,
        epoch,
        last: &last,
        read: 0,
    };
    let result = {
        let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
        tokio::pin!(copy);
        loop {
            let deadline = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::select! {
                r = copy.as_mut() => break r.map(|_| ()),
                () = tokio::time::sleep_until(deadline) => {
                    let since = epoch + Duration::from_millis(last.load(Ordering::Relaxed));
                    if since.elapsed() >= idle {
                        break Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                    }
                }
            }
        }
    };
    (a.read, b.read, result)
}

/// Counts bytes read and stamps the time of the last read.
struct Activity<'a, T> {
    inner: &'a mut T,
    epoch: Instant,
    last: &'a AtomicU64,
    read: u64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut *self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read += n as u64;
            let now = self.epoch.elapsed().as_millis() as u64;
            self.last.store(now, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_connections_are_closed() {
        let (mut client, mut proxy_side) = tokio::io::duplex(64);
        let (mut upstream_side, _upstream) = tokio::io::duplex(64);
        let copy = tokio::spawn(async move {
            copy_with_idle_timeout(
                &mut proxy_side,
                &mut upstream_side,
                Duration::from_millis(50),
            )
            .await
        });
        client.write_all(b"hi").await.unwrap();
        let (read_a, _, result) = copy.await.unwrap();
        assert_eq!(read_a, 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::TimedOut);
        let mut rest = Vec::new();
        // The client side sees the proxy end close.
        let _ = client.read_to_end(&mut rest).await;
    }
}
