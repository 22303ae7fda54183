//! Gateway-bound VirtualServices over xDS: a proxy whose labels an Istio Gateway's selector
//! matches gets the route tables bound to that Gateway (hosts narrowed to its servers', an
//! httpsRedirect route first), and no sidecar table; sidecars get only mesh-bound tables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use control_support::*;
use jalin_xds::model::route::RouteTable;
use jalin_xds::transport::Kind;

const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: edge
spec:
  selector:
    istio: ingress
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*.gov.example\"]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"api.gov.example\", \"a/*.svc.cluster.local\"]
    tls: {mode: SIMPLE, serverCertificate: /etc/gw/cert.pem, privateKey: /etc/gw/key.pem, httpsRedirect: true}
";

const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
  namespace: a
spec:
  hosts: [api.gov.example, other.example.org]
  gateways: [edge/ingress]
  http:
  - route:
    - destination: {host: svc}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: both
  namespace: a
spec:
  hosts: [svc]
  gateways: [mesh, edge/ingress]
  http:
  - route:
    - destination: {host: svc}
";

fn sorted(p: &Proxy) -> Vec<String> {
    let mut n = p.names(Kind::Route);
    n.sort();
    n
}

#[tokio::test]
async fn gateway_tables_go_to_the_gateway_the_mesh_table_to_sidecars() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write(
        &dir,
        "svc.yaml",
        &service_entry("a", "svc", "svc.a.svc.cluster.local", &["10.0.1.1"]),
    );
    write(&dir, "gateway.yaml", GATEWAY);
    write(&dir, "routes.yaml", ROUTES);
    let control = start(config(Some(&dir), &ca)).await;

    // The gateway workload may run in any namespace (Istio's default selection).
    let mut gw = proxy(&control, "gw", "ingress-ns", "istio=ingress,zone=dmz");
    let s = gw
        .until("the two gateway tables", |s| {
            version(s, Kind::Route, "a/api@edge/ingress").is_some()
                && version(s, Kind::Route, "a/both@edge/ingress").is_some()
        })
        .await;
    assert_eq!(sorted(&gw), ["a/api@edge/ingress", "a/both@edge/ingress"]);
    let api: RouteTable = body(&s, Kind::Route, "a/api@edge/ingress").unwrap();
    // `other.example.org` matches no server host: dropped at this gateway.
    assert_eq!(api.hosts, ["api.gov.example"]);
    assert_eq!(api.gateways, ["edge/ingress"]);
    assert!(api.binds_gateway("edge/ingress") && !api.binds_mesh());
    // Port 80 with httpsRedirect serves `*.gov.example`: a 301-to-https route comes first. Port
    // 443 sets httpsRedirect too, but it is HTTPS: no redirect there (it would loop).
    assert_eq!(api.http.len(), 2);
    assert!(api.http[1].redirect.is_none() && api.http[1].matches.iter().all(|m| m.port.is_none()));
    assert_eq!(api.http[0].matches[0].port, Some(80));
    let redirect = api.http[0].redirect.as_ref().unwrap();
    assert_eq!(redirect.scheme.as_deref(), Some("https"));
    assert_eq!(redirect.redirect_code, 301);
    assert_eq!(
        api.http[1].destinations[0].destination.host,
        "svc.a.svc.cluster.local"
    );
    // The short host is qualified, then matched by the `a/*.svc.cluster.local` server host; port 80 does not
    // serve it, so no redirect route.
    let both: RouteTable = body(&s, Kind::Route, "a/both@edge/ingress").unwrap();
    assert_eq!(both.hosts, ["svc.a.svc.cluster.local"]);
    assert_eq!(both.gateways, ["edge/ingress"]);
    assert_eq!(both.http.len(), 1);
    // The gateway also gets the cluster its routes send to.
    assert!(
        gw.names(Kind::Cluster)
            .iter()
            .any(|c| c.ends_with("svc.a.svc.cluster.local"))
    );

    let mut sidecar = proxy(&control, "web", "a", "app=web");
    let s = sidecar
        .until("the mesh table", |s| {
            version(s, Kind::Route, "a/both").is_some()
        })
        .await;
    assert_eq!(sorted(&sidecar), ["a/both"]);
    let mesh: RouteTable = body(&s, Kind::Route, "a/both").unwrap();
    assert!(mesh.binds_mesh());
    assert_eq!(mesh.gateways, ["mesh", "edge/ingress"]);
    assert_eq!(mesh.hosts, ["svc.a.svc.cluster.local"]);

    // Labels that only partly match the selector: a sidecar.
    let mut other = proxy(&control, "other", "ingress-ns", "zone=dmz");
    other
        .until("the mesh table", |s| {
            version(s, Kind::Route, "a/both").is_some()
        })
        .await;
    assert_eq!(sorted(&other), ["a/both"]);
    control.shutdown().await;
}

#[tokio::test]
async fn seed_policy_32_is_served_once_its_gateway_exists() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    let seed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed-policies/policies-32-virtualservice-emergency-priority-routing.yaml"
    ))
    .unwrap();
    write(&dir, "policies-32.yaml", &seed);
    write(
        &dir,
        "svc.yaml",
        &service_entry(
            "emergency",
            "emergency-response-service",
            "emergency-response-service.emergency.svc.cluster.local",
            &["10.0.2.1"],
        ),
    );
    let control = start(config(Some(&dir), &ca)).await;
    let mut gw = proxy(&control, "gw", "emergency", "istio=emergency-gateway");
    gw.until("the service", |s| {
        !names(&s.applied, Kind::Cluster).is_empty()
    })
    .await;
    // No Gateway defines `emergency/emergency-gateway`: nothing is served, to anyone.
    assert!(gw.names(Kind::Route).is_empty());

    write(
        &dir,
        "gateway.yaml",
        include_str!("fixtures/gateway/emergency-gateway.yaml"),
    );
    let name = "emergency/emergency-priority-routing@emergency/emergency-gateway";
    let s = gw
        .until("the seed's table at its gateway", |s| {
            version(s, Kind::Route, name).is_some()
        })
        .await;
    let table: RouteTable = body(&s, Kind::Route, name).unwrap();
    // The VirtualService's `*` narrows to the server host.
    assert_eq!(table.hosts, ["emergency.gov.example"]);
    assert_eq!(table.http[0].name.as_deref(), Some("https-redirect-80"));
    let critical = &table.http[1];
    assert_eq!(
        critical.destinations[0].destination.host,
        "emergency-response-service.emergency.svc.cluster.local"
    );
    assert_eq!(
        critical.priority,
        jalin_xds::model::route::PriorityClass::Critical
    );
    let mut sidecar = proxy(&control, "web", "emergency", "app=web");
    sidecar
        .until("the service", |s| {
            !names(&s.applied, Kind::Cluster).is_empty()
        })
        .await;
    assert!(sidecar.names(Kind::Route).is_empty());
    control.shutdown().await;
}
