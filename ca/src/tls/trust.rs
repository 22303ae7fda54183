//! The trust bundle: the roots (several, for root rotation) and the SPIFFE trust domains a proxy
//! accepts, swappable at run time so a new bundle applies to the next handshake without a restart.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::spiffe::TrustDomain;

/// Why a trust bundle cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    /// No root certificate was given.
    #[error("trust bundle has no root certificate; give at least one PEM CERTIFICATE block")]
    NoRoots,
    /// No trust domain was given.
    #[error("trust bundle accepts no trust domain; give at least one (for example cluster.local)")]
    NoTrustDomains,
    /// A root could not be parsed as a trust anchor.
    #[error(
        "root certificate #{index} in the trust bundle is not a usable X.509 trust anchor: {source}"
    )]
    BadRoot {
        /// Position of the certificate in the bundle (0-based).
        index: usize,
        /// The parser's error.
        source: webpki::Error,
    },
    /// The PEM text could not be read.
    #[error("trust bundle PEM is unreadable: {0}")]
    Pem(String),
}

/// An immutable set of roots and accepted trust domains.
#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
    trust_domains: Vec<TrustDomain>,
}

impl TrustBundle {
    /// Builds a bundle from DER roots and the trust domains whose SPIFFE IDs are accepted.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        trust_domains: Vec<TrustDomain>,
    ) -> Result<Self, TrustBundleError> {
        if roots.is_empty() {
            return Err(TrustBundleError::NoRoots);
        }
        if trust_domains.is_empty() {
            return Err(TrustBundleError::NoTrustDomains);
        }
        let anchors = roots
            .iter()
            .enumerate()
            .map(|(index, der)| {
                webpki::anchor_from_trusted_cert(der)
                    .map(|a| a.to_owned())
                    .map_err(|source| TrustBundleError::BadRoot { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            roots,
            anchors,
            trust_domains,
        })
    }

    /// Builds a bundle from concatenated PEM certificates.
    pub fn from_pem(pem: &[u8], trust_domains: Vec<TrustDomain>) -> Result<Self, TrustBundleError> {
        let roots = match crate::chain::certs_from_pem(pem, std::path::Path::new("trust bundle")) {
            Ok(roots) => roots,
            Err(crate::chain::PemFileError::NoCertificate { .. }) => Vec::new(),
            Err(e) => return Err(TrustBundleError::Pem(e.to_string())),
        };
        Self::new(roots, trust_domains)
    }

    /// The roots, DER.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as webpki trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The accepted trust domains.
    pub fn trust_domains(&self) -> &[TrustDomain] {
        &self.trust_domains
    }

    /// Whether SPIFFE IDs of this trust domain are accepted.
    pub fn accepts(&self, domain: &TrustDomain) -> bool {
        self.trust_domains.iter().any(|d| d == domain)
    }

    /// A copy with other roots and the same trust domains.
    pub fn with_roots(
        &self,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, TrustBundleError> {
        Self::new(roots, self.trust_domains.clone())
    }
}

/// A shared, hot-swappable trust bundle, read lock-free on every handshake.
#[derive(Debug, Clone)]
pub struct TrustStore {
    current: Arc<ArcSwap<TrustBundle>>,
}

impl TrustStore {
    /// A store holding `bundle`.
    pub fn new(bundle: TrustBundle) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(bundle)),
        }
    }

    /// The bundle in force now.
    pub fn load(&self) -> Arc<TrustBundle> {
        self.current.load_full()
    }

    /// Replaces the bundle; the next handshake uses it, established connections are untouched.
    pub fn update(&self, bundle: TrustBundle) {
        tracing::info!(
            roots = bundle.roots.len(),
            trust_domains = ?bundle.trust_domains.iter().map(TrustDomain::as_str).collect::<Vec<_>>(),
            "trust bundle updated"
        );
        self.current.store(Arc::new(bundle));
    }
}
