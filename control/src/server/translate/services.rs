//! Service discovery: every service the mesh knows, from ServiceEntry + WorkloadEntry (files or
//! Kubernetes) and from Kubernetes Services + EndpointSlices (+ pod labels and service accounts),
//! in one form the cluster translation reads.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use jalin_xds::model::cluster::{DEFAULT_ENDPOINT_WEIGHT, Endpoint, UpstreamProtocol};

use crate::istio::convert::{Kept, NativeConfig};
use crate::istio::service::{ServiceEntrySpec, WorkloadEntrySpec};
use crate::k8s::ServiceRegistry;
use crate::k8s::registry::{MeshProtocol, ServiceKind};

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The service port number.
    pub number: u16,
    /// The port's name (for WorkloadEntry `ports` lookups).
    pub name: String,
    /// How the proxy speaks to the endpoints.
    pub protocol: UpstreamProtocol,
}

/// One service: a host in a namespace, its ports and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Fully qualified host (`name.ns.svc.cluster.local`, or a ServiceEntry host).
    pub host: String,
    /// Namespace of the Service or ServiceEntry.
    pub namespace: String,
    /// Where it came from, for messages (`Service ns/name`, `ServiceEntry ns/name`).
    pub origin: String,
    /// Virtual IPs.
    pub addresses: Vec<IpAddr>,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Endpoints per service port.
    pub endpoints: BTreeMap<u16, Vec<Endpoint>>,
    /// ServiceEntry `exportTo` (empty: every namespace).
    pub export_to: Vec<String>,
}

impl Service {
    /// True when a proxy in `namespace` may see this service (`exportTo`).
    pub fn exported_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || e == namespace || (e == "." && namespace == self.namespace))
    }
}

fn protocol_of(name: Option<&str>) -> UpstreamProtocol {
    let p = name.unwrap_or_default().to_ascii_lowercase();
    match p.split('-').next().unwrap_or_default() {
        "grpc" | "grpc-web" | "http2" | "h2c" => UpstreamProtocol::Http2,
        "http" => UpstreamProtocol::Http1,
        _ => UpstreamProtocol::Auto,
    }
}

fn mesh_protocol(p: MeshProtocol) -> UpstreamProtocol {
    match p {
        MeshProtocol::Http2 | MeshProtocol::Grpc | MeshProtocol::GrpcWeb => UpstreamProtocol::Http2,
        MeshProtocol::Http => UpstreamProtocol::Http1,
        _ => UpstreamProtocol::Auto,
    }
}

/// Every service: Kubernetes ones first, then ServiceEntries (a ServiceEntry host that a
/// Kubernetes Service already has is reported and skipped, as Istio prefers the Service).
pub fn discover(
    native: &NativeConfig,
    registry: &ServiceRegistry,
    warnings: &mut Vec<String>,
) -> Vec<Service> {
    let mut out: BTreeMap<String, Service> = BTreeMap::new();
    for s in registry.services.values() {
        if matches!(s.kind, ServiceKind::ExternalName { .. }) {
            continue;
        }
        let mut endpoints: BTreeMap<u16, Vec<Endpoint>> = BTreeMap::new();
        for e in s
            .endpoints
            .iter()
            .filter(|e| e.ready || (e.serving && !e.terminating))
        {
            let mut labels = e.labels.clone();
            if let Some(sa) = &e.service_account {
                labels
                    .entry(SERVICE_ACCOUNT_LABEL.to_owned())
                    .or_insert_with(|| sa.clone());
            }
            endpoints.entry(e.service_port).or_default().push(Endpoint {
                address: SocketAddr::new(e.address, e.port),
                weight: DEFAULT_ENDPOINT_WEIGHT,
                labels,
                tls: None,
            });
        }
        out.insert(
            s.host.clone(),
            Service {
                host: s.host.clone(),
                namespace: s.namespace.clone(),
                origin: format!("Service {}/{}", s.namespace, s.name),
                addresses: s.cluster_ips.clone(),
                ports: s
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        number: p.port,
                        name: p.name.clone(),
                        protocol: mesh_protocol(p.protocol),
                    })
                    .collect(),
                endpoints,
                export_to: Vec::new(),
            },
        );
    }
    for se in &native.service_entries {
        for host in &se.spec.hosts {
            if let Some(existing) = out.get(host) {
                warnings.push(format!(
                    "ServiceEntry {}: host {host} is already defined by {}; the ServiceEntry's entry for it is ignored",
                    se.meta.key(),
                    existing.origin
                ));
                continue;
            }
            out.insert(host.clone(), service_entry(se, host, native, warnings));
        }
    }
    out.into_values().collect()
}

/// The label under which an endpoint's service account is recorded (so subsets and scoping can
/// see it without a second map).
pub const SERVICE_ACCOUNT_LABEL: &str = "jalin.io/service-account";

fn service_entry(
    se: &Kept<ServiceEntrySpec>,
    host: &str,
    native: &NativeConfig,
    warnings: &mut Vec<String>,
) -> Service {
    let spec = &se.spec;
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                number: u16::try_from(p.number).ok()?,
                name: p.name.clone().unwrap_or_default(),
                protocol: protocol_of(p.protocol.as_deref()),
            })
        })
        .collect();
    let addresses = spec
        .addresses
        .iter()
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .collect();
    // Inline endpoints, or the WorkloadEntries of the namespace that the selector matches.
    let selected: Vec<&WorkloadEntrySpec> = match &spec.workload_selector {
        Some(sel) => native
            .workload_entries
            .iter()
            .filter(|we| we.meta.namespace == se.meta.namespace)
            .filter(|we| {
                sel.labels
                    .iter()
                    .all(|(k, v)| we.spec.labels.get(k) == Some(v))
            })
            .map(|we| &we.spec)
            .collect(),
        None => spec.endpoints.iter().collect(),
    };
    let mut endpoints: BTreeMap<u16, Vec<Endpoint>> = BTreeMap::new();
    for we in selected {
        let Some(addr) = we.address.as_deref() else {
            continue;
        };
        let Ok(ip) = addr.parse::<IpAddr>() else {
            warnings.push(format!(
                "ServiceEntry {}: endpoint address {addr:?} is not an IP address; jalin resolves no DNS names for endpoints, so it is left out (give the IP, or a WorkloadEntry with an IP)",
                se.meta.key()
            ));
            continue;
        };
        let mut labels = we.labels.clone();
        if let Some(sa) = &we.service_account {
            labels.insert(SERVICE_ACCOUNT_LABEL.to_owned(), sa.clone());
        }
        for p in &ports {
            let target = we
                .ports
                .get(&p.name)
                .and_then(|t| u16::try_from(*t).ok())
                .or_else(|| {
                    spec.ports
                        .iter()
                        .find(|sp| sp.number == u64::from(p.number))
                        .and_then(|sp| sp.target_port)
                        .and_then(|t| u16::try_from(t).ok())
                })
                .unwrap_or(p.number);
            endpoints.entry(p.number).or_default().push(Endpoint {
                address: SocketAddr::new(ip, target),
                weight: we
                    .weight
                    .and_then(|w| u32::try_from(w).ok())
                    .filter(|w| *w > 0)
                    .unwrap_or(DEFAULT_ENDPOINT_WEIGHT),
                labels: labels.clone(),
                tls: None,
            });
        }
    }
    for eps in endpoints.values_mut() {
        eps.sort_by_key(|e| e.address);
    }
    Service {
        host: host.to_owned(),
        namespace: se.meta.namespace.clone(),
        origin: format!("ServiceEntry {}", se.meta.key()),
        addresses,
        ports,
        endpoints,
        export_to: spec.export_to.clone(),
    }
}
