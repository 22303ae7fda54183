//! gRPC issuance over real TLS on 127.0.0.1:0, for each authentication method, including
//! refusals (reused token, expired token, wrong identity, other trust domain), with the audit
//! lines asserted and the issued chains verified by openssl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;
mod ca_grpc_support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ca_core_support::*;
use ca_grpc_support::authenticator;
use jalin_ca::auth::JoinTokenStore;
use jalin_ca::chain::certs_from_pem;
use jalin_ca::issue::{AuditBuffer, AuditLog, TtlPolicy, WorkloadCa, new_workload_csr};
use jalin_ca::server::client::{
    CaEndpoint, ClientAuth, ClientError, SignResponse, request_certificate,
};
use jalin_ca::server::{serve, server_identity};
use jalin_ca::signer::CaSigner;
use jalin_ca::spiffe::SpiffeId;
use jalin_ca::tls::TlsPolicy;

const TD: &str = "cluster.local";
const SERVER_NAME: &str = "jalin-ca.jalin-system.svc.cluster.local";

struct Harness {
    endpoint: CaEndpoint,
    audit: AuditBuffer,
    store: Arc<JoinTokenStore>,
    ca: Arc<WorkloadCa>,
    root_pem: String,
    inter_pem: String,
    dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start(max_ttl: Duration) -> Harness {
    let dev = jalin_ca::cli::make_dev_ca(TD, 30 * DAY, 10 * DAY, SystemTime::now()).unwrap();
    let chain = certs_from_pem(dev.intermediate_pem.as_bytes(), "inter".as_ref()).unwrap();
    let roots = certs_from_pem(dev.root_pem.as_bytes(), "root".as_ref()).unwrap();
    let signer = CaSigner::from_pkcs8_pem(&dev.intermediate_key_pem).unwrap();
    let (audit_log, audit) = AuditLog::in_memory();
    let ttl = TtlPolicy {
        default_ttl: Duration::from_secs(3600).min(max_ttl),
        max_ttl,
    };
    let ca = Arc::new(
        WorkloadCa::new(TD, chain, roots, signer, ttl, audit_log, SystemTime::now()).unwrap(),
    );
    let store = Arc::new(JoinTokenStore::in_memory());
    let auth = authenticator(&store);
    let tls = server_identity(&ca, &[SERVER_NAME.to_owned()], DAY, SystemTime::now()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        Arc::clone(&ca),
        auth,
        tls.resolver().unwrap(),
        TlsPolicy::DEFAULT,
        listener,
        async {
            let _ = rx.await;
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("root.pem"), &dev.root_pem).unwrap();
    std::fs::write(dir.path().join("inter.pem"), &dev.intermediate_pem).unwrap();
    Harness {
        endpoint: CaEndpoint {
            address: format!("https://{addr}"),
            server_name: SERVER_NAME.into(),
            trust_bundle_pem: dev.root_pem.clone(),
            timeout: Duration::from_secs(10),
        },
        audit,
        store,
        ca,
        root_pem: dev.root_pem,
        inter_pem: dev.intermediate_pem,
        dir,
        _shutdown: tx,
    }
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new_workload(TD, ns, sa).unwrap()
}

impl Harness {
    async fn request(
        &self,
        auth: &ClientAuth,
        id: &SpiffeId,
        ttl: u64,
    ) -> (Result<SignResponse, ClientError>, rcgen::KeyPair) {
        let (csr, key) = new_workload_csr(id).unwrap();
        (
            request_certificate(&self.endpoint, auth, &csr, ttl).await,
            key,
        )
    }

    fn verify_with_openssl(&self, chain: &SignResponse, name: &str) {
        let (leaf, rest) = split_leaf(&chain.chain_pem);
        assert_eq!(rest, self.inter_pem);
        assert_eq!(chain.trust_bundle_pem, self.root_pem);
        let leaf_path = self.dir.path().join(format!("{name}.pem"));
        std::fs::write(&leaf_path, leaf).unwrap();
        let (ok, text) = openssl_verify(
            &self.dir.path().join("root.pem"),
            &self.dir.path().join("inter.pem"),
            &leaf_path,
        );
        assert!(ok, "{text}");
    }

    fn last_event(&self) -> serde_json::Value {
        self.audit.events().pop().expect("an audit line")
    }
}

fn refused(r: Result<SignResponse, ClientError>) -> (tonic::Code, String) {
    match r {
        Err(ClientError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn join_token_issues_once_and_refuses_reuse_expiry_identity_and_domain() {
    let h = start(DAY).await;
    let host = id("baremetal", "db-01");
    let token = h
        .store
        .create(&host, Duration::from_secs(600), SystemTime::now())
        .unwrap();
    let auth = ClientAuth::JoinToken(token.clone());

    let (res, _) = h.request(&auth, &host, 0).await;
    let chain = res.unwrap();
    assert_eq!(chain.spiffe_id, host.to_string());
    h.verify_with_openssl(&chain, "join");
    let e = h.last_event();
    assert_eq!(e["event"], "certificate_issued");
    assert_eq!(e["auth_method"], "join_token");
    assert_eq!(e["spiffe_id"], host.to_string());
    assert_eq!(e["ttl_seconds"], 3600);
    assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    // Reuse.
    let (res, _) = h.request(&auth, &host, 0).await;
    assert_eq!(refused(res).0, tonic::Code::Unauthenticated);
    let e = h.last_event();
    assert_eq!(e["event"], "certificate_refused");
    assert_eq!(e["reason_code"], "join_token_reused");

    // Expired: created an hour ago with a one-minute lifetime.
    let old = h
        .store
        .create(
            &host,
            Duration::from_secs(60),
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
    let (res, _) = h.request(&ClientAuth::JoinToken(old), &host, 0).await;
    assert_eq!(refused(res).0, tonic::Code::Unauthenticated);
    assert_eq!(h.last_event()["reason_code"], "join_token_expired");

    // Wrong identity: a token for db-01 cannot obtain web-01; the token stays usable.
    let t2 = h
        .store
        .create(&host, Duration::from_secs(600), SystemTime::now())
        .unwrap();
    let (res, _) = h
        .request(
            &ClientAuth::JoinToken(t2.clone()),
            &id("baremetal", "web-01"),
            0,
        )
        .await;
    assert_eq!(refused(res).0, tonic::Code::PermissionDenied);
    let e = h.last_event();
    assert_eq!(e["reason_code"], "identity_mismatch");
    assert_eq!(
        e["requested"],
        "spiffe://cluster.local/ns/baremetal/sa/web-01"
    );
    let (res, _) = h.request(&ClientAuth::JoinToken(t2), &host, 0).await;
    res.unwrap();

    // Other trust domain: even a token bound to it gets nothing from this CA.
    let foreign = SpiffeId::new_workload("other.example", "ns", "sa").unwrap();
    let t3 = h
        .store
        .create(&foreign, Duration::from_secs(600), SystemTime::now())
        .unwrap();
    let (res, _) = h.request(&ClientAuth::JoinToken(t3), &foreign, 0).await;
    assert_eq!(refused(res).0, tonic::Code::InvalidArgument);
    assert_eq!(h.last_event()["reason_code"], "trust_domain");

    // Unknown token, and no credential at all.
    let (res, _) = h
        .request(&ClientAuth::JoinToken("jlt_deadbeef".into()), &host, 0)
        .await;
    assert_eq!(refused(res).0, tonic::Code::Unauthenticated);
    assert_eq!(h.last_event()["reason_code"], "join_token_unknown");

    // Tokens never reach the audit log.
    let text = h.audit.text();
    assert!(!text.contains(&token), "token leaked into the audit log");
    assert!(!text.contains("jlt_"), "token leaked into the audit log");
    assert_eq!(h.audit.events().len(), 7);
}

#[tokio::test]
async fn kubernetes_token_via_token_review() {
    let h = start(DAY).await;
    let web = id("default", "web");
    let (res, _) = h
        .request(&ClientAuth::KubernetesToken("sa-web".into()), &web, 600)
        .await;
    let chain = res.unwrap();
    h.verify_with_openssl(&chain, "k8s");
    let e = h.last_event();
    assert_eq!(e["auth_method"], "kubernetes_token");
    assert_eq!(e["caller"], web.to_string());
    assert_eq!(e["ttl_seconds"], 600);

    for (token, want_id, code, reason) in [
        (
            "sa-web",
            id("default", "db"),
            tonic::Code::PermissionDenied,
            "identity_mismatch",
        ),
        (
            "garbage",
            web.clone(),
            tonic::Code::Unauthenticated,
            "kubernetes_token_rejected",
        ),
        (
            "sa-wrong-audience",
            web.clone(),
            tonic::Code::Unauthenticated,
            "kubernetes_token_rejected",
        ),
        (
            "user-alice",
            web.clone(),
            tonic::Code::Unauthenticated,
            "kubernetes_token_rejected",
        ),
        (
            "api-down",
            web.clone(),
            tonic::Code::Unauthenticated,
            "token_review_failed",
        ),
    ] {
        let (res, _) = h
            .request(&ClientAuth::KubernetesToken(token.into()), &want_id, 0)
            .await;
        let (got, msg) = refused(res);
        assert_eq!(got, code, "{token}: {msg}");
        let e = h.last_event();
        assert_eq!(e["event"], "certificate_refused", "{token}");
        assert_eq!(e["reason_code"], reason, "{token}");
        assert!(
            !h.audit.text().contains(&format!("{token:?}")),
            "{token} in the audit log"
        );
    }

    // Above the maximum TTL: refused, not clamped (Istio's behaviour).
    let (res, _) = h
        .request(
            &ClientAuth::KubernetesToken("sa-web".into()),
            &web,
            2 * 86_400,
        )
        .await;
    assert_eq!(refused(res).0, tonic::Code::InvalidArgument);
    assert_eq!(h.last_event()["reason_code"], "ttl_too_long");
}

#[tokio::test]
async fn renewal_with_workload_certificate_only_for_its_own_identity() {
    let h = start(DAY).await;
    let web = id("default", "web");
    let (res, key) = h
        .request(&ClientAuth::KubernetesToken("sa-web".into()), &web, 0)
        .await;
    let first = res.unwrap();
    let renew = ClientAuth::WorkloadCertificate {
        chain_pem: first.chain_pem.clone(),
        key_pem: key.serialize_pem(),
    };
    let (res, _) = h.request(&renew, &web, 0).await;
    let second = res.unwrap();
    assert_ne!(first.chain_pem, second.chain_pem);
    h.verify_with_openssl(&second, "renewed");
    assert_eq!(h.last_event()["auth_method"], "workload_certificate");

    let (res, _) = h.request(&renew, &id("default", "admin"), 0).await;
    assert_eq!(refused(res).0, tonic::Code::PermissionDenied);
    let e = h.last_event();
    assert_eq!(e["reason_code"], "identity_mismatch");
    assert_eq!(e["caller"], serde_json::Value::Null);

    // No credential at all.
    let (res, _) = h
        .request(&ClientAuth::JoinToken(String::new()), &web, 0)
        .await;
    assert_eq!(refused(res).0, tonic::Code::Unauthenticated);

    // An expired workload certificate does not get through the TLS handshake.
    let expired_key = p256();
    let past = SystemTime::now() - Duration::from_secs(7200);
    let expired =
        h.ca.sign(&web, &expired_key, Duration::from_secs(60), &[], past)
            .unwrap();
    let stale = ClientAuth::WorkloadCertificate {
        chain_pem: expired.chain_pem,
        key_pem: expired_key.serialize_pem(),
    };
    let (res, _) = h.request(&stale, &web, 0).await;
    assert!(res.is_err(), "expired client certificate accepted");
    assert_ne!(h.last_event()["event"], "certificate_issued");
}
