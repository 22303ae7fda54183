//! Inbound: a peer sidecar, gateway or outside client calls the local application. Requests
//! come from outside this workload's trust, so identity headers they carry are dropped before
//! anything reads them; the proxy then states the verified peer itself (`x-forwarded-client-cert`).
//!
//! Connection order: the port's PeerAuthentication mode (listener `mtls`, else the policies
//! resolved for this workload and port) -> the ca crate's [`inbound_action`] on the first bytes
//! (STRICT refuses plaintext, PERMISSIVE classifies, DISABLE passes) -> TLS termination with the
//! workload's hot-swapped certificate -> [`PeerInfo`] (SPIFFE ID, fingerprint) in the
//! connection's context -> ALPN picks HTTP/2 or HTTP/1.1, else protocol detection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use http::{HeaderMap, HeaderValue};
use jalin_ca::tls::{
    Direction as TlsDirection, InboundAction, PortMtlsMode, inbound_action, peer_identity,
    record_handshake_error, record_refusal,
};
use jalin_xds::model::peer_auth::MtlsMode;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::detect::{Protocol, Rewind};
use crate::http::headers;
use crate::identity::ProxyIdentity;
use crate::limits::DETECT_TIMEOUT;

/// Istio's name for inbound traffic to an original destination no service claims.
pub const PASSTHROUGH: &str = "InboundPassthroughCluster";

/// Most bytes read to decide TLS vs plaintext (a TLS record header is 5 bytes).
const MTLS_DETECT_BYTES: usize = 16;

/// Header trust for inbound requests: a client must not assert a client certificate or any
/// `x-jalin-*` decision; the proxy sets those itself.
pub fn sanitize_request(h: &mut HeaderMap) {
    headers::strip_untrusted(h);
}

/// The verified peer of an inbound mTLS connection, shared by its requests.
#[derive(Debug)]
pub struct PeerInfo {
    /// What the authorization engine matches on.
    pub authz: jalin_xds::authz::PeerIdentity,
    /// The SPIFFE ID and fingerprint, as the ca crate read them.
    pub tls: jalin_ca::tls::PeerIdentity,
    /// The SNI the client sent, for `connection.sni`.
    pub sni: Option<String>,
}

impl PeerInfo {
    /// `x-forwarded-client-cert` as Envoy writes it for the application:
    /// `By=<our id>;Hash=<peer cert sha256>;URI=<peer id>`.
    pub fn xfcc(&self, local: &str) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!(
            "By={local};Hash={};URI={}",
            self.tls.fingerprint_sha256, self.tls.spiffe_id
        ))
        .ok()
    }
}

/// Sets the verified peer for the application, after [`sanitize_request`] removed any the
/// client wrote.
pub fn set_peer_headers(h: &mut HeaderMap, peer: &PeerInfo, identity: &ProxyIdentity) {
    if let Some(v) = peer.xfcc(&identity.spiffe_id.to_string()) {
        h.insert(&headers::X_FORWARDED_CLIENT_CERT, v);
    }
}

/// Maps a PeerAuthentication mode to the ca crate's port mode (`Unset` never reaches here).
pub fn port_mode(mode: MtlsMode) -> PortMtlsMode {
    match mode {
        MtlsMode::Strict => PortMtlsMode::Strict,
        MtlsMode::Disable => PortMtlsMode::Disable,
        MtlsMode::Permissive | MtlsMode::Unset => PortMtlsMode::Permissive,
    }
}

/// A downstream connection, plaintext or TLS-terminated.
#[derive(Debug)]
pub enum ServerIo {
    Plain(Rewind<TcpStream>),
    Tls(Box<TlsStream<Rewind<TcpStream>>>),
}

/// A connection after peer authentication.
#[derive(Debug)]
pub struct Accepted {
    pub io: ServerIo,
    /// The protocol ALPN settled, if any.
    pub alpn: Option<Protocol>,
    /// The verified peer (mTLS only).
    pub peer: Option<Arc<PeerInfo>>,
}

/// Applies the port's mode to a new inbound connection. `None`: refused or failed (already
/// logged and counted).
pub async fn accept(
    mut stream: TcpStream,
    mode: PortMtlsMode,
    identity: &ProxyIdentity,
    peer: SocketAddr,
) -> Option<Accepted> {
    let mut buf = BytesMut::with_capacity(MTLS_DETECT_BYTES);
    let deadline = tokio::time::Instant::now() + DETECT_TIMEOUT;
    let action = loop {
        match inbound_action(mode, &buf) {
            InboundAction::NeedMore(_) if buf.len() < MTLS_DETECT_BYTES => {}
            // Undecidable within the bound: let the mode's plaintext rule decide.
            InboundAction::NeedMore(_) => break plaintext_action(mode, &buf),
            a => break a,
        }
        let mut limited = (&mut stream).take((MTLS_DETECT_BYTES - buf.len()) as u64);
        match tokio::time::timeout_at(deadline, limited.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break plaintext_action(mode, &buf),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, %peer, "connection closed before peer authentication");
                return None;
            }
        }
    };
    let io = Rewind::new(buf.freeze(), stream);
    match action {
        InboundAction::Plaintext => Some(Accepted {
            io: ServerIo::Plain(io),
            alpn: None,
            peer: None,
        }),
        InboundAction::Refuse(refusal) => {
            record_refusal(TlsDirection::Inbound, &refusal, Some(&peer.to_string()));
            None
        }
        InboundAction::TerminateMtls | InboundAction::NeedMore(_) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
            let tls = match tokio::time::timeout_at(deadline + DETECT_TIMEOUT, acceptor.accept(io))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    record_handshake_error(TlsDirection::Inbound, &e, Some(&peer.to_string()));
                    return None;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return None;
                }
            };
            let (_, session) = tls.get_ref();
            let id = match peer_identity(session) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "mTLS peer without a usable identity refused");
                    return None;
                }
            };
            let spiffe = id.spiffe_id.to_string();
            let info = PeerInfo {
                authz: jalin_xds::authz::PeerIdentity::with_fingerprint(
                    Some(&spiffe),
                    Some(&id.fingerprint_sha256),
                ),
                sni: session.server_name().map(str::to_owned),
                tls: id,
            };
            let alpn = match session.alpn_protocol() {
                Some(jalin_ca::tls::ALPN_H2) => Some(Protocol::Http2),
                Some(jalin_ca::tls::ALPN_HTTP11) => Some(Protocol::Http1),
                _ => None,
            };
            tracing::trace!(%peer, peer_id = %spiffe, "mTLS peer authenticated");
            Some(Accepted {
                io: ServerIo::Tls(Box::new(tls)),
                alpn,
                peer: Some(Arc::new(info)),
            })
        }
    }
}

/// The decision when no more bytes come: a short plaintext greeting (or none) on a STRICT port
/// is refused; otherwise it is plaintext.
fn plaintext_action(mode: PortMtlsMode, buf: &[u8]) -> InboundAction {
    match mode {
        PortMtlsMode::Strict => match inbound_action(mode, &[buf, b"\0\0\0\0\0\0"].concat()) {
            InboundAction::TerminateMtls => InboundAction::TerminateMtls,
            InboundAction::Refuse(r) => InboundAction::Refuse(r),
            _ => InboundAction::Refuse(jalin_ca::tls::Refusal::new(
                jalin_ca::tls::RefusalReason::PlaintextOnStrictPort,
                "no TLS ClientHello",
            )),
        },
        _ => InboundAction::Plaintext,
    }
}

crate::tls::plain_or_tls_io!(ServerIo);
