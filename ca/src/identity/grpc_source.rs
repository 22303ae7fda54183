//! The production [`CertificateSource`]: the CA's gRPC service over TLS. The first certificate
//! is obtained with a bootstrap credential (a one-time join token, or a Kubernetes
//! service-account token re-read from its file on every use, since the kubelet rotates it);
//! every later one is a renewal that presents the current workload certificate through the
//! identity manager's client resolver, and sends no token.
//!
//! Invariants:
//! - the CA is authenticated by its SPIFFE ID against the identity's trust store (so a root
//!   rotation the CA announces also applies to the connection to the CA), never by host name;
//! - a join token is sent at most until the first certificate is installed: it is one-time, and
//!   the CA refuses it afterwards;
//! - tokens are never logged (`Debug` redacts them).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls_pki_types::CertificateSigningRequestDer;

use super::manager::{IdentityConfig, IdentityError, WorkloadIdentity};
use super::source::{CertificateSource, IssuedChain, SourceError};
use super::store::CertStore;
use crate::auth::MAX_BEARER_TOKEN_BYTES;
use crate::server::client::{
    CaConnection, ClientAuth, ClientError, DEFAULT_CLIENT_TIMEOUT, request_certificate_over,
    server_name_of,
};
use crate::spiffe::SpiffeId;
use crate::tls::verify::not_after;
use crate::tls::{TlsPolicy, TrustStore, client_config};

/// How a workload proves who it is for its first certificate.
#[derive(Clone)]
pub enum Bootstrap {
    /// A one-time join token bound to this workload's identity (bare-metal hosts).
    JoinToken(String),
    /// A file holding a Kubernetes service-account token (projected volume); read on every use.
    KubernetesTokenFile(PathBuf),
}

impl std::fmt::Debug for Bootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::JoinToken(_) => f.write_str("Bootstrap::JoinToken(<redacted>)"),
            Self::KubernetesTokenFile(p) => write!(f, "Bootstrap::KubernetesTokenFile({p:?})"),
        }
    }
}

/// Where the CA is and how to talk to it.
#[derive(Debug, Clone)]
pub struct GrpcSourceConfig {
    /// `https://host:port` of the CA.
    pub address: String,
    /// The CA's SPIFFE ID (`spiffe://<td>/ns/jalin-system/sa/jalin-ca`), checked in its
    /// certificate instead of a host name.
    pub ca_id: SpiffeId,
    /// The first-certificate credential.
    pub bootstrap: Bootstrap,
    /// Requested lifetime in seconds; 0 asks for the CA's default.
    pub ttl_secs: u64,
    /// TLS policy for the connection to the CA.
    pub policy: TlsPolicy,
    /// Connect and request timeout.
    pub timeout: Duration,
}

impl GrpcSourceConfig {
    /// Defaults: the CA's default TTL, the default TLS policy, [`DEFAULT_CLIENT_TIMEOUT`].
    pub fn new(address: impl Into<String>, ca_id: SpiffeId, bootstrap: Bootstrap) -> Self {
        Self {
            address: address.into(),
            ca_id,
            bootstrap,
            ttl_secs: 0,
            policy: TlsPolicy::DEFAULT,
            timeout: DEFAULT_CLIENT_TIMEOUT,
        }
    }
}

/// The CA's gRPC service as a [`CertificateSource`].
pub struct GrpcCertificateSource {
    config: GrpcSourceConfig,
    trust: TrustStore,
    /// The identity manager's client resolver, attached once the manager exists.
    renewal: OnceLock<Arc<dyn ResolvesClientCert>>,
    /// Presents no certificate: bootstrap connections.
    anonymous: Arc<dyn ResolvesClientCert>,
}

impl std::fmt::Debug for GrpcCertificateSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcCertificateSource")
            .field("config", &self.config)
            .field("renewal_attached", &self.renewal.get().is_some())
            .finish_non_exhaustive()
    }
}

/// Schemes a P-256 workload key signs with; used to ask the resolver for its certificate.
const WORKLOAD_SCHEMES: &[SignatureScheme] = &[SignatureScheme::ECDSA_NISTP256_SHA256];

impl GrpcCertificateSource {
    /// A source talking to the CA of `config`, verifying it against `trust` (share the
    /// identity manager's store so root rotations apply here too).
    pub fn new(config: GrpcSourceConfig, trust: TrustStore) -> Self {
        Self {
            config,
            trust,
            renewal: OnceLock::new(),
            anonymous: Arc::new(CertStore::new()),
        }
    }

    /// Renews with the certificate `resolver` presents (the manager's
    /// [`WorkloadIdentity::client_resolver`]). Later calls are ignored.
    pub fn attach_renewal(&self, resolver: Arc<dyn ResolvesClientCert>) {
        let _ = self.renewal.set(resolver);
    }

    /// The usual wiring: a [`WorkloadIdentity`] for `identity` issuing through the CA of
    /// `config`, renewing with its own certificate. Spawn it and await `ready()`.
    pub fn identity(
        identity: IdentityConfig,
        config: GrpcSourceConfig,
        trust: TrustStore,
    ) -> Result<WorkloadIdentity, IdentityError> {
        let source = Arc::new(Self::new(config, trust.clone()));
        let manager = WorkloadIdentity::new(identity, source.clone(), trust)?;
        source.attach_renewal(manager.client_resolver());
        Ok(manager)
    }

    /// The resolver to renew with, when it holds a certificate still valid now.
    fn renewal_resolver(&self, now: SystemTime) -> Option<Arc<dyn ResolvesClientCert>> {
        let resolver = self.renewal.get()?;
        let current = resolver.resolve(&[], WORKLOAD_SCHEMES)?;
        let leaf = current.end_entity_cert().ok()?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        (now < not_after(&cert)).then(|| Arc::clone(resolver))
    }

    /// The bootstrap credential, read now.
    fn bootstrap_credential(&self) -> Result<ClientAuth, SourceError> {
        match &self.config.bootstrap {
            Bootstrap::JoinToken(t) => Ok(ClientAuth::JoinToken(t.clone())),
            Bootstrap::KubernetesTokenFile(path) => {
                let unreadable = |why: String| {
                    SourceError::Unavailable(format!(
                        "service-account token {}: {why}; check the projected token volume is mounted",
                        path.display()
                    ))
                };
                let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
                if meta.len() > MAX_BEARER_TOKEN_BYTES as u64 {
                    return Err(unreadable(format!(
                        "larger than {MAX_BEARER_TOKEN_BYTES} bytes"
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(unreadable("empty".to_owned()));
                }
                Ok(ClientAuth::KubernetesToken(token.to_owned()))
            }
        }
    }

    fn connection(&self, certs: Arc<dyn ResolvesClientCert>) -> Result<CaConnection, SourceError> {
        let setup = |e: &dyn std::fmt::Display| SourceError::Unavailable(e.to_string());
        let tls = client_config(
            &self.config.policy,
            self.trust.clone(),
            certs,
            vec![self.config.ca_id.clone()],
        )
        .map_err(|e| setup(&e))?;
        Ok(CaConnection {
            address: self.config.address.clone(),
            server_name: server_name_of(&self.config.address).map_err(|e| setup(&e))?,
            tls,
            timeout: self.config.timeout,
        })
    }

    async fn request(
        &self,
        certs: Arc<dyn ResolvesClientCert>,
        credential: Option<&ClientAuth>,
        csr: &[u8],
    ) -> Result<IssuedChain, SourceError> {
        let connection = self.connection(certs)?;
        request_certificate_over(&connection, credential, csr, self.config.ttl_secs)
            .await
            .map_err(source_error)?
            .into_issued_chain()
            .map_err(|e| SourceError::Unavailable(format!("CA returned unreadable PEM: {e}")))
    }
}

/// Refusals the caller must fix are `Rejected`; everything else may pass with a retry.
fn source_error(e: ClientError) -> SourceError {
    match e {
        ClientError::Refused { code, message }
            if matches!(
                code,
                tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::InvalidArgument
            ) =>
        {
            SourceError::Rejected(format!("{code:?}: {message}"))
        }
        other => SourceError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl CertificateSource for GrpcCertificateSource {
    async fn sign(
        &self,
        csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError> {
        if let Some(certs) = self.renewal_resolver(SystemTime::now()) {
            match self.request(certs, None, csr.as_ref()).await {
                Ok(issued) => return Ok(issued),
                // A Kubernetes token can be shown again: fall back to it when renewal by
                // certificate fails. The CA may refuse the certificate in the request or, once
                // its roots have rotated past it, already in the TLS handshake (which surfaces
                // as a transport error). A join token is one-time: no fallback.
                Err(e) if matches!(self.config.bootstrap, Bootstrap::KubernetesTokenFile(_)) => {
                    tracing::warn!(error = %e, "renewal by certificate failed; trying the service-account token");
                }
                Err(e) => return Err(e),
            }
        }
        let credential = self.bootstrap_credential()?;
        self.request(self.anonymous.clone(), Some(&credential), csr.as_ref())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spiffe::TrustDomain;
    use crate::tls::TrustBundle;

    fn source(bootstrap: Bootstrap) -> GrpcCertificateSource {
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = crate::identity::DevCa::new(td.clone(), Duration::from_secs(60)).unwrap();
        let trust = TrustStore::new(TrustBundle::new(vec![ca.root()], vec![td.clone()]).unwrap());
        let ca_id = SpiffeId::workload(&td, "jalin-system", "jalin-ca").unwrap();
        GrpcCertificateSource::new(
            GrpcSourceConfig::new("https://127.0.0.1:1", ca_id, bootstrap),
            trust,
        )
    }

    #[test]
    fn kubernetes_token_file_is_reread_trimmed_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let s = source(Bootstrap::KubernetesTokenFile(path.clone()));
        assert!(matches!(
            s.bootstrap_credential(),
            Err(SourceError::Unavailable(m)) if m.contains("projected token volume")
        ));
        std::fs::write(&path, "first\n").unwrap();
        assert!(
            matches!(s.bootstrap_credential(), Ok(ClientAuth::KubernetesToken(t)) if t == "first")
        );
        std::fs::write(&path, "rotated").unwrap();
        assert!(
            matches!(s.bootstrap_credential(), Ok(ClientAuth::KubernetesToken(t)) if t == "rotated")
        );
        std::fs::write(&path, " \n").unwrap();
        assert!(
            matches!(s.bootstrap_credential(), Err(SourceError::Unavailable(m)) if m.contains("empty"))
        );
        std::fs::write(&path, vec![b'a'; MAX_BEARER_TOKEN_BYTES + 1]).unwrap();
        assert!(
            matches!(s.bootstrap_credential(), Err(SourceError::Unavailable(m)) if m.contains("larger"))
        );
    }

    #[test]
    fn bootstraps_until_a_valid_certificate_is_installed() {
        let s = source(Bootstrap::JoinToken("jlt_secret".into()));
        assert!(!format!("{s:?}").contains("jlt_secret"));
        assert!(s.renewal_resolver(SystemTime::now()).is_none());
        let store = Arc::new(CertStore::new());
        s.attach_renewal(store.clone());
        assert!(
            s.renewal_resolver(SystemTime::now()).is_none(),
            "empty store"
        );

        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = crate::identity::DevCa::new(td.clone(), Duration::from_secs(60)).unwrap();
        let id = SpiffeId::workload(&td, "a", "b").unwrap();
        let (chain, key) = ca.issue(&id, &[]).unwrap();
        let certified = rustls::sign::CertifiedKey::from_der(
            chain,
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            &rustls::crypto::aws_lc_rs::default_provider(),
        )
        .unwrap();
        store.install(Arc::new(certified));
        assert!(s.renewal_resolver(SystemTime::now()).is_some());
        let later = SystemTime::now() + Duration::from_secs(120);
        assert!(s.renewal_resolver(later).is_none(), "expired certificate");
    }

    #[test]
    fn refusals_are_rejected_and_outages_unavailable() {
        let refused = |code| ClientError::Refused {
            code,
            message: "m".into(),
        };
        for code in [
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::InvalidArgument,
        ] {
            assert!(matches!(
                source_error(refused(code)),
                SourceError::Rejected(_)
            ));
        }
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Internal,
            tonic::Code::DeadlineExceeded,
        ] {
            assert!(matches!(
                source_error(refused(code)),
                SourceError::Unavailable(_)
            ));
        }
    }
}
