//! Kubernetes service-account tokens, checked through TokenReview behind the [`TokenReviewer`]
//! trait (the control plane implements it with the API server; tests use a fake). Semantics
//! follow `authentication.k8s.io/v1` TokenReview: `status.authenticated` must be true, the user
//! name must be `system:serviceaccount:<ns>:<sa>`, and when audiences are configured
//! `status.audiences` must contain one of them.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{AuthError, AuthMethod, AuthenticatedCaller, Authenticator, Credentials, ensure_same};
use crate::spiffe::SpiffeId;

/// Longest bearer token accepted (projected tokens are ~1 KiB).
pub const MAX_BEARER_TOKEN_BYTES: usize = 16 * 1024;

/// The part of a TokenReview's status the CA uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenReviewStatus {
    pub authenticated: bool,
    /// `status.user.username`.
    pub username: String,
    /// `status.audiences`.
    pub audiences: Vec<String>,
    /// `status.error`.
    pub error: Option<String>,
}

/// The TokenReview call failed (API server unreachable, forbidden, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// Submits a TokenReview for `token` with `spec.audiences = audiences`.
#[async_trait]
pub trait TokenReviewer: Send + Sync {
    async fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<TokenReviewStatus, ReviewError>;
}

/// Authenticates by Kubernetes service-account token (metadata `authorization: Bearer ...`).
pub struct KubernetesAuthenticator {
    reviewer: Arc<dyn TokenReviewer>,
    audiences: Vec<String>,
    trust_domain: String,
}

impl std::fmt::Debug for KubernetesAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesAuthenticator")
            .field("audiences", &self.audiences)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl KubernetesAuthenticator {
    /// `audiences`: accepted token audiences (empty = the API server's default audience).
    pub fn new(
        reviewer: Arc<dyn TokenReviewer>,
        audiences: Vec<String>,
        trust_domain: &str,
    ) -> Self {
        Self {
            reviewer,
            audiences,
            trust_domain: trust_domain.to_owned(),
        }
    }
}

#[async_trait]
impl Authenticator for KubernetesAuthenticator {
    async fn authenticate(
        &self,
        creds: &Credentials,
        requested: Option<&SpiffeId>,
        _now: SystemTime,
    ) -> Result<Option<AuthenticatedCaller>, AuthError> {
        let Some(token) = &creds.bearer_token else {
            return Ok(None);
        };
        if token.len() > MAX_BEARER_TOKEN_BYTES {
            return Err(AuthError::Kubernetes(format!(
                "token longer than {MAX_BEARER_TOKEN_BYTES} bytes"
            )));
        }
        let status = self
            .reviewer
            .review(token, &self.audiences)
            .await
            .map_err(|e| AuthError::Review(e.0))?;
        if !status.authenticated {
            return Err(AuthError::Kubernetes(format!(
                "not authenticated: {}",
                status.error.as_deref().unwrap_or("no reason given")
            )));
        }
        if !self.audiences.is_empty()
            && !status.audiences.iter().any(|a| self.audiences.contains(a))
        {
            return Err(AuthError::Kubernetes(format!(
                "token audiences {:?} include none of {:?}",
                status.audiences, self.audiences
            )));
        }
        let rest = status
            .username
            .strip_prefix("system:serviceaccount:")
            .ok_or_else(|| {
                AuthError::Kubernetes(format!(
                    "user {:?} is not a service account",
                    status.username
                ))
            })?;
        let (ns, sa) = rest.split_once(':').ok_or_else(|| {
            AuthError::Kubernetes(format!(
                "malformed service-account user {:?}",
                status.username
            ))
        })?;
        let id = SpiffeId::new_workload(&self.trust_domain, ns, sa)
            .map_err(|e| AuthError::Kubernetes(e.to_string()))?;
        ensure_same(&id, requested)?;
        Ok(Some(AuthenticatedCaller {
            id,
            method: AuthMethod::KubernetesToken,
        }))
    }
}
