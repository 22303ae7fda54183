//! Outbound mTLS: the rustls client config a proxy uses to reach a peer proxy, verifying the
//! peer's SPIFFE identity (not its hostname) on top of webpki chain verification.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, Error as TlsError, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::inbound::refuse;
use super::policy::TlsPolicy;
use super::reason::Direction;
use super::trust::TrustStore;
use super::verify::{PeerRole, verify_peer};
use super::{ALPN_H2, ALPN_HTTP11};
use crate::spiffe::SpiffeId;

/// Verifies a peer proxy's certificate: chain to the trust bundle, EKU serverAuth, leaf
/// CA:false, pathLen and validity (webpki), an accepted trust domain, and a SPIFFE ID among
/// the expected ones. The TLS server name is used for SNI only, never for authentication.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    trust: TrustStore,
    algorithms: WebPkiSupportedAlgorithms,
    expected: Vec<SpiffeId>,
}

impl SpiffeServerVerifier {
    /// A verifier accepting a peer whose SPIFFE ID is one of `expected`.
    ///
    /// `expected` must not be empty: an outbound connection always knows whom it calls.
    pub fn new(
        trust: TrustStore,
        algorithms: WebPkiSupportedAlgorithms,
        expected: Vec<SpiffeId>,
    ) -> Self {
        Self {
            trust,
            algorithms,
            expected,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        let bundle = self.trust.load();
        match verify_peer(
            &bundle,
            &self.algorithms,
            end_entity,
            intermediates,
            now,
            PeerRole::Server,
            &self.expected,
        ) {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(refusal) => Err(refuse(Direction::Outbound, &refusal, end_entity)),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Why an outbound config cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundConfigError {
    /// No expected identity was given.
    #[error(
        "outbound mTLS needs the peer's expected SPIFFE ID; service discovery gave none for this endpoint"
    )]
    NoExpectedIdentity,
    /// rustls refused the policy.
    #[error("TLS policy is not usable: {0}")]
    Tls(#[from] TlsError),
}

/// Builds an outbound client config that authenticates the peer as one of `expected`, presents
/// our workload certificate from `certs` (hot-swappable), and offers ALPN `h2` then `http/1.1`.
///
/// One config per expected identity; build it once per destination and reuse it (connections
/// between proxies are long-lived). Resumption is off so that no session verified for one
/// identity, or against an older bundle, can be resumed without a full verification.
pub fn client_config(
    policy: &TlsPolicy,
    trust: TrustStore,
    certs: Arc<dyn ResolvesClientCert>,
    expected: Vec<SpiffeId>,
) -> Result<Arc<ClientConfig>, OutboundConfigError> {
    if expected.is_empty() {
        return Err(OutboundConfigError::NoExpectedIdentity);
    }
    let provider = policy.shared_provider();
    let verifier = Arc::new(SpiffeServerVerifier::new(
        trust,
        provider.signature_verification_algorithms,
        expected,
    ));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(policy.versions())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Most destination identities an [`OutboundTls`] keeps a config for. A mesh has at most a few
/// thousand service accounts; past this the cache is rebuilt from empty rather than grown.
pub const MAX_CACHED_CLIENT_CONFIGS: usize = 4096;

/// Outbound TLS for one proxy: the policy, trust store and workload certificate, and one
/// client config per destination identity, built on first use and reused afterwards.
pub struct OutboundTls {
    policy: TlsPolicy,
    trust: TrustStore,
    certs: Arc<dyn ResolvesClientCert>,
    cache: std::sync::Mutex<std::collections::HashMap<SpiffeId, Arc<ClientConfig>>>,
}

impl std::fmt::Debug for OutboundTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundTls")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl OutboundTls {
    /// Outbound TLS with `policy`, verifying against `trust`, presenting `certs`.
    pub fn new(policy: TlsPolicy, trust: TrustStore, certs: Arc<dyn ResolvesClientCert>) -> Self {
        Self {
            policy,
            trust,
            certs,
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The client config that authenticates the peer as `expected` (cached per identity).
    pub fn config_for(
        &self,
        expected: &SpiffeId,
    ) -> Result<Arc<ClientConfig>, OutboundConfigError> {
        let mut cache = match self.cache.lock() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave a half-inserted entry in a HashMap
            // insert of an Arc; the cache stays usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(config) = cache.get(expected) {
            return Ok(config.clone());
        }
        let config = client_config(
            &self.policy,
            self.trust.clone(),
            self.certs.clone(),
            vec![expected.clone()],
        )?;
        if cache.len() >= MAX_CACHED_CLIENT_CONFIGS {
            cache.clear();
        }
        cache.insert(expected.clone(), config.clone());
        Ok(config)
    }
}
