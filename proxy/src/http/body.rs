//! The bodies the proxy carries: [`RequestBody`], the downstream request's body (hyper's for
//! HTTP/1.1 and HTTP/2, the request stream's for HTTP/3), and [`ProxyBody`], the response body
//! the proxy returns.
//!
//! The response body is the upstream's body streamed frame by frame (never
//! buffered), or a small local body for responses the proxy makes itself. It carries the
//! request's meter, which records the request's metrics once: when the last frame is handed on,
//! or when the body is dropped before that (client gone: `DC`; upstream body failed: `UC`;
//! route timeout: `UT`; always with the status the client was sent), and the rest of the route
//! timeout.
//!
//! Route timeout after the headers (Envoy's semantics): the route timeout runs until the
//! upstream response is complete. When it fires while the body is still streaming, the status
//! has already been sent, so the body ends in an error: hyper then resets the HTTP/2 stream or
//! closes the HTTP/1.1 connection (the client sees a cut response, never a complete one), the
//! upstream body is dropped (its connection is not reused), the request is metered with flag
//! `UT` and counted in [`ROUTE_TIMEOUT_METRIC`] with `phase="body"`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::cluster::Admission;
use crate::telemetry::{RequestMeter, ResponseFlag, parse_grpc_status};

/// Counter of requests the route timeout ended, labelled `cluster` and `phase`: `headers` (no
/// response headers in time: 504) or `body` (the response was cut after its headers).
pub const ROUTE_TIMEOUT_METRIC: &str = "jalin_upstream_route_timeout_total";

/// Counts one request the route timeout ended in `phase` (`headers` or `body`).
pub(crate) fn count_route_timeout(cluster: &str, phase: &'static str) {
    metrics::counter!(ROUTE_TIMEOUT_METRIC, "cluster" => cluster.to_owned(), "phase" => phase)
        .increment(1);
}

/// The downstream request's body, whatever the client spoke. Static dispatch over the two
/// transports; the HTTP/1.1 and HTTP/2 case is hyper's body moved in as is (no allocation),
/// the HTTP/3 one is boxed (once per HTTP/3 request) so the common case stays small.
#[derive(Debug)]
pub enum RequestBody {
    /// HTTP/1.1 or HTTP/2, from hyper's server.
    Http(Incoming),
    /// HTTP/3: the request stream's DATA frames and trailers.
    H3(Box<crate::h3::body::H3Body>),
}

impl From<Incoming> for RequestBody {
    fn from(body: Incoming) -> Self {
        Self::Http(body)
    }
}

/// Why the downstream request body failed (the client reset or cut it, or broke the protocol).
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("HTTP/3 request stream: {0}")]
    H3(#[from] ::h3::error::StreamError),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        match self.get_mut() {
            Self::Http(b) => Pin::new(b).poll_frame(cx).map_err(RequestBodyError::Http),
            Self::H3(b) => Pin::new(&mut **b)
                .poll_frame(cx)
                .map_err(RequestBodyError::H3),
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http(b) => b.is_end_stream(),
            Self::H3(b) => b.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http(b) => b.size_hint(),
            Self::H3(b) => b.size_hint(),
        }
    }
}

/// A streamed request body that counts the data bytes it hands on, for `istio_request_bytes` and
/// the access log's `BYTES_RECEIVED` (the meter reads the count when the request is recorded).
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Wraps `inner`, adding its data bytes to `count`.
    pub fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Self { inner, count }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.count.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a proxied body ends with: the upstream's, or the route timeout.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream body failed (reset, closed early, protocol error).
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// The route timeout fired before the upstream response was complete.
    #[error(
        "route timeout fired after the response headers; the response was cut (raise the VirtualService timeout if responses legitimately take longer)"
    )]
    RouteTimeout,
}

/// The rest of the route timeout, armed while the upstream body streams.
#[derive(Debug)]
struct Deadline {
    sleep: Pin<Box<tokio::time::Sleep>>,
    cluster: Arc<str>,
}

/// A proxied or locally generated response body.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    meter: Option<RequestMeter>,
    /// Admission slots released when the body is dropped (after it ended or was abandoned).
    hold: Option<Admission>,
    /// The route timeout's end, for an upstream body; `None`: no timeout.
    deadline: Option<Deadline>,
}

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// Streams `body` from the upstream.
    pub fn upstream(body: Incoming, meter: Option<RequestMeter>) -> Self {
        Self::new(Inner::Upstream(body), meter)
    }

    fn new(inner: Inner, mut meter: Option<RequestMeter>) -> Self {
        // hyper never polls a body that is empty from the start: it is complete as it is.
        if body_done(&inner)
            && let Some(m) = meter.as_mut()
        {
            m.complete();
        }
        Self {
            inner,
            meter,
            hold: None,
            deadline: None,
        }
    }

    /// Ends the body with [`BodyError::RouteTimeout`] if it is not complete at `at` (the route
    /// timeout's end); `cluster` labels the metric. `None`: no timeout, and nothing is armed
    /// (no timer, no clock read on any poll).
    pub fn until(mut self, at: Option<Instant>, cluster: &Arc<str>) -> Self {
        if let (Some(at), Inner::Upstream(b)) = (at, &self.inner)
            && !b.is_end_stream()
        {
            self.deadline = Some(Deadline {
                sleep: Box::pin(tokio::time::sleep_until(at.into())),
                cluster: Arc::clone(cluster),
            });
        }
        self
    }

    /// Keeps `admission` until this body is dropped.
    pub fn holding(mut self, admission: Admission) -> Self {
        self.hold = Some(admission);
        self
    }

    /// A body the proxy wrote itself.
    pub fn local(bytes: impl Into<Bytes>, meter: Option<RequestMeter>) -> Self {
        let bytes = bytes.into();
        Self::new(Inner::Local((!bytes.is_empty()).then_some(bytes)), meter)
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::new(Inner::Local(None), None)
    }

    fn finish(&mut self) {
        // The request is over for admission as soon as its last frame is handed on.
        self.hold = None;
        self.deadline = None;
        if let Some(m) = self.meter.as_mut() {
            m.complete();
        }
    }

    /// The route timeout fired mid-body: meter and count it, release the upstream body (its
    /// connection is not reused) and the admission slots.
    fn route_timeout(&mut self) -> BodyError {
        if let Some(d) = self.deadline.take() {
            count_route_timeout(&d.cluster, "body");
            tracing::debug!(cluster = %d.cluster, "route timeout fired after the response headers; cutting the response");
        }
        if let Some(m) = self.meter.as_mut() {
            m.set_flag(ResponseFlag::UpstreamRequestTimeout);
        }
        self.inner = Inner::Local(None);
        self.hold = None;
        BodyError::RouteTimeout
    }
}

fn body_done(inner: &Inner) -> bool {
    match inner {
        Inner::Upstream(b) => b.is_end_stream(),
        Inner::Local(b) => b.is_none(),
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        // The route timeout ends the exchange at its deadline, even while frames keep coming
        // (only an upstream body has one); polling it here also arms its wake-up.
        if let Some(d) = this.deadline.as_mut()
            && d.sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(this.route_timeout())));
        }
        match &mut this.inner {
            Inner::Local(bytes) => {
                // One frame at most: the body is complete once it is handed on (hyper stops
                // polling a body whose `is_end_stream` is true).
                let frame = bytes.take().map(|b| {
                    if let Some(m) = this.meter.as_mut() {
                        m.sent(b.len());
                    }
                    Ok(Frame::data(b))
                });
                this.finish();
                Poll::Ready(frame)
            }
            Inner::Upstream(body) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Some(m) = this.meter.as_mut() {
                            if let Some(data) = frame.data_ref() {
                                m.sent(data.len());
                            } else if let Some(trailers) = frame.trailers_ref() {
                                m.trailers(parse_grpc_status(trailers.get("grpc-status")));
                            }
                        }
                        // hyper does not poll again once `is_end_stream` is true, so the
                        // last frame completes the request (metering, admission, deadline).
                        if body_done(&this.inner) {
                            this.finish();
                        }
                    }
                    Poll::Ready(None) => this.finish(),
                    // The upstream cut its body: the app's code stands, flagged `UC` (not
                    // `DC`: the downstream did not go away).
                    Poll::Ready(Some(Err(_))) => {
                        this.deadline = None;
                        if let Some(m) = this.meter.as_mut() {
                            m.set_flag(ResponseFlag::UpstreamTerminated);
                        }
                    }
                    Poll::Pending => {}
                }
                polled.map_err(BodyError::from)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Local(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Local(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
