//! The simulated mesh's configuration: a deterministic set of services, each with endpoints, a
//! cluster, a route table, a listener and an authorization policy, and the sequence of policy
//! edits the scale run pushes. The parent (proxies) and the child (control plane) build the same
//! workload from the same arguments, so the parent knows each change's resource version.

use std::collections::BTreeMap;

use jalin_xds::model::authz::{Action, AuthorizationPolicy, Condition, Operation, Rule, Source};
use jalin_xds::model::route::{Destination, HttpRoute, RouteDestination, RouteTable};
use jalin_xds::model::traffic::TrafficPolicy;
use jalin_xds::model::{ResourceMeta, SourceRef, WorkloadSelector};
use jalin_xds::transport::{EncodedResource, Kind, ResourceError, encode_with_deps};
use serde_json::json;

/// The kinds every simulated service has, in dependency order (each references the previous).
pub const KINDS: [Kind; 5] = [
    Kind::Endpoints,
    Kind::Cluster,
    Kind::Route,
    Kind::Listener,
    Kind::AuthorizationPolicy,
];

/// Namespaces services are spread over (the seed's three, plus two more agencies).
const NAMESPACES: [&str; 5] = [
    "child-services",
    "emergency",
    "government",
    "health",
    "education",
];

/// Endpoints per service.
const ENDPOINTS_PER_SERVICE: usize = 4;

/// The configuration of a simulated mesh with `resources` resources.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    resources: usize,
}

/// One config change: the resource that changed.
#[derive(Debug, Clone)]
pub struct Change {
    /// The new resource.
    pub resource: EncodedResource,
}

impl Workload {
    /// A mesh of `resources` resources, spread round-robin over [`KINDS`].
    pub fn new(resources: usize) -> Self {
        Workload { resources }
    }

    /// Number of services (a service with fewer than five resources counts).
    pub fn services(&self) -> usize {
        self.resources.div_ceil(KINDS.len())
    }

    /// Services that have an authorization policy (the ones changes edit).
    fn policy_services(&self) -> usize {
        self.resources / KINDS.len()
    }

    /// Every resource of the mesh.
    pub fn initial(&self) -> Result<Vec<EncodedResource>, ResourceError> {
        (0..self.resources)
            .map(|i| resource(KINDS[i % KINDS.len()], i / KINDS.len(), None))
            .collect()
    }

    /// Change number `k`: an edit of one service's authorization policy (an emergency
    /// activation rule naming `k`), spread over the services.
    pub fn change(&self, k: u64) -> Result<Change, ResourceError> {
        let services = self.policy_services().max(1) as u64;
        // A stride co-prime with most service counts walks every service before repeating.
        let service = (k.wrapping_mul(7919) % services) as usize;
        Ok(Change {
            resource: resource(Kind::AuthorizationPolicy, service, Some(k))?,
        })
    }
}

fn namespace(service: usize) -> &'static str {
    NAMESPACES[service % NAMESPACES.len()]
}

fn name(service: usize) -> String {
    format!("svc-{service:05}.{}", namespace(service))
}

fn host(service: usize) -> String {
    format!("svc-{service:05}.{}.svc.cluster.local", namespace(service))
}

fn identity(ns: &str, sa: &str) -> String {
    format!("jalin.gov.example/ns/{ns}/sa/{sa}")
}

/// One resource of `service`; `generation` marks an edited authorization policy.
fn resource(
    kind: Kind,
    service: usize,
    generation: Option<u64>,
) -> Result<EncodedResource, ResourceError> {
    let name = name(service);
    let host = host(service);
    let ns = namespace(service);
    match kind {
        Kind::Endpoints => {
            let endpoints: Vec<_> = (0..ENDPOINTS_PER_SERVICE)
                .map(|e| {
                    json!({
                        "address": format!("10.{}.{}.{}", (service >> 8) & 0xff, service & 0xff, 10 + e),
                        "port": 8080,
                        "weight": 1,
                        "locality": {"region": "gov-east", "zone": format!("gov-east-{}", e % 3)},
                        "labels": {"app": format!("svc-{service:05}"), "version": if e == 0 { "v2" } else { "v1" }},
                        "identity": identity(ns, &format!("svc-{service:05}")),
                        "healthy": true,
                    })
                })
                .collect();
            let body = json!({"service": host, "port": 8080, "endpoints": endpoints});
            encode_with_deps(kind, &name, &body, &[])
        }
        Kind::Cluster => {
            let body = json!({
                "name": host,
                "port": 8080,
                "protocol": "http2",
                "tls": {"mode": "istio_mutual", "sni": host, "identities": [identity(ns, &format!("svc-{service:05}"))]},
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
                "traffic_policy": TrafficPolicy::default(),
            });
            encode_with_deps(kind, &name, &body, &[(Kind::Endpoints, &name)])
        }
        Kind::Route => {
            let dest = |subset: &str, weight| RouteDestination {
                destination: Destination {
                    host: host.clone(),
                    subset: Some(subset.to_owned()),
                    port: Some(8080),
                },
                weight,
            };
            let body = RouteTable {
                meta: meta(&name, ns, "virtual-services"),
                hosts: vec![host.clone(), format!("svc-{service:05}")],
                gateways: Vec::new(),
                http: vec![HttpRoute {
                    name: Some("primary".to_owned()),
                    destinations: vec![dest("v1", 90), dest("v2", 10)],
                    timeout_ms: Some(15_000),
                    ..HttpRoute::default()
                }],
            };
            encode_with_deps(kind, &name, &body, &[(Kind::Cluster, &name)])
        }
        Kind::Listener => {
            let body = json!({
                "name": format!("inbound|8080|{host}"),
                "address": "0.0.0.0",
                "port": 15006,
                "protocol": "http",
                "route": name,
                "tls": {"mode": "strict", "min_version": "1.3"},
                "filters": ["authz", "priority", "telemetry"],
            });
            encode_with_deps(kind, &name, &body, &[(Kind::Route, &name)])
        }
        _ => {
            let mut when = Vec::new();
            if let Some(generation) = generation {
                when.push(Condition {
                    key: "request.headers[x-emergency-activation]".to_owned(),
                    values: vec![format!("activation-{generation}")],
                    not_values: Vec::new(),
                    unknown_key: false,
                });
            }
            let body = AuthorizationPolicy {
                meta: meta(&name, ns, "authorization-policies"),
                selector: Some(WorkloadSelector {
                    match_labels: BTreeMap::from([("app".to_owned(), format!("svc-{service:05}"))]),
                }),
                action: Action::Allow,
                provider: None,
                rules: vec![
                    Rule {
                        from: vec![Source {
                            principals: vec![
                                identity("child-services", "case-worker"),
                                identity("government", "registry"),
                            ],
                            namespaces: vec![ns.to_owned()],
                            ..Source::default()
                        }],
                        to: vec![Operation {
                            methods: vec!["GET".to_owned(), "POST".to_owned()],
                            paths: vec!["/api/v1/cases/*".to_owned(), "/healthz".to_owned()],
                            ..Operation::default()
                        }],
                        when: Vec::new(),
                    },
                    Rule {
                        from: vec![Source {
                            namespaces: vec!["emergency".to_owned()],
                            ..Source::default()
                        }],
                        to: Vec::new(),
                        when,
                    },
                ],
                dry_run: false,
            };
            encode_with_deps(Kind::AuthorizationPolicy, &name, &body, &[])
        }
    }
}

fn meta(name: &str, ns: &str, dir: &str) -> ResourceMeta {
    ResourceMeta {
        name: name.to_owned(),
        namespace: ns.to_owned(),
        source: Some(SourceRef {
            file: format!("config/{ns}/{dir}.yaml"),
            line: 1,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_has_every_kind_and_changes_differ() {
        let w = Workload::new(23);
        let all = w.initial().unwrap();
        assert_eq!(all.len(), 23);
        for kind in KINDS {
            assert!(
                all.iter().any(|r| r.type_url == kind.type_url()),
                "{kind:?}"
            );
        }
        let a = w.change(1).unwrap().resource;
        let b = w.change(2).unwrap().resource;
        assert_eq!(a.type_url, Kind::AuthorizationPolicy.type_url());
        assert_ne!(a.version, b.version);
        let original = all
            .iter()
            .find(|r| r.type_url == a.type_url && r.name == a.name)
            .unwrap();
        assert_ne!(original.version, a.version);
        // Deterministic: the child and the parent compute the same version.
        assert_eq!(
            Workload::new(23).change(1).unwrap().resource.version,
            a.version
        );
    }
}
