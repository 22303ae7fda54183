//! The server's gRPC framing without a per-stream encode buffer: a response is written as the
//! gRPC message header and its scalar fields, followed by the resources' pre-encoded fields, in
//! bounded chunks; an HTTP/2 response body yields those chunks straight from the stream's queue.
//!
//! Why: tonic's encoder keeps one buffer per stream for the stream's life, sized by the largest
//! response it ever encoded (the initial sync, ~100 KB at 500 resources); at 10,000 proxies that
//! alone was a gigabyte. Here a stream holds nothing between responses: small resources are
//! copied into a chunk that lives only until HTTP/2 writes it, and large ones are sent as the
//! snapshot's own shared `Bytes` (a reference-count bump, no copy).
//!
//! Invariants:
//! - the chunks of one message concatenate to exactly one length-prefixed gRPC message
//!   (uncompressed), whose length is computed before the first chunk is built;
//! - protobuf fields may come in any order, so the scalar fields go first and the resources last;
//! - a chunk is at most [`CHUNK`] bytes unless it is a single large resource.

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Frame;
use prost::encoding::WireType;
use tokio::sync::mpsc;

use super::snapshot::Entry;

/// Largest chunk built by copying small resources (one HTTP/2 frame at the default frame size).
pub const CHUNK: usize = 16 * 1024;
/// Resources at least this large are sent as their own shared bytes instead of being copied.
const ZERO_COPY_MIN: usize = 4 * 1024;
/// Initial capacity of a stream's request decode buffer. Requests (ACKs) are a few hundred bytes;
/// tonic's default (8 KiB per stream) was 80 MB at 10,000 proxies. It grows when a request
/// needs more.
pub const REQUEST_BUFFER: usize = 512;
/// gRPC message header: compression flag and big-endian length.
const GRPC_HEADER: usize = 5;

/// Which pre-encoded field of an [`Entry`] a response carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `DiscoveryResponse.resources` (`Any`).
    Sotw,
    /// `DeltaDiscoveryResponse.resources` (`Resource`).
    Delta,
}

impl Variant {
    fn field(self, e: &Entry) -> &Bytes {
        match self {
            Variant::Sotw => e.sotw_field(),
            Variant::Delta => e.delta_field(),
        }
    }
}

/// One response message being framed: its head (gRPC header and scalar fields) and the resources
/// still to write.
#[derive(Debug)]
pub struct Outgoing {
    head: Option<BytesMut>,
    entries: std::iter::Peekable<std::vec::IntoIter<Arc<Entry>>>,
    variant: Variant,
    /// Bytes of the message not yet handed out.
    remaining: usize,
}

impl Outgoing {
    /// Frames a message of `scalars` (already-encoded non-resource fields) and `entries`.
    /// `scalars_len` is the encoded length `scalars` will write.
    pub fn new(
        variant: Variant,
        entries: Vec<Arc<Entry>>,
        scalars_len: usize,
        scalars: impl FnOnce(&mut BytesMut),
    ) -> Self {
        let body_len: usize = scalars_len
            + entries
                .iter()
                .map(|e| variant.field(e).len())
                .sum::<usize>();
        let total = GRPC_HEADER + body_len;
        let mut head = BytesMut::with_capacity(total.min(CHUNK).max(GRPC_HEADER + scalars_len));
        head.put_u8(0);
        // A message over 4 GiB cannot be framed; snapshots are far below that (a proxy's
        // decoder limit is tens of MiB), so saturate and let the proxy reject it.
        head.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
        scalars(&mut head);
        debug_assert_eq!(head.len(), GRPC_HEADER + scalars_len);
        Outgoing {
            head: Some(head),
            entries: entries.into_iter().peekable(),
            variant,
            remaining: total,
        }
    }

    /// The next chunk of the message, or `None` once all of it was handed out.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        let mut buf = self.head.take();
        while let Some(entry) = self.entries.peek() {
            let field = self.variant.field(entry);
            if field.len() >= ZERO_COPY_MIN {
                if let Some(b) = buf.take().filter(|b| !b.is_empty()) {
                    // Hand out what was copied so far; the large one goes next, on its own.
                    self.remaining -= b.len();
                    return Some(b.freeze());
                }
                let field = field.clone();
                self.entries.next();
                self.remaining -= field.len();
                return Some(field);
            }
            let b = buf.get_or_insert_with(|| BytesMut::with_capacity(self.remaining.min(CHUNK)));
            if !b.is_empty() && b.len() + field.len() > CHUNK {
                break;
            }
            b.extend_from_slice(field);
            self.entries.next();
        }
        let b = buf.filter(|b| !b.is_empty())?;
        self.remaining -= b.len();
        Some(b.freeze())
    }
}

/// Encoded length of a length-delimited field `tag` holding `len` bytes.
pub fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Writes a length-delimited field (a string or bytes).
pub fn put_delimited(tag: u32, value: &[u8], buf: &mut impl BufMut) {
    prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(value.len() as u64, buf);
    buf.put_slice(value);
}

/// A stream's HTTP/2 response body: chunks of the messages its stream task queues, then the gRPC
/// status as trailers (OK when the task ends, or the error it queued).
#[derive(Debug)]
pub struct ResponseBody<P> {
    rx: mpsc::Receiver<Result<P, tonic::Status>>,
    current: Option<Outgoing>,
    done: bool,
}

impl<P> ResponseBody<P> {
    /// A body fed by `rx`.
    pub fn new(rx: mpsc::Receiver<Result<P, tonic::Status>>) -> Self {
        ResponseBody {
            rx,
            current: None,
            done: false,
        }
    }
}

fn trailers(status: &tonic::Status) -> Result<Frame<Bytes>, tonic::Status> {
    let mut map = http::HeaderMap::new();
    status.add_header(&mut map)?;
    Ok(Frame::trailers(map))
}

impl<P: Into<Outgoing> + Unpin> http_body::Body for ResponseBody<P> {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        loop {
            if let Some(cur) = &mut this.current {
                if let Some(chunk) = cur.next_chunk() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                this.current = None;
            }
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(this.rx.poll_recv(cx)) {
                Some(Ok(msg)) => this.current = Some(msg.into()),
                Some(Err(status)) => {
                    this.done = true;
                    return Poll::Ready(Some(trailers(&status)));
                }
                None => {
                    this.done = true;
                    return Poll::Ready(Some(trailers(&tonic::Status::ok(""))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.current.is_none()
    }
}

/// Decodes requests with prost, starting from a small buffer ([`REQUEST_BUFFER`]).
#[derive(Debug)]
pub struct RequestDecoder<U>(PhantomData<fn() -> U>);

impl<U> Default for RequestDecoder<U> {
    fn default() -> Self {
        RequestDecoder(PhantomData)
    }
}

impl<U: prost::Message + Default> tonic::codec::Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<U>, tonic::Status> {
        U::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::invalid_argument(format!("decode an xDS request: {e}")))
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        tonic::codec::BufferSettings::new(REQUEST_BUFFER, CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::resource::{Kind, encode};

    fn entry(name: &str, size: usize) -> Arc<Entry> {
        Arc::new(Entry::new(
            encode(Kind::Cluster, name, &"x".repeat(size)).unwrap(),
        ))
    }

    fn drain(mut o: Outgoing) -> (Vec<Bytes>, Vec<u8>) {
        let mut chunks = Vec::new();
        while let Some(c) = o.next_chunk() {
            chunks.push(c);
        }
        assert_eq!(o.remaining, 0);
        let all = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        (chunks, all)
    }

    #[test]
    fn chunks_are_bounded_and_large_entries_are_shared() {
        let mut entries: Vec<_> = (0..200).map(|i| entry(&format!("s{i}"), 200)).collect();
        entries.insert(50, entry("big", 3 * CHUNK));
        let big = entries[50].delta_field().clone();
        let o = Outgoing::new(Variant::Delta, entries.clone(), 3, |b| {
            put_delimited(5, b"7", b)
        });
        let (chunks, all) = drain(o);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() <= CHUNK || c.len() == big.len())
        );
        let shared = chunks.iter().find(|c| c.len() == big.len()).unwrap();
        assert_eq!(
            shared.as_ptr(),
            big.as_ptr(),
            "the large entry is not copied"
        );
        let len = u32::from_be_bytes(all[1..5].try_into().unwrap()) as usize;
        assert_eq!(all.len(), GRPC_HEADER + len);
        let expected: usize = 3 + entries.iter().map(|e| e.delta_field().len()).sum::<usize>();
        assert_eq!(len, expected);
    }

    #[test]
    fn a_small_message_is_one_exact_chunk() {
        let o = Outgoing::new(Variant::Sotw, vec![entry("a", 10)], 0, |_| {});
        let (chunks, all) = drain(o);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].len(), all.len());
    }
}
