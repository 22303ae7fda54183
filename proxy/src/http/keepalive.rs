//! Downstream HTTP/1.1 keep-alive timing: an idle connection may wait for its next request up to
//! the idle timeout, and once a request head starts to arrive it must be complete within the
//! header-read timeout. These are Envoy's `idle_timeout` and `request_headers_timeout`.
//!
//! hyper has one timer for both: its header-read timeout also runs while a keep-alive connection
//! waits, idle, for its next request, so every connection idle for longer than the slowloris bound
//! is closed. In a mesh that means each quiet period ends in a burst of reconnects, and between
//! sidecars each is a new mTLS handshake on the request path. Here the connection's reads tell
//! the timer when a head has started. hyper asks the timer for a sleep each time it starts to wait
//! for a head, and that sleep ends at whichever bound applies at the moment.
//!
//! The first request on a connection is bound from the connection's start, as in hyper, so a
//! client that connects and sends nothing is closed after the header-read timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// `head_started` while the connection waits, idle, for its next request.
const IDLE: u64 = u64::MAX;

/// What a connection's reads and its header timer share.
#[derive(Debug)]
struct State {
    origin: Instant,
    /// Nanoseconds after `origin` at which the head being waited for started to arrive, or
    /// [`IDLE`].
    head_started: AtomicU64,
    idle_timeout: Duration,
}

impl State {
    fn mark_read(&self) {
        if self.head_started.load(Ordering::Relaxed) == IDLE {
            let since = Instant::now().saturating_duration_since(self.origin);
            // Saturates after 584 years; IDLE itself is never stored from here.
            let nanos = u64::try_from(since.as_nanos()).unwrap_or(IDLE - 1);
            self.head_started.store(nanos, Ordering::Relaxed);
        }
    }

    /// When the head being waited for must be complete, for a wait that began at `waiting_since`.
    fn deadline(&self, waiting_since: Instant, header_timeout: Duration) -> Instant {
        match self.head_started.load(Ordering::Relaxed) {
            IDLE => waiting_since + self.idle_timeout,
            started => self.origin + Duration::from_nanos(started) + header_timeout,
        }
    }
}

/// One downstream connection's keep-alive timing: wrap its I/O with [`KeepAlive::io`] and give
/// [`KeepAlive::timer`] to hyper's HTTP/1.1 builder together with the header-read timeout.
#[derive(Debug, Clone)]
pub struct KeepAlive {
    state: Arc<State>,
}

impl KeepAlive {
    /// Timing for a connection accepted now, closed after `idle_timeout` without a request.
    pub fn new(idle_timeout: Duration) -> Self {
        Self {
            state: Arc::new(State {
                origin: Instant::now(),
                // The first head is bound from the connection's start.
                head_started: AtomicU64::new(0),
                idle_timeout,
            }),
        }
    }

    /// The connection's I/O, with its reads reported to the timer.
    pub fn io<I>(&self, io: I) -> KeepAliveIo<I> {
        KeepAliveIo {
            io,
            state: Arc::clone(&self.state),
        }
    }

    /// The timer for hyper's `header_read_timeout`.
    pub fn timer(&self) -> HeadTimer {
        HeadTimer {
            state: Arc::clone(&self.state),
            first: AtomicBool::new(true),
        }
    }
}

/// A connection's I/O that notes when bytes of a new request head arrive.
#[derive(Debug)]
pub struct KeepAliveIo<I> {
    io: I,
    state: Arc<State>,
}

impl<I: AsyncRead + Unpin> AsyncRead for KeepAliveIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.mark_read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for KeepAliveIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// hyper's timer for one connection's header-read timeout (hyper's HTTP/1.1 server uses its
/// timer for nothing else). Each sleep it hands out is a wait for one request head.
#[derive(Debug)]
pub struct HeadTimer {
    state: Arc<State>,
    /// The first wait is for the connection's first head, already bound from its start.
    first: AtomicBool,
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let now = Instant::now();
        let header_timeout = Instant::from_std(deadline).saturating_duration_since(now);
        if !self.first.swap(false, Ordering::Relaxed) {
            // hyper starts a wait for the next head right after the previous exchange.
            self.state.head_started.store(IDLE, Ordering::Relaxed);
        }
        let state = Arc::clone(&self.state);
        let sleep = Box::pin(tokio::time::sleep_until(
            state.deadline(now, header_timeout),
        ));
        Box::pin(HeadSleep {
            state,
            waiting_since: now,
            header_timeout,
            sleep,
        })
    }

    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }
}

/// One wait for a request head: ends at the idle deadline while nothing has arrived, and at the
/// header-read deadline once the head has started.
struct HeadSleep {
    state: Arc<State>,
    waiting_since: Instant,
    header_timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.state.deadline(self.waiting_since, self.header_timeout);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

#[cfg(test)]
mod tests;
