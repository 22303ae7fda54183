//! Native cluster (a service): the endpoints that serve it, how to speak to them, and its traffic
//! policy (load balancing, connection-pool limits, outlier detection).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::traffic::TrafficPolicy;

/// An endpoint's weight when none is given; weights are relative within a cluster.
pub const DEFAULT_ENDPOINT_WEIGHT: u32 = 1;

/// How the proxy speaks HTTP to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// The downstream request's protocol: HTTP/1.1 stays HTTP/1.1, HTTP/2 stays HTTP/2.
    #[default]
    Auto,
    /// Always HTTP/1.1 with keep-alive pooling.
    Http1,
    /// Always HTTP/2 prior knowledge, one multiplexed connection per endpoint.
    Http2,
}

/// One service the proxy forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name; listeners in explicit mode and metrics (`destination_service`) use it.
    pub name: String,
    /// Virtual addresses (for example a Kubernetes ClusterIP and port) by which a transparent
    /// listener recognises this service from a connection's original destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<SocketAddr>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// The endpoints; an empty list is valid and answers 503 (no healthy upstream).
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub policy: TrafficPolicy,
    /// TLS the proxy originates to the endpoints (Istio DestinationRule `trafficPolicy.tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
}

/// How connections to a cluster's endpoints are secured (Istio `ClientTLSSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    pub mode: ClusterTlsMode,
    /// The SPIFFE ID the endpoints must present (`spiffe://<td>/ns/<ns>/sa/<sa>`), checked
    /// instead of a host name. Required for `istio_mutual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

/// Istio's `tls.mode`, as far as the mesh's own certificates go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterTlsMode {
    /// Plaintext (`DISABLE`).
    Disable,
    /// mTLS with the workload's mesh certificate (`ISTIO_MUTUAL`).
    IstioMutual,
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub address: SocketAddr,
    /// Relative weight for load balancing; must be at least 1.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Labels (for example `version: v2`) that DestinationRule subsets select on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// TLS to this endpoint, overriding the cluster's `tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
}

fn default_weight() -> u32 {
    DEFAULT_ENDPOINT_WEIGHT
}

impl Endpoint {
    /// An endpoint at `address` with the default weight and no labels.
    pub fn new(address: SocketAddr) -> Self {
        Self {
            address,
            weight: DEFAULT_ENDPOINT_WEIGHT,
            labels: BTreeMap::new(),
            tls: None,
        }
    }
}
