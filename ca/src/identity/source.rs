//! Where a workload certificate comes from: the [`CertificateSource`] trait the identity
//! manager sends its CSR to (the CA's gRPC client in production, [`super::DevCa`] in tests).

use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

/// A signed chain returned by the CA.
#[derive(Debug, Clone)]
pub struct IssuedChain {
    /// Leaf first, then the intermediates up to (not including) the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// The CA's current root bundle, when it sends one (root rotation); empty to keep the
    /// bundle in force. Installed only after the new leaf verifies against it.
    pub roots: Vec<CertificateDer<'static>>,
}

/// Why the CA did not sign.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// The CA could not be reached or failed; try again later.
    #[error("CA unavailable: {0}")]
    Unavailable(String),
    /// The CA refused this request (identity not allowed, bad CSR, bad credentials).
    #[error("CA refused the CSR: {0}")]
    Rejected(String),
}

/// Signs a CSR for this proxy's workload identity.
#[async_trait::async_trait]
pub trait CertificateSource: Send + Sync + 'static {
    /// Sends the CSR (DER, PKCS#10) and returns the signed chain.
    async fn sign(
        &self,
        csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError>;
}
