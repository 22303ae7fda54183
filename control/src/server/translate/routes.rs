//! Routes: each VirtualService becomes `Route` resources whose body is the importer's
//! [`jalin_xds::model::route::RouteTable`], with every host and destination host fully
//! qualified (a short name is relative to the VirtualService's namespace, as in Istio), so the
//! proxy maps destinations to `outbound|port|subset|host` clusters without knowing the cluster
//! domain:
//! - `ns/name` when it is bound to the sidecars (`gateways` empty or naming `mesh`), for the
//!   sidecars, with its `gateways` as written. Scoping: a sidecar gets it when its Sidecar
//!   admits one of the table's hosts, and then also the clusters the table's routes send to;
//! - `ns/name@gwns/gwname` for each Gateway it is bound to ([`crate::istio::gateway`]), for the
//!   proxies that Gateway's `selector` picks: its hosts narrowed to those the Gateway's servers
//!   serve, `gateways: [gwns/gwname]` (so the proxy binds it to that gateway's listeners only),
//!   and, when a server of the Gateway sets `httpsRedirect`, a first route that answers that
//!   server's port with a 301 to `https`.

use std::collections::HashMap;

use jalin_xds::model::route::{
    DEFAULT_REDIRECT_CODE, Destination, HttpRoute, Redirect, RouteMatch, RouteTable,
};
use jalin_xds::transport::{EncodedResource, Kind, ResourceError, encode};

use crate::istio::convert::NativeConfig;
use crate::istio::gateway::{Bindings, GatewayBinding};
use crate::istio::routes::BoundRoutes;
use crate::server::scope::RouteScope;

/// The gateway name that binds a VirtualService to the sidecars.
pub const MESH_GATEWAY: &str = crate::istio::routes::MESH_GATEWAY;

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

/// The `Route` resource name of VirtualService `route` (`ns/name`) at Gateway `gateway`.
pub fn gateway_route_name(route: &str, gateway: &str) -> String {
    format!("{route}@{gateway}")
}

/// One translated route table: its resource and its scope.
#[derive(Debug)]
pub struct TranslatedRoute {
    /// The `Route` resource.
    pub resource: EncodedResource,
    /// Its hosts (with the namespace of their service), destinations and gateway.
    pub scope: RouteScope,
}

/// The gateway bindings of `native` with hosts qualified under `domain`.
pub fn bindings(native: &NativeConfig, domain: &str) -> Bindings {
    crate::istio::gateway::bind(native, &|h: &str, ns: &str| qualify(h, ns, domain))
}

/// The route resources of every VirtualService: one for the sidecars when it binds `mesh`, one
/// per Gateway binding in `bindings`.
pub fn translate(
    native: &NativeConfig,
    bindings: &Bindings,
    service_ns: &HashMap<&str, &str>,
    domain: &str,
) -> Result<Vec<TranslatedRoute>, ResourceError> {
    let by_key: HashMap<String, &BoundRoutes> = native
        .routes
        .iter()
        .map(|b| (b.table.meta.key(), b))
        .collect();
    let mut out = Vec::new();
    for bound in &native.routes {
        if !bound.gateways.iter().any(|g| g == MESH_GATEWAY) {
            continue;
        }
        let table = qualified(&bound.table, domain);
        let key = table.meta.key();
        out.push(translated(&key, &table, None, service_ns)?);
    }
    for b in &bindings.bindings {
        let Some(bound) = by_key.get(&b.route) else {
            continue;
        };
        let table = at_gateway(qualified(&bound.table, domain), b);
        let name = gateway_route_name(&b.route, &b.gateway);
        out.push(translated(
            &name,
            &table,
            Some(b.gateway.clone()),
            service_ns,
        )?);
    }
    Ok(out)
}

/// The table with its hosts and destinations fully qualified.
fn qualified(table: &RouteTable, domain: &str) -> RouteTable {
    let ns = table.meta.namespace.clone();
    let mut table = table.clone();
    table.hosts = table
        .hosts
        .iter()
        .map(|h| qualify(h, &ns, domain))
        .collect();
    for r in &mut table.http {
        for d in &mut r.destinations {
            qualify_dest(&mut d.destination, &ns, domain);
        }
        if let Some(m) = &mut r.mirror {
            qualify_dest(&mut m.destination, &ns, domain);
        }
    }
    table
}

/// The table as served at the binding's Gateway.
fn at_gateway(mut table: RouteTable, b: &GatewayBinding) -> RouteTable {
    table.hosts = b.hosts.clone();
    table.gateways = vec![b.gateway.clone()];
    let redirects = b.https_redirect_ports.iter().map(|port| HttpRoute {
        name: Some(format!("https-redirect-{port}")),
        matches: vec![RouteMatch {
            port: Some(*port),
            ..RouteMatch::default()
        }],
        redirect: Some(Redirect {
            scheme: Some("https".into()),
            redirect_code: DEFAULT_REDIRECT_CODE,
            ..Redirect::default()
        }),
        ..HttpRoute::default()
    });
    table.http = redirects.chain(table.http).collect();
    table
}

fn translated(
    name: &str,
    table: &RouteTable,
    gateway: Option<String>,
    service_ns: &HashMap<&str, &str>,
) -> Result<TranslatedRoute, ResourceError> {
    let ns = &table.meta.namespace;
    let mut destinations: Vec<String> = table
        .http
        .iter()
        .flat_map(|r| {
            r.destinations
                .iter()
                .map(|d| d.destination.host.clone())
                .chain(r.mirror.iter().map(|m| m.destination.host.clone()))
        })
        .collect();
    destinations.sort();
    destinations.dedup();
    let hosts = table
        .hosts
        .iter()
        .map(|h| {
            let owner = service_ns.get(h.as_str()).copied().unwrap_or(ns).to_owned();
            (owner, h.clone())
        })
        .collect();
    Ok(TranslatedRoute {
        resource: encode(Kind::Route, name, table)?,
        scope: RouteScope {
            hosts,
            destinations,
            gateway,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::ServiceRegistry;
    use crate::server::translate::{Settings, translate as translate_all};

    const CONFIG: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: edge}
spec:
  selector: {istio: ingress}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"*.gov.example\"]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: a}
spec:
  hosts:
  - api.gov.example
  - intranet.corp
  gateways: [edge/ingress, edge/missing]
  http:
  - route:
    - destination: {host: svc}
";

    #[test]
    fn the_translation_warns_with_file_line_and_path_and_names_tables_per_gateway() {
        let mut loaded = crate::istio::Loaded::default();
        crate::istio::load_str("gw.yaml", CONFIG, &mut loaded);
        assert!(!loaded.has_errors(), "{:?}", loaded.findings);
        let native = crate::istio::convert::convert_only(&loaded.resources, &mut Vec::new());
        let settings = Settings {
            root_namespace: "istio-system".into(),
            cluster_domain: "example.internal".into(),
        };
        let out = translate_all(&native, &ServiceRegistry::default(), None, &settings).unwrap();
        assert_eq!(out.warnings.len(), 2, "{:#?}", out.warnings);
        assert!(out.warnings[0].starts_with("warning: gw.yaml:17: VirtualService/a/api: spec.hosts[1]: host `intranet.corp` matches no server host of Gateway `edge/ingress`"), "{}", out.warnings[0]);
        assert!(out.warnings[1].starts_with("warning: gw.yaml:18: VirtualService/a/api: spec.gateways[1]: Gateway `edge/missing` not found (Istio IST0101)"), "{}", out.warnings[1]);
        // Gateway-only: no sidecar table; one table at the existing Gateway.
        let routes = out.snapshot.type_set(Kind::Route.type_url()).unwrap();
        let names: Vec<&str> = routes.resources.keys().map(|k| &**k).collect();
        assert_eq!(names, ["a/api@edge/ingress"]);
        let scope = &out.index.routes[0];
        assert_eq!(scope.gateway.as_deref(), Some("edge/ingress"));
        assert_eq!(scope.destinations, ["svc.a.svc.example.internal"]);
        assert_eq!(out.index.gateways[0].gateway, "edge/ingress");
    }
}
