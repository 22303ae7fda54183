//! Unit tests of the service registry derivation.

use super::*;
use serde_json::json;

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).unwrap()
}
fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).unwrap()
}
fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn fixture() -> (Vec<Service>, Vec<EndpointSlice>, Vec<Pod>) {
    let services = vec![
        service(json!({
            "metadata": {"name": "case-api", "namespace": "child-services", "labels": {"app": "case-api"}},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "ports": [
                {"name": "http-web", "port": 80, "targetPort": 8080},
                {"name": "rpc", "port": 9090, "appProtocol": "grpc"},
                {"name": "dns", "port": 53, "protocol": "UDP"}
            ]}
        })),
        service(json!({
            "metadata": {"name": "db", "namespace": "child-services"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        })),
        service(json!({
            "metadata": {"name": "registry", "namespace": "government"},
            "spec": {"type": "ExternalName", "externalName": "registry.gov.example", "ports": [{"name": "https", "port": 443}]}
        })),
    ];
    let slices = vec![
        slice(json!({
            "metadata": {"name": "case-api-abc", "namespace": "child-services",
                         "labels": {"kubernetes.io/service-name": "case-api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http-web", "port": 8080}, {"name": "rpc", "port": 9090}],
            "endpoints": [
                {"addresses": ["10.0.0.5"], "conditions": {"ready": true},
                 "targetRef": {"kind": "Pod", "name": "case-api-1", "namespace": "child-services"},
                 "zone": "zone-a", "nodeName": "node-1"},
                {"addresses": ["10.0.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true},
                 "targetRef": {"kind": "Pod", "name": "case-api-2", "namespace": "child-services"}},
                {"addresses": ["not-an-ip"]}
            ]
        })),
        // The same endpoint, not ready, in a second slice while it moves: the ready copy wins.
        slice(json!({
            "metadata": {"name": "case-api-def", "namespace": "child-services",
                         "labels": {"kubernetes.io/service-name": "case-api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http-web", "port": 8080}],
            "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": false}}]
        })),
        // Same service name in another namespace: not case-api's.
        slice(json!({
            "metadata": {"name": "case-api-x", "namespace": "emergency",
                         "labels": {"kubernetes.io/service-name": "case-api"}},
            "addressType": "IPv4",
            "ports": [{"name": "http-web", "port": 8080}],
            "endpoints": [{"addresses": ["10.9.9.9"]}]
        })),
        slice(json!({
            "metadata": {"name": "db-1", "namespace": "child-services",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv6",
            "ports": [{"port": 5432}],
            "endpoints": [{"addresses": ["fd00::7"]}]
        })),
    ];
    let pods = vec![
        pod(json!({
            "metadata": {"name": "case-api-1", "namespace": "child-services",
                         "labels": {"app": "case-api", "version": "v2"}},
            "spec": {"serviceAccountName": "case-api", "containers": [], "nodeName": "node-1"}
        })),
        pod(json!({
            "metadata": {"name": "case-api-2", "namespace": "child-services", "labels": {"app": "case-api"}},
            "spec": {"containers": []}
        })),
    ];
    (services, slices, pods)
}

fn registry() -> ServiceRegistry {
    let (services, slices, pods) = fixture();
    derive(&services, &slices, &pods, &RegistrySettings::default())
}

#[test]
fn hosts_ports_and_protocols() {
    let r = registry();
    let hosts: Vec<&str> = r.services.keys().map(String::as_str).collect();
    assert_eq!(
        hosts,
        [
            "case-api.child-services.svc.cluster.local",
            "db.child-services.svc.cluster.local",
            "registry.government.svc.cluster.local"
        ]
    );
    let s = r
        .service("case-api.child-services.svc.cluster.local")
        .unwrap();
    assert_eq!(s.kind, ServiceKind::ClusterIp);
    assert_eq!(s.cluster_ips, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
    let ports: Vec<(&str, u16, Transport, MeshProtocol)> = s
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port, p.transport, p.protocol))
        .collect();
    assert_eq!(
        ports,
        [
            ("http-web", 80, Transport::Tcp, MeshProtocol::Http),
            ("rpc", 9090, Transport::Tcp, MeshProtocol::Grpc),
            ("dns", 53, Transport::Udp, MeshProtocol::Udp),
        ]
    );
    assert_eq!(s.labels.get("app").map(String::as_str), Some("case-api"));
}

#[test]
fn endpoints_carry_readiness_pod_labels_identity_and_zone() {
    let r = registry();
    let s = r
        .service("case-api.child-services.svc.cluster.local")
        .unwrap();
    let eps: Vec<(String, u16, u16, bool)> = s
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.port, e.service_port, e.ready))
        .collect();
    assert_eq!(
        eps,
        [
            ("10.0.0.5".into(), 8080, 80, true),
            ("10.0.0.5".into(), 9090, 9090, true),
            ("10.0.0.6".into(), 8080, 80, false),
            ("10.0.0.6".into(), 9090, 9090, false),
        ]
    );
    let first = &s.endpoints[0];
    assert_eq!(first.pod.as_deref(), Some("case-api-1"));
    assert_eq!(first.service_account.as_deref(), Some("case-api"));
    assert_eq!(first.labels.get("version").map(String::as_str), Some("v2"));
    assert_eq!(first.zone.as_deref(), Some("zone-a"));
    assert_eq!(first.node.as_deref(), Some("node-1"));
    assert!(first.serving && !first.terminating);
    let td = jalin_ca::spiffe::TrustDomain::new("cluster.local").unwrap();
    assert_eq!(
        s.endpoint_identity(first, &td).unwrap().to_string(),
        "spiffe://cluster.local/ns/child-services/sa/case-api"
    );
    let terminating = &s.endpoints[2];
    assert!(terminating.serving && terminating.terminating);
    assert_eq!(
        terminating.service_account.as_deref(),
        Some("default"),
        "a pod without serviceAccountName runs as `default`"
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("not-an-ip")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn headless_and_external_name() {
    let r = registry();
    let db = r.service("db.child-services.svc.cluster.local").unwrap();
    assert_eq!(db.kind, ServiceKind::Headless);
    assert!(db.cluster_ips.is_empty());
    assert_eq!(db.endpoints.len(), 1);
    assert_eq!(db.endpoints[0].address.to_string(), "fd00::7");
    assert_eq!(db.endpoints[0].service_account, None, "no pod known");
    let td = jalin_ca::spiffe::TrustDomain::new("cluster.local").unwrap();
    assert!(db.endpoint_identity(&db.endpoints[0], &td).is_none());
    assert_eq!(db.ports[0].protocol, MeshProtocol::Auto);
    let ext = r.service("registry.government.svc.cluster.local").unwrap();
    assert_eq!(
        ext.kind,
        ServiceKind::ExternalName {
            external_name: "registry.gov.example".into()
        }
    );
    assert!(ext.endpoints.is_empty());
    assert_eq!(ext.ports[0].protocol, MeshProtocol::Https);
}

#[test]
fn cluster_domain_is_configurable() {
    let (services, slices, pods) = fixture();
    let r = derive(
        &services,
        &slices,
        &pods,
        &RegistrySettings {
            cluster_domain: "gov.internal".into(),
        },
    );
    assert!(r.service("db.child-services.svc.gov.internal").is_some());
}

#[test]
fn protocol_selection_follows_istio() {
    use MeshProtocol as P;
    let cases = [
        (None, Some("http2-api"), P::Http2),
        (None, Some("grpc-web"), P::Grpc),
        (Some("kubernetes.io/h2c"), Some("web"), P::Http2),
        (Some("HTTP"), Some("tcp-x"), P::Http),
        (Some("unknown"), Some("tls-x"), P::Tls),
        (None, Some("mysql"), P::Tcp),
        (None, Some("web"), P::Auto),
        (None, None, P::Auto),
    ];
    for (app, name, want) in cases {
        assert_eq!(
            MeshProtocol::select(Transport::Tcp, app, name),
            want,
            "{app:?} {name:?}"
        );
    }
    assert_eq!(
        MeshProtocol::select(Transport::Tcp, Some("grpc-web"), None),
        P::GrpcWeb
    );
}

#[test]
fn registry_serializes_as_plain_json() {
    let r = registry();
    let v = serde_json::to_value(&r).unwrap();
    let back: ServiceRegistry = serde_json::from_value(v).unwrap();
    assert_eq!(back, r);
}
