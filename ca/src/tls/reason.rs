//! The one place where a refused TLS peer gets its reason: webpki/rustls errors and jalin's own
//! identity checks map to [`RefusalReason`], which names the log line, the metric label
//! (`jalin_tls_handshake_failures_total{reason,direction}`) and the TLS alert sent to the peer.

use std::fmt;
use std::sync::Arc;

use rustls::{CertificateError, Error as TlsError, OtherError};

/// Name of the handshake-failure counter.
pub const HANDSHAKE_FAILURES_METRIC: &str = "jalin_tls_handshake_failures_total";

/// Which side of the connection refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We terminate TLS (a peer proxy or client connected to us).
    Inbound,
    /// We originate TLS (we connected to a peer proxy).
    Outbound,
}

impl Direction {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// Why a peer was refused. Each variant is one metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The peer certificate's notAfter is in the past.
    Expired,
    /// The peer certificate's notBefore is in the future.
    NotYetValid,
    /// The chain does not lead to any root of the trust bundle.
    UnknownIssuer,
    /// A signature in the chain does not verify.
    BadSignature,
    /// The SPIFFE ID is in a trust domain this proxy does not accept.
    OtherTrustDomain,
    /// The leaf has no URI SAN.
    NoUriSan,
    /// The leaf has more than one URI SAN, or its URI SAN is not a valid SPIFFE ID.
    InvalidSpiffeId,
    /// The leaf is a CA certificate (basicConstraints CA:true).
    CaLeaf,
    /// The leaf's extended key usage does not allow this role (clientAuth / serverAuth).
    WrongEku,
    /// A CA in the chain has more CAs below it than its pathLenConstraint allows.
    PathLen,
    /// The chain violates a name constraint of a CA above it.
    NameConstraint,
    /// The peer's SPIFFE ID is valid but not the identity this connection expected.
    IdentityMismatch,
    /// The client presented no certificate to an mTLS listener.
    NoClientCert,
    /// A plaintext connection reached a port whose PeerAuthentication mode is STRICT.
    PlaintextOnStrictPort,
    /// The certificate is malformed or uses something unsupported.
    BadCertificate,
    /// No protocol version, cipher suite, group or signature scheme in common.
    ProtocolMismatch,
    /// The peer refused our certificate (we received a fatal alert).
    PeerRefused,
    /// The peer sent bytes that are not a valid TLS handshake.
    MalformedHandshake,
    /// The connection failed at the transport level during the handshake.
    Io,
}

impl RefusalReason {
    /// Every reason, for dashboards and tests.
    pub const ALL: [Self; 19] = [
        Self::Expired,
        Self::NotYetValid,
        Self::UnknownIssuer,
        Self::BadSignature,
        Self::OtherTrustDomain,
        Self::NoUriSan,
        Self::InvalidSpiffeId,
        Self::CaLeaf,
        Self::WrongEku,
        Self::PathLen,
        Self::NameConstraint,
        Self::IdentityMismatch,
        Self::NoClientCert,
        Self::PlaintextOnStrictPort,
        Self::BadCertificate,
        Self::ProtocolMismatch,
        Self::PeerRefused,
        Self::MalformedHandshake,
        Self::Io,
    ];

    /// The metric label value (snake_case, stable).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::UnknownIssuer => "unknown_issuer",
            Self::BadSignature => "bad_signature",
            Self::OtherTrustDomain => "other_trust_domain",
            Self::NoUriSan => "no_uri_san",
            Self::InvalidSpiffeId => "invalid_spiffe_id",
            Self::CaLeaf => "ca_leaf",
            Self::WrongEku => "wrong_eku",
            Self::PathLen => "path_len",
            Self::NameConstraint => "name_constraint",
            Self::IdentityMismatch => "identity_mismatch",
            Self::NoClientCert => "no_client_cert",
            Self::PlaintextOnStrictPort => "plaintext_on_strict_port",
            Self::BadCertificate => "bad_certificate",
            Self::ProtocolMismatch => "protocol_mismatch",
            Self::PeerRefused => "peer_refused",
            Self::MalformedHandshake => "malformed_handshake",
            Self::Io => "io",
        }
    }

    /// What the operator should check, appended to the log line.
    pub fn hint(self) -> &'static str {
        match self {
            Self::Expired => {
                "the peer did not renew its certificate; check its proxy can reach the CA"
            }
            Self::NotYetValid => "check clock synchronisation (NTP) on both hosts",
            Self::UnknownIssuer => {
                "the peer's chain does not lead to a root in this proxy's trust bundle; check both sides use the same root bundle"
            }
            Self::BadSignature => {
                "the chain was tampered with or mixes certificates from different CAs"
            }
            Self::OtherTrustDomain => {
                "the peer belongs to another trust domain; add it to the accepted trust domains only if federation is intended"
            }
            Self::NoUriSan | Self::InvalidSpiffeId => {
                "the peer certificate is not a SPIFFE X.509-SVID; issue it from the mesh CA"
            }
            Self::CaLeaf => "a CA certificate was presented as a workload certificate",
            Self::WrongEku => "the certificate's extended key usage does not allow this role",
            Self::PathLen => {
                "an intermediate CA was issued below a CA whose pathLenConstraint forbids it"
            }
            Self::NameConstraint => {
                "the certificate is outside the name constraints of its issuing CA"
            }
            Self::IdentityMismatch => {
                "the endpoint's identity differs from the one service discovery expects; check the endpoint's service account"
            }
            Self::NoClientCert => {
                "the port requires mTLS (STRICT); the client must present a mesh certificate"
            }
            Self::PlaintextOnStrictPort => {
                "the port requires mTLS (STRICT); send through a sidecar or set PeerAuthentication to PERMISSIVE"
            }
            Self::BadCertificate => "the certificate is malformed or uses an unsupported algorithm",
            Self::ProtocolMismatch => {
                "the peer supports no TLS version/cipher/group allowed by the TLS policy"
            }
            Self::PeerRefused => {
                "the peer rejected our certificate; see the peer's log for its reason"
            }
            Self::MalformedHandshake => "the peer is not speaking TLS",
            Self::Io => "the connection broke during the handshake",
        }
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: the reason plus the specifics (which identity, which time, which trust domain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The classified reason.
    pub reason: RefusalReason,
    /// Human-readable specifics; never contains key material.
    pub detail: String,
}

impl Refusal {
    /// A refusal with its specifics.
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }

    /// Maps a webpki path-building error to a refusal.
    pub fn from_webpki(err: &webpki::Error) -> Self {
        use webpki::Error as E;
        #[allow(deprecated)]
        let reason = match err {
            E::CertExpired { .. } => RefusalReason::Expired,
            E::CertNotValidYet { .. } => RefusalReason::NotYetValid,
            E::UnknownIssuer | E::CertDistrusted => RefusalReason::UnknownIssuer,
            E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => {
                RefusalReason::BadSignature
            }
            E::CaUsedAsEndEntity => RefusalReason::CaLeaf,
            E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) | E::EmptyEkuExtension => {
                RefusalReason::WrongEku
            }
            E::PathLenConstraintViolated => RefusalReason::PathLen,
            E::NameConstraintViolation => RefusalReason::NameConstraint,
            _ => RefusalReason::BadCertificate,
        };
        let detail = match err {
            E::CertExpired { time, not_after } => format!(
                "certificate expired: notAfter {} is before now {}",
                not_after.as_secs(),
                time.as_secs()
            ),
            E::CertNotValidYet { time, not_before } => format!(
                "certificate not yet valid: notBefore {} is after now {}",
                not_before.as_secs(),
                time.as_secs()
            ),
            other => format!("certificate chain rejected: {other}"),
        };
        Self { reason, detail }
    }

    /// The rustls error the verifier returns. The peer receives a plain `bad_certificate`
    /// alert (an unauthenticated peer learns nothing more); the precise reason stays in our log,
    /// our metric, and inside the error, where [`Refusal::from_tls_error`] recovers it.
    pub fn to_tls_error(&self) -> TlsError {
        TlsError::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self.clone()))))
    }

    /// Recovers the refusal from a handshake error returned by rustls or tokio-rustls.
    ///
    /// Errors raised by jalin's verifiers carry their [`Refusal`]; other handshake errors
    /// (no client certificate, no common cipher, a peer's alert, garbage bytes) are classified here.
    pub fn from_tls_error(err: &TlsError) -> Self {
        match err {
            TlsError::InvalidCertificate(CertificateError::Other(other)) => {
                match other.0.downcast_ref::<Refusal>() {
                    Some(refusal) => refusal.clone(),
                    None => Self::new(RefusalReason::BadCertificate, other.to_string()),
                }
            }
            TlsError::InvalidCertificate(CertificateError::Expired)
            | TlsError::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
                Self::new(RefusalReason::Expired, err.to_string())
            }
            TlsError::InvalidCertificate(CertificateError::NotValidYet)
            | TlsError::InvalidCertificate(CertificateError::NotValidYetContext { .. }) => {
                Self::new(RefusalReason::NotYetValid, err.to_string())
            }
            TlsError::InvalidCertificate(CertificateError::UnknownIssuer) => {
                Self::new(RefusalReason::UnknownIssuer, err.to_string())
            }
            TlsError::InvalidCertificate(_) => {
                Self::new(RefusalReason::BadCertificate, err.to_string())
            }
            TlsError::NoCertificatesPresented => {
                Self::new(RefusalReason::NoClientCert, err.to_string())
            }
            TlsError::PeerIncompatible(_) => {
                Self::new(RefusalReason::ProtocolMismatch, err.to_string())
            }
            TlsError::AlertReceived(_) => Self::new(RefusalReason::PeerRefused, err.to_string()),
            _ => Self::new(RefusalReason::MalformedHandshake, err.to_string()),
        }
    }

    /// Classifies a failed tokio-rustls handshake (`accept`/`connect` return `io::Error`).
    pub fn from_io_error(err: &std::io::Error) -> Self {
        match err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()) {
            Some(tls) => Self::from_tls_error(tls),
            None => Self::new(RefusalReason::Io, err.to_string()),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Refusal {}

/// Writes the warning log line and increments `jalin_tls_handshake_failures_total`.
///
/// jalin's verifiers call this themselves at the moment they refuse (they know the most);
/// handshake failures that happen outside a verifier go through [`record_handshake_error`].
pub fn record_refusal(direction: Direction, refusal: &Refusal, peer: Option<&str>) {
    tracing::warn!(
        direction = direction.as_str(),
        reason = refusal.reason.as_str(),
        peer = peer.unwrap_or("-"),
        detail = %refusal.detail,
        hint = refusal.reason.hint(),
        "TLS peer refused"
    );
    metrics::counter!(
        HANDSHAKE_FAILURES_METRIC,
        "reason" => refusal.reason.as_str(),
        "direction" => direction.as_str()
    )
    .increment(1);
}

/// Records a failed handshake returned by tokio-rustls and returns its refusal.
///
/// Certificate refusals were already recorded by the verifier that raised them (with more
/// detail), so they are only classified here, never counted twice.
pub fn record_handshake_error(
    direction: Direction,
    err: &std::io::Error,
    peer: Option<&str>,
) -> Refusal {
    let refusal = Refusal::from_io_error(err);
    let raised_by_our_verifier = matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<TlsError>()),
        Some(TlsError::InvalidCertificate(_))
    );
    if !raised_by_our_verifier {
        record_refusal(direction, &refusal, peer);
    }
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_round_trips_through_rustls_error() {
        let refusal = Refusal::new(RefusalReason::OtherTrustDomain, "td other.org");
        let err = refusal.to_tls_error();
        assert_eq!(Refusal::from_tls_error(&err), refusal);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        assert_eq!(Refusal::from_io_error(&io), refusal);
    }

    #[test]
    fn classifies_non_verifier_errors() {
        assert_eq!(
            Refusal::from_tls_error(&TlsError::NoCertificatesPresented).reason,
            RefusalReason::NoClientCert
        );
        assert_eq!(
            Refusal::from_tls_error(&TlsError::AlertReceived(
                rustls::AlertDescription::BadCertificate
            ))
            .reason,
            RefusalReason::PeerRefused
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(Refusal::from_io_error(&io).reason, RefusalReason::Io);
    }

    #[test]
    fn labels_are_unique() {
        let mut labels: Vec<_> = RefusalReason::ALL.iter().map(|r| r.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), RefusalReason::ALL.len());
    }
}
