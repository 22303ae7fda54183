//! HTTP/3 at a listener: a QUIC endpoint on the listener's UDP port, serving each request through
//! [`crate::http::forward::forward`] exactly as the TCP listener's requests are served. The
//! `h3`/`h3-quinn` crates are experimental, so they are used only in this module.
//!
//! Invariants:
//! - Every bound is set here: bidirectional streams per connection
//!   ([`crate::limits::MAX_CONCURRENT_STREAMS`]), field section size
//!   ([`crate::limits::MAX_H2_HEADER_LIST_BYTES`]), idle timeout ([`H3_IDLE_TIMEOUT`]), handshakes
//!   in flight ([`MAX_HANDSHAKES`]) and open connections (the proxy-wide
//!   [`crate::limits::MAX_DOWNSTREAM_CONNECTIONS`] semaphore the TCP listeners share).
//! - Request bodies are flow-controlled by QUIC: a frame is read only when the upstream takes it.
//! - A request stream's QUIC credit returns to the client only once the proxy has finished or
//!   reset its response side, so a client resetting streams (HTTP/2's rapid reset) never has
//!   more than [`crate::limits::MAX_CONCURRENT_STREAMS`] forwards in flight per connection.
//! - A request head must arrive within [`crate::limits::HEADER_READ_TIMEOUT`] of its stream, a
//!   handshake must finish within [`HANDSHAKE_TIMEOUT`].
//! - On drain (or [`Server::stop`]) every connection gets GOAWAY, its in-flight requests finish
//!   (the drain deadline bounds them), then the endpoint closes.

pub mod body;
mod conn;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use quinn::crypto::rustls::QuicServerConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Shared;
use crate::limits::MAX_CONCURRENT_STREAMS;
use crate::listener::ListenerInfo;

/// The ALPN protocol id of HTTP/3 (RFC 9114 §3.1).
pub const ALPN_H3: &[u8] = b"h3";

/// A QUIC connection with no packet either way for this long is closed. Envoy's QUIC listeners
/// default `idle_network_timeout` to 300 s; QUIC state costs more than an idle TCP keep-alive, so
/// this is shorter than [`crate::limits::DOWNSTREAM_IDLE_TIMEOUT`].
pub const H3_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// QUIC handshakes in progress per listener. Past half of it, clients must prove their address
/// first (a Retry round trip, against spoofed-source floods); past all of it, new connection
/// attempts are refused until handshakes finish.
pub const MAX_HANDSHAKES: usize = 1024;

/// Time a QUIC handshake may take before it is abandoned and its slot freed (the TCP side's
/// request-head bound, [`crate::limits::HEADER_READ_TIMEOUT`], for the same slowloris reason).
pub const HANDSHAKE_TIMEOUT: Duration = crate::limits::HEADER_READ_TIMEOUT;

/// Unidirectional streams a client may open: HTTP/3 needs three (control, QPACK encoder and
/// decoder); a few more leave room for GREASE streams and extensions it ignores.
pub const MAX_UNI_STREAMS: u32 = 8;

/// Connection-level receive window: at most this many request-body bytes buffered per
/// connection (QUIC flow control slows the client down past it).
pub const CONNECTION_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;

/// Per-stream receive window: request-body bytes buffered per request.
pub const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;

/// Counter of HTTP/3 connections, labelled `listener` and `outcome`: `accepted`, `refused`
/// (handshake bound or connection limit), `retry` (address validation asked), `failed`
/// (handshake error).
pub const H3_CONNECTIONS: &str = "jalin_downstream_http3_connections_total";

/// Why an HTTP/3 endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum H3Error {
    /// The TLS configuration cannot do QUIC (it needs TLS 1.3 and an initial cipher suite).
    #[error(
        "the listener's TLS configuration cannot serve QUIC ({0}); HTTP/3 needs TLS 1.3 with \
         TLS_AES_128_GCM_SHA256: allow TLS 1.3 in the listener's tls settings, or set http3: false"
    )]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr} for HTTP/3: {source}; is another process using the port?")]
    Bind { addr: SocketAddr, source: io::Error },
}

/// Binds the UDP socket HTTP/3 serves `addr` on.
pub fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, H3Error> {
    std::net::UdpSocket::bind(addr).map_err(|source| H3Error::Bind { addr, source })
}

/// The `Alt-Svc` value advertising HTTP/3 on `port` of the same host (RFC 7838, RFC 9114 §3.1.1),
/// valid for a day.
pub fn alt_svc(port: u16) -> HeaderValue {
    // Only ASCII digits are formatted in: always a valid header value.
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400"))
        .unwrap_or_else(|_| HeaderValue::from_static("clear"))
}

/// The QUIC server configuration for `tls`: its certificates and client-auth settings, ALPN `h3`
/// only, no 0-RTT (early data is replayable), and this module's transport bounds.
pub fn server_config(tls: &rustls::ServerConfig) -> Result<quinn::ServerConfig, H3Error> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![ALPN_H3.to_vec()];
    tls.max_early_data_size = 0;
    let tls = Arc::new(tls);
    // QUIC is TLS 1.3 only: a configuration without it fails here, not per handshake.
    rustls::quic::ServerConnection::new(tls.clone(), rustls::quic::Version::V1, Vec::new())
        .map_err(|e| H3Error::Tls(e.to_string()))?;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| H3Error::Tls(e.to_string()))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_CONCURRENT_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .receive_window(CONNECTION_RECEIVE_WINDOW.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .max_idle_timeout(quinn::IdleTimeout::try_from(H3_IDLE_TIMEOUT).ok());
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config
        .transport_config(Arc::new(transport))
        .max_incoming(MAX_HANDSHAKES);
    Ok(config)
}

/// A listener's running HTTP/3 endpoint. Dropping it does not stop it: call [`Server::stop`]
/// (the proxy's drain stops it too).
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    local: SocketAddr,
    stop: CancellationToken,
}

impl Server {
    /// Binds UDP `addr` (port 0: any free port; pass the TCP listener's bound address to share
    /// its port) and serves HTTP/3 there with `tls`'s certificates. `info` is read per connection,
    /// so a reload that swaps it applies to new connections.
    pub fn bind(
        addr: SocketAddr,
        tls: &rustls::ServerConfig,
        info: Arc<ArcSwap<ListenerInfo>>,
        shared: &Arc<Shared>,
    ) -> Result<Self, H3Error> {
        let socket = bind_udp(addr)?;
        Self::serve(socket, tls, info, shared)
    }

    /// [`Server::bind`] on a UDP socket bound already (by the listener set's prepare step, so
    /// a port that cannot be had refuses the configuration instead of only HTTP/3).
    pub fn serve(
        socket: std::net::UdpSocket,
        tls: &rustls::ServerConfig,
        info: Arc<ArcSwap<ListenerInfo>>,
        shared: &Arc<Shared>,
    ) -> Result<Self, H3Error> {
        let addr = socket.local_addr().map_err(|source| H3Error::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let config = server_config(tls)?;
        let runtime = quinn::default_runtime().ok_or_else(|| H3Error::Bind {
            addr,
            source: io::Error::other("no tokio runtime for QUIC"),
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(config),
            socket,
            runtime,
        )
        .map_err(|source| H3Error::Bind { addr, source })?;
        let local = endpoint
            .local_addr()
            .map_err(|source| H3Error::Bind { addr, source })?;
        let stop = shared.drain.child_token();
        let accept = conn::AcceptLoop {
            endpoint: endpoint.clone(),
            local,
            info,
            shared: shared.clone(),
            stop: stop.clone(),
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            connections: TaskTracker::new(),
        };
        shared.tasks.spawn(accept.run());
        tracing::info!(address = %local, "listening for HTTP/3 (QUIC)");
        Ok(Self {
            endpoint,
            local,
            stop,
        })
    }

    /// The `Alt-Svc` value that advertises this endpoint.
    pub fn alt_svc(&self) -> HeaderValue {
        alt_svc(self.local.port())
    }

    /// Serves new handshakes with `tls` (a certificate rotation); open connections keep theirs.
    pub fn set_server_config(&self, tls: &rustls::ServerConfig) -> Result<(), H3Error> {
        self.endpoint.set_server_config(Some(server_config(tls)?));
        Ok(())
    }

    /// Stops accepting, sends GOAWAY on every connection, lets in-flight requests finish and
    /// then closes the endpoint (a listener removed by a reload).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Brings a listener's HTTP/3 endpoint in line with its configuration at a (re)load. `tls` is
/// the listener's TLS with ALPN `h3` when it has `http3: true` (else `None`). Starts the
/// endpoint on `udp` (bound by the listener set's prepare step on the TCP listener's port), or
/// binds the TCP listener's address `local` itself, when none runs; swaps in the new certificate
/// when one runs; stops it when `tls` is `None`. Returns the endpoint now running; a failure
/// here is logged and leaves the TCP listener unaffected.
pub fn reconcile(
    running: Option<Server>,
    tls: Option<&rustls::ServerConfig>,
    udp: Option<std::net::UdpSocket>,
    local: SocketAddr,
    info: &Arc<ArcSwap<ListenerInfo>>,
    shared: &Arc<Shared>,
) -> Option<Server> {
    let name = info.load().name.clone();
    let Some(tls) = tls else {
        if let Some(server) = running {
            server.stop();
        }
        return None;
    };
    if let Some(server) = running {
        if let Err(e) = server.set_server_config(tls) {
            tracing::error!(listener = %name, error = %e, "HTTP/3 keeps its previous certificate");
        }
        return Some(server);
    }
    let served = match udp {
        Some(socket) => Server::serve(socket, tls, info.clone(), shared),
        None => Server::bind(local, tls, info.clone(), shared),
    };
    match served {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::error!(listener = %name, error = %e, "HTTP/3 is not served on this listener");
            None
        }
    }
}
