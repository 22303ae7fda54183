//! What VirtualService routes mean for scoping: the hosts each VirtualService is for and the hosts
//! its routes and mirrors send to, fully qualified, so a proxy whose Sidecar admits a routed host
//! also receives the clusters that host's routes need. (The route tables themselves come from the
//! importer's VirtualService conversion.)

use std::collections::HashMap;

use crate::istio::convert::NativeConfig;
use crate::istio::virtual_service::Destination;
use crate::server::scope::RouteScope;

/// A host as written in a VirtualService of `ns`, fully qualified as Istio does: a short name is
/// relative to the VirtualService's namespace.
pub fn qualify(host: &str, ns: &str, domain: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_owned()
    } else {
        format!("{host}.{ns}.svc.{domain}")
    }
}

/// The route scopes of every VirtualService.
pub fn scopes(
    native: &NativeConfig,
    service_ns: &HashMap<&str, &str>,
    domain: &str,
) -> Vec<RouteScope> {
    native
        .virtual_services
        .iter()
        .map(|vs| {
            let ns = vs.meta.namespace.as_str();
            let hosts = vs
                .spec
                .hosts
                .iter()
                .map(|h| {
                    let q = qualify(h, ns, domain);
                    let owner = service_ns.get(q.as_str()).copied().unwrap_or(ns).to_owned();
                    (owner, q)
                })
                .collect();
            let mut dests: Vec<&Destination> = Vec::new();
            for r in &vs.spec.http {
                dests.extend(r.route.iter().map(|d| &d.destination));
                dests.extend(r.mirror.iter());
                dests.extend(r.mirrors.iter().map(|m| &m.destination));
            }
            for r in &vs.spec.tcp {
                dests.extend(r.route.iter().map(|d| &d.destination));
            }
            for r in &vs.spec.tls {
                dests.extend(r.route.iter().map(|d| &d.destination));
            }
            let mut destinations: Vec<String> =
                dests.iter().map(|d| qualify(&d.host, ns, domain)).collect();
            destinations.sort();
            destinations.dedup();
            RouteScope {
                hosts,
                destinations,
            }
        })
        .collect()
}
