//! The demo mesh's sidecar bootstraps: each proxy's file names its admin and listener addresses,
//! its workload identity (certificate files from the demo CA) and the control plane; clusters,
//! endpoints, routes, AuthorizationPolicies and PeerAuthentications come over xDS from
//! `jalin control`, which reads the example directory. The example is also imported here once,
//! to report its findings and to give each server sidecar its WorkloadEntry labels.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use std::path::PathBuf;

use jalin_xds::model::cluster::{Cluster, Endpoint, UpstreamProtocol};
use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol};
use jalin_xds::model::traffic::TrafficPolicy;
use serde::Serialize;

use super::DemoError;
use super::example::{Client, Instance};
use crate::istio::convert::{NativeConfig, convert};
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
    /// Every stage configured: the control plane sends clusters (with their traffic policy and
    /// mesh mTLS), routes and policies; the bootstrap carries the workload identity.
    /// `Some(reason)` would name what is missing for a stage.
    pub const ALL: Self = Self {
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

/// The control plane the sidecars connect to: its xDS address, SPIFFE ID and TLS server name.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    /// `host:port` of the control plane's ADS endpoint.
    pub address: String,
    pub identity: String,
    pub server_name: String,
}

/// The file the proxy reads (`jalin-proxy --config`).
#[derive(Debug, Serialize)]
struct ProxyFile {
    admin: AdminSection,
    listeners: Vec<Listener>,
    services: Vec<Cluster>,
    identity: IdentitySection,
    control_plane: ControlPlaneSection,
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

/// The proxy's `control_plane` section: mTLS with the workload certificate, the control
/// plane's SPIFFE ID, and the node it scopes resources by (it must match the certificate).
#[derive(Debug, Serialize)]
struct ControlPlaneSection {
    address: String,
    identity: String,
    tls: ControlPlaneTls,
    node: NodeSection,
}

#[derive(Debug, Serialize)]
struct ControlPlaneTls {
    ca: PathBuf,
    certificate: PathBuf,
    key: PathBuf,
    server_name: String,
}

#[derive(Debug, Serialize)]
struct NodeSection {
    id: String,
    namespace: String,
    service_account: String,
    labels: BTreeMap<String, String>,
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

fn control_plane_section(name: &str, id: &Identity, cp: &ControlPlane) -> ControlPlaneSection {
    ControlPlaneSection {
        address: cp.address.clone(),
        identity: cp.identity.clone(),
        tls: ControlPlaneTls {
            ca: id.bundle.clone(),
            certificate: id.cert.clone(),
            key: id.key.clone(),
            server_name: cp.server_name.clone(),
        },
        node: NodeSection {
            id: name.to_owned(),
            namespace: id.namespace.clone(),
            service_account: id.service_account.clone(),
            labels: id.labels.clone(),
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

/// A server sidecar's bootstrap: one inbound listener to the local application; its mTLS mode
/// and the AuthorizationPolicies arrive from the control plane.
pub fn server_config(
    instance: &Instance,
    addrs: &ProxyAddrs,
    id: &Identity,
    cp: &ControlPlane,
) -> Result<String, DemoError> {
    let (listen, app) = addrs.inbound.ok_or_else(|| {
        DemoError::Plan(format!("{}: no inbound address was chosen", instance.name))
    })?;
    let services = vec![Cluster {
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
        gateway: None,
        tls: None,
        http3: false,
    }];
    render(instance.name, addrs.admin, listeners, services, id, cp)
}

/// A client sidecar's bootstrap: one outbound listener per service it calls, each naming the
/// control plane's cluster for the service (`outbound|<port>||<host>`); the cluster, its
/// endpoints, mTLS identity, DestinationRule policy and the VirtualService routes come over xDS.
pub fn client_config(
    client: &Client,
    addrs: &ProxyAddrs,
    id: &Identity,
    cp: &ControlPlane,
    native: &NativeConfig,
) -> Result<String, DemoError> {
    let mut listeners = Vec::new();
    for host in client.calls {
        let listen = addrs.outbound.get(*host).ok_or_else(|| {
            DemoError::Plan(format!("{}: no outbound address for {host}", client.name))
        })?;
        listeners.push(Listener {
            name: format!("outbound-{}", short_name(host)),
            address: *listen,
            direction: Direction::Outbound,
            service: Some(outbound_cluster(host, native)?),
            protocol: ListenerProtocol::Http1,
            mtls: None,
            gateway: None,
            tls: None,
            http3: false,
        });
    }
    render(client.name, addrs.admin, listeners, Vec::new(), id, cp)
}

/// The control plane's cluster name for a ServiceEntry host with one port:
/// `outbound|<port>||<host>`.
pub fn outbound_cluster(host: &str, native: &NativeConfig) -> Result<String, DemoError> {
    let entry = native
        .service_entries
        .iter()
        .find(|se| se.spec.hosts.iter().any(|h| h == host))
        .ok_or_else(|| DemoError::Plan(format!("no ServiceEntry has the host {host}")))?;
    match entry.spec.ports.as_slice() {
        [port] => Ok(format!("outbound|{}||{host}", port.number)),
        ports => Err(DemoError::Plan(format!(
            "ServiceEntry {}/{}: {} ports; a demo service has exactly one",
            entry.meta.namespace,
            entry.meta.name,
            ports.len()
        ))),
    }
}

/// The proxy file (`jalin-proxy --config`) for `listeners` and `services`, with the workload
/// identity from files and the control plane reached over mTLS with that identity.
pub fn render(
    name: &str,
    admin: SocketAddr,
    listeners: Vec<Listener>,
    services: Vec<Cluster>,
    id: &Identity,
    cp: &ControlPlane,
) -> Result<String, DemoError> {
    let file = ProxyFile {
        admin: AdminSection { address: admin },
        listeners,
        services,
        identity: identity_section(id),
        control_plane: control_plane_section(name, id, cp),
    };
    serde_saphyr::to_string(&file).map_err(|e| DemoError::Plan(format!("proxy config: {e}")))
}

/// The first label of a host: `child-profile-service` for its FQDN.
pub fn short_name(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
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

    fn cp() -> ControlPlane {
        ControlPlane {
            address: "127.0.0.1:15010".into(),
            identity: "spiffe://cluster.local/ns/jalin-system/sa/jalin-ca".into(),
            server_name: "localhost".into(),
        }
    }

    #[test]
    fn a_client_bootstrap_names_the_control_plane_clusters_and_parses_as_a_proxy_file() {
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
        let text = client_config(&client, &addrs, &id, &cp(), &native).unwrap();
        assert!(text.contains("outbound-child-profile-service"), "{text}");
        assert!(
            text.contains(&format!("outbound|8080||{CHILD_PROFILE}")),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:15010"), "{text}");
        assert!(text.contains("sa/jalin-ca"), "{text}");
        // YAML with the sections the proxy reads; the node is the certificate's namespace.
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        for key in ["admin", "listeners", "identity", "control_plane"] {
            assert!(v.get(key).is_some(), "{key} missing in {text}");
        }
        assert_eq!(
            v["control_plane"]["node"]["namespace"],
            v["identity"]["namespace"]
        );
        assert_eq!(v["listeners"].as_array().unwrap().len(), client.calls.len());
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
        let err = outbound_cluster("nope.example", &native()).unwrap_err();
        assert!(err.to_string().contains("nope.example"));
    }
}
