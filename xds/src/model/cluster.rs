//! Native cluster (a service): the endpoints that serve it, how to speak to them, and its traffic
//! policy (load balancing, connection-pool limits, outlier detection).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::traffic::{
    ConcurrencyRetryBudget, ConnectionPool, LoadBalancer, OutlierDetection, PriorityPolicy,
    RetryBudget, TrafficPolicy,
};

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
    /// DestinationRule subsets: named groups of endpoints selected by labels, each with its own
    /// policy merged over `policy` and its own connection-pool and outlier state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subsets: Vec<Subset>,
}

/// A DestinationRule subset: the endpoints whose labels include all of `labels`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    pub name: String,
    /// Every label here must be on an endpoint for it to belong to the subset.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides of the cluster policy; `None` fields inherit the cluster's.
    #[serde(default)]
    pub policy: SubsetPolicy,
}

/// A subset's traffic policy. As in Istio, each field that is set replaces the cluster's field
/// whole (a subset's `connectionPool` replaces the parent's `connectionPool`, not single limits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SubsetPolicy {
    pub load_balancer: Option<LoadBalancer>,
    pub connection_pool: Option<ConnectionPool>,
    pub outlier_detection: Option<OutlierDetection>,
    pub retry_budget: Option<RetryBudget>,
    pub retry_concurrency_budget: Option<ConcurrencyRetryBudget>,
    pub priority: Option<PriorityPolicy>,
}

impl SubsetPolicy {
    /// The effective policy of a subset of a cluster with `parent`.
    pub fn merged(&self, parent: &TrafficPolicy) -> TrafficPolicy {
        TrafficPolicy {
            load_balancer: self
                .load_balancer
                .clone()
                .unwrap_or_else(|| parent.load_balancer.clone()),
            connection_pool: self
                .connection_pool
                .clone()
                .unwrap_or_else(|| parent.connection_pool.clone()),
            outlier_detection: self
                .outlier_detection
                .clone()
                .or_else(|| parent.outlier_detection.clone()),
            retry_budget: self
                .retry_budget
                .clone()
                .or_else(|| parent.retry_budget.clone()),
            retry_concurrency_budget: self
                .retry_concurrency_budget
                .clone()
                .or_else(|| parent.retry_concurrency_budget.clone()),
            priority: self
                .priority
                .clone()
                .unwrap_or_else(|| parent.priority.clone()),
        }
    }
}

impl Subset {
    /// True when `endpoint` carries every label of this subset.
    pub fn selects(&self, endpoint: &Endpoint) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| endpoint.labels.get(k) == Some(v))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_fields_replace_the_parent_whole_and_others_inherit() {
        let parent = TrafficPolicy {
            load_balancer: LoadBalancer::RoundRobin,
            outlier_detection: Some(OutlierDetection::default()),
            ..TrafficPolicy::default()
        };
        let pool = ConnectionPool {
            max_connections: 7,
            ..ConnectionPool::default()
        };
        let sub = SubsetPolicy {
            connection_pool: Some(pool.clone()),
            ..SubsetPolicy::default()
        };
        let m = sub.merged(&parent);
        assert_eq!(m.connection_pool, pool);
        assert_eq!(m.load_balancer, LoadBalancer::RoundRobin);
        assert!(m.outlier_detection.is_some());
    }

    #[test]
    fn subset_selects_by_all_labels() {
        let mut e = Endpoint::new(([127, 0, 0, 1], 1).into());
        e.labels.insert("priority".into(), "emergency".into());
        let s = Subset {
            name: "emergency".into(),
            labels: [("priority".to_owned(), "emergency".to_owned())].into(),
            policy: SubsetPolicy::default(),
        };
        assert!(s.selects(&e));
        e.labels.insert("priority".into(), "standard".into());
        assert!(!s.selects(&e));
    }
}
