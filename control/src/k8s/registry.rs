//! Service discovery from Kubernetes: derives a plain [`ServiceRegistry`] (hosts, ports, endpoints
//! with the labels and identity of their pods) from Services, EndpointSlices and Pods. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use serde::{Deserialize, Serialize};

use super::kinds::{KubeObject, ResourceKind};
use super::store::Store;

/// The cluster DNS domain Kubernetes uses unless configured otherwise.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";
/// The label an EndpointSlice carries to name its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How the registry is derived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySettings {
    /// The cluster DNS domain: hosts are `<name>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_string(),
        }
    }
}

/// Every Kubernetes service, by host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceRegistry {
    /// Services by host (`<name>.<ns>.svc.<domain>`).
    pub services: BTreeMap<String, RegistryService>,
    /// Data that could not be used, with the object it came from.
    pub warnings: Vec<String>,
}

/// How a Service is reached.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ServiceKind {
    /// A virtual IP (`ClusterIP`, and the `NodePort`/`LoadBalancer` types built on it).
    ClusterIp,
    /// `clusterIP: None`: clients reach the endpoints directly.
    Headless,
    /// A DNS alias for `external_name`; it has no endpoints.
    ExternalName {
        /// The name the service aliases.
        external_name: String,
    },
}

/// One Kubernetes Service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistryService {
    /// Name of the Service.
    pub name: String,
    /// Namespace of the Service.
    pub namespace: String,
    /// `<name>.<ns>.svc.<domain>`.
    pub host: String,
    /// How it is reached.
    pub kind: ServiceKind,
    /// Its cluster IPs (empty when headless or ExternalName).
    pub cluster_ips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<RegistryPort>,
    /// Its endpoints, sorted by address and port.
    pub endpoints: Vec<RegistryEndpoint>,
    /// The Service's own labels.
    pub labels: BTreeMap<String, String>,
}

/// The transport of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Transport {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// The application protocol the mesh uses on a port, chosen as Istio does: the `appProtocol`
/// field first, then the port name's prefix (`<protocol>[-<suffix>]`), else detected at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MeshProtocol {
    /// HTTP/1.1 (or upgraded).
    Http,
    /// HTTP/2 in clear text.
    Http2,
    /// gRPC.
    Grpc,
    /// gRPC-Web.
    GrpcWeb,
    /// HTTPS passed through (TLS the mesh does not terminate).
    Https,
    /// TLS passed through.
    Tls,
    /// Opaque TCP (also mongo, mysql, redis).
    Tcp,
    /// UDP (not proxied).
    Udp,
    /// Not declared: the proxy sniffs the protocol.
    Auto,
}

impl MeshProtocol {
    /// The protocol for a port with transport `transport`, `appProtocol` `app_protocol` and
    /// name `name`.
    pub fn select(transport: Transport, app_protocol: Option<&str>, name: Option<&str>) -> Self {
        if transport == Transport::Udp {
            return Self::Udp;
        }
        if let Some(p) = app_protocol.and_then(Self::from_name) {
            return p;
        }
        name.and_then(|n| Self::from_name(n.split('-').next().unwrap_or(n)))
            .unwrap_or(Self::Auto)
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" | "kubernetes.io/ws" | "kubernetes.io/wss" => Self::Http,
            "http2" | "kubernetes.io/h2c" => Self::Http2,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "https" => Self::Https,
            "tls" => Self::Tls,
            "tcp" | "mongo" | "mysql" | "redis" => Self::Tcp,
            "udp" => Self::Udp,
            _ => return None,
        })
    }
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryPort {
    /// The port's name (may be empty for a single-port Service).
    pub name: String,
    /// The service port number.
    pub port: u16,
    /// Its transport.
    pub transport: Transport,
    /// The `appProtocol` field, as written.
    pub app_protocol: Option<String>,
    /// The protocol the mesh uses.
    pub protocol: MeshProtocol,
}

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEndpoint {
    /// The endpoint's address.
    pub address: IpAddr,
    /// The port on the endpoint (the target port).
    pub port: u16,
    /// The Service port this endpoint serves.
    pub service_port: u16,
    /// Ready to receive new traffic (EndpointSlice `conditions.ready`; unknown counts as ready).
    pub ready: bool,
    /// Serving (`conditions.serving`); may be true while terminating.
    pub serving: bool,
    /// Terminating (`conditions.terminating`).
    pub terminating: bool,
    /// The pod behind the endpoint, if the slice names one.
    pub pod: Option<String>,
    /// The pod's labels (used to select DestinationRule subsets).
    pub labels: BTreeMap<String, String>,
    /// The pod's ServiceAccount: its identity is `spiffe://<td>/ns/<ns>/sa/<sa>`. None when the
    /// pod is not known.
    pub service_account: Option<String>,
    /// The endpoint's zone.
    pub zone: Option<String>,
    /// The node it runs on.
    pub node: Option<String>,
}

impl ServiceRegistry {
    /// Derives the registry from the Services, EndpointSlices and Pods in `store`.
    pub fn from_store(store: &Store, settings: &RegistrySettings) -> Self {
        let services = store
            .of_kind(ResourceKind::Service)
            .filter_map(|o| match &**o {
                KubeObject::Service(s) => Some(&**s),
                _ => None,
            });
        let slices = store
            .of_kind(ResourceKind::EndpointSlice)
            .filter_map(|o| match &**o {
                KubeObject::EndpointSlice(s) => Some(&**s),
                _ => None,
            });
        let pods = store.of_kind(ResourceKind::Pod).filter_map(|o| match &**o {
            KubeObject::Pod(p) => Some(&**p),
            _ => None,
        });
        derive(services, slices, pods, settings)
    }

    /// The service with host `host`.
    pub fn service(&self, host: &str) -> Option<&RegistryService> {
        self.services.get(host)
    }
}

impl RegistryService {
    /// The workload identity of `endpoint` (`spiffe://<td>/ns/<ns>/sa/<sa>`, the pod running in
    /// the Service's namespace), or None when its pod, and so its ServiceAccount, is unknown.
    pub fn endpoint_identity(
        &self,
        endpoint: &RegistryEndpoint,
        trust_domain: &jalin_ca::spiffe::TrustDomain,
    ) -> Option<jalin_ca::spiffe::SpiffeId> {
        let service_account = endpoint.service_account.as_deref()?;
        jalin_ca::spiffe::SpiffeId::workload(trust_domain, &self.namespace, service_account).ok()
    }
}

/// Derives the service registry from Services, their EndpointSlices and the Pods behind them.
pub fn derive<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    pods: impl IntoIterator<Item = &'a Pod>,
    settings: &RegistrySettings,
) -> ServiceRegistry {
    let pods: HashMap<(&str, &str), &Pod> = pods
        .into_iter()
        .filter_map(|p| {
            Some((
                (
                    p.metadata.namespace.as_deref()?,
                    p.metadata.name.as_deref()?,
                ),
                p,
            ))
        })
        .collect();
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let Some(namespace) = slice.metadata.namespace.as_deref() else {
            continue;
        };
        if let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            slices_by_service
                .entry((namespace, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    let mut registry = ServiceRegistry::default();
    for service in services {
        let (Some(namespace), Some(name)) = (
            service.metadata.namespace.as_deref(),
            service.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let slices = slices_by_service
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let derived = derive_service(
            namespace,
            name,
            service,
            slices,
            &pods,
            settings,
            &mut registry.warnings,
        );
        registry.services.insert(derived.host.clone(), derived);
    }
    registry
}

fn derive_service(
    namespace: &str,
    name: &str,
    service: &Service,
    slices: &[&EndpointSlice],
    pods: &HashMap<(&str, &str), &Pod>,
    settings: &RegistrySettings,
    warnings: &mut Vec<String>,
) -> RegistryService {
    let origin = format!("Service {namespace}/{name}");
    let spec = service.spec.clone().unwrap_or_default();
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        ServiceKind::ExternalName {
            external_name: spec.external_name.clone().unwrap_or_default(),
        }
    } else if spec.cluster_ip.as_deref() == Some("None") {
        ServiceKind::Headless
    } else {
        ServiceKind::ClusterIp
    };
    let mut cluster_ips = Vec::new();
    let listed = spec.cluster_ips.clone().unwrap_or_default();
    let ips = if listed.is_empty() {
        spec.cluster_ip.clone().into_iter().collect()
    } else {
        listed
    };
    for ip in ips
        .iter()
        .filter(|ip| ip.as_str() != "None" && !ip.is_empty())
    {
        match ip.parse() {
            Ok(ip) => cluster_ips.push(ip),
            Err(_) => warnings.push(format!(
                "{origin}: spec.clusterIPs holds `{ip}`, which is not an IP address; it is ignored"
            )),
        }
    }
    let ports: Vec<RegistryPort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| registry_port(p, &origin, warnings))
        .collect();
    let mut endpoints: BTreeMap<(IpAddr, u16, u16), RegistryEndpoint> = BTreeMap::new();
    if !matches!(kind, ServiceKind::ExternalName { .. }) {
        for slice in slices {
            slice_endpoints(namespace, slice, &ports, pods, &mut endpoints, warnings);
        }
    }
    RegistryService {
        name: name.to_string(),
        namespace: namespace.to_string(),
        host: format!("{name}.{namespace}.svc.{}", settings.cluster_domain),
        kind,
        cluster_ips,
        ports,
        endpoints: endpoints.into_values().collect(),
        labels: service.metadata.labels.clone().unwrap_or_default(),
    }
}

fn registry_port(
    p: &ServicePort,
    origin: &str,
    warnings: &mut Vec<String>,
) -> Option<RegistryPort> {
    let Ok(port) = u16::try_from(p.port) else {
        warnings.push(format!(
            "{origin}: spec.ports[].port {} is out of range 1-65535; the port is ignored",
            p.port
        ));
        return None;
    };
    let transport = transport(p.protocol.as_deref());
    let name = p.name.clone().unwrap_or_default();
    Some(RegistryPort {
        protocol: MeshProtocol::select(transport, p.app_protocol.as_deref(), Some(&name)),
        name,
        port,
        transport,
        app_protocol: p.app_protocol.clone(),
    })
}

fn transport(protocol: Option<&str>) -> Transport {
    match protocol {
        Some("UDP") => Transport::Udp,
        Some("SCTP") => Transport::Sctp,
        _ => Transport::Tcp,
    }
}

fn slice_endpoints(
    namespace: &str,
    slice: &EndpointSlice,
    ports: &[RegistryPort],
    pods: &HashMap<(&str, &str), &Pod>,
    out: &mut BTreeMap<(IpAddr, u16, u16), RegistryEndpoint>,
    warnings: &mut Vec<String>,
) {
    let origin = format!(
        "EndpointSlice {namespace}/{}",
        slice.metadata.name.as_deref().unwrap_or_default()
    );
    if slice.address_type == "FQDN" {
        warnings.push(format!(
            "{origin}: addressType FQDN is not used for mesh endpoints (deprecated by Kubernetes); \
             use a ServiceEntry with DNS resolution instead"
        ));
        return;
    }
    // Each slice port serves the Service port with the same name.
    let mut mapped = Vec::new();
    for slice_port in slice.ports.iter().flatten() {
        let name = slice_port.name.clone().unwrap_or_default();
        let Some(service_port) = ports.iter().find(|p| p.name == name) else {
            continue;
        };
        match slice_port.port.map(u16::try_from) {
            Some(Ok(target)) => mapped.push((service_port.port, target)),
            _ => warnings.push(format!(
                "{origin}: port `{name}` has no valid port number; its endpoints are ignored"
            )),
        }
    }
    for endpoint in &slice.endpoints {
        for address in &endpoint.addresses {
            let Ok(address) = address.parse::<IpAddr>() else {
                warnings.push(format!(
                    "{origin}: endpoint address `{address}` is not an IP address; it is ignored"
                ));
                continue;
            };
            for &(service_port, port) in &mapped {
                let derived =
                    registry_endpoint(namespace, endpoint, address, service_port, port, pods);
                match out.get(&(address, port, service_port)) {
                    // The same endpoint may sit in two slices while the controller moves it;
                    // the ready copy wins.
                    Some(existing) if existing.ready || !derived.ready => {}
                    _ => {
                        out.insert((address, port, service_port), derived);
                    }
                }
            }
        }
    }
}

fn registry_endpoint(
    namespace: &str,
    endpoint: &Endpoint,
    address: IpAddr,
    service_port: u16,
    port: u16,
    pods: &HashMap<(&str, &str), &Pod>,
) -> RegistryEndpoint {
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    let ready = conditions.ready.unwrap_or(true);
    let pod_ref = endpoint
        .target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"));
    let pod_name = pod_ref.and_then(|r| r.name.clone());
    let pod_namespace = pod_ref
        .and_then(|r| r.namespace.as_deref())
        .unwrap_or(namespace);
    let pod = pod_name
        .as_deref()
        .and_then(|name| pods.get(&(pod_namespace, name)));
    let service_account = pod.map(|p| {
        p.spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string())
    });
    RegistryEndpoint {
        address,
        port,
        service_port,
        ready,
        serving: conditions.serving.unwrap_or(ready),
        terminating: conditions.terminating.unwrap_or(false),
        pod: pod_name.clone(),
        labels: pod
            .and_then(|p| p.metadata.labels.clone())
            .unwrap_or_default(),
        service_account,
        zone: endpoint.zone.clone(),
        node: endpoint
            .node_name
            .clone()
            .or_else(|| pod.and_then(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))),
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
