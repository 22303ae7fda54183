//! An HTTP/3 request's body as an [`http_body::Body`]: the request stream's DATA frames, then its
//! trailers. QUIC flow-controls it: nothing is buffered here beyond the frame being handed on, so
//! a slow upstream slows the client down through the stream's receive window.

use std::pin::Pin;
use std::task::{Context, Poll};

use ::h3::error::StreamError;
use ::h3::server::RequestStream;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

/// The receive half of an HTTP/3 request stream.
pub type RecvStream = RequestStream<h3_quinn::RecvStream, Bytes>;

/// Where the body is in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// DATA frames may come.
    Data,
    /// The data ended; trailers may come.
    Trailers,
    /// Nothing more.
    Done,
}

/// The request body of one HTTP/3 request.
pub struct H3Body {
    stream: RecvStream,
    state: State,
    /// The first frame, read ahead by [`H3Body::settle`].
    peeked: Option<Frame<Bytes>>,
    /// The declared `content-length`, if any.
    length: Option<u64>,
}

impl std::fmt::Debug for H3Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Body")
            .field("state", &self.state)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

impl H3Body {
    /// The body of a request that declared `length` bytes (`content-length`), if it did.
    pub fn new(stream: RecvStream, length: Option<u64>) -> Self {
        Self {
            stream,
            state: if length == Some(0) {
                State::Trailers
            } else {
                State::Data
            },
            peeked: None,
            length,
        }
    }

    /// Reads what has already arrived, without waiting: when the client's FIN came with the
    /// request head (a GET), the body is then known to be empty, so it is forwarded as an empty
    /// body rather than a chunked one. A frame read ahead is handed on first.
    pub fn settle(&mut self) -> Result<(), StreamError> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        if let Poll::Ready(Some(frame)) = self.poll_next(&mut cx) {
            self.peeked = Some(frame?);
        }
        Ok(())
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        if let Some(frame) = self.peeked.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        loop {
            match self.state {
                State::Data => match self.stream.poll_recv_data(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => {
                        self.state = State::Done;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Ready(Ok(Some(mut buf))) => {
                        let bytes = buf.copy_to_bytes(buf.remaining());
                        if bytes.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    Poll::Ready(Ok(None)) => self.state = State::Trailers,
                },
                State::Trailers => {
                    let polled = self.stream.poll_recv_trailers(cx);
                    if polled.is_ready() {
                        self.state = State::Done;
                    }
                    return match polled {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                        Poll::Ready(Ok(None)) => Poll::Ready(None),
                        Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done && self.peeked.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.length, self.is_end_stream()) {
            (_, true) => SizeHint::with_exact(0),
            (Some(n), false) if self.peeked.is_none() && self.state == State::Data => {
                SizeHint::with_exact(n)
            }
            _ => SizeHint::default(),
        }
    }
}
