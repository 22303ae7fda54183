//! Per-proxy scoping and incremental pushes: a proxy gets only the policies that select it and
//! the services its Sidecar admits, DestinationRules are chosen per client namespace, and a
//! change to one service is pushed only to the proxies that see it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use control_support::*;
use jalin_xds::model::cluster::{Cluster, Endpoint};
use jalin_xds::model::traffic::LoadBalancer;
use jalin_xds::transport::Kind;
use jalin_xds::transport::server::ServerEvent;

#[tokio::test]
async fn a_proxy_gets_only_the_policies_that_select_it() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    let policies = [
        authz("a", "a-web", Some("web"), "p"),
        authz("a", "a-db", Some("db"), "p"),
        authz("a", "a-all", None, "p"),
        authz("b", "b-web", Some("web"), "p"),
        authz("b", "b-all", None, "p"),
        authz("istio-system", "mesh-web", Some("web"), "p"),
        authz("istio-system", "mesh-all", None, "p"),
    ]
    .join("---\n");
    write(&dir, "policies.yaml", &policies);
    let control = start(config(Some(&dir), &ca)).await;

    let mut web_a = proxy(&control, "web-a", "a", "app=web");
    let mut web_b = proxy(&control, "web-b", "b", "app=web");
    let mut db_a = proxy(&control, "db-a", "a", r#"{"app":"db"}"#);
    let has = |n: &'static str| {
        move |s: &jalin_xds::transport::ClientStatus| {
            version(s, Kind::AuthorizationPolicy, n).is_some()
        }
    };
    web_a.until("a/a-web", has("a/a-web")).await;
    web_b.until("b/b-web", has("b/b-web")).await;
    db_a.until("a/a-db", has("a/a-db")).await;
    let sorted = |p: &Proxy| {
        let mut n = p.names(Kind::AuthorizationPolicy);
        n.sort();
        n
    };
    assert_eq!(
        sorted(&web_a),
        [
            "a/a-all",
            "a/a-web",
            "istio-system/mesh-all",
            "istio-system/mesh-web"
        ]
    );
    assert_eq!(
        sorted(&web_b),
        [
            "b/b-all",
            "b/b-web",
            "istio-system/mesh-all",
            "istio-system/mesh-web"
        ]
    );
    assert_eq!(
        sorted(&db_a),
        ["a/a-all", "a/a-db", "istio-system/mesh-all"]
    );
    control.shutdown().await;
}

fn write_services(dir: &std::path::Path) {
    write(
        dir,
        "svc-a.yaml",
        &service_entry("a", "svc-a", "svc.a.svc.cluster.local", &["10.0.1.1"]),
    );
    write(
        dir,
        "svc-b.yaml",
        &service_entry("b", "svc-b", "svc.b.svc.cluster.local", &["10.0.2.1"]),
    );
    // Proxies in `a` see only their namespace's services; proxies in `b` see everything.
    write(dir, "sidecar-a.yaml", &sidecar("a", &["./*"]));
    write(dir, "mesh.yaml", &authz("istio-system", "mesh", None, "p"));
}

const CLUSTER_A: &str = "outbound|80||svc.a.svc.cluster.local";
const CLUSTER_B: &str = "outbound|80||svc.b.svc.cluster.local";

#[tokio::test]
async fn a_change_to_one_service_is_pushed_only_to_the_proxies_that_see_it() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write_services(&dir);
    let control = start(config(Some(&dir), &ca)).await;
    let mut in_a = proxy(&control, "in-a", "a", "app=x");
    let mut in_b = proxy(&control, "in-b", "b", "app=x");
    in_a.until("svc-a", |s| {
        version(s, Kind::Endpoints, CLUSTER_A).is_some()
    })
    .await;
    in_b.until("svc-a and svc-b", |s| {
        version(s, Kind::Endpoints, CLUSTER_A).is_some()
            && version(s, Kind::Endpoints, CLUSTER_B).is_some()
    })
    .await;
    assert_eq!(
        in_a.names(Kind::Cluster),
        [CLUSTER_A],
        "the Sidecar of `a` admits only `a`'s services"
    );

    // svc-b gains an endpoint: only `in-b` sees svc-b.
    let mut events = control.xds.events();
    let b_before = version(&in_b.status.borrow(), Kind::Endpoints, CLUSTER_B).unwrap();
    write(
        &dir,
        "svc-b.yaml",
        &service_entry(
            "b",
            "svc-b",
            "svc.b.svc.cluster.local",
            &["10.0.2.1", "10.0.2.2"],
        ),
    );
    let s = in_b
        .until("svc-b's new endpoint", |s| {
            version(s, Kind::Endpoints, CLUSTER_B).is_some_and(|v| v != b_before)
        })
        .await;
    let eps: Vec<Endpoint> = body(&s, Kind::Endpoints, CLUSTER_B).unwrap();
    assert_eq!(eps.len(), 2);
    // A barrier every proxy sees: once `in-a` has applied it, every push caused by the first change
    // has been sent.
    let mesh_before = version(
        &in_a.status.borrow(),
        Kind::AuthorizationPolicy,
        "istio-system/mesh",
    )
    .unwrap();
    write(&dir, "mesh.yaml", &authz("istio-system", "mesh", None, "q"));
    in_a.until("the barrier", |s| {
        version(s, Kind::AuthorizationPolicy, "istio-system/mesh").is_some_and(|v| v != mesh_before)
    })
    .await;
    // Collect pushes until both `in-a`'s barrier push and `in-b`'s endpoint push have been seen
    // (a stream reports a push just after sending it, so it may trail the client's ACK).
    let mut pushed_to_a: Vec<String> = Vec::new();
    let mut pushed_to_b: Vec<String> = Vec::new();
    while !(pushed_to_a.iter().any(|t| t == "AuthorizationPolicy")
        && pushed_to_b.iter().any(|t| t == "Endpoints"))
    {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("push events")
            .unwrap();
        if let ServerEvent::Pushed {
            node_id, type_url, ..
        } = ev
        {
            let short = type_url.rsplit('.').next().unwrap().to_owned();
            match node_id.as_str() {
                "in-a" => pushed_to_a.push(short),
                "in-b" => pushed_to_b.push(short),
                _ => {}
            }
        }
    }
    println!("pushes after the svc-b change: in-a {pushed_to_a:?}, in-b {pushed_to_b:?}");
    assert!(
        pushed_to_b.contains(&"Endpoints".to_owned()),
        "{pushed_to_b:?}"
    );
    assert_eq!(
        pushed_to_a,
        ["AuthorizationPolicy"],
        "in-a does not see svc-b; it got only the barrier"
    );
    control.shutdown().await;
}

#[tokio::test]
async fn destination_rules_are_chosen_per_client_namespace() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write(
        &dir,
        "svc.yaml",
        &service_entry(
            "prod",
            "reviews",
            "reviews.prod.svc.cluster.local",
            &["10.0.3.1"],
        ),
    );
    let dr = |ns: &str, lb: &str, subset: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: {ns}\nspec:\n  host: reviews.prod.svc.cluster.local\n  trafficPolicy:\n    loadBalancer:\n      simple: {lb}\n  subsets:\n  - name: {subset}\n    labels:\n      version: v1\n"
        )
    };
    write(&dir, "dr-prod.yaml", &dr("prod", "ROUND_ROBIN", "v1"));
    write(
        &dir,
        "dr-client.yaml",
        &dr("client", "LEAST_REQUEST", "stable"),
    );
    let control = start(config(Some(&dir), &ca)).await;
    let name = "outbound|80||reviews.prod.svc.cluster.local";
    let mut client_ns = proxy(&control, "c", "client", "app=c");
    let mut other_ns = proxy(&control, "o", "other", "app=o");
    let c = client_ns
        .until("reviews", |s| version(s, Kind::Cluster, name).is_some())
        .await;
    let o = other_ns
        .until("reviews", |s| version(s, Kind::Cluster, name).is_some())
        .await;
    let cc: Cluster = body(&c, Kind::Cluster, name).unwrap();
    let oc: Cluster = body(&o, Kind::Cluster, name).unwrap();
    assert!(
        matches!(oc.policy.load_balancer, LoadBalancer::RoundRobin),
        "{:?}",
        oc.policy.load_balancer
    );
    assert!(
        matches!(cc.policy.load_balancer, LoadBalancer::LeastRequest),
        "{:?}",
        cc.policy.load_balancer
    );
    // Subsets follow the chosen rule too.
    let mut cn = client_ns.names(Kind::Cluster);
    cn.sort();
    assert_eq!(
        cn,
        ["outbound|80|stable|reviews.prod.svc.cluster.local", name]
    );
    let mut on = other_ns.names(Kind::Cluster);
    on.sort();
    assert_eq!(on, ["outbound|80|v1|reviews.prod.svc.cluster.local", name]);
    let eps: Vec<Endpoint> = body(
        &c,
        Kind::Endpoints,
        "outbound|80|stable|reviews.prod.svc.cluster.local",
    )
    .unwrap();
    assert_eq!(eps.len(), 1);
    control.shutdown().await;
}

#[tokio::test]
async fn a_proxy_gets_the_clusters_its_routes_need_beyond_its_sidecar() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write_services(&dir);
    let control = start(config(Some(&dir), &ca)).await;
    let mut in_a = proxy(&control, "in-a", "a", "app=x");
    in_a.until("svc-a", |s| version(s, Kind::Cluster, CLUSTER_A).is_some())
        .await;
    assert_eq!(in_a.names(Kind::Cluster), [CLUSTER_A]);
    // A VirtualService for `a`'s host that sends part of the traffic to svc-b: proxies in `a`
    // now need svc-b's cluster although their Sidecar admits only `a`.
    write(
        &dir,
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc\n  namespace: a\nspec:\n  hosts: [svc]\n  http:\n  - route:\n    - destination:\n        host: svc.b.svc.cluster.local\n      weight: 10\n    - destination:\n        host: svc\n      weight: 90\n",
    );
    let s = in_a
        .until("the route table and svc-b's cluster", |s| {
            version(s, Kind::Route, "a/svc").is_some()
                && version(s, Kind::Cluster, CLUSTER_B).is_some()
        })
        .await;
    // The table's hosts and destinations arrive fully qualified.
    let table: jalin_xds::model::route::RouteTable = body(&s, Kind::Route, "a/svc").unwrap();
    assert_eq!(table.hosts, ["svc.a.svc.cluster.local"]);
    let dests: Vec<&str> = table.http[0]
        .destinations
        .iter()
        .map(|d| d.destination.host.as_str())
        .collect();
    assert_eq!(
        dests,
        ["svc.b.svc.cluster.local", "svc.a.svc.cluster.local"]
    );
    let mut names = in_a.names(Kind::Cluster);
    names.sort();
    assert_eq!(names, [CLUSTER_A, CLUSTER_B]);
    control.shutdown().await;
}
