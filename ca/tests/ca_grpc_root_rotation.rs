//! Root rotation through the real CA: the CA answers every issuance with its whole root bundle
//! and workload identities install it. The mesh intermediate moves from agency root A to root B
//! (the CA restarts with the new chain); a workload still holding an A-issued certificate and
//! one holding a B-issued certificate keep talking to each other during the overlap, in both
//! directions, while a peer that trusts only B does not accept the A-issued one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;
mod ca_grpc_support;
mod ca_tls_support;

use std::time::{Duration, SystemTime};

use ca_core_support::{ca_params, der, intermediate, root};
use ca_grpc_support::*;
use ca_tls_support::{AbortOnDrop, ServerEvent, connect, http_get, spawn_server};
use jalin_ca::chain::{certs_from_pem, certs_to_pem, pem_block};
use jalin_ca::identity::{Bootstrap, WorkloadIdentity};
use jalin_ca::issue::{AuditLog, TtlPolicy, WorkloadCa};
use jalin_ca::server::client::{CaEndpoint, ClientAuth, request_certificate};
use jalin_ca::signer::CaSigner;
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{PortMtlsMode, RefusalReason, TlsPolicy, client_config, server_config};
use rcgen::{CertifiedIssuer, KeyPair};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

fn mesh_ca(
    inter: &CertifiedIssuer<'static, KeyPair>,
    roots: &[CertificateDer<'static>],
) -> WorkloadCa {
    let (audit, _) = AuditLog::in_memory();
    WorkloadCa::new(
        TD,
        vec![der(inter)],
        roots.to_vec(),
        CaSigner::from_pkcs8_pem(&inter.key().serialize_pem()).unwrap(),
        TtlPolicy::default(),
        audit,
        SystemTime::now(),
    )
    .unwrap()
}

/// The issuer CN of the identity's installed certificate.
fn issuer_cn(identity: &WorkloadIdentity) -> String {
    let resolver = identity.client_resolver();
    let current = resolver
        .resolve(&[], &[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap();
    let (_, cert) = X509Certificate::from_der(current.end_entity_cert().unwrap()).unwrap();
    cert.issuer().to_string()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_issued_under_old_and_new_root_talk_during_the_overlap() {
    let root_a = root("Agency Root A", Some(1));
    let root_b = root("Agency Root B", Some(1));
    let inter_a = intermediate(ca_params("Mesh Intermediate A", Some(0)), &root_a);
    let inter_b = intermediate(ca_params("Mesh Intermediate B", Some(0)), &root_b);
    let bundle = vec![der(&root_a), der(&root_b)];

    // Before the move: the CA issues under A and already announces both roots.
    let ca_a = run_ca(mesh_ca(&inter_a, &bundle), Duration::from_secs(3600)).await;
    let legacy_id = SpiffeId::new_workload(TD, "mesh", "legacy").unwrap();
    let legacy = grpc_identity(
        &ca_a,
        legacy_id.clone(),
        Bootstrap::JoinToken(ca_a.join_token(&legacy_id)),
        0,
        trust(vec![der(&root_a)]),
    );
    let _legacy_task = AbortOnDrop(legacy.spawn());
    legacy.ready().await;
    assert!(issuer_cn(&legacy).contains("Mesh Intermediate A"));
    assert_eq!(
        legacy.trust().load().roots(),
        bundle.as_slice(),
        "the CA's bundle was not installed"
    );
    // An A-issued certificate and key kept aside, to renew at the new CA below.
    let kept_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let kept = ca_a
        .ca
        .sign(
            &legacy_id,
            &kept_key,
            Duration::from_secs(3600),
            &[],
            SystemTime::now(),
        )
        .unwrap();

    // The move: the CA restarts with the intermediate under root B.
    drop(ca_a);
    let ca_b = run_ca(mesh_ca(&inter_b, &bundle), Duration::from_secs(3600)).await;
    let fresh_id = SpiffeId::new_workload(TD, "mesh", "fresh").unwrap();
    let fresh = grpc_identity(
        &ca_b,
        fresh_id.clone(),
        Bootstrap::JoinToken(ca_b.join_token(&fresh_id)),
        0,
        trust(vec![der(&root_b)]),
    );
    let _fresh_task = AbortOnDrop(fresh.spawn());
    fresh.ready().await;
    assert!(issuer_cn(&fresh).contains("Mesh Intermediate B"));
    assert_eq!(fresh.trust().load().roots(), bundle.as_slice());

    // During the overlap both directions work.
    assert_eq!(
        call(&legacy, &fresh, &legacy_id).await,
        fresh_id.to_string()
    );
    assert_eq!(
        call(&fresh, &legacy, &fresh_id).await,
        legacy_id.to_string()
    );

    // Control: a peer that trusts only B (no bundle from the CA) refuses the A-issued one.
    let b_only = trust(vec![der(&root_b)]);
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

    // The new CA renews an A-issued workload certificate (both roots are configured) and
    // answers with a B-issued one.
    let endpoint = CaEndpoint {
        address: ca_b.address(),
        server_name: CA_DNS.into(),
        trust_bundle_pem: certs_to_pem(&bundle),
        timeout: Duration::from_secs(10),
    };
    let (csr, _key) = jalin_ca::issue::new_workload_csr(&legacy_id).unwrap();
    let renewed = request_certificate(
        &endpoint,
        &ClientAuth::WorkloadCertificate {
            chain_pem: kept.chain_pem.clone(),
            key_pem: pem_block("PRIVATE KEY", &kept_key.serialize_der()),
        },
        &csr,
        0,
    )
    .await
    .unwrap();
    let chain = certs_from_pem(renewed.chain_pem.as_bytes(), "renewed".as_ref()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    assert!(leaf.issuer().to_string().contains("Mesh Intermediate B"));
    assert_eq!(
        certs_from_pem(renewed.trust_bundle_pem.as_bytes(), "bundle".as_ref()).unwrap(),
        bundle
    );
}
