//! Root rotation through the real CA: the CA answers every issuance with its whole root bundle
//! and workload identities install it. The mesh intermediate moves from agency root A to root B
//! (the CA restarts at the same address with the new chain); a workload still holding an
//! A-issued certificate and one holding a B-issued certificate keep talking to each other
//! during the overlap, in both directions, while a peer that trusts only B does not accept the
//! A-issued one; the A-issued workload then renews to B by presenting its A certificate. When
//! root A is dropped too early, a Kubernetes workload re-bootstraps with its token and a
//! join-token workload cannot.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;
mod ca_grpc_support;
mod ca_tls_support;

use std::time::{Duration, SystemTime};

use ca_core_support::{ca_params, der, intermediate, root};
use ca_grpc_support::*;
use ca_tls_support::{AbortOnDrop, ServerEvent, connect, http_get, spawn_server};
use jalin_ca::identity::{Bootstrap, WorkloadIdentity};
use jalin_ca::issue::{AuditBuffer, AuditLog, TtlPolicy, WorkloadCa};
use jalin_ca::signer::CaSigner;
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{PortMtlsMode, RefusalReason, TlsPolicy, client_config, server_config};
use rcgen::{CertifiedIssuer, KeyPair};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Long enough that no renewal happens unless the test asks for one.
const LONG: Duration = Duration::from_secs(3600);

fn mesh_ca(
    inter: &CertifiedIssuer<'static, KeyPair>,
    roots: &[CertificateDer<'static>],
) -> (WorkloadCa, AuditBuffer) {
    let (log, audit) = AuditLog::in_memory();
    let ca = WorkloadCa::new(
        TD,
        vec![der(inter)],
        roots.to_vec(),
        CaSigner::from_pkcs8_pem(&inter.key().serialize_pem()).unwrap(),
        TtlPolicy::default(),
        log,
        SystemTime::now(),
    )
    .unwrap();
    (ca, audit)
}

/// The issuer of the identity's installed certificate.
fn issuer(identity: &WorkloadIdentity) -> String {
    let current = identity
        .client_resolver()
        .resolve(&[], &[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    let (_, cert) = X509Certificate::from_der(current.end_entity_cert().unwrap()).unwrap();
    cert.issuer().to_string()
}

/// How the last certificate for `id` in `audit` was obtained.
fn last_method(audit: &AuditBuffer, id: &SpiffeId) -> String {
    audit
        .events()
        .into_iter()
        .rev()
        .find(|e| e["event"] == "certificate_issued" && e["spiffe_id"] == id.to_string())
        .map(|e| e["auth_method"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no issuance for {id}: {}", audit.text()))
}

/// `client` calls `server` over mTLS; returns the identity the server saw.
async fn call(
    server: &WorkloadIdentity,
    client: &WorkloadIdentity,
    server_id: &SpiffeId,
) -> String {
    let policy = TlsPolicy::DEFAULT;
    let scfg = server_config(&policy, server.trust(), server.server_resolver()).unwrap();
    let echo = spawn_server(scfg, PortMtlsMode::Strict).await;
    let ccfg = client_config(
        &policy,
        client.trust(),
        client.client_resolver(),
        vec![server_id.clone()],
    )
    .unwrap();
    let mut tls = connect(ccfg, echo.addr).await.unwrap();
    http_get(&mut tls).await.unwrap()
}

/// Restarts the CA at the same address with another CA.
async fn restart(old: RunningCa, ca: WorkloadCa) -> RunningCa {
    let addr = old.stop().await;
    run_ca_on(ca, LONG, TcpListener::bind(addr).await.unwrap()).await
}

struct Pki {
    root_a: CertifiedIssuer<'static, KeyPair>,
    root_b: CertifiedIssuer<'static, KeyPair>,
    inter_a: CertifiedIssuer<'static, KeyPair>,
    inter_b: CertifiedIssuer<'static, KeyPair>,
}

fn pki() -> Pki {
    let root_a = root("Agency Root A", Some(1));
    let root_b = root("Agency Root B", Some(1));
    let inter_a = intermediate(ca_params("Mesh Intermediate A", Some(0)), &root_a);
    let inter_b = intermediate(ca_params("Mesh Intermediate B", Some(0)), &root_b);
    Pki {
        root_a,
        root_b,
        inter_a,
        inter_b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_issued_under_old_and_new_root_talk_during_the_overlap() {
    let p = pki();
    let bundle = vec![der(&p.root_a), der(&p.root_b)];

    // Before the move: the CA issues under A and already announces both roots.
    let (ca, _) = mesh_ca(&p.inter_a, &bundle);
    let ca = run_ca(ca, LONG).await;
    let legacy_id = SpiffeId::new_workload(TD, "mesh", "legacy").unwrap();
    let legacy = grpc_identity(
        &ca,
        legacy_id.clone(),
        Bootstrap::JoinToken(ca.join_token(&legacy_id)),
        0,
        trust(vec![der(&p.root_a)]),
    );
    let _legacy_task = AbortOnDrop(legacy.spawn());
    legacy.ready().await;
    assert!(issuer(&legacy).contains("Mesh Intermediate A"));
    assert_eq!(
        legacy.trust().load().roots(),
        bundle.as_slice(),
        "the CA's bundle was not installed"
    );

    // The move: the CA restarts, at the same address, with the intermediate under root B.
    let (ca_b, audit_b) = mesh_ca(&p.inter_b, &bundle);
    let ca = restart(ca, ca_b).await;
    let fresh_id = SpiffeId::new_workload(TD, "mesh", "fresh").unwrap();
    let fresh = grpc_identity(
        &ca,
        fresh_id.clone(),
        Bootstrap::JoinToken(ca.join_token(&fresh_id)),
        0,
        trust(vec![der(&p.root_b)]),
    );
    let _fresh_task = AbortOnDrop(fresh.spawn());
    fresh.ready().await;
    assert!(issuer(&fresh).contains("Mesh Intermediate B"));
    assert_eq!(fresh.trust().load().roots(), bundle.as_slice());

    // During the overlap both directions work.
    assert!(issuer(&legacy).contains("Mesh Intermediate A"));
    assert_eq!(
        call(&legacy, &fresh, &legacy_id).await,
        fresh_id.to_string()
    );
    assert_eq!(
        call(&fresh, &legacy, &fresh_id).await,
        legacy_id.to_string()
    );

    // Control: a peer that trusts only B (no bundle from the CA) refuses the A-issued one.
    let b_only = trust(vec![der(&p.root_b)]);
    let scfg = server_config(&TlsPolicy::DEFAULT, b_only, fresh.server_resolver()).unwrap();
    let mut echo = spawn_server(scfg, PortMtlsMode::Strict).await;
    let ccfg = client_config(
        &TlsPolicy::DEFAULT,
        legacy.trust(),
        legacy.client_resolver(),
        vec![fresh_id.clone()],
    )
    .unwrap();
    if let Ok(mut tls) = connect(ccfg, echo.addr).await {
        assert!(http_get(&mut tls).await.is_err());
    }
    match echo.next_event().await {
        ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::UnknownIssuer),
        other => panic!("{other:?}"),
    }

    // The legacy workload renews at the restarted CA by presenting its A-issued certificate
    // (both roots are configured there) and moves to B.
    legacy.rotate_now().await.unwrap();
    assert!(issuer(&legacy).contains("Mesh Intermediate B"));
    assert_eq!(last_method(&audit_b, &legacy_id), "workload_certificate");
    assert_eq!(
        call(&fresh, &legacy, &fresh_id).await,
        legacy_id.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_old_root_too_early_sends_kubernetes_workloads_back_to_their_token() {
    let p = pki();
    let (ca, _) = mesh_ca(&p.inter_a, &[der(&p.root_a), der(&p.root_b)]);
    let ca = run_ca(ca, LONG).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, K8S_TOKEN).unwrap();
    let pod_id = SpiffeId::new_workload(TD, "mesh", "client").unwrap();
    let pod = grpc_identity(
        &ca,
        pod_id.clone(),
        Bootstrap::KubernetesTokenFile(token_file),
        0,
        trust(vec![der(&p.root_a)]),
    );
    let host_id = SpiffeId::new_workload(TD, "bm", "host").unwrap();
    let host = grpc_identity(
        &ca,
        host_id.clone(),
        Bootstrap::JoinToken(ca.join_token(&host_id)),
        0,
        trust(vec![der(&p.root_a)]),
    );
    pod.rotate_now().await.unwrap();
    host.rotate_now().await.unwrap();

    // The CA restarts trusting only B: A-issued certificates no longer pass its handshake.
    let (ca_b, audit_b) = mesh_ca(&p.inter_b, &[der(&p.root_b)]);
    let _ca = restart(ca, ca_b).await;
    let renewed = pod.rotate_now().await.unwrap();
    assert_eq!(renewed.generation, 2);
    assert!(issuer(&pod).contains("Mesh Intermediate B"));
    assert_eq!(last_method(&audit_b, &pod_id), "kubernetes_token");
    assert_eq!(pod.trust().load().roots(), &[der(&p.root_b)]);

    // A join token is one-time: the host keeps its A certificate and needs a new token.
    assert!(host.rotate_now().await.is_err());
    assert!(issuer(&host).contains("Mesh Intermediate A"));
}
