//! `jalin control` with a watched directory: edits reach subscribed proxies, invalid edits are
//! rejected whole while proxies keep the last good configuration, a restarted control plane
//! resyncs its proxies, and a restarted proxy receives the full state.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use std::time::Instant;

use control_support::*;
use jalin_control::server::Control;
use jalin_xds::model::authz::AuthorizationPolicy;
use jalin_xds::transport::Kind;

#[tokio::test]
async fn policy_edit_reaches_clients_and_invalid_edit_is_rejected_whole() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write(
        &dir,
        "a.yaml",
        &authz(
            "a",
            "allow-web",
            Some("web"),
            "cluster.local/ns/b/sa/client",
        ),
    );
    let control = start(config(Some(&dir), &ca)).await;
    let (code, _) = http_get(control.health_addr, "/ready").await;
    assert_eq!(code, 200);

    let mut p = proxy(&control, "web-1", "a", "app=web");
    let first = p
        .until("the policy and the trust bundle", |s| {
            version(s, Kind::AuthorizationPolicy, "a/allow-web").is_some()
                && version(s, Kind::TrustBundle, "cluster.local").is_some()
        })
        .await;
    let v1 = version(&first, Kind::AuthorizationPolicy, "a/allow-web").unwrap();

    // A valid edit: the principal changes.
    let written = Instant::now();
    write(
        &dir,
        "a.yaml",
        &authz(
            "a",
            "allow-web",
            Some("web"),
            "cluster.local/ns/c/sa/client",
        ),
    );
    let second = p
        .until("the edited policy", |s| {
            version(s, Kind::AuthorizationPolicy, "a/allow-web").is_some_and(|v| v != v1)
        })
        .await;
    println!(
        "policy edit: file written -> proxy applied in {:?}",
        written.elapsed()
    );
    let policy: AuthorizationPolicy =
        body(&second, Kind::AuthorizationPolicy, "a/allow-web").unwrap();
    assert_eq!(
        policy.rules[0].from[0].principals,
        ["cluster.local/ns/c/sa/client"]
    );
    let v2 = version(&second, Kind::AuthorizationPolicy, "a/allow-web").unwrap();
    let applies = second.applies;

    // An invalid edit next to a valid change, written at once: the whole update is rejected.
    let mut progress = control.progress();
    let valid = authz(
        "a",
        "allow-web",
        Some("web"),
        "cluster.local/ns/d/sa/client",
    );
    let broken = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: broken\n  namespace: a\nspec:\n  action: PERMIT_ALL\n";
    write(&dir, "a.yaml", &format!("{valid}---\n{broken}"));
    let p2 = tokio::time::timeout(WAIT, progress.wait_for(|p| p.rejected_total >= 1))
        .await
        .unwrap()
        .unwrap()
        .to_owned();
    assert_eq!(p2.rejected_total, 1);
    let (code, debug) = http_get(control.health_addr, "/debug/config").await;
    assert_eq!(code, 200);
    let debug: serde_json::Value = serde_json::from_str(&debug).unwrap();
    let reasons = debug["rejected"][0]["reasons"].to_string();
    assert!(reasons.contains("a.yaml:22"), "no file:line in {reasons}");
    assert!(
        reasons.contains("AuthorizationPolicy/a/broken"),
        "{reasons}"
    );
    assert!(reasons.contains("spec.action"), "{reasons}");
    assert_eq!(debug["rejected_total"], 1);
    // The proxy keeps the last good version: the valid half of the rejected update is not in force.
    let now = p.status.borrow().clone();
    assert_eq!(
        version(&now, Kind::AuthorizationPolicy, "a/allow-web").as_deref(),
        Some(v2.as_str())
    );
    assert_eq!(now.applies, applies);
    assert!(
        !p.names(Kind::AuthorizationPolicy)
            .contains(&"a/broken".to_owned())
    );
    let (_, metrics) = http_get(control.health_addr, "/metrics").await;
    assert!(
        metrics.contains("jalin_control_config_rejected_total"),
        "{metrics}"
    );

    // Fixing the file lets the next update through.
    write(&dir, "a.yaml", &valid);
    let fixed = p
        .until("the update after the fix", |s| {
            version(s, Kind::AuthorizationPolicy, "a/allow-web").is_some_and(|v| v != v2)
        })
        .await;
    let policy: AuthorizationPolicy =
        body(&fixed, Kind::AuthorizationPolicy, "a/allow-web").unwrap();
    assert_eq!(
        policy.rules[0].from[0].principals,
        ["cluster.local/ns/d/sa/client"]
    );
    control.shutdown().await;
}

#[tokio::test]
async fn restarted_control_plane_resyncs_and_restarted_proxy_gets_full_state() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write(
        &dir,
        "a.yaml",
        &authz("a", "p1", None, "cluster.local/ns/b/sa/x"),
    );
    write(
        &dir,
        "se.yaml",
        &service_entry("a", "db", "db.a.svc.cluster.local", &["10.0.0.1"]),
    );
    let control = start(config(Some(&dir), &ca)).await;
    let mut p = proxy(&control, "web-1", "a", "app=web");
    let full = p
        .until("policy, cluster and endpoints", |s| {
            version(s, Kind::AuthorizationPolicy, "a/p1").is_some()
                && version(s, Kind::Endpoints, "outbound|80||db.a.svc.cluster.local").is_some()
        })
        .await;

    // A proxy restart (same node id, new stream) receives the whole state at once.
    drop(p);
    let mut again = proxy(&control, "web-1", "a", "app=web");
    let restarted = again
        .until("the full state", |s| s.applied.len() == full.applied.len())
        .await;
    assert_eq!(restarted.applied.versions(), full.applied.versions());

    // The control plane stops; the proxy keeps its configuration.
    let xds_addr = control.xds_addr;
    let mut cfg = config(Some(&dir), &ca);
    cfg.xds_listen = xds_addr;
    let ca_handle = control.ca.clone();
    control.shutdown().await;
    again.until("the disconnect", |s| !s.connected).await;
    assert_eq!(
        again.status.borrow().applied.versions(),
        full.applied.versions()
    );

    // The configuration changes while it is down; the restarted control plane (same address,
    // same CA) resyncs the proxy.
    write(
        &dir,
        "a.yaml",
        &authz("a", "p1", None, "cluster.local/ns/c/sa/x"),
    );
    let restarted_cp: Control = start(cfg).await;
    assert!(ca_handle.is_some());
    let v_old = version(&full, Kind::AuthorizationPolicy, "a/p1").unwrap();
    let s = again
        .until("the resync after the restart", |s| {
            s.connected && version(s, Kind::AuthorizationPolicy, "a/p1").is_some_and(|v| v != v_old)
        })
        .await;
    assert!(s.streams >= 2);
    restarted_cp.shutdown().await;
}

#[tokio::test]
async fn seed_directory_is_served_with_the_unknown_condition_imported_fail_closed() {
    let Sandbox { tmp: _tmp, ca, .. } = sandbox();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-policies");
    assert!(dir.is_dir(), "seed policies not found at {}", dir.display());
    let control = start(config(Some(&dir), &ca)).await;
    let (_, debug) = http_get(control.health_addr, "/debug/config").await;
    let debug: serde_json::Value = serde_json::from_str(&debug).unwrap();
    // The control plane serves what `jalin import` accepts: compliance-03's `custom.case_active`
    // is not an Istio attribute, so that rule is imported fail-closed (it never grants access)
    // instead of rejecting the whole directory. Nothing is rejected and a version is in force.
    assert_eq!(debug["rejected_total"], 0, "{debug:#}");
    assert_eq!(debug["accepted_version"], 1, "{debug:#}");
    control.shutdown().await;
}

#[tokio::test]
async fn ads_on_the_ca_port_requires_a_workload_certificate() {
    use jalin_xds::transport::{AppliedConfig, ClientConfig, NodeInfo, XdsClient};
    use tonic::transport::{Certificate, ClientTlsConfig};

    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write(
        &dir,
        "a.yaml",
        &authz("a", "p", None, "cluster.local/ns/b/sa/x"),
    );
    let control = start(config(Some(&dir), &ca)).await;
    let ca_addr = control.ca_addr.unwrap();

    // With a workload certificate: ADS answers on the CA port too (the mesh config's address).
    let mut p = proxy_at(
        control.ca.as_ref().unwrap(),
        ca_addr,
        "web-1",
        "a",
        "app=web",
    );
    p.until("the policy over the CA port", |s| {
        version(s, Kind::AuthorizationPolicy, "a/p").is_some()
    })
    .await;

    // Without one: refused, with a message that says what to present.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            control.ca.as_ref().unwrap().roots_pem(),
        ))
        .domain_name(SERVER_NAME);
    let anon = XdsClient::connect(
        &format!("https://{ca_addr}"),
        Some(tls),
        ClientConfig::new(NodeInfo {
            id: "anon".into(),
            ..NodeInfo::default()
        }),
        |_: &AppliedConfig| Ok::<(), String>(()),
    )
    .unwrap();
    let mut status = anon.status();
    let s = tokio::time::timeout(WAIT, status.wait_for(|s| s.last_disconnect.is_some()))
        .await
        .unwrap()
        .unwrap()
        .clone();
    let why = s.last_disconnect.unwrap();
    assert!(why.contains("workload certificate"), "{why}");
    assert!(s.applied.is_empty());
    control.shutdown().await;
}
