//! The compiled configuration read per request: services by name and by virtual address, each
//! with its endpoints' pools. Built once per (re)load, swapped in atomically, never locked.
//!
//! Invariant: an endpoint whose address survives a reload keeps its `Arc<Endpoint>`, so warm
//! pooled connections survive reloads, and requests in flight finish on the snapshot they
//! started with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jalin_xds::model::cluster::{Cluster, UpstreamProtocol};
use jalin_xds::model::traffic::DEFAULT_CONNECT_TIMEOUT_MS;

use crate::config::{ConfigOrigin, ProxyConfig};
use crate::endpoint::Endpoint;
use crate::telemetry::ServiceMetrics;
use metrics::SharedString;

/// Most slots in a weighted round-robin schedule; larger weight sums are scaled down to it.
const MAX_SCHEDULE_SLOTS: u64 = 4096;

/// One configuration generation, ready to serve.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one on every accepted (re)load, starting at 1.
    pub version: u64,
    pub config: Arc<ProxyConfig>,
    pub origin: ConfigOrigin,
    services: HashMap<String, Arc<Service>>,
    by_address: HashMap<SocketAddr, Arc<Service>>,
}

/// A service (cluster) as the data path sees it.
#[derive(Debug)]
pub struct Service {
    /// The name, shared with metric labels.
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub connect_timeout: Duration,
    /// Request metrics labelled with this service.
    pub metrics: Arc<ServiceMetrics>,
    endpoints: Vec<Arc<Endpoint>>,
    /// Weighted round-robin order: indexes into `endpoints`, each repeated by its weight.
    schedule: Vec<u32>,
    next: AtomicUsize,
}

impl Snapshot {
    /// Compiles `config`, reusing the endpoints (and their warm pools) of `previous`.
    pub fn build(
        version: u64,
        config: ProxyConfig,
        origin: ConfigOrigin,
        previous: Option<&Snapshot>,
    ) -> Self {
        Self::build_with(version, config, origin, previous, None)
    }

    /// [`Snapshot::build`] with the proxy's outbound TLS, for clusters that originate mTLS.
    pub fn build_with(
        version: u64,
        config: ProxyConfig,
        origin: ConfigOrigin,
        previous: Option<&Snapshot>,
        outbound_tls: Option<&jalin_ca::tls::OutboundTls>,
    ) -> Self {
        let mut old: HashMap<SocketAddr, Arc<Endpoint>> = HashMap::new();
        if let Some(prev) = previous {
            for svc in prev.services.values() {
                for ep in &svc.endpoints {
                    old.insert(ep.addr(), ep.clone());
                }
            }
        }
        let mut services = HashMap::new();
        let mut by_address = HashMap::new();
        for cluster in &config.services {
            let svc = Arc::new(Service::build(cluster, &old, outbound_tls));
            for vip in &cluster.addresses {
                by_address.insert(*vip, svc.clone());
            }
            services.insert(cluster.name.clone(), svc);
        }
        Self {
            version,
            config: Arc::new(config),
            origin,
            services,
            by_address,
        }
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&Arc<Service>> {
        self.services.get(name)
    }

    /// The service a transparent connection to `dst` is for, if `dst` is one of its addresses.
    pub fn service_for_address(&self, dst: &SocketAddr) -> Option<&Arc<Service>> {
        self.by_address.get(dst)
    }
}

impl Service {
    fn build(
        cluster: &Cluster,
        old: &HashMap<SocketAddr, Arc<Endpoint>>,
        outbound_tls: Option<&jalin_ca::tls::OutboundTls>,
    ) -> Self {
        let connect_timeout =
            Duration::from_millis(cluster.policy.connection_pool.connect_timeout_ms);
        let tls = crate::tls::cluster_tls(cluster, outbound_tls);
        let endpoints: Vec<Arc<Endpoint>> = cluster
            .endpoints
            .iter()
            .map(|e| {
                // An endpoint's own `tls` overrides the cluster's.
                let tls = match &e.tls {
                    Some(own) => crate::tls::endpoint_tls(&cluster.name, Some(own), outbound_tls),
                    None => tls.clone(),
                };
                let wanted_id = tls.as_ref().map(|t| &t.identity);
                old.get(&e.address)
                    .filter(|ep| ep.tls_identity() == wanted_id)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint::with_tls(e.address, connect_timeout, tls))
                    })
            })
            .collect();
        let weights: Vec<u32> = cluster.endpoints.iter().map(|e| e.weight).collect();
        let name: Arc<str> = Arc::from(cluster.name.as_str());
        Self {
            metrics: Arc::new(ServiceMetrics::new(SharedString::from(name.clone()))),
            name,
            protocol: cluster.protocol,
            connect_timeout,
            endpoints,
            schedule: schedule(&weights),
            next: AtomicUsize::new(0),
        }
    }

    /// A service with the single endpoint `dst`, for an original destination that no configured
    /// service claims (Istio's `PassthroughCluster`).
    pub fn passthrough(name: &'static str, dst: SocketAddr) -> Self {
        let connect_timeout = Duration::from_millis(DEFAULT_CONNECT_TIMEOUT_MS);
        Self {
            name: Arc::from(name),
            metrics: Arc::new(ServiceMetrics::new(SharedString::const_str(name))),
            protocol: UpstreamProtocol::Auto,
            connect_timeout,
            endpoints: vec![Arc::new(Endpoint::new(dst, connect_timeout))],
            schedule: vec![0],
            next: AtomicUsize::new(0),
        }
    }

    /// Picks the endpoint for the next request: weighted round robin. This is the step the
    /// balancer replaces; sending is [`Endpoint::send`], a separate step.
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        self.endpoints.get(self.schedule[n] as usize)
    }

    /// The endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }
}

/// Spreads each index `i` over the schedule `weights[i]` times (scaled so the schedule has at
/// most [`MAX_SCHEDULE_SLOTS`] slots, every endpoint keeping at least one), interleaved so that
/// heavy endpoints do not receive bursts.
fn schedule(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let scaled: Vec<u64> = weights
        .iter()
        .map(|w| {
            let w = u64::from(*w);
            if total <= MAX_SCHEDULE_SLOTS {
                w
            } else {
                (w * MAX_SCHEDULE_SLOTS / total).max(1)
            }
        })
        .collect();
    // Smooth weighted round robin (as nginx does): deterministic and evenly interleaved.
    let sum: i64 = scaled.iter().map(|w| *w as i64).sum();
    let mut current = vec![0i64; scaled.len()];
    let mut out = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for (i, w) in scaled.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        out.push(best as u32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::schedule;

    #[test]
    fn schedule_honours_weights_and_interleaves() {
        let s = schedule(&[1, 3]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.iter().filter(|i| **i == 1).count(), 3);
        assert_eq!(schedule(&[2, 2]), vec![0, 1, 0, 1]);
        assert!(schedule(&[]).is_empty());
    }

    #[test]
    fn huge_weights_are_scaled_but_keep_every_endpoint() {
        let s = schedule(&[u32::MAX, 1]);
        assert!(s.len() <= 4097);
        assert!(s.contains(&1));
    }
}
