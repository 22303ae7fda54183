//! Peer certificate verification shared by the inbound and outbound verifiers: webpki path
//! building (validity, signatures, basicConstraints/pathLen, EKU), then the SPIFFE checks
//! (exactly one SPIFFE URI SAN, accepted trust domain, expected identity). Free of I/O: the
//! caller passes `now`.

use std::time::{Duration, SystemTime};

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::reason::{Refusal, RefusalReason};
use super::trust::TrustBundle;
use crate::spiffe::{SpiffeId, SvidError, spiffe_id_from_cert};

/// DER body of the id-kp-serverAuth OID (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// DER body of the id-kp-clientAuth OID (1.3.6.1.5.5.7.3.2).
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// The role the peer's certificate must be valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is a TLS client: its leaf must carry EKU clientAuth.
    Client,
    /// The peer is a TLS server: its leaf must carry EKU serverAuth.
    Server,
}

/// What a successful verification proved about the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPeer {
    /// The peer's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

/// Verifies a peer chain against `bundle` at `now`.
///
/// `expected`, when given, lists the SPIFFE IDs the peer may have (outbound: the identity service
/// discovery announced for the endpoint); an empty list accepts any identity of an accepted
/// trust domain.
pub fn verify_peer(
    bundle: &TrustBundle,
    algorithms: &WebPkiSupportedAlgorithms,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
    expected: &[SpiffeId],
) -> Result<VerifiedPeer, Refusal> {
    let ee = webpki::EndEntityCert::try_from(end_entity).map_err(|e| Refusal::from_webpki(&e))?;
    // webpki applies the EKU to every certificate of the path, so it can only require it
    // "if present" (CAs rarely carry EKU); the leaf's EKU is then *required* below.
    let usage = match role {
        PeerRole::Client => webpki::KeyUsage::required_if_present(EKU_CLIENT_AUTH),
        PeerRole::Server => webpki::KeyUsage::required_if_present(EKU_SERVER_AUTH),
    };
    ee.verify_for_usage(
        algorithms.all,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(|e| Refusal::from_webpki(&e))?;

    let (_, cert) = X509Certificate::from_der(end_entity).map_err(|e| {
        Refusal::new(
            RefusalReason::BadCertificate,
            format!("leaf is not X.509: {e}"),
        )
    })?;
    let has_eku = match cert.extended_key_usage() {
        Ok(Some(eku)) => match role {
            PeerRole::Client => eku.value.client_auth,
            PeerRole::Server => eku.value.server_auth,
        },
        Ok(None) => false,
        Err(e) => {
            return Err(Refusal::new(
                RefusalReason::BadCertificate,
                format!("leaf extendedKeyUsage is malformed: {e}"),
            ));
        }
    };
    if !has_eku {
        let wanted = match role {
            PeerRole::Client => "clientAuth",
            PeerRole::Server => "serverAuth",
        };
        return Err(Refusal::new(
            RefusalReason::WrongEku,
            format!(
                "leaf has no extendedKeyUsage {wanted}; mesh certificates carry clientAuth and serverAuth"
            ),
        ));
    }
    let spiffe_id = spiffe_id_from_cert(&cert).map_err(|e| match e {
        SvidError::NoUriSan => Refusal::new(RefusalReason::NoUriSan, e.to_string()),
        SvidError::BadEncoding(_) => Refusal::new(RefusalReason::BadCertificate, e.to_string()),
        SvidError::MultipleUriSans(_) | SvidError::InvalidId(_) => {
            Refusal::new(RefusalReason::InvalidSpiffeId, e.to_string())
        }
    })?;
    if !bundle.accepts(spiffe_id.trust_domain()) {
        return Err(Refusal::new(
            RefusalReason::OtherTrustDomain,
            format!(
                "peer {spiffe_id} is in trust domain {:?}; accepted: {:?}",
                spiffe_id.trust_domain().as_str(),
                bundle
                    .trust_domains()
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
            ),
        ));
    }
    if !expected.is_empty() && !expected.contains(&spiffe_id) {
        return Err(Refusal::new(
            RefusalReason::IdentityMismatch,
            format!(
                "peer presented {spiffe_id}; expected {}",
                expected
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    Ok(VerifiedPeer {
        spiffe_id,
        not_after: not_after(&cert),
    })
}

/// The certificate's notAfter as a `SystemTime` (clamped at the epoch).
pub(crate) fn not_after(cert: &X509Certificate<'_>) -> SystemTime {
    let secs = cert.validity().not_after.timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// The certificate's notBefore as a `SystemTime` (clamped at the epoch).
pub(crate) fn not_before(cert: &X509Certificate<'_>) -> SystemTime {
    let secs = cert.validity().not_before.timestamp();
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}
