//! Acceptance: workload certificates with a TTL of seconds rotate several times under
//! continuous mTLS traffic with zero failed requests; long-lived connections survive every
//! rotation; trust bundles with several roots apply to the next handshake; the manager refuses
//! to install a certificate that is not ours.

// Test crate: helpers panic on broken fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_tls_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ca_tls_support::*;
use jalin_ca::identity::{
    CERT_EXPIRY_METRIC, CertificateSource, DevCa, IdentityConfig, IdentityError, IssuedChain,
    SourceError, WorkloadIdentity,
};
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::{
    OutboundTls, PortMtlsMode, RefusalReason, TlsPolicy, TrustBundle, client_config, server_config,
};
use rustls_pki_types::CertificateSigningRequestDer;

/// Workload certificate lifetime: renewal at half life leaves every served certificate at
/// least ~2.7 s of validity, ample for a handshake on a loaded 2-core machine.
const ROTATION_TTL_SECS: u64 = 6;

fn manager(ca: &Arc<DevCa>, trust: &jalin_ca::tls::TrustStore, id: SpiffeId) -> WorkloadIdentity {
    WorkloadIdentity::new(IdentityConfig::new(id), ca.clone(), trust.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_drops_nothing() {
    recorder();
    let (ca, trust) = test_ca(Duration::from_secs(ROTATION_TTL_SECS));
    let server_id = id("mesh", "server");
    let client_id = id("mesh", "client");
    let server_identity = manager(&ca, &trust, server_id.clone());
    let client_identity = manager(&ca, &trust, client_id.clone());
    let rotations = server_identity.subscribe();
    let _server_task = AbortOnDrop(server_identity.spawn());
    let _client_task = AbortOnDrop(client_identity.spawn());

    // Readiness waits for the first certificate.
    let first = server_identity.ready().await;
    client_identity.ready().await;
    assert_eq!(first.generation, 1);
    let days = recorder()
        .gauge(CERT_EXPIRY_METRIC, &[("cert", "workload")])
        .expect("expiry gauge");
    assert!(days > 0.0 && days < 1.0, "{days}");

    let policy = TlsPolicy::DEFAULT;
    let scfg = server_config(&policy, trust.clone(), server_identity.server_resolver()).unwrap();
    let server = spawn_server(scfg, PortMtlsMode::Strict).await;
    let outbound = OutboundTls::new(policy, trust.clone(), client_identity.client_resolver());
    let ccfg = outbound.config_for(&server_id).unwrap();
    assert!(Arc::ptr_eq(
        &ccfg,
        &outbound.config_for(&server_id).unwrap()
    ));

    let report = traffic_across_rotations(
        ccfg,
        server.addr,
        client_id.to_string(),
        rotations,
        first.serial_hex.clone(),
        4,
        Duration::from_secs(90),
    )
    .await;
    report.assert_rotated_without_failures();
    let current = server_identity.current().unwrap();
    assert!(current.generation >= 4, "{current:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_bundle_with_several_roots_applies_to_next_handshake() {
    recorder();
    let (ca_a, trust) = test_ca(Duration::from_secs(3600));
    let ca_b = DevCa::named("next root", td(), Duration::from_secs(3600)).unwrap();
    let server_id = id("mesh", "server");
    let (chain, key) = ca_a.issue(&server_id, &[]).unwrap();
    let scfg = server_config(
        &TlsPolicy::DEFAULT,
        trust.clone(),
        static_certs(chain, &key),
    )
    .unwrap();
    let mut server = spawn_server(scfg, PortMtlsMode::Strict).await;

    // A client whose certificate comes from root B, which the server does not trust yet.
    let (bchain, bkey) = ca_b.issue(&id("mesh", "client-b"), &[]).unwrap();
    let trust_ab = TrustBundle::new(vec![ca_a.root(), ca_b.root()], vec![td()]).unwrap();
    let client_trust = jalin_ca::tls::TrustStore::new(trust_ab.clone());
    let ccfg = client_config(
        &TlsPolicy::DEFAULT,
        client_trust,
        static_certs(bchain, &bkey),
        vec![server_id.clone()],
    )
    .unwrap();
    if let Ok(mut tls) = connect(ccfg.clone(), server.addr).await {
        assert!(http_get(&mut tls).await.is_err());
    }
    match server.next_event().await {
        ServerEvent::Refused(r) => assert_eq!(r.reason, RefusalReason::UnknownIssuer),
        other => panic!("{other:?}"),
    }

    // Root rotation: the server now trusts A and B; the same client gets in.
    trust.update(trust_ab);
    let mut tls = connect(ccfg, server.addr).await.unwrap();
    assert_eq!(
        http_get(&mut tls).await.unwrap(),
        id("mesh", "client-b").to_string()
    );
    assert!(matches!(
        server.next_event().await,
        ServerEvent::Accepted(_)
    ));
}

/// A CA that answers every CSR with a certificate for someone else.
struct WrongIdentityCa(Arc<DevCa>);

#[async_trait::async_trait]
impl CertificateSource for WrongIdentityCa {
    async fn sign(
        &self,
        _csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError> {
        let (chain, _key) = self.0.issue(&id("other", "workload"), &[]).unwrap();
        Ok(IssuedChain {
            chain,
            roots: Vec::new(),
        })
    }
}

/// A CA that signs the CSR's identity but for a key of its own (a key we do not hold).
struct ForeignKeyCa(Arc<DevCa>);

#[async_trait::async_trait]
impl CertificateSource for ForeignKeyCa {
    async fn sign(
        &self,
        _csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError> {
        let (chain, _key) = self.0.issue(&id("mesh", "me"), &[]).unwrap();
        Ok(IssuedChain {
            chain,
            roots: Vec::new(),
        })
    }
}

#[tokio::test]
async fn manager_refuses_certificates_that_are_not_ours() {
    let (ca, trust) = test_ca(Duration::from_secs(3600));
    let me = id("mesh", "me");
    for source in [
        Arc::new(WrongIdentityCa(ca.clone())) as Arc<dyn CertificateSource>,
        Arc::new(ForeignKeyCa(ca.clone())),
    ] {
        let m =
            WorkloadIdentity::new(IdentityConfig::new(me.clone()), source, trust.clone()).unwrap();
        let err = m.rotate_now().await.unwrap_err();
        assert!(
            matches!(err, IdentityError::BadIssuedCertificate(_)),
            "{err}"
        );
        assert!(m.current().is_none());
    }
    // A CA of another root: refused as unknown issuer before installation.
    let other = Arc::new(DevCa::named("elsewhere", td(), Duration::from_secs(3600)).unwrap());
    let m = WorkloadIdentity::new(IdentityConfig::new(me.clone()), other, trust.clone()).unwrap();
    let err = m.rotate_now().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(RefusalReason::UnknownIssuer.as_str()),
        "{err}"
    );
    // The honest CA: installed, and the resolver serves it.
    let m = WorkloadIdentity::new(IdentityConfig::new(me.clone()), ca.clone(), trust).unwrap();
    let info = m.rotate_now().await.unwrap();
    assert_eq!(info.spiffe_id, me);
    assert_eq!(m.ready().await, info);
}

/// A CA that is unavailable for its first `failures` requests.
struct FlakyCa {
    inner: Arc<DevCa>,
    failures: AtomicU64,
}

#[async_trait::async_trait]
impl CertificateSource for FlakyCa {
    async fn sign(
        &self,
        csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0 {
            self.failures.store(left - 1, Ordering::SeqCst);
            return Err(SourceError::Unavailable("CA restarting".to_owned()));
        }
        self.inner.sign(csr).await
    }
}

#[tokio::test]
async fn readiness_waits_through_ca_outages() {
    recorder();
    let (ca, trust) = test_ca(Duration::from_secs(3600));
    let flaky = Arc::new(FlakyCa {
        inner: ca,
        failures: AtomicU64::new(2),
    });
    let mut config = IdentityConfig::new(id("mesh", "patient"));
    config.retry_min = Duration::from_millis(10);
    config.retry_max = Duration::from_millis(40);
    let identity = WorkloadIdentity::new(config, flaky.clone(), trust).unwrap();
    assert!(identity.current().is_none());
    let _task = AbortOnDrop(identity.spawn());
    let info = tokio::time::timeout(Duration::from_secs(30), identity.ready())
        .await
        .expect("ready after the CA recovers");
    assert_eq!(info.generation, 1);
    assert_eq!(flaky.failures.load(Ordering::SeqCst), 0);
    assert_eq!(
        recorder().counter(
            jalin_ca::identity::RENEWAL_FAILURES_METRIC,
            &[("cert", "workload")]
        ),
        2
    );
}
