//! Translation: the native configuration and the service registry in, the xDS snapshot every
//! proxy draws from and the [`ScopeIndex`] that cuts it per proxy out.
//!
//! Resources (jalin's `type.googleapis.com/jalin.v1.<Kind>` envelope, JSON bodies):
//! - `AuthorizationPolicy` `ns/name`: [`jalin_xds::model::authz::AuthorizationPolicy`];
//! - `PeerAuthentication` `ns/name`: [`jalin_xds::model::peer_auth::PeerAuthentication`];
//! - `RequestAuthentication` `ns/name`: [`jalin_xds::model::authz::RequestAuthentication`];
//! - `Cluster` `outbound|port|subset|host`: [`jalin_xds::model::cluster::Cluster`] with empty
//!   `endpoints`, depending on the `Endpoints` resource of the same name;
//! - `Endpoints` `outbound|port|subset|host`: a JSON array of
//!   [`jalin_xds::model::cluster::Endpoint`];
//! - `Route` `ns/name`: [`jalin_xds::model::route::RouteTable`] of a VirtualService bound to
//!   the sidecars, hosts fully qualified; `Route` `ns/name@gwns/gwname`: the same VirtualService
//!   as served at a Gateway it is bound to, for the proxies the Gateway selects (see [`routes`]);
//! - `TrustBundle` `<trust domain>`: [`TrustBundle`];
//! - `Telemetry` `ns/name`: the imported Istio Telemetry `spec`
//!   ([`crate::istio::telemetry::TelemetrySpec`], the seeds' shapes already mapped), sent to the
//!   workloads it may select; the proxy selects and compiles its access logging.
//!
//! Every version is a content hash, so an unchanged resource keeps its version across rebuilds
//! and the server pushes only what changed, to the proxies that see it.

pub mod clusters;
pub mod routes;
pub mod services;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jalin_xds::model::WorkloadSelector;
use jalin_xds::transport::{EncodedResource, Entry, Kind, ResourceError, Snapshot, encode};
use serde::{Deserialize, Serialize};

use super::scope::{GatewayScope, NamespaceVariant, ScopeIndex, SidecarScope, Visibility};
use crate::istio::convert::NativeConfig;
use crate::k8s::ServiceRegistry;

/// The trust bundle resource's body: the roots proxies verify peers against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// One or more root certificates, PEM (several during a root rotation).
    pub roots_pem: String,
}

/// Mesh-wide settings the translation needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Istio's root namespace (mesh-wide policies and rules).
    pub root_namespace: String,
    /// Kubernetes cluster DNS domain (short DestinationRule hosts expand under it).
    pub cluster_domain: String,
}

/// The result of one translation.
#[derive(Debug, Default)]
pub struct Translated {
    /// Every resource, with the default (service or root namespace) DestinationRules.
    pub snapshot: Snapshot,
    /// How to cut it per proxy.
    pub index: ScopeIndex,
    /// Things left out, with the reason.
    pub warnings: Vec<String>,
}

type Key = (Arc<str>, Arc<str>);

fn key_of(r: &EncodedResource) -> Key {
    (Arc::from(r.type_url.as_str()), Arc::from(r.name.as_str()))
}

/// Translates the configuration in force.
pub fn translate(
    native: &NativeConfig,
    registry: &ServiceRegistry,
    trust: Option<&TrustBundle>,
    settings: &Settings,
) -> Result<Translated, ResourceError> {
    let mut out = Translated {
        index: ScopeIndex {
            root_namespace: settings.root_namespace.clone(),
            ..ScopeIndex::default()
        },
        ..Translated::default()
    };
    let mut resources: Vec<EncodedResource> = Vec::new();
    let mut visibility: HashMap<Key, Visibility> = HashMap::new();

    for p in &native.authorization_policies {
        let r = encode(Kind::AuthorizationPolicy, &p.meta.key(), p)?;
        visibility.insert(key_of(&r), workload(&p.meta.namespace, p.selector.as_ref()));
        resources.push(r);
    }
    for p in &native.peer_authentications {
        let r = encode(Kind::PeerAuthentication, &p.meta.key(), p)?;
        visibility.insert(key_of(&r), workload(&p.meta.namespace, p.selector.as_ref()));
        resources.push(r);
    }
    if let Some(t) = trust {
        resources.push(encode(Kind::TrustBundle, &t.trust_domain, t)?);
    }
    for ra in &native.request_authentications {
        let r = encode(Kind::RequestAuthentication, &ra.meta.key(), ra)?;
        visibility.insert(
            key_of(&r),
            workload(&ra.meta.namespace, ra.selector.as_ref()),
        );
        resources.push(r);
    }

    for t in &native.telemetry {
        let r = encode(Kind::Telemetry, &t.meta.key(), &t.spec)?;
        let selector = crate::istio::convert::selector(t.spec.selector.as_ref());
        visibility.insert(key_of(&r), workload(&t.meta.namespace, selector.as_ref()));
        resources.push(r);
    }

    let rules = &native.destination_policies;
    let trust_domain = trust.map(|t| t.trust_domain.as_str());
    let domain = &settings.cluster_domain;
    let mut variants: BTreeMap<String, NamespaceVariant> = BTreeMap::new();
    let mut discovered = services::discover(native, registry, &mut out.warnings);
    // Once per service, not per DestinationRule variant: the endpoints' server identities.
    for svc in &mut discovered {
        for eps in svc.endpoints.values_mut() {
            *eps = clusters::with_mesh_tls(eps, &svc.namespace, trust_domain);
        }
    }
    let service_ns: HashMap<&str, &str> = discovered
        .iter()
        .map(|s| (s.host.as_str(), s.namespace.as_str()))
        .collect();
    let bindings = routes::bindings(native, domain);
    out.warnings.extend(
        bindings
            .findings
            .iter()
            .map(|f| format!("{}: {f}", f.severity.as_str())),
    );
    for route in routes::translate(native, &bindings, &service_ns, domain)? {
        let vis = match &route.scope.gateway {
            Some(gateway) => Visibility::Gateway {
                gateway: gateway.clone(),
            },
            None => Visibility::Route {
                hosts: route.scope.hosts.clone(),
            },
        };
        visibility.insert(key_of(&route.resource), vis);
        resources.push(route.resource);
        out.index.routes.push(route.scope);
    }
    out.index.gateways = native
        .gateways
        .iter()
        .filter(|g| !g.spec.selector.is_empty())
        .map(|g| GatewayScope {
            gateway: g.meta.key(),
            selector: WorkloadSelector {
                match_labels: g.spec.selector.clone(),
            },
        })
        .collect();
    for svc in &discovered {
        let vis = Visibility::Service {
            namespace: svc.namespace.clone(),
            host: svc.host.clone(),
            export_to: svc.export_to.clone(),
        };
        let default_rule = clusters::rule_for(rules, None, svc, &settings.root_namespace, domain);
        let default_res = clusters::resources(svc, default_rule)?;
        let default_versions: HashMap<Key, String> = default_res
            .iter()
            .map(|r| (key_of(r), r.version.clone()))
            .collect();
        for ns in clusters::variant_namespaces(rules, svc, domain) {
            let rule = clusters::rule_for(rules, Some(&ns), svc, &settings.root_namespace, domain);
            if rule.map(|r| &r.meta) == default_rule.map(|r| &r.meta) {
                continue;
            }
            let variant = variants.entry(ns).or_default();
            let var_res = clusters::resources(svc, rule)?;
            let var_keys: std::collections::HashSet<Key> = var_res.iter().map(key_of).collect();
            for k in default_versions.keys().filter(|k| !var_keys.contains(*k)) {
                variant.hide.insert(k.clone());
            }
            for r in var_res {
                let k = key_of(&r);
                if default_versions.get(&k) != Some(&r.version) {
                    visibility.insert(k.clone(), vis.clone());
                    variant.replace.insert(k, Arc::new(Entry::new(r)));
                }
            }
        }
        for r in default_res {
            visibility.insert(key_of(&r), vis.clone());
            resources.push(r);
        }
    }

    out.index.sidecars = native
        .sidecars
        .iter()
        .map(|s| SidecarScope {
            namespace: s.meta.namespace.clone(),
            selector: s.spec.workload_selector.as_ref().map(|w| WorkloadSelector {
                match_labels: w.labels.clone(),
            }),
            hosts: s
                .spec
                .egress
                .iter()
                .flat_map(|e| e.hosts.iter())
                .map(|h| match h.split_once('/') {
                    Some((ns, host)) => (ns.to_owned(), host.to_owned()),
                    None => ("*".to_owned(), h.clone()),
                })
                .collect(),
        })
        .collect();
    out.index.visibility = visibility;
    out.index.variants = variants.into_iter().collect();
    out.snapshot = Snapshot::new(resources);
    Ok(out)
}

fn workload(namespace: &str, selector: Option<&WorkloadSelector>) -> Visibility {
    Visibility::Workload {
        namespace: namespace.to_owned(),
        selector: selector.cloned(),
    }
}

#[cfg(test)]
mod telemetry_tests {
    use super::*;

    #[test]
    fn the_seed_telemetry_is_sent_with_its_access_logging_in_the_mapped_shape() {
        let mut loaded = crate::istio::parse::Loaded::default();
        crate::istio::parse::load_str(
            "policies-24.yaml",
            include_str!(
                "../../../examples/demo/policies-24-telemetry-child-services-telemetry.yaml"
            ),
            &mut loaded,
        );
        let mut findings = Vec::new();
        let native = crate::istio::convert::convert(&loaded.resources, &mut findings);
        let settings = Settings {
            root_namespace: "istio-system".into(),
            cluster_domain: "cluster.local".into(),
        };
        let out = translate(&native, &ServiceRegistry::default(), None, &settings).unwrap();
        let name = "child-services/child-services-telemetry";
        let entry = out
            .snapshot
            .get(Kind::Telemetry.type_url(), name)
            .expect("the Telemetry is a resource");
        let envelope = jalin_xds::transport::resource::decode_envelope(
            Kind::Telemetry.type_url(),
            &entry.value,
        )
        .unwrap();
        let spec: serde_json::Value = serde_json::from_slice(&envelope.json).unwrap();
        let entries = spec["accessLogging"].as_array().unwrap();
        let server = entries
            .iter()
            .find(|e| e["match"]["mode"] == "SERVER")
            .expect("the SERVER override is an entry of its own");
        assert_eq!(server["providers"][0]["name"], "child-services-audit-log");
        assert!(
            server["format"]
                .as_str()
                .unwrap()
                .contains("%REQ(X-CHILD-ACCESS-REASON)%")
        );
        let vis = out
            .index
            .visibility
            .get(&(Arc::from(Kind::Telemetry.type_url()), Arc::from(name)));
        assert!(
            matches!(vis, Some(Visibility::Workload { namespace, selector: None }) if namespace == "child-services")
        );
    }
}
