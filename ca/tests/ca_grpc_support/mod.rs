//! Test support for the CA-backed workload identity tests: a real CA gRPC server over TLS on
//! 127.0.0.1:0 (its serving certificate renewed by the CA itself), join tokens, a fake
//! TokenReview, and workload identities issued through [`GrpcCertificateSource`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use jalin_ca::auth::{
    AnyOf, Authenticator, CertificateAuthenticator, JoinTokenAuthenticator, JoinTokenStore,
    KubernetesAuthenticator, ReviewError, TokenReviewStatus, TokenReviewer,
};
use jalin_ca::chain::KeySource;
use jalin_ca::identity::{
    Bootstrap, GrpcCertificateSource, GrpcSourceConfig, IdentityConfig, WorkloadIdentity,
};
use jalin_ca::issue::{AuditBuffer, AuditLog, CaConfig, TtlPolicy, WorkloadCa};
use jalin_ca::server::self_tls::ca_server_identity;
use jalin_ca::server::{CA_NAMESPACE, CA_SERVICE_ACCOUNT, serve};
use jalin_ca::spiffe::{SpiffeId, TrustDomain};
use jalin_ca::tls::{TlsPolicy, TrustBundle, TrustStore};
use rustls_pki_types::CertificateDer;

pub const TD: &str = "cluster.local";
/// The DNS name in the CA's serving certificate, for clients that verify by host name.
pub const CA_DNS: &str = "jalin-ca.jalin-system.svc.cluster.local";
/// The Kubernetes token the fake TokenReview accepts, and whom it names.
pub const K8S_TOKEN: &str = "sa-token-mesh-client";
pub const K8S_USER: &str = "system:serviceaccount:mesh:client";

pub fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

pub fn ca_id() -> SpiffeId {
    SpiffeId::workload(&td(), CA_NAMESPACE, CA_SERVICE_ACCOUNT).unwrap()
}

/// TokenReview stand-in (no API server runs here): `K8S_TOKEN` and `sa-web` are valid
/// service-account tokens, `sa-wrong-audience` is for another audience, `user-alice` names a
/// user rather than a service account, `api-down` fails the review, anything else is invalid.
pub struct FakeReviewer;

#[async_trait]
impl TokenReviewer for FakeReviewer {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, ReviewError> {
        assert_eq!(audiences, ["jalin-ca".to_owned()]);
        let ok = |user: &str, aud: &str| TokenReviewStatus {
            authenticated: true,
            username: user.into(),
            audiences: vec![aud.into()],
            error: None,
        };
        Ok(match token {
            K8S_TOKEN => ok(K8S_USER, "jalin-ca"),
            "sa-web" => ok("system:serviceaccount:default:web", "jalin-ca"),
            "sa-wrong-audience" => ok("system:serviceaccount:default:web", "vault"),
            "user-alice" => ok("alice", "jalin-ca"),
            "api-down" => return Err(ReviewError("connection refused".into())),
            _ => TokenReviewStatus {
                authenticated: false,
                error: Some("invalid bearer token".into()),
                ..Default::default()
            },
        })
    }
}

/// The CA's authenticators in production order: explicit tokens before the TLS client
/// certificate (join token, Kubernetes token with audience `jalin-ca`, workload certificate).
pub fn authenticator(tokens: &Arc<JoinTokenStore>) -> Arc<dyn Authenticator> {
    Arc::new(AnyOf(vec![
        Arc::new(JoinTokenAuthenticator::new(Arc::clone(tokens))),
        Arc::new(KubernetesAuthenticator::new(
            Arc::new(FakeReviewer),
            vec!["jalin-ca".into()],
            TD,
        )),
        Arc::new(CertificateAuthenticator),
    ]))
}

/// Writes an `init-dev` chain into `dir` and loads a CA from the files, as an operator would.
pub fn init_dev_ca(dir: &Path, ttl: TtlPolicy) -> (WorkloadCa, AuditBuffer) {
    let mut out = Vec::new();
    jalin_ca::cli::CaCommand::InitDev(jalin_ca::cli::InitDevArgs {
        out_dir: dir.to_owned(),
        trust_domain: TD.into(),
        root_validity: Duration::from_secs(30 * 86_400),
        intermediate_validity: Duration::from_secs(10 * 86_400),
        force: false,
    })
    .run_to(&mut out)
    .unwrap();
    let (audit_log, audit) = AuditLog::in_memory();
    let config = CaConfig {
        trust_domain: TD.into(),
        chain_path: dir.join("intermediate.pem"),
        roots_path: dir.join("root.pem"),
        key: KeySource::Pkcs8File(dir.join("intermediate-key.pem")),
        ttl,
    };
    (
        WorkloadCa::load(&config, audit_log, SystemTime::now()).unwrap(),
        audit,
    )
}

/// A CA serving gRPC over TLS; dropping it stops the server.
pub struct RunningCa {
    pub addr: SocketAddr,
    pub ca: Arc<WorkloadCa>,
    pub tokens: Arc<JoinTokenStore>,
    /// The CA's own serving identity (renews itself).
    pub identity: WorkloadIdentity,
    identity_task: tokio::task::JoinHandle<()>,
    server_task: tokio::task::JoinHandle<()>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl Drop for RunningCa {
    fn drop(&mut self) {
        self.identity_task.abort();
        self.server_task.abort();
    }
}

impl RunningCa {
    pub fn address(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server and waits until its listening socket is closed (a restart can bind
    /// the same address); returns the address.
    pub async fn stop(mut self) -> SocketAddr {
        self.server_task.abort();
        let _ = (&mut self.server_task).await;
        self.addr
    }

    /// A join token bound to `id`.
    pub fn join_token(&self, id: &SpiffeId) -> String {
        self.tokens
            .create(id, Duration::from_secs(600), SystemTime::now())
            .unwrap()
    }
}

/// Starts `ca` with join-token, Kubernetes (fake TokenReview) and certificate authentication;
/// the serving certificate lives `server_ttl` and renews itself.
pub async fn run_ca(ca: WorkloadCa, server_ttl: Duration) -> RunningCa {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    run_ca_on(ca, server_ttl, listener).await
}

/// [`run_ca`] on a given listener (to restart a CA at the same address).
pub async fn run_ca_on(
    ca: WorkloadCa,
    server_ttl: Duration,
    listener: tokio::net::TcpListener,
) -> RunningCa {
    let ca = Arc::new(ca);
    let tokens = Arc::new(JoinTokenStore::in_memory());
    let auth = authenticator(&tokens);
    let identity = ca_server_identity(Arc::clone(&ca), vec![CA_DNS.into()], server_ttl).unwrap();
    let identity_task = identity.spawn();
    identity.ready().await;
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let resolver = identity.server_resolver();
    let server_ca = Arc::clone(&ca);
    let server_task = tokio::spawn(async move {
        serve(
            server_ca,
            auth,
            resolver,
            TlsPolicy::GOVERNMENT,
            listener,
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    RunningCa {
        addr,
        ca,
        tokens,
        identity,
        identity_task,
        server_task,
        _shutdown: tx,
    }
}

/// A trust store over `roots` for the test trust domain.
pub fn trust(roots: Vec<CertificateDer<'static>>) -> TrustStore {
    TrustStore::new(TrustBundle::new(roots, vec![td()]).unwrap())
}

/// A workload identity issued by `ca` through gRPC, bootstrapping with `bootstrap`, asking
/// for `ttl_secs` (0 = the CA's default).
pub fn grpc_identity(
    ca: &RunningCa,
    id: SpiffeId,
    bootstrap: Bootstrap,
    ttl_secs: u64,
    trust: TrustStore,
) -> WorkloadIdentity {
    let mut config = GrpcSourceConfig::new(ca.address(), ca_id(), bootstrap);
    config.ttl_secs = ttl_secs;
    GrpcCertificateSource::identity(IdentityConfig::new(id), config, trust).unwrap()
}
