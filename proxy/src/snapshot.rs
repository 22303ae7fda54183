//! The compiled configuration read per request: services by name and by virtual address, each
//! with its endpoints' pools. Built once per (re)load, swapped in atomically, never locked.
//!
//! Invariant: an endpoint whose address survives a reload keeps its `Arc<Endpoint>`, so warm
//! pooled connections survive reloads, and requests in flight finish on the snapshot they
//! started with. A cluster (or subset) whose policy is unchanged keeps its [`ClusterState`]
//! (balancer, outlier detector, breaker), its endpoints updated by address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jalin_xds::model::cluster::{Cluster, UpstreamProtocol};
use jalin_xds::model::route::{PriorityClass, RouteTable};
use jalin_xds::model::traffic::TrafficPolicy;

use crate::balance::PickContext;
use crate::cluster::ClusterState;
use crate::config::{ConfigOrigin, ProxyConfig};
use crate::endpoint::{Endpoint, PoolSettings};
use crate::retry::TriedHosts;
use crate::route::CompiledRouteTable;
use crate::telemetry::ServiceMetrics;
use metrics::SharedString;

/// One configuration generation, ready to serve.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one on every accepted (re)load, starting at 1.
    pub version: u64,
    pub config: Arc<ProxyConfig>,
    pub origin: ConfigOrigin,
    services: HashMap<String, Arc<Service>>,
    by_address: HashMap<SocketAddr, Arc<Service>>,
    /// Gateway name (`namespace/name`) -> a route-only service per route table bound to it
    /// ([`Service::route_only`]), in configuration order.
    gateways: HashMap<String, Vec<Arc<Service>>>,
    /// Access logging from the Telemetry resources, compiled for this workload.
    pub access_log: crate::accesslog::AccessLog,
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
    /// The route table whose hosts name this service, if any.
    pub routes: Option<Arc<CompiledRouteTable>>,
    /// The whole cluster, under the cluster policy.
    pub cluster: Arc<ClusterState>,
    subsets: HashMap<String, Arc<ClusterState>>,
    endpoints: Vec<Arc<Endpoint>>,
}

impl Snapshot {
    /// Compiles `config`, reusing the endpoints (and their warm pools) and the cluster states
    /// of `previous`.
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
        // Validated on load; a table that does not compile here is skipped. Each compiles once;
        // only tables bound to the sidecars (`mesh`) attach to services, gateway-bound ones
        // serve gateway listeners.
        let compiled: Vec<(&RouteTable, Arc<CompiledRouteTable>)> = config
            .routes
            .iter()
            .filter_map(|t| {
                CompiledRouteTable::compile(t)
                    .ok()
                    .map(|c| (t, Arc::new(c)))
            })
            .collect();
        let tables: Vec<&Arc<CompiledRouteTable>> = compiled
            .iter()
            .filter(|(t, _)| t.binds_mesh())
            .map(|(_, c)| c)
            .collect();
        let mut services = HashMap::new();
        let mut by_address = HashMap::new();
        for cluster in &config.services {
            let prev = previous.and_then(|p| p.service(&cluster.name));
            let routes = table_host(&cluster.name)
                .and_then(|host| tables.iter().find(|t| t.serves(host)))
                .map(|t| Arc::clone(t));
            let svc = Arc::new(Service::build(
                cluster,
                &old,
                outbound_tls,
                prev.map(|s| &**s),
                routes,
            ));
            for vip in &cluster.addresses {
                by_address.insert(*vip, svc.clone());
            }
            services.insert(cluster.name.clone(), svc);
        }
        let gateways = gateway_tables(&compiled);
        let access_log = crate::accesslog::build(&config);
        Self {
            version,
            access_log,
            gateways,
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

    /// The route-only service of the route table bound to `gateway` that serves `authority`
    /// (see [`crate::gateway::select`] for the host precedence); `None`: no table serves it.
    pub fn gateway_service(&self, gateway: &str, authority: &str) -> Option<&Arc<Service>> {
        let tables = self.gateways.get(gateway)?;
        let i = crate::gateway::select(tables.iter().map(|s| s.table_hosts()), authority)?;
        tables.get(i)
    }

    /// The service a transparent connection to `dst` is for, if `dst` is one of its addresses.
    pub fn service_for_address(&self, dst: &SocketAddr) -> Option<&Arc<Service>> {
        self.by_address.get(dst)
    }
}

/// A route-only service per table bound to each gateway, sharing the tables compiled once;
/// tables bound to one gateway that name the same host are merged for it
/// ([`crate::gateway::merge_by_host`]).
fn gateway_tables(
    compiled: &[(&RouteTable, Arc<CompiledRouteTable>)],
) -> HashMap<String, Vec<Arc<Service>>> {
    let mut bound: HashMap<&str, Vec<Arc<CompiledRouteTable>>> = HashMap::new();
    for (table, routes) in compiled {
        for g in &table.gateways {
            if g.as_str() != jalin_xds::model::route::MESH_GATEWAY {
                bound.entry(g.as_str()).or_default().push(routes.clone());
            }
        }
    }
    bound
        .into_iter()
        .map(|(g, tables)| {
            let services = crate::gateway::merge_by_host(&tables)
                .into_iter()
                .map(|t| Arc::new(Service::route_only(t)))
                .collect();
            (g.to_owned(), services)
        })
        .collect()
}

/// The host a route table must serve to apply to the cluster `name`: the name itself, or, for a
/// control plane's `outbound|<port>||<host>` cluster (the whole service, not a subset), its
/// service host. `None` for a subset cluster: it is only reached through a route, so it carries
/// no table.
fn table_host(name: &str) -> Option<&str> {
    match crate::xds::resolve::IstioCluster::parse(name) {
        Some(c) => c.subset.is_empty().then_some(c.host),
        None => Some(name),
    }
}

impl Service {
    fn build(
        cluster: &Cluster,
        old: &HashMap<SocketAddr, Arc<Endpoint>>,
        outbound_tls: Option<&jalin_ca::tls::OutboundTls>,
        previous: Option<&Service>,
        routes: Option<Arc<CompiledRouteTable>>,
    ) -> Self {
        let settings = PoolSettings::from_pool(&cluster.policy.connection_pool);
        let connect_timeout = settings.connect_timeout;
        let tls = crate::tls::cluster_tls(cluster, outbound_tls);
        // An endpoint keeps its warm pools across reloads while both its pool settings and the
        // server identity it verifies stay the same.
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
                    .filter(|ep| ep.settings() == &settings && ep.tls_identity() == wanted_id)
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(Endpoint::with_tls(e.address, settings.clone(), tls))
                    })
            })
            .collect();
        let name: Arc<str> = Arc::from(cluster.name.as_str());
        let all = endpoints
            .iter()
            .zip(&cluster.endpoints)
            .map(|(e, c)| (e.clone(), c.weight))
            .collect();
        let state = ClusterState::build(
            &cluster.name,
            &cluster.policy,
            all,
            previous.map(|p| &p.cluster),
        );
        let subsets = cluster
            .subsets
            .iter()
            .map(|sub| {
                let members = endpoints
                    .iter()
                    .zip(&cluster.endpoints)
                    .filter(|(_, c)| sub.selects(c))
                    .map(|(e, c)| (e.clone(), c.weight))
                    .collect();
                let policy = sub.policy.merged(&cluster.policy);
                let state = ClusterState::build(
                    &format!("{}|{}", cluster.name, sub.name),
                    &policy,
                    members,
                    previous.and_then(|p| p.subsets.get(&sub.name)),
                );
                (sub.name.clone(), state)
            })
            .collect();
        Self {
            metrics: Arc::new(ServiceMetrics::new(SharedString::from(name.clone()))),
            name,
            protocol: cluster.protocol,
            connect_timeout,
            routes,
            cluster: state,
            subsets,
            endpoints,
        }
    }

    /// A service with the single endpoint `dst`, for an original destination that no configured
    /// service claims (Istio's `PassthroughCluster`).
    pub fn passthrough(name: &'static str, dst: SocketAddr) -> Self {
        let settings = PoolSettings::default();
        let connect_timeout = settings.connect_timeout;
        let ep = Arc::new(Endpoint::new(dst, settings));
        Self {
            name: Arc::from(name),
            metrics: Arc::new(ServiceMetrics::new(SharedString::const_str(name))),
            protocol: UpstreamProtocol::Auto,
            connect_timeout,
            routes: None,
            cluster: ClusterState::build(
                name,
                &TrafficPolicy::default(),
                vec![(ep.clone(), 1)],
                None,
            ),
            subsets: HashMap::new(),
            endpoints: vec![ep],
        }
    }

    /// A service with no endpoints carrying a gateway-bound route table: its routes say where
    /// requests go (a route without a destination finds no endpoint: 503 `UH`). Named after the
    /// table (`namespace/name`).
    pub fn route_only(routes: Arc<CompiledRouteTable>) -> Self {
        let name: Arc<str> = Arc::from(routes.name.as_str());
        let settings = PoolSettings::default();
        Self {
            metrics: Arc::new(ServiceMetrics::new(SharedString::from(name.clone()))),
            cluster: ClusterState::build(&name, &TrafficPolicy::default(), Vec::new(), None),
            name,
            protocol: UpstreamProtocol::Auto,
            connect_timeout: settings.connect_timeout,
            routes: Some(routes),
            subsets: HashMap::new(),
            endpoints: Vec::new(),
        }
    }

    /// The hosts of the service's route table (none without one).
    fn table_hosts(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().flat_map(|r| r.hosts())
    }

    /// True when `other` is this service or one of its subset clusters (a control plane's
    /// `outbound|<port>|<subset>|<host>` of the same host): metrics keep this one's labels.
    pub fn same_service(&self, other: &Service) -> bool {
        fn host(name: &str) -> Option<(&str, u16)> {
            crate::xds::resolve::IstioCluster::parse(name).map(|c| (c.host, c.port))
        }
        std::ptr::eq(self, other)
            || self.name == other.name
            || host(&self.name).is_some_and(|h| Some(h) == host(&other.name))
    }

    /// The cluster state of `subset`, or of the whole service for `None`. `None` when the
    /// subset is unknown.
    pub fn cluster(&self, subset: Option<&str>) -> Option<&Arc<ClusterState>> {
        match subset {
            None => Some(&self.cluster),
            Some(s) => self.subsets.get(s),
        }
    }

    /// Picks an endpoint of the whole service with its balancer (opaque TCP). HTTP requests
    /// pick through [`ClusterState::pick`] to report their outcome.
    pub fn pick(&self) -> Option<Arc<Endpoint>> {
        self.cluster
            .pick(
                &PickContext::at(Instant::now()),
                &TriedHosts::default(),
                PriorityClass::Standard,
            )
            .map(|f| f.endpoint.clone())
    }

    /// The endpoints, in configuration order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }
}

#[cfg(test)]
mod tests {
    use jalin_xds::model::cluster::{ClusterTls, ClusterTlsMode};

    use super::*;

    const FILE: &str = "\
admin:
  address: 127.0.0.1:0
services:
  - name: echo
    endpoints:
      - address: 127.0.0.1:8080
      - address: 127.0.0.1:8081
";

    fn endpoints(s: &Snapshot) -> Vec<Arc<Endpoint>> {
        s.service("echo").unwrap().endpoints().to_vec()
    }

    fn same(a: &Snapshot, b: &Snapshot) -> bool {
        endpoints(a)
            .iter()
            .zip(endpoints(b).iter())
            .all(|(x, y)| Arc::ptr_eq(x, y))
    }

    fn mutual(id: &str) -> Option<ClusterTls> {
        Some(ClusterTls {
            mode: ClusterTlsMode::IstioMutual,
            identity: Some(id.into()),
        })
    }

    #[tokio::test]
    async fn endpoints_are_reused_only_with_the_same_pool_settings_and_tls_identity() {
        let (config, origin) = crate::config::parse("f.yaml", FILE).unwrap();
        let v1 = Snapshot::build(1, config.clone(), origin.clone(), None);

        let v2 = Snapshot::build(2, config.clone(), origin.clone(), Some(&v1));
        assert!(same(&v1, &v2), "an unchanged cluster keeps its endpoints");

        let mut slower = config;
        slower.services[0].policy.connection_pool.connect_timeout_ms += 1;
        let v3 = Snapshot::build(3, slower.clone(), origin.clone(), Some(&v2));
        assert!(
            endpoints(&v3)
                .iter()
                .all(|e| endpoints(&v2).iter().all(|o| !Arc::ptr_eq(e, o)))
        );

        let mut tls = slower.clone();
        tls.services[0].tls = mutual("spiffe://cluster.local/ns/a/sa/one");
        let v4 = Snapshot::build(4, tls.clone(), origin.clone(), Some(&v3));
        assert!(!same(&v3, &v4), "originating mTLS needs new endpoints");
        assert!(endpoints(&v4).iter().all(|e| e.tls_identity().is_some()));
        let v5 = Snapshot::build(5, tls.clone(), origin.clone(), Some(&v4));
        assert!(
            same(&v4, &v5),
            "the same identity and settings keep the endpoints"
        );

        let mut other = tls.clone();
        other.services[0].tls = mutual("spiffe://cluster.local/ns/a/sa/two");
        let v6 = Snapshot::build(6, other, origin, Some(&v5));
        assert!(
            !same(&v5, &v6),
            "a changed server identity needs new endpoints"
        );
    }
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[tokio::test]
    async fn a_table_attaches_to_the_whole_service_clusters_of_its_host() {
        let echo = "echo.prod.svc.cluster.local";
        let file = format!(
            "admin:\n  address: 127.0.0.1:0\nservices:\n  - name: outbound|80||{echo}\n  \
             - name: outbound|8080||{echo}\n  - name: outbound|80|v1|{echo}\n  \
             - name: outbound|80||db.prod.svc.cluster.local\n  - name: {echo}\n  \
             - name: other\nroutes:\n  - meta: {{ name: echo, namespace: prod }}\n    \
             hosts: [{echo}]\n    http:\n      - destinations:\n          \
             - destination: {{ host: 'outbound|80|v1|{echo}' }}\n            weight: 100\n"
        );
        let (config, origin) = crate::config::parse("f.yaml", &file).unwrap();
        let s = Snapshot::build(1, config, origin, None);
        let routed = |name: &str| s.service(name).unwrap().routes.is_some();
        assert!(routed(&format!("outbound|80||{echo}")));
        assert!(routed(&format!("outbound|8080||{echo}")));
        assert!(routed(echo), "a service named by the host itself");
        assert!(!routed(&format!("outbound|80|v1|{echo}")), "a subset");
        assert!(!routed("outbound|80||db.prod.svc.cluster.local"));
        assert!(!routed("other"));
    }

    #[tokio::test]
    async fn a_subset_cluster_is_the_same_service_for_metrics_another_host_is_not() {
        let echo = "echo.prod.svc.cluster.local";
        let file = format!(
            "admin:\n  address: 127.0.0.1:0\nservices:\n  - name: outbound|80||{echo}\n  \
             - name: outbound|80|v1|{echo}\n  - name: outbound|8080||{echo}\n  \
             - name: outbound|80||db.prod.svc.cluster.local\n  - name: records\n  \
             - name: api\n"
        );
        let (config, origin) = crate::config::parse("f.yaml", &file).unwrap();
        let s = Snapshot::build(1, config, origin, None);
        let svc = |name: &str| s.service(name).unwrap().clone();
        let whole = svc(&format!("outbound|80||{echo}"));
        assert!(whole.same_service(&whole));
        assert!(whole.same_service(&svc(&format!("outbound|80|v1|{echo}"))));
        assert!(!whole.same_service(&svc(&format!("outbound|8080||{echo}"))));
        assert!(!whole.same_service(&svc("outbound|80||db.prod.svc.cluster.local")));
        assert!(!svc("records").same_service(&svc("api")));
    }
}
