//! Acceptance: bad peers are refused over real TLS on 127.0.0.1, each with its specific reason
//! in the verifier's error, the warning log line and `jalin_tls_handshake_failures_total`;
//! a good peer is accepted and its identity reaches the request context.

// Test crate: helpers panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_tls_support;

use std::sync::Arc;
use std::time::Duration;

use ca_tls_support::*;
use jalin_ca::identity::{CertStore, DevCa};
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{
    Direction, HANDSHAKE_FAILURES_METRIC, PortMtlsMode, Refusal, RefusalReason, TlsPolicy,
    TrustStore, client_config, server_config,
};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Chain = (Vec<CertificateDer<'static>>, KeyPair);

/// Mints a leaf for `id` from `ca` after `tweak` edits its parameters.
fn mint(ca: &DevCa, id: &SpiffeId, tweak: impl FnOnce(&mut CertificateParams)) -> Chain {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = ca.leaf_params(id, &[]).unwrap();
    tweak(&mut params);
    (ca.sign_params(&params, &key).unwrap(), key)
}

/// The bad certificates, for a peer in `role` (the EKU case uses the other role's EKU).
fn bad_peers(
    ca: &DevCa,
    other_root: &DevCa,
    impostor: &DevCa,
    id: &SpiffeId,
    role: Direction,
) -> Vec<(&'static str, Chain, RefusalReason)> {
    let now = OffsetDateTime::now_utc();
    let wrong_eku = match role {
        Direction::Inbound => ExtendedKeyUsagePurpose::ServerAuth,
        Direction::Outbound => ExtendedKeyUsagePurpose::ClientAuth,
    };
    // intermediate (pathLen 0) -> sub-CA -> leaf: the sub-CA violates the intermediate's pathLen.
    let path_len = {
        let sub_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut sub = CertificateParams::default();
        sub.distinguished_name
            .push(rcgen::DnType::CommonName, "rogue sub-CA");
        sub.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        sub.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        sub.not_before = now - time::Duration::hours(1);
        sub.not_after = now + time::Duration::hours(1);
        let sub_cert = sub.signed_by(&sub_key, ca.issuer()).unwrap();
        let sub_issuer = Issuer::new(sub, sub_key);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let leaf = ca
            .leaf_params(id, &[])
            .unwrap()
            .signed_by(&key, &sub_issuer)
            .unwrap();
        (
            vec![
                leaf.der().clone(),
                sub_cert.der().clone(),
                ca.intermediate(),
            ],
            key,
        )
    };
    vec![
        (
            "expired",
            mint(ca, id, |p| {
                p.not_before = now - time::Duration::hours(2);
                p.not_after = now - time::Duration::hours(1);
            }),
            RefusalReason::Expired,
        ),
        (
            "not yet valid",
            mint(ca, id, |p| {
                p.not_before = now + time::Duration::hours(1);
                p.not_after = now + time::Duration::hours(2);
            }),
            RefusalReason::NotYetValid,
        ),
        (
            "signed by another root",
            other_root.issue(id, &[]).unwrap(),
            RefusalReason::UnknownIssuer,
        ),
        (
            "impostor CA using our CA's names",
            impostor.issue(id, &[]).unwrap(),
            RefusalReason::BadSignature,
        ),
        (
            "other trust domain",
            mint(ca, id, |p| {
                p.subject_alt_names = vec![SanType::URI(
                    "spiffe://other.test/ns/mesh/sa/peer".try_into().unwrap(),
                )];
            }),
            RefusalReason::OtherTrustDomain,
        ),
        (
            "no URI SAN",
            mint(ca, id, |p| {
                p.subject_alt_names = vec![SanType::DnsName("peer.test".try_into().unwrap())];
            }),
            RefusalReason::NoUriSan,
        ),
        (
            "CA:true leaf",
            mint(ca, id, |p| {
                p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)
            }),
            RefusalReason::CaLeaf,
        ),
        (
            "wrong EKU",
            mint(ca, id, |p| p.extended_key_usages = vec![wrong_eku]),
            RefusalReason::WrongEku,
        ),
        ("pathLen violated", path_len, RefusalReason::PathLen),
    ]
}

fn failures(reason: RefusalReason, direction: Direction) -> u64 {
    recorder().counter(
        HANDSHAKE_FAILURES_METRIC,
        &[
            ("reason", reason.as_str()),
            ("direction", direction.as_str()),
        ],
    )
}

fn assert_logged(reason: RefusalReason, direction: Direction) {
    let reason_field = format!("reason=\"{reason}\"");
    let direction_field = format!("direction=\"{}\"", direction.as_str());
    let lines = logs().lines_with(&["WARN", "TLS peer refused", &reason_field, &direction_field]);
    assert!(!lines.is_empty(), "no log line for {reason} {direction:?}");
}

struct Setup {
    ca: Arc<DevCa>,
    other_root: DevCa,
    impostor: DevCa,
    trust: TrustStore,
    server_id: SpiffeId,
    client_id: SpiffeId,
}

fn setup() -> Setup {
    recorder();
    logs();
    let (ca, trust) = test_ca(Duration::from_secs(3600));
    Setup {
        ca,
        other_root: DevCa::named("unrelated agency", td(), Duration::from_secs(3600)).unwrap(),
        impostor: DevCa::new(td(), Duration::from_secs(3600)).unwrap(),
        trust,
        server_id: id("mesh", "server"),
        client_id: id("mesh", "client"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_are_refused_with_their_reason() {
    let s = setup();
    let policy = TlsPolicy::DEFAULT;
    let (server_chain, server_key) = s.ca.issue(&s.server_id, &[]).unwrap();
    let server_cfg = server_config(
        &policy,
        s.trust.clone(),
        static_certs(server_chain, &server_key),
    )
    .unwrap();
    let mut server = spawn_server(server_cfg.clone(), PortMtlsMode::Strict).await;

    // Positive control: a good client is accepted, its identity reaches the request context.
    let (good_chain, good_key) = s.ca.issue(&s.client_id, &[]).unwrap();
    let good_leaf = good_chain[0].clone();
    let good_client = static_certs(good_chain, &good_key);
    let cfg = client_config(
        &policy,
        s.trust.clone(),
        good_client.clone(),
        vec![s.server_id.clone()],
    )
    .unwrap();
    let mut tls = connect(cfg, server.addr).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(http_get(&mut tls).await.unwrap(), s.client_id.to_string());
    match server.next_event().await {
        ServerEvent::Accepted(peer) => {
            assert_eq!(peer.spiffe_id, s.client_id);
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &good_leaf);
            assert_eq!(peer.fingerprint_sha256, hex::encode(digest.as_ref()));
            assert!(peer.not_after > std::time::SystemTime::now());
        }
        other => panic!("good client not accepted: {other:?}"),
    }

    // Inbound: the bad certificate is the client's; the server's verifier refuses it.
    for (name, (chain, key), reason) in bad_peers(
        &s.ca,
        &s.other_root,
        &s.impostor,
        &s.client_id,
        Direction::Inbound,
    ) {
        let before = failures(reason, Direction::Inbound);
        let cfg = client_config(
            &policy,
            s.trust.clone(),
            static_certs(chain, &key),
            vec![s.server_id.clone()],
        )
        .unwrap();
        // In TLS 1.3 the client finishes first; the refusal arrives as an alert on first read.
        if let Ok(mut tls) = connect(cfg, server.addr).await {
            assert!(
                http_get(&mut tls).await.is_err(),
                "{name}: refused client got a response"
            );
        }
        match server.next_event().await {
            ServerEvent::Refused(refusal) => {
                assert_eq!(refusal.reason, reason, "{name}: {refusal}")
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            failures(reason, Direction::Inbound),
            before + 1,
            "{name}: metric"
        );
        assert_logged(reason, Direction::Inbound);
    }

    // Outbound: the bad certificate is the server's; our client's verifier refuses it.
    for (name, (chain, key), reason) in bad_peers(
        &s.ca,
        &s.other_root,
        &s.impostor,
        &s.server_id,
        Direction::Outbound,
    ) {
        let bad_server_cfg =
            server_config(&policy, s.trust.clone(), static_certs(chain, &key)).unwrap();
        let mut bad_server = spawn_server(bad_server_cfg, PortMtlsMode::Strict).await;
        let before = failures(reason, Direction::Outbound);
        let cfg = client_config(
            &policy,
            s.trust.clone(),
            good_client.clone(),
            vec![s.server_id.clone()],
        )
        .unwrap();
        let err = connect(cfg, bad_server.addr).await.expect_err(name);
        assert_eq!(Refusal::from_io_error(&err).reason, reason, "{name}: {err}");
        assert_eq!(
            failures(reason, Direction::Outbound),
            before + 1,
            "{name}: metric"
        );
        assert_logged(reason, Direction::Outbound);
        // The server sees our alert.
        match bad_server.next_event().await {
            ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::PeerRefused, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
    }

    // A valid certificate that is not the expected server identity.
    let before = failures(RefusalReason::IdentityMismatch, Direction::Outbound);
    let cfg = client_config(
        &policy,
        s.trust.clone(),
        good_client.clone(),
        vec![id("mesh", "someone-else")],
    )
    .unwrap();
    let err = connect(cfg, server.addr)
        .await
        .expect_err("identity mismatch");
    let refusal = Refusal::from_io_error(&err);
    assert_eq!(refusal.reason, RefusalReason::IdentityMismatch);
    assert!(
        refusal
            .detail
            .contains("spiffe://agency.test/ns/mesh/sa/someone-else"),
        "{refusal}"
    );
    assert_eq!(
        failures(RefusalReason::IdentityMismatch, Direction::Outbound),
        before + 1
    );
    assert_logged(RefusalReason::IdentityMismatch, Direction::Outbound);
    assert!(
        matches!(server.next_event().await, ServerEvent::Refused(r) if r.reason == RefusalReason::PeerRefused)
    );

    // No client certificate at all.
    let before = failures(RefusalReason::NoClientCert, Direction::Inbound);
    let cfg = client_config(
        &policy,
        s.trust.clone(),
        Arc::new(CertStore::new()),
        vec![s.server_id.clone()],
    )
    .unwrap();
    if let Ok(mut tls) = connect(cfg, server.addr).await {
        assert!(http_get(&mut tls).await.is_err());
    }
    assert!(
        matches!(server.next_event().await, ServerEvent::Refused(r) if r.reason == RefusalReason::NoClientCert)
    );
    assert_eq!(
        failures(RefusalReason::NoClientCert, Direction::Inbound),
        before + 1
    );

    // Plaintext HTTP to a STRICT port: detected and refused before any TLS.
    let before = failures(RefusalReason::PlaintextOnStrictPort, Direction::Inbound);
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    match server.next_event().await {
        ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::PlaintextOnStrictPort),
        other => panic!("plaintext: {other:?}"),
    }
    let mut buf = Vec::new();
    let n = tcp.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(
        n,
        0,
        "plaintext client got a response: {:?}",
        String::from_utf8_lossy(&buf)
    );
    assert_eq!(
        failures(RefusalReason::PlaintextOnStrictPort, Direction::Inbound),
        before + 1
    );
    assert_logged(RefusalReason::PlaintextOnStrictPort, Direction::Inbound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_port_serves_both_and_disable_serves_plaintext() {
    let s = setup();
    let policy = TlsPolicy::DEFAULT;
    let (chain, key) = s.ca.issue(&s.server_id, &[]).unwrap();
    let cfg = server_config(&policy, s.trust.clone(), static_certs(chain, &key)).unwrap();
    let mut server = spawn_server(cfg, PortMtlsMode::Permissive).await;

    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(http_get(&mut tcp).await.unwrap(), "plaintext");
    assert!(matches!(server.next_event().await, ServerEvent::Plaintext));

    let (cchain, ckey) = s.ca.issue(&s.client_id, &[]).unwrap();
    let ccfg = client_config(
        &policy,
        s.trust.clone(),
        static_certs(cchain, &ckey),
        vec![s.server_id.clone()],
    )
    .unwrap();
    let mut tls = connect(ccfg, server.addr).await.unwrap();
    assert_eq!(http_get(&mut tls).await.unwrap(), s.client_id.to_string());
    assert!(
        matches!(server.next_event().await, ServerEvent::Accepted(p) if p.spiffe_id == s.client_id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn government_policy_negotiates_aes_gcm_on_nist_groups() {
    let s = setup();
    let gov = TlsPolicy::GOVERNMENT;
    let (chain, key) = s.ca.issue(&s.server_id, &[]).unwrap();
    let cfg = server_config(&gov, s.trust.clone(), static_certs(chain, &key)).unwrap();
    let mut server = spawn_server(cfg, PortMtlsMode::Strict).await;
    let (cchain, ckey) = s.ca.issue(&s.client_id, &[]).unwrap();
    let certs = static_certs(cchain, &ckey);

    // A government client against a government server.
    let ccfg = client_config(
        &gov,
        s.trust.clone(),
        certs.clone(),
        vec![s.server_id.clone()],
    )
    .unwrap();
    let mut tls = connect(ccfg, server.addr).await.unwrap();
    assert_eq!(http_get(&mut tls).await.unwrap(), s.client_id.to_string());
    let conn = tls.get_ref().1;
    assert_eq!(
        conn.negotiated_cipher_suite().map(|c| c.suite()),
        Some(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384)
    );
    let group = conn.negotiated_key_exchange_group().map(|g| g.name());
    assert!(
        matches!(
            group,
            Some(rustls::NamedGroup::secp256r1MLKEM768 | rustls::NamedGroup::secp256r1)
        ),
        "{group:?}"
    );
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Accepted(_)
    ));

    // A default client (which prefers X25519 hybrids) still lands on a NIST group.
    let ccfg = client_config(
        &TlsPolicy::DEFAULT,
        s.trust.clone(),
        certs,
        vec![s.server_id.clone()],
    )
    .unwrap();
    let mut tls = connect(ccfg, server.addr).await.unwrap();
    assert_eq!(http_get(&mut tls).await.unwrap(), s.client_id.to_string());
    let group = tls
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .map(|g| g.name());
    assert!(
        !matches!(
            group,
            Some(rustls::NamedGroup::X25519 | rustls::NamedGroup::X25519MLKEM768)
        ),
        "{group:?}"
    );
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Accepted(_)
    ));
}
