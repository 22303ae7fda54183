//! Caller authentication for the issuance service, behind one [`Authenticator`] trait:
//! a still-valid workload certificate (renewal of its own identity), a one-time bare-metal join
//! token, or a Kubernetes service-account token checked through TokenReview.

mod certificate;
pub mod join_token;
mod kubernetes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use rustls_pki_types::CertificateDer;

use crate::spiffe::SpiffeId;
pub use certificate::CertificateAuthenticator;
pub use join_token::{JoinTokenAuthenticator, JoinTokenStore, TokenError};
pub use kubernetes::{
    KubernetesAuthenticator, MAX_BEARER_TOKEN_BYTES, ReviewError, TokenReviewStatus, TokenReviewer,
};

/// How a caller proved its identity; also the audit and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    WorkloadCertificate,
    JoinToken,
    KubernetesToken,
}

impl AuthMethod {
    /// The label used in audit lines and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::WorkloadCertificate => "workload_certificate",
            Self::JoinToken => "join_token",
            Self::KubernetesToken => "kubernetes_token",
        }
    }
}

/// What a caller presented. Tokens are secrets: this type never prints them.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The verified TLS client certificate chain (leaf first), if any.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// Metadata `jalin-join-token`.
    pub join_token: Option<String>,
    /// Metadata `authorization: Bearer ...`.
    pub bearer_token: Option<String>,
    /// The caller's address.
    pub peer_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("peer_certs", &self.peer_certs.as_ref().map(|c| c.len()))
            .field(
                "join_token",
                &self.join_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}

/// A caller whose identity is proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCaller {
    pub id: SpiffeId,
    pub method: AuthMethod,
}

/// Why authentication failed. `code()` is the audit and metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no credential: present a workload certificate, a join token (jalin-join-token) or a Kubernetes token (authorization: Bearer)"
    )]
    NoCredentials,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("client certificate refused: {0}")]
    Certificate(String),
    #[error("Kubernetes token refused: {0}")]
    Kubernetes(String),
    #[error("TokenReview failed: {0}")]
    Review(String),
    #[error("caller {caller} may not obtain a certificate for {requested}")]
    IdentityMismatch { caller: String, requested: String },
}

impl AuthError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoCredentials => "no_credentials",
            Self::Token(t) => t.code(),
            Self::Certificate(_) => "client_certificate_invalid",
            Self::Kubernetes(_) => "kubernetes_token_rejected",
            Self::Review(_) => "token_review_failed",
            Self::IdentityMismatch { .. } => "identity_mismatch",
        }
    }
}

/// Checks who a caller is. `requested` is the identity the CSR asks for (if it names one);
/// an implementation refuses when the caller may not have it.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// `Ok(None)` when the credential this authenticator handles is absent.
    async fn authenticate(
        &self,
        creds: &Credentials,
        requested: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<Option<AuthenticatedCaller>, AuthError>;
}

/// Refuses when `requested` names another identity than the caller's.
pub(crate) fn ensure_same(
    caller: &SpiffeId,
    requested: Option<&SpiffeId>,
) -> Result<(), AuthError> {
    match requested {
        Some(r) if r != caller => Err(AuthError::IdentityMismatch {
            caller: caller.to_string(),
            requested: r.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Tries each authenticator in order; the first that recognises a credential decides.
/// Order matters: put explicit tokens before the TLS client certificate.
#[derive(Clone, Default)]
pub struct AnyOf(pub Vec<Arc<dyn Authenticator>>);

#[async_trait]
impl Authenticator for AnyOf {
    async fn authenticate(
        &self,
        creds: &Credentials,
        requested: Option<&SpiffeId>,
        now: SystemTime,
    ) -> Result<Option<AuthenticatedCaller>, AuthError> {
        for a in &self.0 {
            if let Some(caller) = a.authenticate(creds, requested, now).await? {
                return Ok(Some(caller));
            }
        }
        Ok(None)
    }
}
