//! The demo mesh's configuration: the example directory imported with the Istio importer into
//! the native model, and from it each sidecar's static configuration file (listeners, and
//! clusters with their endpoints and DestinationRule traffic policy).
//!
//! This is the static path: the proxies read files this module writes. When the control plane
//! server (`jalin control`) is part of the build, the proxies get the same model over xDS
//! instead, and only the bootstrap (admin and listener addresses) comes from here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use std::path::PathBuf;

use jalin_xds::model::authz::AuthorizationPolicy;
use jalin_xds::model::cluster::{
    Cluster, ClusterTls, ClusterTlsMode, Endpoint, Subset, SubsetPolicy, UpstreamProtocol,
};
use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol};
use jalin_xds::model::peer_auth::PeerAuthentication;
use jalin_xds::model::route::RouteTable;
use jalin_xds::model::traffic::TrafficPolicy;
use serde::Serialize;

use super::DemoError;
use super::example::{Client, Instance};
use super::routing::qualify;
use crate::istio::convert::{DestinationPolicy, NativeConfig, convert};
use crate::istio::{Severity, load_paths};

/// What the demo could hand to the proxies in this build; the summary only expects traffic
/// kinds whose stage is configured, and says which are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// AuthorizationPolicies are enforced by the server sidecars (403 with the deciding policy).
    pub authz: Option<&'static str>,
    /// VirtualService routes (emergency header -> emergency subset) are applied by the client
    /// sidecars.
    pub routes: Option<&'static str>,
    /// The client sidecars run outlier detection from the DestinationRules.
    pub outlier: Option<&'static str>,
    /// Sidecars talk mTLS with the workload certificates the demo's CA issued.
    pub mtls: Option<&'static str>,
}

impl Capabilities {
    /// The static path: the proxy's configuration file carries listeners, clusters (with their
    /// traffic policy), the workload identity (mTLS) and the authorization policies.
    /// `Some(reason)` names what is missing for a stage.
    pub const STATIC: Self = Self {
        authz: None,
        routes: None,
        outlier: None,
        mtls: None,
    };
}

/// The imported example: the native model and the count of findings by severity.
#[derive(Debug)]
pub struct Imported {
    pub native: NativeConfig,
    pub resources: usize,
    pub warnings: usize,
    pub unsupported: usize,
}

/// Imports the example directory; any error stops the demo with the findings.
pub fn import(dir: &Path) -> Result<Imported, DemoError> {
    let loaded = load_paths(&[dir.to_path_buf()]);
    if loaded.has_errors() {
        let errors: Vec<String> = loaded.errors().map(ToString::to_string).collect();
        return Err(DemoError::Import(errors.join("\n")));
    }
    let mut findings = loaded.findings.clone();
    let native = convert(&loaded.resources, &mut findings);
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).count();
    Ok(Imported {
        resources: loaded.resources.len(),
        warnings: count(Severity::Warning),
        unsupported: count(Severity::Unsupported),
        native,
    })
}

/// One sidecar's addresses.
#[derive(Debug, Clone)]
pub struct ProxyAddrs {
    pub admin: SocketAddr,
    /// Server sidecars: the inbound listener (the WorkloadEntry port) and the local app.
    pub inbound: Option<(SocketAddr, SocketAddr)>,
    /// Client sidecars: one outbound listener per service host.
    pub outbound: BTreeMap<String, SocketAddr>,
}

/// A sidecar's workload identity and where its certificate files are.
#[derive(Debug, Clone)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// The workload certificate chain and key (`jalin ca issue`), and the root bundle.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
}

impl Identity {
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
    pub fn spiffe_id(trust_domain: &str, namespace: &str, sa: &str) -> String {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{sa}")
    }
}

/// The file the proxy reads (`jalin-proxy --config`).
#[derive(Debug, Serialize)]
struct ProxyFile<'a> {
    admin: AdminSection,
    listeners: Vec<Listener>,
    services: &'a [Cluster],
    routes: &'a [RouteTable],
    identity: IdentitySection,
    authorization: AuthorizationSection<'a>,
}

/// The proxy's `identity` section (certificate from files).
#[derive(Debug, Serialize)]
struct IdentitySection {
    trust_domain: String,
    namespace: String,
    service_account: String,
    labels: BTreeMap<String, String>,
    trust_bundles: Vec<PathBuf>,
    certificate: CertificateSection,
}

#[derive(Debug, Serialize)]
struct CertificateSection {
    files: CertificateFiles,
}

#[derive(Debug, Serialize)]
struct CertificateFiles {
    cert: PathBuf,
    key: PathBuf,
}

/// The proxy's `authorization` section: the imported policies; the proxy applies those whose
/// namespace and selector match its identity.
#[derive(Debug, Serialize)]
struct AuthorizationSection<'a> {
    policies: &'a [AuthorizationPolicy],
    peer_authentications: &'a [PeerAuthentication],
}

fn identity_section(id: &Identity) -> IdentitySection {
    IdentitySection {
        trust_domain: id.trust_domain.clone(),
        namespace: id.namespace.clone(),
        service_account: id.service_account.clone(),
        labels: id.labels.clone(),
        trust_bundles: vec![id.bundle.clone()],
        certificate: CertificateSection {
            files: CertificateFiles {
                cert: id.cert.clone(),
                key: id.key.clone(),
            },
        },
    }
}

/// The labels of the WorkloadEntry listening on `port` (a server instance's sidecar).
pub fn workload_labels(native: &NativeConfig, port: u16) -> BTreeMap<String, String> {
    native
        .service_entries
        .iter()
        .flat_map(|se| se.spec.endpoints.iter())
        .find(|we| we.ports.values().any(|p| *p == u64::from(port)))
        .map(|we| we.labels.clone())
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct AdminSection {
    address: SocketAddr,
}

/// The name of a server sidecar's cluster for its local application.
pub const INBOUND_CLUSTER: &str = "inbound-app";

/// A server sidecar's configuration: one inbound listener to the local application, mTLS per
/// the PeerAuthentication policies, and the AuthorizationPolicies.
pub fn server_config(
    instance: &Instance,
    addrs: &ProxyAddrs,
    id: &Identity,
    native: &NativeConfig,
) -> Result<String, DemoError> {
    let (listen, app) = addrs.inbound.ok_or_else(|| {
        DemoError::Plan(format!("{}: no inbound address was chosen", instance.name))
    })?;
    let services = [Cluster {
        name: INBOUND_CLUSTER.to_owned(),
        addresses: Vec::new(),
        protocol: UpstreamProtocol::Http1,
        endpoints: vec![Endpoint::new(app)],
        policy: TrafficPolicy::default(),
        tls: None,
        subsets: Vec::new(),
    }];
    let listeners = vec![Listener {
        name: "inbound".to_owned(),
        address: listen,
        direction: Direction::Inbound,
        service: Some(INBOUND_CLUSTER.to_owned()),
        protocol: ListenerProtocol::Http1,
        mtls: None,
    }];
    render(addrs.admin, listeners, &services, &[], id, native)
}

/// A client sidecar's configuration: one outbound listener and cluster (mTLS to the service's
/// identity) per service it calls.
pub fn client_config(
    client: &Client,
    addrs: &ProxyAddrs,
    id: &Identity,
    native: &NativeConfig,
) -> Result<String, DemoError> {
    let mut services = Vec::new();
    let mut listeners = Vec::new();
    let (routes, extra) = super::routing::route_tables_for(client.calls, native);
    for host in &extra {
        services.push(cluster_without_entry(host, native));
    }
    for host in client.calls {
        let listen = addrs.outbound.get(*host).ok_or_else(|| {
            DemoError::Plan(format!("{}: no outbound address for {host}", client.name))
        })?;
        let mut cluster = cluster_for(host, native)?;
        cluster.tls = Some(ClusterTls {
            mode: ClusterTlsMode::IstioMutual,
            identity: Some(server_identity(host, &id.trust_domain, native)?),
        });
        services.push(cluster);
        listeners.push(Listener {
            name: format!("outbound-{}", short_name(host)),
            address: *listen,
            direction: Direction::Outbound,
            service: Some((*host).to_owned()),
            protocol: ListenerProtocol::Http1,
            mtls: None,
        });
    }
    render(addrs.admin, listeners, &services, &routes, id, native)
}

/// The SPIFFE ID the endpoints of `host` present: their WorkloadEntries' service account in the
/// ServiceEntry's namespace (every endpoint of a demo service shares one).
pub fn server_identity(
    host: &str,
    trust_domain: &str,
    native: &NativeConfig,
) -> Result<String, DemoError> {
    let entry = native
        .service_entries
        .iter()
        .find(|se| se.spec.hosts.iter().any(|h| h == host))
        .ok_or_else(|| DemoError::Plan(format!("no ServiceEntry has the host {host}")))?;
    let sa = entry
        .spec
        .endpoints
        .iter()
        .find_map(|we| we.service_account.as_deref())
        .ok_or_else(|| {
            DemoError::Plan(format!(
                "ServiceEntry {}/{}: no endpoint names a serviceAccount",
                entry.meta.namespace, entry.meta.name
            ))
        })?;
    Ok(Identity::spiffe_id(trust_domain, &entry.meta.namespace, sa))
}

fn render(
    admin: SocketAddr,
    listeners: Vec<Listener>,
    services: &[Cluster],
    routes: &[RouteTable],
    id: &Identity,
    native: &NativeConfig,
) -> Result<String, DemoError> {
    let file = ProxyFile {
        admin: AdminSection { address: admin },
        listeners,
        services,
        routes,
        identity: identity_section(id),
        authorization: AuthorizationSection {
            policies: &native.authorization_policies,
            peer_authentications: &native.peer_authentications,
        },
    };
    serde_saphyr::to_string(&file).map_err(|e| DemoError::Plan(format!("proxy config: {e}")))
}

/// The first label of a host: `child-profile-service` for its FQDN.
pub fn short_name(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// The cluster of a ServiceEntry host: its endpoints (inline WorkloadEntries) and the traffic
/// policy of the DestinationRule that applies to it.
pub fn cluster_for(host: &str, native: &NativeConfig) -> Result<Cluster, DemoError> {
    let entry = native
        .service_entries
        .iter()
        .find(|se| se.spec.hosts.iter().any(|h| h == host))
        .ok_or_else(|| DemoError::Plan(format!("no ServiceEntry has the host {host}")))?;
    let mut endpoints = Vec::new();
    for (i, we) in entry.spec.endpoints.iter().enumerate() {
        let at = || {
            format!(
                "ServiceEntry {}/{} endpoints[{i}]",
                entry.meta.namespace, entry.meta.name
            )
        };
        let ip = we
            .address
            .as_deref()
            .ok_or_else(|| DemoError::Plan(format!("{}: no address", at())))?;
        let port = we
            .ports
            .values()
            .next()
            .copied()
            .ok_or_else(|| DemoError::Plan(format!("{}: no ports", at())))?;
        let address: SocketAddr = format!("{ip}:{port}")
            .parse()
            .map_err(|e| DemoError::Plan(format!("{}: {ip}:{port}: {e}", at())))?;
        let mut endpoint = Endpoint::new(address);
        endpoint.labels = we.labels.clone();
        if let Some(w) = we.weight {
            endpoint.weight = u32::try_from(w).unwrap_or(u32::MAX).max(1);
        }
        endpoints.push(endpoint);
    }
    let rule = destination_rule(host, native);
    Ok(Cluster {
        name: host.to_owned(),
        addresses: Vec::new(),
        protocol: UpstreamProtocol::Http1,
        endpoints,
        policy: rule.map(|r| r.traffic_policy.clone()).unwrap_or_default(),
        tls: None,
        subsets: rule.map(subsets).unwrap_or_default(),
    })
}

/// The cluster of a host that routes name but no ServiceEntry declares: no endpoints (so a
/// request routed there answers 503, no healthy upstream, as in Istio), the DestinationRule's
/// policy and subsets.
pub fn cluster_without_entry(host: &str, native: &NativeConfig) -> Cluster {
    let rule = destination_rule(host, native);
    Cluster {
        name: host.to_owned(),
        addresses: Vec::new(),
        protocol: UpstreamProtocol::Http1,
        endpoints: Vec::new(),
        policy: rule.map(|r| r.traffic_policy.clone()).unwrap_or_default(),
        tls: None,
        subsets: rule.map(subsets).unwrap_or_default(),
    }
}

/// A DestinationRule's subsets; each carries its policy already merged with the host's, so
/// every field is set.
fn subsets(rule: &DestinationPolicy) -> Vec<Subset> {
    rule.subsets
        .iter()
        .map(|s| {
            let p = &s.traffic_policy;
            Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
                policy: SubsetPolicy {
                    load_balancer: Some(p.load_balancer.clone()),
                    connection_pool: Some(p.connection_pool.clone()),
                    outlier_detection: p.outlier_detection.clone(),
                    retry_budget: p.retry_budget.clone(),
                    retry_concurrency_budget: p.retry_concurrency_budget.clone(),
                    priority: Some(p.priority.clone()),
                },
            }
        })
        .collect()
}

/// The DestinationRule policy for `host` (none: Istio's defaults).
pub fn traffic_policy(host: &str, native: &NativeConfig) -> TrafficPolicy {
    destination_rule(host, native)
        .map(|r| r.traffic_policy.clone())
        .unwrap_or_default()
}

/// The DestinationRule for `host`: an exact host (short names qualified with the rule's
/// namespace) beats a wildcard; among equals the first in file order wins, as Istio's oldest.
pub fn destination_rule<'a>(host: &str, native: &'a NativeConfig) -> Option<&'a DestinationPolicy> {
    let mut wildcard = None;
    for dr in &native.destination_policies {
        let rule_host = qualify(&dr.host, &dr.meta.namespace);
        if rule_host == host {
            return Some(dr);
        }
        if let Some(suffix) = rule_host.strip_prefix('*')
            && host.ends_with(suffix)
            && wildcard.is_none()
        {
            wildcard = Some(dr);
        }
    }
    wildcard
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::example::{CHILD_PROFILE, INSTANCES, materialise};

    fn native() -> NativeConfig {
        let dir = tempfile::tempdir().unwrap();
        let ports = INSTANCES
            .iter()
            .enumerate()
            .map(|(n, i)| (i.example_port, 41_000 + n as u16))
            .collect();
        materialise(dir.path(), &ports).unwrap();
        import(dir.path()).unwrap().native
    }

    #[test]
    fn child_profile_cluster_has_three_endpoints_and_the_seed_outlier_policy() {
        let native = native();
        let c = cluster_for(CHILD_PROFILE, &native).unwrap();
        assert_eq!(c.endpoints.len(), 3);
        assert_eq!(c.endpoints[0].address.port(), 41_000);
        assert_eq!(c.endpoints[0].labels["priority"], "emergency");
        let od = c.policy.outlier_detection.unwrap();
        // policies-18 (exact host) wins over policies-22 (wildcard, consecutiveErrors: 2).
        assert_eq!(od.consecutive_5xx_errors, Some(3));
        let names: Vec<&str> = c.subsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["emergency", "standard"]);
        assert_eq!(c.subsets[0].labels["priority"], "emergency");
    }

    #[test]
    fn client_config_parses_as_yaml_with_the_listener_per_service() {
        let native = native();
        let client = crate::demo::example::CLIENTS[5];
        let mut outbound = BTreeMap::new();
        for (n, h) in client.calls.iter().enumerate() {
            outbound.insert(
                (*h).to_owned(),
                SocketAddr::from(([127, 0, 0, 1], 42_000 + n as u16)),
            );
        }
        let addrs = ProxyAddrs {
            admin: "127.0.0.1:42100".parse().unwrap(),
            inbound: None,
            outbound,
        };
        let id = Identity {
            trust_domain: "cluster.local".into(),
            namespace: client.namespace.into(),
            service_account: client.service_account.into(),
            labels: BTreeMap::new(),
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
            bundle: "/r.pem".into(),
        };
        let text = client_config(&client, &addrs, &id, &native).unwrap();
        assert!(text.contains("outbound-child-profile-service"), "{text}");
        assert!(text.contains("127.0.0.1:42100"), "{text}");
        assert!(
            text.contains("spiffe://cluster.local/ns/child-services/sa/child-profile-service"),
            "{text}"
        );
        assert!(text.contains("child-profile-access-policy"), "{text}");
    }

    #[test]
    fn server_labels_come_from_its_workload_entry() {
        let native = native();
        let labels = workload_labels(&native, 41_002);
        assert_eq!(labels["app"], "child-profile-service");
        assert_eq!(labels["priority"], "standard");
    }

    #[test]
    fn unknown_host_is_a_plan_error() {
        let err = cluster_for("nope.example", &native()).unwrap_err();
        assert!(err.to_string().contains("nope.example"));
    }
}
