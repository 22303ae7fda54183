//! Scoping bound to the verified peer identity: over mTLS a proxy's namespace and service account
//! come from its certificate's SPIFFE ID. A proxy whose node metadata claims another namespace or
//! service account is refused with `PERMISSION_DENIED` (and counted); an honest one receives only
//! its namespace's (and the root namespace's) policies; `--insecure-xds` trusts metadata only on
//! plaintext streams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use control_support::*;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use jalin_ca::issue::WorkloadCa;
use jalin_xds::transport::{Kind, NodeInfo};
use tonic::transport::{ClientTlsConfig, Endpoint};

fn write_policies(dir: &std::path::Path) {
    let policies = [
        authz("a", "a-all", None, "p"),
        authz("b", "b-all", None, "p"),
        authz("b", "b-web", Some("web"), "p"),
        authz("istio-system", "mesh-all", None, "p"),
    ]
    .join("---\n");
    write(dir, "policies.yaml", &policies);
}

fn metadata(ns: Option<&str>, sa: Option<&str>, labels: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(ns) = ns {
        m.insert("NAMESPACE".to_owned(), ns.to_owned());
    }
    if let Some(sa) = sa {
        m.insert("SERVICE_ACCOUNT".to_owned(), sa.to_owned());
    }
    m.insert("LABELS".to_owned(), labels.to_owned());
    m
}

/// Opens one SotW ADS stream with a raw Envoy client, sends the first request with `metadata`, and
/// returns the stream's first answer: a response's type URL, or the status it ended with.
async fn first_answer(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
    id: &str,
    metadata: BTreeMap<String, String>,
) -> Result<String, tonic::Status> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}")).unwrap();
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).unwrap();
    }
    let channel = endpoint.connect().await.unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let node = NodeInfo {
        id: id.to_owned(),
        cluster: "test".into(),
        metadata,
    };
    let request = DiscoveryRequest {
        node: Some(node.to_node()),
        type_url: Kind::AuthorizationPolicy.type_url().to_owned(),
        ..DiscoveryRequest::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(request).await.unwrap();
    let answer = async {
        let mut responses = client
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        match responses.message().await? {
            Some(r) => Ok(r.type_url),
            None => Err(tonic::Status::unknown("stream ended without an answer")),
        }
    };
    let out = tokio::time::timeout(WAIT, answer)
        .await
        .expect("an answer from the control plane");
    drop(tx);
    out
}

fn refused_total(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("jalin_control_xds_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn ca_of(control: &jalin_control::server::Control) -> &WorkloadCa {
    control.ca.as_ref().unwrap()
}

#[tokio::test]
async fn a_proxy_claiming_another_namespace_is_refused_and_an_honest_one_sees_only_its_own() {
    let Sandbox {
        tmp: _tmp,
        ca: ca_dir,
        dir,
    } = sandbox();
    write_policies(&dir);
    let control = start(config(Some(&dir), &ca_dir)).await;
    let ca = ca_of(&control);

    // Honest: certificate for a/default, metadata says a/default.
    let mut honest = proxy_with(
        Some(workload_tls(ca, "a", "default")),
        control.xds_addr,
        "honest",
        metadata(Some("a"), Some("default"), "app=web"),
    );
    honest
        .until("a's policy", |s| {
            version(s, Kind::AuthorizationPolicy, "a/a-all").is_some()
        })
        .await;
    let mut names = honest.names(Kind::AuthorizationPolicy);
    names.sort();
    assert_eq!(names, ["a/a-all", "istio-system/mesh-all"]);

    // Lying about the namespace: the certificate says `a`, the metadata `b` (whose `b-web` policy
    // would select it). The stream is refused with PERMISSION_DENIED naming both.
    let (_, before) = http_get(control.health_addr, "/metrics").await;
    let refused = first_answer(
        control.xds_addr,
        Some(workload_tls(ca, "a", "default")),
        "liar",
        metadata(Some("b"), Some("default"), "app=web"),
    )
    .await
    .expect_err("a stream claiming another namespace is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let msg = refused.message();
    assert!(msg.contains("NAMESPACE \"b\""), "{msg}");
    assert!(msg.contains("says \"a\""), "{msg}");
    assert!(
        msg.contains("spiffe://cluster.local/ns/a/sa/default"),
        "{msg}"
    );

    // Lying about the service account.
    let refused = first_answer(
        control.xds_addr,
        Some(workload_tls(ca, "a", "default")),
        "liar-sa",
        metadata(Some("a"), Some("admin"), "app=web"),
    )
    .await
    .expect_err("a stream claiming another service account is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("SERVICE_ACCOUNT \"admin\""),
        "{}",
        refused.message()
    );

    // The same lie through the CA port's ADS (client certificates optional there) is refused too.
    let ca_addr = control.ca_addr.unwrap();
    let refused = first_answer(
        ca_addr,
        Some(workload_tls(ca, "a", "default")),
        "liar-ca-port",
        metadata(Some("b"), None, "app=web"),
    )
    .await
    .expect_err("refused on the CA port as well");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);

    // Counted by reason. The recorder is process-wide and the other test of this binary refuses
    // streams too, so the counts grew by at least this test's refusals.
    let (_, after) = http_get(control.health_addr, "/metrics").await;
    assert!(
        refused_total(&after, "namespace") >= refused_total(&before, "namespace") + 2,
        "{after}"
    );
    assert!(
        refused_total(&after, "service_account") > refused_total(&before, "service_account"),
        "{after}"
    );

    // A proxy that does not say its namespace is scoped by its certificate's.
    let mut quiet = proxy_with(
        Some(workload_tls(ca, "b", "default")),
        control.xds_addr,
        "quiet",
        metadata(None, None, "app=web"),
    );
    quiet
        .until("b's policies", |s| {
            version(s, Kind::AuthorizationPolicy, "b/b-web").is_some()
        })
        .await;
    let mut names = quiet.names(Kind::AuthorizationPolicy);
    names.sort();
    assert_eq!(names, ["b/b-all", "b/b-web", "istio-system/mesh-all"]);

    // The honest proxy stayed served and never saw b's policies.
    assert!(honest.status.borrow().connected);
    assert_eq!(honest.names(Kind::AuthorizationPolicy).len(), 2);
    control.shutdown().await;
}

#[tokio::test]
async fn insecure_xds_trusts_metadata_only_on_plaintext_streams() {
    let Sandbox {
        tmp: _tmp,
        ca: ca_dir,
        dir,
    } = sandbox();
    write_policies(&dir);
    let mut cfg = config(Some(&dir), &ca_dir);
    cfg.insecure_xds = true;
    let control = start(cfg).await;

    // Plaintext: metadata is all there is, and it is believed.
    let mut plain = proxy_with(
        None,
        control.xds_addr,
        "plain",
        metadata(Some("b"), None, "app=web"),
    );
    plain
        .until("b's policies", |s| {
            version(s, Kind::AuthorizationPolicy, "b/b-web").is_some()
        })
        .await;

    // With a certificate (the CA port's ADS), the certificate still decides.
    let refused = first_answer(
        control.ca_addr.unwrap(),
        Some(workload_tls(ca_of(&control), "a", "default")),
        "liar",
        metadata(Some("b"), None, "app=web"),
    )
    .await
    .expect_err("a certificate still binds the namespace");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let ok = first_answer(
        control.ca_addr.unwrap(),
        Some(workload_tls(ca_of(&control), "a", "default")),
        "honest",
        metadata(Some("a"), None, "app=web"),
    )
    .await
    .unwrap();
    assert_eq!(ok, Kind::AuthorizationPolicy.type_url());
    control.shutdown().await;
}
