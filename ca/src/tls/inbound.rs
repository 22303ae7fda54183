//! Inbound mTLS: the rustls server config a proxy listener terminates TLS with, its client
//! certificate verifier (trust bundle + SPIFFE checks, every refusal logged and counted), and
//! the peer identity handed to the request's context after the handshake.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, ResolvesServerCert};
use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::policy::TlsPolicy;
use super::reason::{Direction, record_refusal};
use super::trust::TrustStore;
use super::verify::{PeerRole, not_after, verify_peer};
use super::{ALPN_H2, ALPN_HTTP11};
use crate::spiffe::{SpiffeId, SvidError, spiffe_id_from_cert};

/// Verifies client certificates: chain to the trust bundle, EKU clientAuth, leaf CA:false,
/// pathLen and validity (webpki), and a SPIFFE URI SAN in an accepted trust domain.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    trust: TrustStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    /// A verifier reading the bundle in force from `trust` on each handshake.
    pub fn new(trust: TrustStore, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { trust, algorithms }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No certificate_authorities hint: peers hold exactly one mesh certificate, and the
        // bundle is swappable, so a borrowed list could not follow it.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        let bundle = self.trust.load();
        match verify_peer(
            &bundle,
            &self.algorithms,
            end_entity,
            intermediates,
            now,
            PeerRole::Client,
            &[],
        ) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(refusal) => Err(refuse(Direction::Inbound, &refusal, end_entity)),
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

/// A certificate refused by either verifier: logged and counted once, with the identity the
/// peer claims (unverified), and turned into the TLS error the handshake fails with.
pub(crate) fn refuse(
    direction: Direction,
    refusal: &super::reason::Refusal,
    end_entity: &CertificateDer<'_>,
) -> TlsError {
    let peer = spiffe_id_from_cert_der_lossy(end_entity);
    record_refusal(direction, refusal, peer.as_deref());
    refusal.to_tls_error()
}

/// The peer's claimed identity for a log line, if the certificate has one (unverified).
pub(crate) fn spiffe_id_from_cert_der_lossy(der: &CertificateDer<'_>) -> Option<String> {
    crate::spiffe::spiffe_id_from_cert_der(der)
        .ok()
        .map(|id| id.to_string())
}

/// Builds the inbound server config: mTLS required, the policy's versions and algorithms,
/// ALPN `h2` then `http/1.1`, and the server certificate from `certs` (hot-swappable).
///
/// Session resumption is off: every connection proves the peer's current certificate, so the
/// identity and expiry handed to the request context are never those of a stale session.
pub fn server_config(
    policy: &TlsPolicy,
    trust: TrustStore,
    certs: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = policy.shared_provider();
    let verifier = Arc::new(SpiffeClientVerifier::new(
        trust,
        provider.signature_verification_algorithms,
    ));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(policy.versions())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The authenticated peer of an inbound connection, for the request context (authz
/// `principals`, `source.certificate_fingerprint`, access logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// SHA-256 of the peer leaf certificate's DER, lowercase hex.
    pub fingerprint_sha256: String,
    /// The peer leaf's notAfter.
    pub not_after: SystemTime,
}

/// Why a peer identity could not be read from a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdentityError {
    /// The handshake has not completed or the peer sent no certificate.
    #[error("connection has no peer certificate (handshake incomplete or peer not authenticated)")]
    NoPeerCertificate,
    /// The peer certificate carries no usable SPIFFE ID.
    #[error("peer certificate has no usable SPIFFE identity: {0}")]
    NoSpiffeId(#[from] SvidError),
}

impl PeerIdentity {
    /// Reads the identity from the peer's certificates (leaf first), as returned by
    /// `CommonState::peer_certificates()` after a verified handshake.
    pub fn from_peer_certificates(
        certs: Option<&[CertificateDer<'_>]>,
    ) -> Result<Self, PeerIdentityError> {
        let leaf = certs
            .and_then(<[_]>::first)
            .ok_or(PeerIdentityError::NoPeerCertificate)?;
        let (_, cert) =
            X509Certificate::from_der(leaf).map_err(|e| SvidError::BadEncoding(e.to_string()))?;
        Ok(Self {
            spiffe_id: spiffe_id_from_cert(&cert)?,
            fingerprint_sha256: fingerprint_sha256(leaf),
            not_after: not_after(&cert),
        })
    }
}

/// The verified peer identity of a connection (server or client side).
pub fn peer_identity(conn: &rustls::CommonState) -> Result<PeerIdentity, PeerIdentityError> {
    PeerIdentity::from_peer_certificates(conn.peer_certificates())
}

/// SHA-256 of a DER certificate, lowercase hex (the form Istio's
/// `source.certificate_fingerprint` and jalin's access log use).
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}
