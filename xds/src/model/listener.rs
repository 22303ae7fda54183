//! Native listener: an address the proxy accepts connections on, its direction, and how the
//! destination of each connection is found (transparent original destination, or one named
//! service for bare metal).

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
}

impl Listener {
    /// True when the listener finds destinations by original destination address.
    pub fn is_transparent(&self) -> bool {
        self.service.is_none()
    }
}
