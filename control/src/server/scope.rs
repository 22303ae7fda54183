//! Per-proxy scoping: which resources of the global snapshot one proxy receives.
//!
//! A proxy announces itself in its node metadata: `NAMESPACE`, `SERVICE_ACCOUNT` and `LABELS`
//! (`k=v,k2=v2`, or a JSON object as a string). Over mTLS the namespace and service account are
//! checked against the verified client certificate before the stream is served ([`super::admit`]).
//! From that, and from the index the translation builds with every snapshot, the view keeps:
//! - policies (authorization, peer authentication) of the proxy's namespace and of the root
//!   namespace whose selector matches its labels (no selector: the whole namespace);
//! - clusters and endpoints of the services its Sidecar's `egress.hosts` admit (every exported
//!   service when no Sidecar selects it), with the DestinationRule chosen for its namespace
//!   (client namespace, then the service's, then the root namespace);
//! - a gateway proxy (one whose labels an Istio Gateway's `selector` matches, in any namespace,
//!   Istio's default) gets the route tables of the VirtualServices bound to its Gateways and no
//!   sidecar (`mesh`) route table; Sidecar resources do not apply to it (as in Istio), so it
//!   gets every service exported to its namespace. Every other proxy is a sidecar and gets the
//!   `mesh` route tables only;
//! - everything else (trust bundle) as is.
//!
//! Invariant: the view only shares entries already encoded by the translation; it never
//! encodes. Its set versions are content hashes, so a proxy whose view did not change gets no push.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use jalin_xds::model::WorkloadSelector;
use jalin_xds::transport::{Entry, NodeInfo, Peer, Scope, Snapshot};

use super::admit::Admission;

/// Node metadata key of the proxy's namespace.
pub const META_NAMESPACE: &str = "NAMESPACE";
/// Node metadata key of the proxy's service account.
pub const META_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// Node metadata key of the proxy's workload labels.
pub const META_LABELS: &str = "LABELS";

/// Who sees one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visibility {
    /// Every proxy (trust bundle).
    Everyone,
    /// Workloads of `namespace` (every namespace when it is the root namespace) that `selector`
    /// matches (no selector: all of them).
    Workload {
        /// The policy's namespace.
        namespace: String,
        /// The policy's selector.
        selector: Option<WorkloadSelector>,
    },
    /// Proxies whose Sidecar scope admits one of the route table's `(namespace, host)`s.
    Route {
        /// The hosts the table is for.
        hosts: Vec<(String, String)>,
    },
    /// Proxies selected by the Gateway `gateway` (`namespace/name`).
    Gateway {
        /// The Gateway.
        gateway: String,
    },
    /// Proxies whose Sidecar scope admits the service and to which it is exported.
    Service {
        /// The service's namespace.
        namespace: String,
        /// The service's host.
        host: String,
        /// ServiceEntry `exportTo` (empty: everyone).
        export_to: Vec<String>,
    },
}

/// A Sidecar's egress scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarScope {
    /// Namespace of the Sidecar.
    pub namespace: String,
    /// Its workload selector (`None`: namespace-wide).
    pub selector: Option<WorkloadSelector>,
    /// `egress[*].hosts` entries, as `(namespace part, host part)`.
    pub hosts: Vec<(String, String)>,
}

impl SidecarScope {
    /// True when the scope admits `host` of namespace `service_ns`.
    pub fn admits(&self, service_ns: &str, host: &str) -> bool {
        self.hosts.iter().any(|(ns, h)| {
            let ns_ok = match ns.as_str() {
                "*" => true,
                "~" => false,
                "." => service_ns == self.namespace,
                other => other == service_ns,
            };
            ns_ok && crate::istio::gateway::covers(h, host)
        })
    }
}

/// The hosts one VirtualService routes for and the hosts it sends traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteScope {
    /// `(namespace, host)` of every host the VirtualService is for.
    pub hosts: Vec<(String, String)>,
    /// Every destination host of its routes and mirrors (fully qualified).
    pub destinations: Vec<String>,
    /// The Gateway (`namespace/name`) this table is served at; `None`: the sidecars.
    pub gateway: Option<String>,
}

/// An Istio Gateway's workload selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayScope {
    /// The Gateway, `namespace/name`.
    pub gateway: String,
    /// Its `selector` (never empty: a Gateway without one selects no jalin proxy).
    pub selector: WorkloadSelector,
}

/// Variant entries for proxies of one namespace (its own DestinationRules).
#[derive(Debug, Clone, Default)]
pub struct NamespaceVariant {
    /// Entries that replace (or add to) the global ones, by type URL and name.
    pub replace: BTreeMap<(Arc<str>, Arc<str>), Arc<Entry>>,
    /// Global entries these proxies do not get (subsets only the default rule defines).
    pub hide: HashSet<(Arc<str>, Arc<str>)>,
}

/// What the translation tells the scope about the snapshot it pushed.
#[derive(Debug, Clone, Default)]
pub struct ScopeIndex {
    /// The root namespace (its policies apply mesh-wide).
    pub root_namespace: String,
    /// Visibility per resource (type URL, name); a resource not listed is seen by everyone.
    pub visibility: HashMap<(Arc<str>, Arc<str>), Visibility>,
    /// Per client namespace variants.
    pub variants: HashMap<String, NamespaceVariant>,
    /// Sidecar egress scopes.
    pub sidecars: Vec<SidecarScope>,
    /// VirtualService routes: a proxy whose Sidecar admits a routed host also needs the
    /// clusters that host's routes send to.
    pub routes: Vec<RouteScope>,
    /// Gateways and the workloads they select.
    pub gateways: Vec<GatewayScope>,
}

/// A proxy's identity, from its node metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// Namespace ("" when the proxy did not say).
    pub namespace: String,
    /// Service account.
    pub service_account: Option<String>,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
}

impl ProxyIdentity {
    /// Reads the identity from node metadata.
    pub fn from_node(node: &NodeInfo) -> Self {
        let namespace = node
            .metadata
            .get(META_NAMESPACE)
            .cloned()
            .unwrap_or_default();
        let service_account = node.metadata.get(META_SERVICE_ACCOUNT).cloned();
        let labels = node
            .metadata
            .get(META_LABELS)
            .map(|s| parse_labels(s))
            .unwrap_or_default();
        ProxyIdentity {
            namespace,
            service_account,
            labels,
        }
    }
}

/// Parses `k=v,k2=v2` or a JSON object of strings.
pub fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let t = s.trim();
    if t.starts_with('{') {
        return serde_json::from_str(t).unwrap_or_default();
    }
    t.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

impl ScopeIndex {
    /// The Sidecar scope for a proxy: a workload-selected Sidecar of its namespace, else its
    /// namespace-wide Sidecar, else the root namespace's namespace-wide one.
    pub fn sidecar_for(&self, proxy: &ProxyIdentity) -> Option<&SidecarScope> {
        let own = || {
            self.sidecars
                .iter()
                .filter(|s| s.namespace == proxy.namespace)
        };
        own()
            .find(|s| {
                s.selector
                    .as_ref()
                    .is_some_and(|sel| sel.matches(&proxy.labels))
            })
            .or_else(|| own().find(|s| s.selector.is_none()))
            .or_else(|| {
                self.sidecars
                    .iter()
                    .find(|s| s.namespace == self.root_namespace && s.selector.is_none())
            })
    }

    /// The Gateways (`namespace/name`) whose selector matches `proxy`'s labels, in any
    /// namespace; empty for a sidecar.
    pub fn gateways_of(&self, proxy: &ProxyIdentity) -> Vec<String> {
        self.gateways
            .iter()
            .filter(|g| g.selector.matches(&proxy.labels))
            .map(|g| g.gateway.clone())
            .collect()
    }

    /// Hosts a proxy with Sidecar scope `sidecar` needs because the routes of hosts it admits
    /// send traffic there.
    pub fn route_needs(&self, sidecar: Option<&SidecarScope>) -> HashSet<String> {
        let Some(sidecar) = sidecar else {
            return HashSet::new();
        };
        self.routes
            .iter()
            .filter(|r| r.gateway.is_none())
            .filter(|r| r.hosts.iter().any(|(ns, h)| sidecar.admits(ns, h)))
            .flat_map(|r| r.destinations.iter().cloned())
            .collect()
    }

    /// True when `proxy` (a gateway of `gateways`, a sidecar when that is empty, with Sidecar
    /// scope `sidecar`, whose routes need `needed`) sees a resource of visibility `v`.
    pub fn visible(
        &self,
        v: &Visibility,
        proxy: &ProxyIdentity,
        gateways: &[String],
        sidecar: Option<&SidecarScope>,
        needed: &HashSet<String>,
    ) -> bool {
        match v {
            Visibility::Everyone => true,
            Visibility::Workload {
                namespace,
                selector,
            } => {
                (namespace == &proxy.namespace || namespace == &self.root_namespace)
                    && selector.as_ref().is_none_or(|s| s.matches(&proxy.labels))
            }
            Visibility::Route { hosts } => {
                gateways.is_empty()
                    && sidecar.is_none_or(|s| hosts.iter().any(|(ns, h)| s.admits(ns, h)))
            }
            Visibility::Gateway { gateway } => gateways.contains(gateway),
            Visibility::Service {
                namespace,
                host,
                export_to,
            } => {
                let exported = export_to.is_empty()
                    || export_to.iter().any(|e| {
                        e == "*"
                            || e == &proxy.namespace
                            || (e == "." && namespace == &proxy.namespace)
                    });
                exported
                    && sidecar.is_none_or(|s| s.admits(namespace, host) || needed.contains(host))
            }
        }
    }

    /// The view of `snapshot` for `proxy`.
    pub fn view(&self, proxy: &ProxyIdentity, snapshot: &Snapshot) -> Snapshot {
        let gateways = self.gateways_of(proxy);
        // Sidecar resources apply to sidecars only (Istio): a gateway sees every exported service.
        let sidecar = if gateways.is_empty() {
            self.sidecar_for(proxy)
        } else {
            None
        };
        let needed = self.route_needs(sidecar);
        let variant = self.variants.get(&proxy.namespace);
        let mut by_type: BTreeMap<Arc<str>, BTreeMap<Arc<str>, Arc<Entry>>> = BTreeMap::new();
        let mut keep = |entry: &Arc<Entry>| {
            let key = (entry.type_url.clone(), entry.name.clone());
            let seen = self
                .visibility
                .get(&key)
                .is_none_or(|v| self.visible(v, proxy, &gateways, sidecar, &needed));
            if seen {
                by_type
                    .entry(entry.type_url.clone())
                    .or_default()
                    .insert(entry.name.clone(), entry.clone());
            }
        };
        for url in snapshot.type_urls() {
            let Some(set) = snapshot.type_set(url) else {
                continue;
            };
            for (name, entry) in &set.resources {
                let key = (url.clone(), name.clone());
                match variant {
                    Some(v) if v.hide.contains(&key) => {}
                    Some(v) if v.replace.contains_key(&key) => {}
                    _ => keep(entry),
                }
            }
        }
        if let Some(v) = variant {
            for entry in v.replace.values() {
                keep(entry);
            }
        }
        Snapshot::from_entries(by_type)
    }
}

/// Views computed for the current snapshot and index, by proxy namespace and labels: proxies
/// of one workload share one view, so a push to N proxies filters the snapshot once per
/// distinct workload, not N times.
#[derive(Debug, Default)]
struct ViewCache {
    // Held (not just their addresses) so that an address cannot be reused by a later snapshot.
    snapshot: Option<Arc<Snapshot>>,
    index: Option<Arc<ScopeIndex>>,
    views: HashMap<(String, BTreeMap<String, String>), Arc<Snapshot>>,
}

/// Distinct workloads whose views are cached per snapshot (a bound, not a target).
pub const MAX_CACHED_VIEWS: usize = 10_000;

/// The [`Scope`] the control plane gives its xDS server; the translation swaps in a new index
/// before each push.
#[derive(Debug, Clone, Default)]
pub struct ControlScope {
    index: Arc<ArcSwap<ScopeIndex>>,
    cache: Arc<std::sync::Mutex<ViewCache>>,
    admission: Arc<Admission>,
}

impl ControlScope {
    /// A scope with an empty index that serves only streams with a workload certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// A scope with an empty index that admits streams as `admission` says.
    pub fn with_admission(admission: Admission) -> Self {
        ControlScope {
            admission: Arc::new(admission),
            ..Self::default()
        }
    }

    /// Replaces the index (call before pushing the snapshot it describes).
    pub fn set(&self, index: ScopeIndex) {
        self.index.store(Arc::new(index));
    }
}

impl Scope for ControlScope {
    fn admit(&self, node: NodeInfo, peer: &Peer) -> Result<NodeInfo, tonic::Status> {
        self.admission.admit(node.clone(), peer).map_err(|refusal| {
            metrics::counter!("jalin_control_xds_refused_total", "reason" => refusal.reason())
                .increment(1);
            tracing::warn!(
                node = %node.id,
                remote = ?peer.remote_addr,
                reason = refusal.reason(),
                "xDS stream refused: {refusal}"
            );
            refusal.status()
        })
    }

    fn view(&self, node: &NodeInfo, snapshot: &Arc<Snapshot>) -> Arc<Snapshot> {
        let proxy = ProxyIdentity::from_node(node);
        let index = self.index.load_full();
        let key = (proxy.namespace.clone(), proxy.labels.clone());
        {
            let mut cache = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let current = cache
                .snapshot
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, snapshot))
                && cache.index.as_ref().is_some_and(|i| Arc::ptr_eq(i, &index));
            if !current {
                cache.snapshot = Some(snapshot.clone());
                cache.index = Some(index.clone());
                cache.views.clear();
            }
            if let Some(v) = cache.views.get(&key) {
                return v.clone();
            }
        }
        let view = Arc::new(index.view(&proxy, snapshot));
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = cache
            .snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, snapshot))
            && cache.index.as_ref().is_some_and(|i| Arc::ptr_eq(i, &index));
        if current && cache.views.len() < MAX_CACHED_VIEWS {
            cache.views.insert(key, view.clone());
        }
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_in_both_forms() {
        let a = parse_labels("app=a, version=v1");
        let b = parse_labels(r#"{"app":"a","version":"v1"}"#);
        assert_eq!(a, b);
        assert_eq!(a.get("version").map(String::as_str), Some("v1"));
    }

    #[test]
    fn sidecar_hosts_admit_by_namespace_and_host() {
        let s = SidecarScope {
            namespace: "a".into(),
            selector: None,
            hosts: vec![
                (".".into(), "*".into()),
                ("b".into(), "*.b.svc.cluster.local".into()),
            ],
        };
        assert!(s.admits("a", "x.a.svc.cluster.local"));
        assert!(s.admits("b", "y.b.svc.cluster.local"));
        assert!(!s.admits("c", "z.c.svc.cluster.local"));
        assert!(!s.admits("b", "external.example.com"));
        // A wildcard never covers its bare suffix (Istio), as at gateways and in lint.
        assert!(!s.admits("b", "b.svc.cluster.local"));
        assert!(!s.admits("b", ".b.svc.cluster.local"));
    }

    #[test]
    fn root_namespace_policies_apply_everywhere_namespace_ones_do_not() {
        let idx = ScopeIndex {
            root_namespace: "istio-system".into(),
            ..ScopeIndex::default()
        };
        let proxy = ProxyIdentity {
            namespace: "a".into(),
            service_account: None,
            labels: parse_labels("app=web"),
        };
        let sel = |app: &str| {
            Some(WorkloadSelector {
                match_labels: parse_labels(&format!("app={app}")),
            })
        };
        let w = |ns: &str, selector| Visibility::Workload {
            namespace: ns.into(),
            selector,
        };
        assert!(idx.visible(&w("istio-system", None), &proxy, &[], None, &HashSet::new()));
        assert!(idx.visible(&w("a", sel("web")), &proxy, &[], None, &HashSet::new()));
        assert!(!idx.visible(&w("a", sel("db")), &proxy, &[], None, &HashSet::new()));
        assert!(!idx.visible(&w("b", None), &proxy, &[], None, &HashSet::new()));
        assert!(!idx.visible(&w("b", sel("web")), &proxy, &[], None, &HashSet::new()));
    }
}
