//! End to end over the real CA: workload identities issued through [`GrpcCertificateSource`]
//! bootstrap with a join token or a Kubernetes token file, then renew by presenting their
//! certificate, rotating several times under continuous mTLS traffic with zero failed requests;
//! a join token is refused once spent; the CA's own serving certificate renews itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_grpc_support;
mod ca_tls_support;

use std::sync::Arc;
use std::time::Duration;

use ca_grpc_support::*;
use ca_tls_support::{
    AbortOnDrop, serial_of_der as serial_hex, spawn_server, traffic_across_rotations,
};
use jalin_ca::identity::Bootstrap;
use jalin_ca::issue::{TtlPolicy, new_workload_csr};
use jalin_ca::server::client::{CaEndpoint, ClientAuth, ClientError, request_certificate};
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{OutboundTls, PortMtlsMode, TlsPolicy, server_config};
use rustls_pki_types::ServerName;

/// Workload certificate lifetime: renewal at half life (from receipt) leaves every presented
/// certificate about 3 s of validity, ample for a handshake on a loaded 2-core machine.
const ROTATION_TTL_SECS: u64 = 6;

fn short_ttl() -> TtlPolicy {
    TtlPolicy {
        default_ttl: Duration::from_secs(3600),
        max_ttl: Duration::from_secs(24 * 3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_identities_bootstrap_then_renew_by_certificate_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, audit) = init_dev_ca(dir.path(), short_ttl());
    let root = ca.roots().to_vec();
    let ca = run_ca(ca, Duration::from_secs(3600)).await;

    // The server workload bootstraps with a join token; the client with a Kubernetes token
    // read from a file (re-read on each bootstrap, as the kubelet rotates it).
    let server_id = SpiffeId::new_workload(TD, "mesh", "server").unwrap();
    let client_id = SpiffeId::new_workload(TD, "mesh", "client").unwrap();
    let token = ca.join_token(&server_id);
    let token_file = dir.path().join("sa-token");
    std::fs::write(&token_file, format!("{K8S_TOKEN}\n")).unwrap();
    let server_trust = trust(root.clone());
    let client_trust = trust(root.clone());
    let server_identity = grpc_identity(
        &ca,
        server_id.clone(),
        Bootstrap::JoinToken(token.clone()),
        ROTATION_TTL_SECS,
        server_trust.clone(),
    );
    let client_identity = grpc_identity(
        &ca,
        client_id.clone(),
        Bootstrap::KubernetesTokenFile(token_file),
        ROTATION_TTL_SECS,
        client_trust.clone(),
    );
    let rotations = server_identity.subscribe();
    let _server_task = AbortOnDrop(server_identity.spawn());
    let _client_task = AbortOnDrop(client_identity.spawn());
    let first = server_identity.ready().await;
    client_identity.ready().await;

    let policy = TlsPolicy::DEFAULT;
    let scfg = server_config(&policy, server_trust, server_identity.server_resolver()).unwrap();
    let server = spawn_server(scfg, PortMtlsMode::Strict).await;
    let outbound = OutboundTls::new(policy, client_trust, client_identity.client_resolver());
    let ccfg = outbound.config_for(&server_id).unwrap();

    let report = traffic_across_rotations(
        ccfg,
        server.addr,
        client_id.to_string(),
        rotations,
        first.serial_hex.clone(),
        4,
        Duration::from_secs(120),
    )
    .await;
    report.assert_rotated_without_failures();

    // The audit log: the server got its first certificate with the join token, and every
    // later one by presenting its certificate; the client bootstrapped with its k8s token.
    let issued: Vec<_> = audit
        .events()
        .into_iter()
        .filter(|e| e["event"] == "certificate_issued")
        .collect();
    let methods_for = |id: &SpiffeId| -> Vec<String> {
        issued
            .iter()
            .filter(|e| e["spiffe_id"] == id.to_string())
            .map(|e| e["auth_method"].as_str().unwrap().to_owned())
            .collect()
    };
    let server_methods = methods_for(&server_id);
    assert_eq!(server_methods[0], "join_token", "{server_methods:?}");
    assert!(server_methods.len() >= 4, "{server_methods:?}");
    assert!(
        server_methods[1..]
            .iter()
            .all(|m| m == "workload_certificate"),
        "{server_methods:?}"
    );
    let client_methods = methods_for(&client_id);
    assert_eq!(client_methods[0], "kubernetes_token", "{client_methods:?}");
    assert!(
        client_methods[1..]
            .iter()
            .all(|m| m == "workload_certificate"),
        "{client_methods:?}"
    );

    // The spent join token is refused, and the refusal is audited.
    let endpoint = CaEndpoint {
        address: ca.address(),
        server_name: CA_DNS.into(),
        trust_bundle_pem: ca.ca.roots_pem(),
        timeout: Duration::from_secs(10),
    };
    let (csr, _key) = new_workload_csr(&server_id).unwrap();
    match request_certificate(&endpoint, &ClientAuth::JoinToken(token), &csr, 0).await {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, tonic::Code::Unauthenticated, "{message}");
            assert!(message.contains("already used"), "{message}");
        }
        other => panic!("reused join token accepted: {other:?}"),
    }
    assert!(
        audit
            .events()
            .iter()
            .any(|e| e["event"] == "certificate_refused" && e["reason_code"] == "join_token_reused"),
        "{}",
        audit.text()
    );
}

/// Connects to the CA with WebPKI verification of its DNS name and returns the serving
/// certificate's serial.
async fn ca_serving_serial(ca: &RunningCa) -> String {
    let mut roots = rustls::RootCertStore::empty();
    for r in ca.ca.roots() {
        roots.add(r.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(TlsPolicy::DEFAULT.shared_provider())
        .with_protocol_versions(TlsPolicy::DEFAULT.versions())
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(ca.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(CA_DNS).unwrap(), tcp)
        .await
        .unwrap();
    serial_hex(&tls.get_ref().1.peer_certificates().unwrap()[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_serving_certificate_renews_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, audit) = init_dev_ca(dir.path(), short_ttl());
    let ca = run_ca(ca, Duration::from_secs(4)).await;
    let mut rotations = ca.identity.subscribe();
    let first = rotations.borrow_and_update().clone().unwrap();
    assert_eq!(ca_serving_serial(&ca).await, first.serial_hex);

    let next = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            rotations.changed().await.unwrap();
            let info = rotations.borrow_and_update().clone().unwrap();
            if info.serial_hex != first.serial_hex {
                return info;
            }
        }
    })
    .await
    .expect("the CA renewed its serving certificate within 60 s");
    assert!(next.generation >= 2);
    let seen = ca_serving_serial(&ca).await;
    let current = ca.identity.current().unwrap();
    assert_ne!(
        seen, first.serial_hex,
        "a new client still sees the first certificate"
    );
    assert!(
        seen == next.serial_hex || current.generation > next.generation,
        "client saw {seen}, installed {next:?}"
    );

    // The renewed server still issues, and its own issuances are audited as such.
    let id = SpiffeId::new_workload(TD, "bm", "host-1").unwrap();
    let endpoint = CaEndpoint {
        address: ca.address(),
        server_name: CA_DNS.into(),
        trust_bundle_pem: ca.ca.roots_pem(),
        timeout: Duration::from_secs(10),
    };
    let (csr, _key) = new_workload_csr(&id).unwrap();
    let issued = request_certificate(
        &endpoint,
        &ClientAuth::JoinToken(ca.join_token(&id)),
        &csr,
        0,
    )
    .await
    .unwrap();
    assert_eq!(issued.spiffe_id, id.to_string());
    let self_issued = audit
        .events()
        .iter()
        .filter(|e| e["event"] == "certificate_issued" && e["auth_method"] == "ca_self")
        .count();
    assert!(self_issued >= 2, "{}", audit.text());
}
