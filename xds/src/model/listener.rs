//! Native listener: an address the proxy accepts connections on, its direction, and how the
//! destination of each connection is found (transparent original destination, one named service
//! for bare metal, or, at a gateway, each request's authority against the route tables bound to
//! the gateway), plus the server TLS a gateway listener terminates itself.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Which side of the workload a listener serves. It decides header trust and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Peers call the local application through this listener (Istio reporter `destination`).
    Inbound,
    /// The local application calls services through this listener (Istio reporter `source`).
    Outbound,
}

/// What the listener expects on its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// Sniff each connection: HTTP/1.1, HTTP/2 prior knowledge, otherwise opaque TCP.
    #[default]
    Detect,
    /// Every connection is HTTP/1.1 (no detection delay for server-first protocols is needed).
    Http1,
    /// Every connection is HTTP/2 with prior knowledge.
    Http2,
    /// Every connection is forwarded as opaque bytes.
    Tcp,
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in logs, metrics and `config_dump`.
    pub name: String,
    /// Address to bind, for example `0.0.0.0:15001`; port 0 picks a free port.
    pub address: SocketAddr,
    pub direction: Direction,
    /// Explicit mode when set: every connection goes to this service (bare metal, no iptables).
    /// Transparent mode when absent: the destination is the connection's original destination
    /// (`SO_ORIGINAL_DST`, set by an iptables `REDIRECT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// Inbound peer authentication for this listener's port (STRICT, PERMISSIVE, DISABLE),
    /// overriding the PeerAuthentication policies; absent: resolved from those policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<super::peer_auth::MtlsMode>,
    /// Gateway mode when set (`namespace/name` of an Istio Gateway): each request goes where the
    /// first route table bound to this gateway (`RouteTable::gateways`) whose `hosts` match the
    /// request's authority sends it. Exclusive with `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Server TLS this listener terminates with its own certificate (Istio Gateway
    /// `servers[].tls`), instead of the mesh's mTLS: a gateway's government-certified
    /// certificate towards clients outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Also serve HTTP/3 (QUIC) on the same port over UDP, and advertise it with `Alt-Svc` on the
    /// TCP listener's responses. Needs `tls`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub http3: bool,
}

/// How a listener's own server TLS treats clients (Istio `ServerTLSSettings.TLSmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Server certificate only (Istio `SIMPLE`).
    #[default]
    Simple,
    /// Client certificate required and verified against `ca_certificates` (Istio `MUTUAL`).
    Mutual,
}

/// TLS versions a listener accepts at least (Istio `minProtocolVersion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TlsProtocolVersion {
    /// TLS 1.2 and 1.3 (Istio's gateway default).
    #[default]
    #[serde(rename = "TLSV1_2")]
    Tls12,
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// A listener's server TLS: certificate files (PEM), re-read on every configuration reload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    #[serde(default)]
    pub mode: ServerTlsMode,
    /// PEM certificate chain, leaf first (Istio `serverCertificate`).
    pub certificate_chain: String,
    /// PEM private key of the leaf (Istio `privateKey`). Never logged.
    pub private_key: String,
    /// PEM roots that client certificates must chain to; required in `MUTUAL` mode (Istio
    /// `caCertificates`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates: Option<String>,
    /// In `MUTUAL` mode, the client certificate must carry one of these SANs (Istio
    /// `subjectAltNames`); empty: any client the roots verify.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub min_protocol_version: TlsProtocolVersion,
    /// Only these suites of the government policy are offered (Istio `cipherSuites`: OpenSSL
    /// names for TLS 1.2, IANA names for TLS 1.3); a protocol version none of whose suites is
    /// listed keeps all of them, as Envoy keeps TLS 1.3's. Empty: every suite of the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

impl ServerTls {
    /// The files it names (chain, key, and CA when set), which a reload reads again.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        [&self.certificate_chain, &self.private_key]
            .into_iter()
            .chain(self.ca_certificates.as_ref())
            .map(String::as_str)
    }
}

impl Listener {
    /// True when the listener finds destinations by original destination address.
    pub fn is_transparent(&self) -> bool {
        self.service.is_none() && self.gateway.is_none()
    }
}
