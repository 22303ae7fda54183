//! `jalin control --kubernetes` against the fake API server: a Service, EndpointSlice, Pod and
//! AuthorizationPolicy added, changed and deleted reach a proxy; an invalid AuthorizationPolicy is
//! rejected with its `k8s://` origin while the last good one stays in force; a restarted watch
//! keeps the proxy in sync.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;
mod k8s_support;

use control_support::*;
use jalin_control::k8s::ResourceKind;
use jalin_control::k8s::fake::FakeApiServer;
use jalin_xds::model::authz::AuthorizationPolicy;
use jalin_xds::model::cluster::{Cluster, Endpoint};
use jalin_xds::transport::Kind;
use serde_json::json;

const CLUSTER: &str = "outbound|80||web.ns.svc.cluster.local";

fn addrs(eps: &[Endpoint]) -> Vec<String> {
    let mut v: Vec<String> = eps.iter().map(|e| e.address.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn services_slices_and_policies_from_kubernetes_reach_a_proxy() {
    let Sandbox { tmp: _tmp, ca, .. } = sandbox();
    let fake = FakeApiServer::start().await.unwrap();
    let mut cfg = config(None, &ca);
    cfg.kube_client = Some(fake.client().unwrap());
    let control = start(cfg).await;
    let mut p = proxy(&control, "case-api-1", "ns", "app=case-api");

    // Added.
    fake.apply(&k8s_support::service("ns", "web", &[("http", 80)]))
        .unwrap();
    fake.apply(&k8s_support::pod(
        "ns", "web-1", "web", "web-sa", "10.1.0.1",
    ))
    .unwrap();
    fake.apply(&k8s_support::slice(
        "ns",
        "web-abc",
        "web",
        &[("web-1", "10.1.0.1", true)],
    ))
    .unwrap();
    fake.apply(&k8s_support::authorization_policy(
        "ns",
        "allow",
        &["cluster.local/ns/a/sa/x"],
    ))
    .unwrap();
    let s = p
        .until("the service's cluster, its endpoint and the policy", |s| {
            body::<Cluster>(s, Kind::Cluster, CLUSTER).is_some()
                && body::<Vec<Endpoint>>(s, Kind::Endpoints, CLUSTER).is_some_and(|e| e.len() == 1)
                && version(s, Kind::AuthorizationPolicy, "ns/allow").is_some()
        })
        .await;
    let cluster: Cluster = body(&s, Kind::Cluster, CLUSTER).unwrap();
    assert_eq!(cluster.addresses, ["10.96.0.20:80".parse().unwrap()]);
    let eps: Vec<Endpoint> = body(&s, Kind::Endpoints, CLUSTER).unwrap();
    assert_eq!(addrs(&eps), ["10.1.0.1:8080"]);
    assert_eq!(
        eps[0].labels.get("version").map(String::as_str),
        Some("v1"),
        "pod labels for subsets"
    );
    assert_eq!(
        eps[0]
            .labels
            .get("jalin.io/service-account")
            .map(String::as_str),
        Some("web-sa")
    );
    let v_allow = version(&s, Kind::AuthorizationPolicy, "ns/allow").unwrap();

    // Changed.
    fake.apply(&k8s_support::pod(
        "ns", "web-2", "web", "web-sa", "10.1.0.2",
    ))
    .unwrap();
    fake.apply(&k8s_support::slice(
        "ns",
        "web-abc",
        "web",
        &[("web-1", "10.1.0.1", true), ("web-2", "10.1.0.2", true)],
    ))
    .unwrap();
    fake.apply(&k8s_support::authorization_policy(
        "ns",
        "allow",
        &["cluster.local/ns/b/sa/y"],
    ))
    .unwrap();
    let s = p
        .until("two endpoints and the changed policy", |s| {
            body::<Vec<Endpoint>>(s, Kind::Endpoints, CLUSTER).is_some_and(|e| e.len() == 2)
                && version(s, Kind::AuthorizationPolicy, "ns/allow").is_some_and(|v| v != v_allow)
        })
        .await;
    let ap: AuthorizationPolicy = body(&s, Kind::AuthorizationPolicy, "ns/allow").unwrap();
    assert_eq!(ap.rules[0].from[0].principals, ["cluster.local/ns/b/sa/y"]);
    let v_good = version(&s, Kind::AuthorizationPolicy, "ns/allow").unwrap();

    // An invalid change is rejected with its origin; the last good policy stays in force.
    let mut progress = control.progress();
    let mut bad = k8s_support::authorization_policy("ns", "allow", &["cluster.local/ns/c/sa/z"]);
    bad["spec"]["action"] = json!("PERMIT_ALL");
    fake.apply(&bad).unwrap();
    tokio::time::timeout(WAIT, progress.wait_for(|p| p.rejected_total >= 1))
        .await
        .unwrap()
        .unwrap();
    let (_, debug) = http_get(control.health_addr, "/debug/config").await;
    let debug: serde_json::Value = serde_json::from_str(&debug).unwrap();
    let reasons = debug["rejected"][0]["reasons"].to_string();
    assert!(
        reasons.contains("k8s://AuthorizationPolicy/ns/allow@"),
        "{reasons}"
    );
    assert!(reasons.contains("spec.action"), "{reasons}");
    assert_eq!(
        version(&p.status.borrow(), Kind::AuthorizationPolicy, "ns/allow").as_deref(),
        Some(v_good.as_str())
    );

    // The watches restart; later changes still arrive.
    let served = fake.watches_served();
    fake.close_watches();
    fake.wait_watches_served(served + 1).await;
    fake.apply(&k8s_support::slice(
        "ns",
        "web-abc",
        "web",
        &[("web-2", "10.1.0.2", true)],
    ))
    .unwrap();
    let s = p
        .until("one endpoint after the watch restart", |s| {
            body::<Vec<Endpoint>>(s, Kind::Endpoints, CLUSTER).is_some_and(|e| e.len() == 1)
        })
        .await;
    assert_eq!(
        addrs(&body::<Vec<Endpoint>>(&s, Kind::Endpoints, CLUSTER).unwrap()),
        ["10.1.0.2:8080"]
    );

    // Deleted.
    fake.delete(ResourceKind::AuthorizationPolicy, "ns", "allow")
        .unwrap();
    fake.delete(ResourceKind::EndpointSlice, "ns", "web-abc")
        .unwrap();
    p.until("the policy removed and no endpoints", |s| {
        version(s, Kind::AuthorizationPolicy, "ns/allow").is_none()
            && body::<Vec<Endpoint>>(s, Kind::Endpoints, CLUSTER).is_some_and(|e| e.is_empty())
    })
    .await;
    fake.delete(ResourceKind::Service, "ns", "web").unwrap();
    p.until("the service removed", |s| {
        version(s, Kind::Cluster, CLUSTER).is_none()
    })
    .await;
    control.shutdown().await;
}
