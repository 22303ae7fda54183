//! The issuance service: CSR signing over gRPC with TLS. Request order: TLS (optional client
//! certificate, verified to the root bundle) -> credentials from metadata -> CSR check ->
//! authentication against the requested identity -> TTL policy -> signing -> audit. The CA's
//! serving certificate comes from a resolver on each handshake ([`self_tls`] renews it).

pub mod client;
pub mod self_tls;
mod tls_incoming;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Authenticator, Credentials};
use crate::issue::{AuditContext, IssueError, WorkloadCa, check_csr, new_workload_csr};
use crate::spiffe::SpiffeId;
use crate::tls::TlsPolicy;

/// Generated protobuf and gRPC code for `jalin.ca.v1`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("jalin.ca.v1");
}

/// Metadata key carrying a join token.
pub const JOIN_TOKEN_METADATA: &str = "jalin-join-token";
/// How often the expiry gauges are refreshed and the 30-day warning re-evaluated.
pub const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(3600);
/// Bound on how long a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request accepted (a CSR is under 1 KiB; the CSR check caps it at 16 KiB).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Bound on one request, including an HSM signature.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent requests per connection; issuance is cheap but HSM signing is serialised.
pub const MAX_CONCURRENT_PER_CONNECTION: usize = 32;
/// The namespace and service account of the CA's own identity.
pub const CA_NAMESPACE: &str = "jalin-system";
pub const CA_SERVICE_ACCOUNT: &str = "jalin-ca";

/// The CA server's TLS identity (certificate chain and key, PEM).
#[derive(Clone)]
pub struct ServerTls {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls { key: <redacted> }")
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("TLS listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("issuing the server certificate: {0}")]
    Issue(#[from] IssueError),
}

impl ServerTls {
    /// A fixed server-certificate resolver over this chain and key (no renewal: prefer
    /// [`self_tls::ca_server_identity`], which renews the CA's serving certificate itself).
    pub fn resolver(&self) -> Result<Arc<dyn ResolvesServerCert>, ServeError> {
        let chain = crate::chain::certs_from_pem(
            self.cert_chain_pem.as_bytes(),
            std::path::Path::new("CA server certificate"),
        )
        .map_err(|e| ServeError::Tls(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| ServeError::Tls(format!("CA server key: {e}")))?;
        let certified =
            CertifiedKey::from_der(chain, key, &crate::tls::TlsPolicy::DEFAULT.provider())
                .map_err(|e| ServeError::Tls(e.to_string()))?;
        let store = crate::identity::CertStore::new();
        store.install(Arc::new(certified));
        Ok(Arc::new(store))
    }
}

/// The SPIFFE ID the CA serves under: `spiffe://<td>/ns/jalin-system/sa/jalin-ca`.
pub fn ca_spiffe_id(ca: &WorkloadCa) -> Result<SpiffeId, ServeError> {
    SpiffeId::workload(ca.trust_domain(), CA_NAMESPACE, CA_SERVICE_ACCOUNT)
        .map_err(|e| ServeError::Tls(e.to_string()))
}

/// Issues the CA server's own certificate: the identity
/// `spiffe://<td>/ns/jalin-system/sa/jalin-ca` plus `dns_names` for clients to verify.
pub fn server_identity(
    ca: &WorkloadCa,
    dns_names: &[String],
    ttl: Duration,
    now: SystemTime,
) -> Result<ServerTls, ServeError> {
    let id = ca_spiffe_id(ca)?;
    let (_, key) = new_workload_csr(&id).map_err(|e| ServeError::Tls(e.to_string()))?;
    let issued = ca.sign(&id, &key, ttl, dns_names, now)?;
    Ok(ServerTls {
        cert_chain_pem: issued.chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// One place that maps an issuance error to a gRPC status.
pub fn status_for(err: &IssueError) -> Status {
    match err {
        IssueError::Csr(_)
        | IssueError::TrustDomain { .. }
        | IssueError::TtlTooLong { .. }
        | IssueError::TtlZero => Status::invalid_argument(err.to_string()),
        IssueError::Unauthenticated { .. } => Status::unauthenticated(err.to_string()),
        IssueError::IdentityMismatch { .. } => Status::permission_denied(err.to_string()),
        IssueError::Signing(_) => Status::internal("the CA could not sign; see the CA log"),
    }
}

fn from_auth(e: AuthError) -> IssueError {
    match e {
        AuthError::IdentityMismatch { caller, requested } => {
            IssueError::IdentityMismatch { caller, requested }
        }
        AuthError::Token(crate::auth::TokenError::WrongIdentity { bound, requested }) => {
            IssueError::IdentityMismatch {
                caller: format!("join token bound to {bound}"),
                requested,
            }
        }
        other => IssueError::Unauthenticated {
            code: other.code(),
            reason: other.to_string(),
        },
    }
}

/// The gRPC service.
pub struct CaService {
    ca: Arc<WorkloadCa>,
    auth: Arc<dyn Authenticator>,
}

impl CaService {
    pub fn new(ca: Arc<WorkloadCa>, auth: Arc<dyn Authenticator>) -> Self {
        Self { ca, auth }
    }
}

fn credentials<T>(req: &Request<T>) -> Credentials {
    let md = req.metadata();
    let text = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Credentials {
        peer_certs: req.peer_certs(),
        join_token: text(JOIN_TOKEN_METADATA),
        bearer_token: text("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned())),
        peer_addr: req.remote_addr(),
    }
}

#[tonic::async_trait]
impl pb::certificate_service_server::CertificateService for CaService {
    async fn sign_certificate(
        &self,
        request: Request<pb::SignCertificateRequest>,
    ) -> Result<Response<pb::SignCertificateResponse>, Status> {
        let now = SystemTime::now();
        let creds = credentials(&request);
        let mut ctx = AuditContext {
            peer: creds.peer_addr.map(|a| a.to_string()),
            ..AuditContext::default()
        };
        let msg = request.into_inner();
        let ca = &self.ca;
        let refuse = |ctx: &AuditContext, requested: Option<&SpiffeId>, e: IssueError| {
            ca.audit_refused(ctx, requested, Some(msg.ttl_seconds), &e, now);
            status_for(&e)
        };
        let csr = match check_csr(&msg.csr) {
            Ok(c) => c,
            Err(e) => return Err(refuse(&ctx, None, e.into())),
        };
        let caller = match self
            .auth
            .authenticate(&creds, csr.requested.as_ref(), now)
            .await
        {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(refuse(
                    &ctx,
                    csr.requested.as_ref(),
                    from_auth(AuthError::NoCredentials),
                ));
            }
            Err(e) => return Err(refuse(&ctx, csr.requested.as_ref(), from_auth(e))),
        };
        ctx.auth_method = Some(caller.method.label());
        ctx.caller = Some(caller.id.to_string());
        let id = caller.id.clone();
        let ca = Arc::clone(&self.ca);
        let ttl = msg.ttl_seconds;
        // Signing may block on an HSM: keep it off the async workers.
        let issued = tokio::task::spawn_blocking(move || {
            let r = ca.issue(&ctx, &id, &csr, ttl, now);
            r.map(|i| (i, ca.roots_pem()))
        })
        .await
        .map_err(|_| Status::internal("signing task failed"))?;
        let (issued, bundle) = issued.map_err(|e| status_for(&e))?;
        let not_after = crate::chain::unix_secs(issued.not_after);
        Ok(Response::new(pb::SignCertificateResponse {
            cert_chain_pem: issued.chain_pem,
            trust_bundle_pem: bundle,
            spiffe_id: issued.id.to_string(),
            not_after_unix: not_after,
        }))
    }
}

/// Serves the issuance API over TLS on `listener` until `shutdown` completes, presenting the
/// certificate `certs` resolves on each handshake (give the resolver of
/// [`self_tls::ca_server_identity`] so the serving certificate renews itself). Client
/// certificates are optional (renewal), verified against the CA's root bundle. `policy` is the
/// TLS policy (`TlsPolicy::GOVERNMENT` for AES-GCM and NIST curves only).
pub async fn serve(
    ca: Arc<WorkloadCa>,
    auth: Arc<dyn Authenticator>,
    certs: Arc<dyn ResolvesServerCert>,
    policy: TlsPolicy,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let tls_config = tls_incoming::server_config(&ca, certs, &policy)?;
    let expiry_ca = Arc::clone(&ca);
    // The expiry task ends with this future, also when it is dropped mid-way.
    let _expiry = AbortOnDrop(tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            expiry_ca.refresh_expiry_metrics(SystemTime::now());
        }
    }));
    let incoming = tls_incoming::incoming(listener, tls_config);
    let result = Server::builder()
        .timeout(REQUEST_TIMEOUT)
        .max_concurrent_streams(u32::try_from(MAX_CONCURRENT_PER_CONNECTION).unwrap_or(32))
        .add_service(
            pb::certificate_service_server::CertificateServiceServer::new(CaService::new(ca, auth))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    Ok(result?)
}

/// Aborts a helper task when the serving future ends or is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
