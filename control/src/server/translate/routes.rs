//! Routes: each VirtualService bound to the sidecars (`gateways` includes `mesh`) becomes a
//! `Route` resource `ns/name` whose body is the importer's
//! [`jalin_xds::model::route::RouteTable`], with every host and destination host fully
//! qualified (a short name is relative to the VirtualService's namespace, as in Istio), so the
//! proxy maps destinations to `outbound|port|subset|host` clusters without knowing the cluster
//! domain. Scoping: a proxy gets a route table when its Sidecar admits one of the table's hosts,
//! and then also the clusters the table's routes send to.

use std::collections::HashMap;

use jalin_xds::model::route::{Destination, RouteTable};
use jalin_xds::transport::{EncodedResource, Kind, ResourceError, encode};

use crate::istio::convert::NativeConfig;
use crate::server::scope::RouteScope;

/// The gateway name that binds a VirtualService to the sidecars.
pub const MESH_GATEWAY: &str = "mesh";

/// A host as written in a VirtualService of `ns`, fully qualified as Istio does.
pub fn qualify(host: &str, ns: &str, domain: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_owned()
    } else {
        format!("{host}.{ns}.svc.{domain}")
    }
}

fn qualify_dest(d: &mut Destination, ns: &str, domain: &str) {
    d.host = qualify(&d.host, ns, domain);
}

/// One translated route table: its resource and its scope.
#[derive(Debug)]
pub struct TranslatedRoute {
    /// The `Route` resource.
    pub resource: EncodedResource,
    /// Its hosts (with the namespace of their service) and destinations.
    pub scope: RouteScope,
}

/// The route resources of every VirtualService bound to the sidecars.
pub fn translate(
    native: &NativeConfig,
    service_ns: &HashMap<&str, &str>,
    domain: &str,
    warnings: &mut Vec<String>,
) -> Result<Vec<TranslatedRoute>, ResourceError> {
    let mut out = Vec::new();
    for bound in &native.routes {
        let key = bound.table.meta.key();
        if !bound.gateways.iter().any(|g| g == MESH_GATEWAY) {
            warnings.push(format!(
                "VirtualService {key}: bound to gateways {:?} only; jalin serves sidecar routes, so it is not sent",
                bound.gateways
            ));
            continue;
        }
        let ns = bound.table.meta.namespace.clone();
        let mut table: RouteTable = bound.table.clone();
        table.hosts = table
            .hosts
            .iter()
            .map(|h| qualify(h, &ns, domain))
            .collect();
        let mut destinations = Vec::new();
        for r in &mut table.http {
            for d in &mut r.destinations {
                qualify_dest(&mut d.destination, &ns, domain);
                destinations.push(d.destination.host.clone());
            }
            if let Some(m) = &mut r.mirror {
                qualify_dest(&mut m.destination, &ns, domain);
                destinations.push(m.destination.host.clone());
            }
        }
        destinations.sort();
        destinations.dedup();
        let hosts = table
            .hosts
            .iter()
            .map(|h| {
                let owner = service_ns
                    .get(h.as_str())
                    .copied()
                    .unwrap_or(&ns)
                    .to_owned();
                (owner, h.clone())
            })
            .collect();
        out.push(TranslatedRoute {
            resource: encode(Kind::Route, &key, &table)?,
            scope: RouteScope {
                hosts,
                destinations,
            },
        });
    }
    Ok(out)
}
