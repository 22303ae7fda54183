//! Parsing and checking a workload's CSR: PEM or DER, bounded size, valid self-signature, an
//! ECDSA P-256 key, and at most one `spiffe://` URI SAN naming the requested identity.

use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Largest CSR accepted (a P-256 CSR is well under 1 KiB).
pub const MAX_CSR_BYTES: usize = 16 * 1024;

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("CSR is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    #[error("CSR is neither a PEM 'CERTIFICATE REQUEST' nor DER PKCS#10: {0}")]
    Malformed(String),
    #[error("CSR self-signature does not verify: {0}")]
    BadSignature(String),
    #[error("CSR key is not ECDSA P-256 (workload keys must be P-256)")]
    KeyType,
    #[error("CSR carries {0} URI SANs; at most one spiffe:// ID is allowed")]
    SeveralUris(usize),
    #[error("CSR URI SAN is not a workload SPIFFE ID: {0}")]
    Identity(#[from] SpiffeIdError),
}

/// A CSR that passed the checks.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    /// The workload's public key, as rcgen takes it.
    pub public_key: rcgen::SubjectPublicKeyInfo,
    /// The identity named in the CSR's URI SAN, if any.
    pub requested: Option<SpiffeId>,
}

/// Parses and checks a CSR given as PEM or DER.
pub fn check_csr(input: &[u8]) -> Result<CheckedCsr, CsrError> {
    if input.len() > MAX_CSR_BYTES {
        return Err(CsrError::TooLarge);
    }
    let der_owned;
    let der: &[u8] = if input.starts_with(b"-----BEGIN")
        || input.trim_ascii_start().starts_with(b"-----BEGIN")
    {
        der_owned = CertificateSigningRequestDer::from_pem_slice(input)
            .map_err(|e| CsrError::Malformed(e.to_string()))?;
        der_owned.as_ref()
    } else {
        input
    };
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed("trailing bytes after the CSR".into()));
    }
    csr.verify_signature()
        .map_err(|e| CsrError::BadSignature(e.to_string()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY
        || curve.as_ref() != Some(&OID_EC_P256)
    {
        return Err(CsrError::KeyType);
    }
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| CsrError::KeyType)?;

    let mut uris = Vec::new();
    if let Some(exts) = csr.requested_extensions() {
        for ext in exts {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::URI(u) = name {
                        uris.push(*u);
                    }
                }
            }
        }
    }
    let requested = match uris.as_slice() {
        [] => None,
        [one] => Some(SpiffeId::parse_workload(one)?),
        more => return Err(CsrError::SeveralUris(more.len())),
    };
    Ok(CheckedCsr {
        public_key,
        requested,
    })
}

/// Builds a CSR for `id` with a fresh P-256 key made here (the key never leaves the caller).
/// Returns the CSR (DER) and the key pair. Used by the proxy and the CLI.
pub fn new_workload_csr(id: &SpiffeId) -> Result<(Vec<u8>, rcgen::KeyPair), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok((csr.der().to_vec(), key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_own_csr_pem_and_der() {
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let (der, key) = new_workload_csr(&id).unwrap();
        let c = check_csr(&der).unwrap();
        assert_eq!(c.requested.as_ref(), Some(&id));
        let pem = crate::chain::pem_block("CERTIFICATE REQUEST", &der);
        let c = check_csr(pem.as_bytes()).unwrap();
        assert_eq!(
            rcgen::PublicKeyData::der_bytes(&c.public_key),
            rcgen::PublicKeyData::der_bytes(&key)
        );
    }

    #[test]
    fn refuses_p384_and_tampered() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap();
        assert_eq!(check_csr(csr.der()).unwrap_err(), CsrError::KeyType);

        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let (mut der, _) = new_workload_csr(&id).unwrap();
        let n = der.len();
        der[n - 5] ^= 0x55;
        assert!(matches!(
            check_csr(&der),
            Err(CsrError::BadSignature(_) | CsrError::Malformed(_))
        ));
        assert!(matches!(check_csr(b"garbage"), Err(CsrError::Malformed(_))));
        assert_eq!(
            check_csr(&vec![0u8; MAX_CSR_BYTES + 1]).unwrap_err(),
            CsrError::TooLarge
        );
    }
}
