//! Protocol detection: decides from a connection's first bytes whether it is HTTP/1.1, HTTP/2
//! with prior knowledge, or opaque TCP, and hands the bytes it read back to the next stage.
//!
//! Invariant: detection never loses a byte. What it read is replayed by [`Rewind`] ahead of the
//! socket, so the HTTP server or the TCP forwarder sees the stream exactly as the client sent it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::limits::{DETECT_MAX_BYTES, DETECT_TIMEOUT};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Opaque,
}

impl Protocol {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http/1.1",
            Protocol::Http2 => "h2c",
            Protocol::Opaque => "tcp",
        }
    }
}

/// The verdict on a prefix of a stream: decided, or more bytes are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Decided(Protocol),
    NeedMore,
}

/// Decides the protocol from the first bytes of a stream. Pure: no I/O, so it is tested alone.
///
/// - HTTP/2: the bytes are the connection preface (or a prefix of it, then more are needed).
/// - HTTP/1: the first line is `<token> <target> HTTP/1.x` (CR LF or bare LF ended).
/// - Anything else, or a first line longer than [`DETECT_MAX_BYTES`], is opaque.
pub fn classify(buf: &[u8]) -> Verdict {
    if buf.is_empty() {
        return Verdict::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if buf.len() >= H2_PREFACE.len() {
            Verdict::Decided(Protocol::Http2)
        } else {
            Verdict::NeedMore
        };
    }
    // A method is a token (RFC 9110 §5.6.2): reject early on the first byte that is not one.
    let method_len = buf.iter().take_while(|b| is_tchar(**b)).count();
    if method_len == 0 || (method_len < buf.len() && buf[method_len] != b' ') {
        return Verdict::Decided(Protocol::Opaque);
    }
    let Some(eol) = buf.iter().position(|b| *b == b'\n') else {
        return if buf.len() >= DETECT_MAX_BYTES {
            Verdict::Decided(Protocol::Opaque)
        } else {
            Verdict::NeedMore
        };
    };
    let line = buf[..eol].strip_suffix(b"\r").unwrap_or(&buf[..eol]);
    if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
        Verdict::Decided(Protocol::Http1)
    } else {
        Verdict::Decided(Protocol::Opaque)
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Reads from `io` until [`classify`] decides, the client stops sending for [`DETECT_TIMEOUT`],
/// or the client closes. Returns the protocol and the stream with the read bytes replayed.
pub async fn detect<T>(mut io: T) -> io::Result<(Protocol, Rewind<T>)>
where
    T: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    let protocol = loop {
        match classify(&buf) {
            Verdict::Decided(p) => break p,
            Verdict::NeedMore => {}
        }
        if buf.len() >= DETECT_MAX_BYTES {
            break Protocol::Opaque;
        }
        let want = DETECT_MAX_BYTES - buf.len();
        let mut limited = (&mut io).take(want as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            // Timed out or closed after a partial first line: forward what we have as opaque.
            Err(_elapsed) => break Protocol::Opaque,
            Ok(Ok(0)) => break Protocol::Opaque,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((protocol, Rewind::new(buf.freeze(), io)))
}

/// An I/O stream that first yields `prefix`, then reads from the inner stream. Writes go straight
/// to the inner stream.
#[derive(Debug)]
pub struct Rewind<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Rewind<T> {
    /// A stream replaying `prefix` before `inner`.
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self { prefix, inner }
    }

    /// The inner stream, for socket options; reading from it directly would skip the prefix.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_preface_needs_all_24_bytes() {
        assert_eq!(classify(&H2_PREFACE[..10]), Verdict::NeedMore);
        assert_eq!(classify(H2_PREFACE), Verdict::Decided(Protocol::Http2));
    }

    #[test]
    fn http1_request_line() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Verdict::Decided(Protocol::Http1)
        );
        assert_eq!(
            classify(b"DELETE /x?y HTTP/1.0\n"),
            Verdict::Decided(Protocol::Http1)
        );
        assert_eq!(classify(b"GET /long/path"), Verdict::NeedMore);
        // "P" is a prefix of both the preface and POST.
        assert_eq!(classify(b"P"), Verdict::NeedMore);
        assert_eq!(
            classify(b"POST / HTTP/1.1\r\n"),
            Verdict::Decided(Protocol::Http1)
        );
    }

    #[test]
    fn anything_else_is_opaque() {
        assert_eq!(
            classify(b"\x16\x03\x01\x02"),
            Verdict::Decided(Protocol::Opaque)
        );
        assert_eq!(
            classify(b"hello world\r\n"),
            Verdict::Decided(Protocol::Opaque)
        );
        assert_eq!(classify(b"GET\t/"), Verdict::Decided(Protocol::Opaque));
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH\r\n"),
            Verdict::Decided(Protocol::Opaque)
        );
        let long = vec![b'a'; DETECT_MAX_BYTES];
        assert_eq!(classify(&long), Verdict::Decided(Protocol::Opaque));
    }

    #[tokio::test]
    async fn detect_replays_every_byte() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (proto, mut io) = detect(server).await.unwrap();
        assert_eq!(proto, Protocol::Http1);
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    }
}
