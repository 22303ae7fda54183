//! The response body the proxy returns: the upstream's body streamed frame by frame (never
//! buffered), or a small local body for responses the proxy makes itself. It carries the
//! request's meter, which records the request's metrics when the body ends or is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::cluster::Admission;
use crate::telemetry::{RequestMeter, parse_grpc_status};

/// A proxied or locally generated response body.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    meter: Option<RequestMeter>,
    /// Admission slots released when the body is dropped (after it ended or was abandoned).
    hold: Option<Admission>,
}

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

impl ProxyBody {
    /// Streams `body` from the upstream.
    pub fn upstream(body: Incoming, meter: Option<RequestMeter>) -> Self {
        Self {
            inner: Inner::Upstream(body),
            meter,
            hold: None,
        }
    }

    /// Keeps `admission` until this body is dropped.
    pub fn holding(mut self, admission: Admission) -> Self {
        self.hold = Some(admission);
        self
    }

    /// A body the proxy wrote itself.
    pub fn local(bytes: impl Into<Bytes>, meter: Option<RequestMeter>) -> Self {
        let bytes = bytes.into();
        Self {
            inner: Inner::Local((!bytes.is_empty()).then_some(bytes)),
            meter,
            hold: None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Local(None),
            meter: None,
            hold: None,
        }
    }

    fn finish(&mut self) {
        // The request is over for admission as soon as its last frame is handed on.
        self.hold = None;
        if let Some(m) = self.meter.as_mut() {
            m.complete();
        }
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
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Local(bytes) => {
                let frame = bytes.take().map(|b| Ok(Frame::data(b)));
                if frame.is_none() {
                    this.finish();
                }
                Poll::Ready(frame)
            }
            Inner::Upstream(body) => {
                let polled = Pin::new(body).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(trailers), Some(m)) = (frame.trailers_ref(), &mut this.meter) {
                            m.trailers(parse_grpc_status(trailers.get("grpc-status")));
                        }
                        if body_done(&this.inner) {
                            this.hold = None;
                        }
                    }
                    Poll::Ready(None) => this.finish(),
                    _ => {}
                }
                polled
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
