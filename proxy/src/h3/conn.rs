//! The HTTP/3 endpoint's tasks: the accept loop (handshake and connection bounds), one task per
//! QUIC connection (HTTP/3 control, GOAWAY on drain) and one per request (forward, then the
//! response head, body frames and trailers written back).

use std::net::SocketAddr;
use std::sync::Arc;

use ::h3::error::Code;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::BodyExt;
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Shared;
use crate::gateway::ClientCert;
use crate::h3::body::H3Body;
use crate::h3::{H3_CONNECTIONS, HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};
use crate::http::body::{ProxyBody, RequestBody};
use crate::http::forward::forward;
use crate::http::headers;
use crate::limits::{HEADER_READ_TIMEOUT, MAX_H2_HEADER_LIST_BYTES};
use crate::listener::{ConnCtx, ListenerInfo};

type H3Conn = ::h3::server::Connection<h3_quinn::Connection, Bytes>;
type SendStream = ::h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// The endpoint's accept loop and what it shares with its connections.
pub(super) struct AcceptLoop {
    pub endpoint: quinn::Endpoint,
    pub local: SocketAddr,
    pub info: Arc<ArcSwap<ListenerInfo>>,
    pub shared: Arc<Shared>,
    /// Cancelled by the proxy's drain or [`super::Server::stop`].
    pub stop: CancellationToken,
    pub handshakes: Arc<Semaphore>,
    /// This endpoint's connection tasks, so it closes only after they finished.
    pub connections: TaskTracker,
}

impl AcceptLoop {
    pub async fn run(self) {
        loop {
            let incoming = tokio::select! {
                () = self.stop.cancelled() => break,
                i = self.endpoint.accept() => match i {
                    Some(i) => i,
                    None => break,
                },
            };
            self.admit(incoming);
        }
        // No new connections; the open ones got GOAWAY (they watch `stop`) and finish their
        // requests. Then the endpoint closes and its last packets go out.
        self.endpoint.set_server_config(None);
        self.connections.close();
        self.connections.wait().await;
        self.endpoint.close(0u32.into(), b"server shutting down");
        self.endpoint.wait_idle().await;
        tracing::info!(address = %self.local, "HTTP/3 endpoint closed");
    }

    /// Starts the handshake of `incoming`, or refuses it when a bound is reached.
    fn admit(&self, incoming: quinn::Incoming) {
        let info = self.info.load_full();
        let name = info.name.clone();
        let count = move |outcome: &'static str| {
            metrics::counter!(H3_CONNECTIONS, "listener" => name.to_string(), "outcome" => outcome)
                .increment(1);
        };
        let busy = self.handshakes.available_permits() < MAX_HANDSHAKES / 2;
        if busy && !incoming.remote_address_validated() && incoming.may_retry() {
            count("retry");
            if let Err(e) = incoming.retry() {
                tracing::debug!(error = %e, "QUIC retry failed");
            }
            return;
        }
        let (Ok(handshake), Ok(slot)) = (
            self.handshakes.clone().try_acquire_owned(),
            self.shared.connections.clone().try_acquire_owned(),
        ) else {
            count("refused");
            tracing::debug!(peer = %incoming.remote_address(), "HTTP/3 connection refused: too many handshakes or connections");
            incoming.refuse();
            return;
        };
        let peer = incoming.remote_address();
        let local = incoming
            .local_ip()
            .map_or(self.local, |ip| SocketAddr::new(ip, self.local.port()));
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                count("failed");
                tracing::debug!(error = %e, %peer, "QUIC handshake failed");
                return;
            }
        };
        let ctx = ConnCtx::new(info, self.shared.clone(), peer, local, None);
        let stop = self.stop.clone();
        let task = async move {
            let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
                Ok(Ok(c)) => c,
                Err(_elapsed) => {
                    count("failed");
                    tracing::debug!(%peer, "QUIC handshake timed out");
                    return;
                }
                Ok(Err(e)) => {
                    count("failed");
                    tracing::debug!(error = %e, %peer, "QUIC handshake failed");
                    return;
                }
            };
            drop(handshake);
            count("accepted");
            // A `MUTUAL` listener's verified client certificate, as its TCP side records it.
            let cert = conn
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .and_then(|chain| ClientCert::from_chain(&chain))
                .map(Arc::new);
            let ctx = Arc::new(ctx.with_client_cert(cert));
            serve_connection(conn, ctx, stop).await;
            drop(slot);
        };
        // Tracked twice: by the proxy's drain and by this endpoint's close.
        self.shared.tasks.spawn(self.connections.track_future(task));
    }
}

/// Serves one QUIC connection's requests until the client closes it, or until `stop` and its
/// in-flight requests are over.
async fn serve_connection(quic: quinn::Connection, ctx: Arc<ConnCtx>, stop: CancellationToken) {
    let peer = ctx.peer;
    let mut builder = ::h3::server::builder();
    builder.max_field_section_size(u64::from(MAX_H2_HEADER_LIST_BYTES));
    let mut h3: H3Conn = match builder.build(h3_quinn::Connection::new(quic.clone())).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, %peer, "HTTP/3 connection setup failed");
            return;
        }
    };
    let requests = TaskTracker::new();
    let mut draining = false;
    loop {
        tokio::select! {
            r = h3.accept() => match r {
                Ok(Some(resolver)) => {
                    let ctx = ctx.clone();
                    let quic = quic.clone();
                    // Accepted after the GOAWAY went out: its id is at or past the GOAWAY's.
                    let rejected = draining;
                    requests.spawn(async move {
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, resolver.resolve_request()).await {
                            Ok(Ok((_, mut stream))) if rejected => {
                                stream.stop_sending(Code::H3_REQUEST_REJECTED);
                                stream.stop_stream(Code::H3_REQUEST_REJECTED);
                            }
                            Ok(Ok((req, stream))) => serve_request(req, stream, ctx, quic).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "HTTP/3 request head refused"),
                            Err(_elapsed) => tracing::debug!(%peer, "HTTP/3 request head not received in time"),
                        }
                    });
                }
                // The client sent GOAWAY and its requests are over.
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, %peer, "HTTP/3 connection ended");
                    break;
                }
            },
            () = stop.cancelled(), if !draining => {
                draining = true;
                // GOAWAY with the id after the last accepted request (h3 adds `1` request
                // to it): every request accepted so far finishes, and every later one is
                // rejected with H3_REQUEST_REJECTED, which tells the client it was not processed
                // and may be retried elsewhere (RFC 9114 §5.2). `shutdown(0)` would name the
                // last accepted request itself as not processed.
                if let Err(e) = h3.shutdown(1).await {
                    tracing::debug!(error = %e, %peer, "HTTP/3 GOAWAY failed");
                    break;
                }
                requests.close();
            }
            () = requests.wait(), if draining => break,
        }
    }
    requests.close();
    requests.wait().await;
    // Dropping `h3` closes the connection with H3_NO_ERROR.
}

/// Forwards one request and writes its response back. A client that resets the stream or closes
/// the connection drops the forward (and with it the upstream exchange).
async fn serve_request(
    req: Request<()>,
    stream: ::h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>,
    ctx: Arc<ConnCtx>,
    quic: quinn::Connection,
) {
    let (send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let length = headers::content_length(&parts.headers);
    let mut body = H3Body::new(recv, length);
    if let Err(e) = body.settle() {
        tracing::debug!(error = %e, "HTTP/3 request body failed before forwarding");
        return;
    }
    let req = Request::from_parts(parts, RequestBody::H3(Box::new(body)));
    let rsp = tokio::select! {
        rsp = forward(req, ctx) => rsp,
        _ = quic.closed() => return,
    };
    tokio::select! {
        () = respond(send, rsp) => {}
        _ = quic.closed() => {}
    }
}

/// Writes the response head, its body frames as they come and its trailers, then finishes the
/// stream. A failed upstream body resets the stream (the client sees a cut response, never a
/// complete one); a failed write (the client stopped the stream) drops the body, which meters
/// the request as `DC` and releases the upstream.
async fn respond(mut send: SendStream, rsp: Response<ProxyBody>) {
    let (mut parts, mut body) = rsp.into_parts();
    // Connection-specific fields are malformed in HTTP/3 (RFC 9114 §4.2); a proxied response
    // lost them in forward already, a local one or a route's header operations may add them.
    headers::strip_hop_by_hop(&mut parts.headers, false);
    if let Err(e) = send.send_response(Response::from_parts(parts, ())).await {
        tracing::debug!(error = %e, "HTTP/3 response head not sent");
        return;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(error = %e, "response body failed; resetting the HTTP/3 stream");
                send.stop_stream(Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        let sent = match frame.into_data() {
            Ok(data) if data.is_empty() => Ok(()),
            Ok(data) => send.send_data(data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => send.send_trailers(trailers).await,
                Err(_) => Ok(()),
            },
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "HTTP/3 response body not sent");
            return;
        }
    }
    if let Err(e) = send.finish().await {
        tracing::debug!(error = %e, "HTTP/3 response not finished");
    }
}
