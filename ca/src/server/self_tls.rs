//! The CA's own serving certificate, renewed by the CA itself: a [`WorkloadIdentity`] whose
//! [`CertificateSource`] is the in-process [`WorkloadCa`], so the CA never needs a restart for
//! its TLS certificate. The key is made in process like any workload's, and each issuance is
//! audited with the auth method `ca_self`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateSigningRequestDer;

use super::{ServeError, ca_spiffe_id};
use crate::identity::{
    CertificateSource, IdentityConfig, IssuedChain, SourceError, WorkloadIdentity,
};
use crate::issue::{AuditContext, WorkloadCa, check_csr};
use crate::spiffe::SpiffeId;
use crate::tls::{TrustBundle, TrustStore};

/// The audit and metric label of the CA's own issuances.
pub const SELF_AUTH_METHOD: &str = "ca_self";

/// Signs the CA's own serving certificate: only for the CA's SPIFFE ID, with the CA's DNS names.
#[derive(Debug)]
pub struct LocalCaSource {
    ca: Arc<WorkloadCa>,
    id: SpiffeId,
    dns_names: Vec<String>,
    ttl: Duration,
}

impl LocalCaSource {
    /// A source issuing `spiffe://<td>/ns/jalin-system/sa/jalin-ca` plus `dns_names`, for `ttl`.
    pub fn new(
        ca: Arc<WorkloadCa>,
        dns_names: Vec<String>,
        ttl: Duration,
    ) -> Result<Self, ServeError> {
        let id = ca_spiffe_id(&ca)?;
        Ok(Self {
            ca,
            id,
            dns_names,
            ttl,
        })
    }
}

#[async_trait::async_trait]
impl CertificateSource for LocalCaSource {
    async fn sign(
        &self,
        csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError> {
        let rejected = |e: &dyn std::fmt::Display| SourceError::Rejected(e.to_string());
        let checked = check_csr(csr.as_ref()).map_err(|e| rejected(&e))?;
        if checked.requested.as_ref().is_some_and(|r| *r != self.id) {
            return Err(SourceError::Rejected(format!(
                "the CA signs its own certificate only for {}",
                self.id
            )));
        }
        let ca = Arc::clone(&self.ca);
        let id = self.id.clone();
        let dns = self.dns_names.clone();
        let ttl = self.ttl;
        // Signing may block on an HSM.
        let issued = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now();
            let ctx = AuditContext {
                auth_method: Some(SELF_AUTH_METHOD),
                caller: Some(id.to_string()),
                peer: None,
            };
            let result = ca.sign(&id, &checked.public_key, ttl, &dns, now);
            match &result {
                Ok(issued) => ca.audit_issued(&ctx, issued, now),
                Err(e) => ca.audit_refused(&ctx, Some(&id), Some(ttl.as_secs()), e, now),
            }
            result.map(|issued| {
                let mut chain = vec![issued.cert];
                chain.extend(ca.chain().iter().cloned());
                (chain, ca.roots().to_vec())
            })
        })
        .await
        .map_err(|e| SourceError::Unavailable(format!("signing task failed: {e}")))?;
        let (chain, roots) = issued.map_err(|e| SourceError::Unavailable(e.to_string()))?;
        Ok(IssuedChain { chain, roots })
    }
}

/// The CA's self-renewing serving identity: give [`WorkloadIdentity::server_resolver`] to
/// [`super::serve`], [`WorkloadIdentity::spawn`] it, and await [`WorkloadIdentity::ready`]
/// before accepting clients. It renews at half life with jitter, like every workload.
pub fn ca_server_identity(
    ca: Arc<WorkloadCa>,
    dns_names: Vec<String>,
    ttl: Duration,
) -> Result<WorkloadIdentity, ServeError> {
    let id = ca_spiffe_id(&ca)?;
    let bundle = TrustBundle::new(ca.roots().to_vec(), vec![ca.trust_domain().clone()])
        .map_err(|e| ServeError::Tls(e.to_string()))?;
    let source = LocalCaSource::new(ca, dns_names, ttl)?;
    WorkloadIdentity::new(
        IdentityConfig::new(id),
        Arc::new(source),
        TrustStore::new(bundle),
    )
    .map_err(|e| ServeError::Tls(e.to_string()))
}
