//! Outbound mTLS origination (Istio DestinationRule `tls.mode: ISTIO_MUTUAL`): an endpoint of a
//! cluster with `tls: { mode: istio_mutual, identity: spiffe://... }` connects with the
//! workload's certificate and accepts only a server presenting that SPIFFE ID (not a host
//! name). ALPN is `h2` for the HTTP/2 pool and `http/1.1` for the HTTP/1.1 pool, so the server
//! proxy serves the protocol the pool speaks without sniffing.
//!
//! Invariant: the client configs read the certificate through the identity's resolver and the
//! roots through its trust store, so rotations apply to new connections only.

pub mod server;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{ALPN_H2, ALPN_HTTP11, OutboundTls};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The mTLS settings of one endpoint.
#[derive(Debug)]
pub struct EndpointTls {
    /// The server identity required.
    pub identity: SpiffeId,
    /// HTTP/1.1, HTTP/2 and no-ALPN configs, or why none could be built (every connection then
    /// fails: a cluster that asks for mTLS never falls back to plaintext).
    configs: Result<[Arc<ClientConfig>; 3], String>,
}

impl EndpointTls {
    /// Client configs verifying `identity`, from the proxy's outbound TLS.
    pub fn new(
        outbound: &OutboundTls,
        identity: SpiffeId,
    ) -> Result<Self, jalin_ca::tls::OutboundConfigError> {
        let base = outbound.config_for(&identity)?;
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = (*base).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        };
        Ok(Self {
            configs: Ok([
                with_alpn(&[ALPN_HTTP11]),
                with_alpn(&[ALPN_H2]),
                with_alpn(&[]),
            ]),
            identity,
        })
    }

    /// Fails when no connection can be made with these settings, so the caller opens no TCP
    /// connection that could only end in a refusal.
    pub fn usable(&self, addr: SocketAddr) -> io::Result<()> {
        self.configs(addr).map(|_| ())
    }

    fn configs(&self, addr: SocketAddr) -> io::Result<&[Arc<ClientConfig>; 3]> {
        self.configs.as_ref().map_err(|reason| {
            io::Error::other(format!(
                "mTLS to {addr} (expecting {}) is not possible: {reason}",
                self.identity
            ))
        })
    }

    /// Settings whose connections all fail with `reason` (fail closed).
    pub fn unusable(identity: SpiffeId, reason: String) -> Self {
        Self {
            identity,
            configs: Err(reason),
        }
    }
}

/// Implements `AsyncRead` and `AsyncWrite` for an enum with a `Plain(stream)` and a
/// `Tls(Box<tls stream>)` variant by delegating to the variant: the one definition behind the
/// proxy's inbound ([`crate::inbound::ServerIo`]) and outbound ([`UpstreamIo`]) connections.
macro_rules! plain_or_tls_io {
    ($ty:ident) => {
        impl ::tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => {
                        ::tokio::io::AsyncRead::poll_read(::std::pin::Pin::new(s), cx, buf)
                    }
                    $ty::Tls(s) => {
                        ::tokio::io::AsyncRead::poll_read(::std::pin::Pin::new(s.as_mut()), cx, buf)
                    }
                }
            }
        }

        impl ::tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => {
                        ::tokio::io::AsyncWrite::poll_write(::std::pin::Pin::new(s), cx, buf)
                    }
                    $ty::Tls(s) => ::tokio::io::AsyncWrite::poll_write(
                        ::std::pin::Pin::new(s.as_mut()),
                        cx,
                        buf,
                    ),
                }
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => ::tokio::io::AsyncWrite::poll_write_vectored(
                        ::std::pin::Pin::new(s),
                        cx,
                        bufs,
                    ),
                    $ty::Tls(s) => ::tokio::io::AsyncWrite::poll_write_vectored(
                        ::std::pin::Pin::new(s.as_mut()),
                        cx,
                        bufs,
                    ),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Plain(s) => ::tokio::io::AsyncWrite::is_write_vectored(s),
                    $ty::Tls(s) => ::tokio::io::AsyncWrite::is_write_vectored(s),
                }
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => {
                        ::tokio::io::AsyncWrite::poll_flush(::std::pin::Pin::new(s), cx)
                    }
                    $ty::Tls(s) => {
                        ::tokio::io::AsyncWrite::poll_flush(::std::pin::Pin::new(s.as_mut()), cx)
                    }
                }
            }

            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => {
                        ::tokio::io::AsyncWrite::poll_shutdown(::std::pin::Pin::new(s), cx)
                    }
                    $ty::Tls(s) => {
                        ::tokio::io::AsyncWrite::poll_shutdown(::std::pin::Pin::new(s.as_mut()), cx)
                    }
                }
            }
        }
    };
}
pub(crate) use plain_or_tls_io;

/// An upstream connection, plaintext or mTLS.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to `addr` within `timeout`; with `tls`, originates mTLS (`Some(true)`: ALPN h2,
/// `Some(false)`: http/1.1, `None`: no ALPN) within the same bound again.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<(&EndpointTls, Option<bool>)>,
) -> io::Result<UpstreamIo> {
    if let Some((t, _)) = tls {
        t.usable(addr)?;
    }
    let stream = crate::endpoint::connect(addr, timeout).await?;
    handshake(stream, addr, timeout, tls).await
}

/// Wraps the TCP connection `stream` to `addr`: plaintext without `tls`; with `tls`, the mTLS
/// handshake (ALPN as for [`connect`]) bounded by `timeout`.
pub async fn handshake(
    stream: TcpStream,
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<(&EndpointTls, Option<bool>)>,
) -> io::Result<UpstreamIo> {
    let Some((tls, h2)) = tls else {
        return Ok(UpstreamIo::Plain(stream));
    };
    let configs = tls.configs(addr)?;
    let config = match h2 {
        Some(true) => configs[1].clone(),
        Some(false) => configs[0].clone(),
        None => configs[2].clone(),
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::IpAddress(addr.ip().into());
    match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(s)) => Ok(UpstreamIo::Tls(Box::new(s))),
        Ok(Err(e)) => {
            let refusal = jalin_ca::tls::record_handshake_error(
                jalin_ca::tls::Direction::Outbound,
                &e,
                Some(&addr.to_string()),
            );
            Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "mTLS to {addr} (expecting {}) failed: {refusal}",
                    tls.identity
                ),
            ))
        }
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("mTLS handshake with {addr} timed out"),
        )),
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(s) => s.connected(),
            UpstreamIo::Tls(s) => {
                let (tcp, session) = s.get_ref();
                if session.alpn_protocol() == Some(ALPN_H2) {
                    tcp.connected().negotiated_h2()
                } else {
                    tcp.connected()
                }
            }
        }
    }
}

plain_or_tls_io!(UpstreamIo);

/// The mTLS settings of `cluster`'s endpoints, when it says `istio_mutual` (validated with the
/// configuration: an identity section exists and `identity` parses).
pub fn cluster_tls(
    cluster: &jalin_xds::model::cluster::Cluster,
    outbound: Option<&OutboundTls>,
) -> Option<Arc<EndpointTls>> {
    endpoint_tls(&cluster.name, cluster.tls.as_ref(), outbound)
}

/// The mTLS settings of one set of `tls` settings (a cluster's, or an endpoint's override).
pub fn endpoint_tls(
    cluster: &str,
    tls: Option<&jalin_xds::model::cluster::ClusterTls>,
    outbound: Option<&OutboundTls>,
) -> Option<Arc<EndpointTls>> {
    use jalin_xds::model::cluster::ClusterTlsMode;
    let t = tls?;
    if t.mode != ClusterTlsMode::IstioMutual {
        return None;
    }
    // Validated with the configuration; an unparsable ID would have rejected the file.
    let id = SpiffeId::parse(t.identity.as_deref()?).ok()?;
    let Some(outbound) = outbound else {
        tracing::error!(
            cluster,
            "istio_mutual without a workload identity; refusing its connections"
        );
        return Some(Arc::new(EndpointTls::unusable(
            id,
            "the proxy has no workload identity".into(),
        )));
    };
    match EndpointTls::new(outbound, id.clone()) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::error!(cluster, error = %e, "cannot build the mTLS client config; refusing its connections");
            Some(Arc::new(EndpointTls::unusable(id, e.to_string())))
        }
    }
}
