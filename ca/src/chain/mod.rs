//! Importing the CA chain: the agency root bundle (several roots during a rotation), the mesh
//! intermediate chain, and where the intermediate's key lives (PKCS#8 file or PKCS#11 URI).

pub mod pkcs11_uri;
mod rules;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub use pkcs11_uri::{PinSource, Pkcs11Uri, Pkcs11UriError};
pub use rules::{CertRole, CertSummary, ChainError, ChainReport, ChainRule, validate_chain};
pub(crate) use rules::{parse as parse_cert, summarize, unix_secs};

/// Where the issuing intermediate's private key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A PEM PKCS#8 file ("PRIVATE KEY").
    Pkcs8File(PathBuf),
    /// A key inside a PKCS#11 token; it never leaves the token.
    Pkcs11(Pkcs11Uri),
}

impl FromStr for KeySource {
    type Err = Pkcs11UriError;

    /// `pkcs11:...` is an RFC 7512 URI; anything else is a file path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("pkcs11:") {
            Ok(Self::Pkcs11(s.parse()?))
        } else {
            Ok(Self::Pkcs8File(PathBuf::from(s)))
        }
    }
}

impl KeySource {
    /// A description safe for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Pkcs8File(p) => format!("PKCS#8 file {}", p.display()),
            Self::Pkcs11(u) => u.describe(),
        }
    }
}

/// A file could not be read or holds no usable PEM.
#[derive(Debug, thiserror::Error)]
pub enum PemFileError {
    #[error("cannot read {path}: {source}. Check the path and that this user may read it")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: PEM block {index} is malformed: {reason}")]
    Malformed {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{path} holds no PEM 'CERTIFICATE' block: expected -----BEGIN CERTIFICATE-----")]
    NoCertificate { path: PathBuf },
}

/// Parses every `CERTIFICATE` block of PEM text, in order. `origin` names the source in errors.
pub fn certs_from_pem(
    pem: &[u8],
    origin: &Path,
) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let mut out = Vec::new();
    for (index, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
        out.push(item.map_err(|e| PemFileError::Malformed {
            path: origin.to_owned(),
            index,
            reason: e.to_string(),
        })?);
    }
    if out.is_empty() {
        return Err(PemFileError::NoCertificate {
            path: origin.to_owned(),
        });
    }
    Ok(out)
}

/// Reads every `CERTIFICATE` block of a PEM file, in order.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemFileError> {
    let pem = std::fs::read(path).map_err(|source| PemFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    certs_from_pem(&pem, path)
}

/// Encodes certificates as PEM.
pub fn certs_to_pem<'a>(certs: impl IntoIterator<Item = &'a CertificateDer<'a>>) -> String {
    certs
        .into_iter()
        .map(|c| pem_block("CERTIFICATE", c.as_ref()))
        .collect()
}

/// One PEM block (64-column base64, LF line endings).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der = CertificateDer::from((0u8..=200).collect::<Vec<u8>>());
        let pem = certs_to_pem([&der]);
        let back = certs_from_pem(pem.as_bytes(), Path::new("x")).unwrap();
        assert_eq!(back, vec![der]);
    }

    #[test]
    fn key_source_parses() {
        assert_eq!(
            "/etc/ca.key".parse::<KeySource>().unwrap(),
            KeySource::Pkcs8File("/etc/ca.key".into())
        );
        assert!(matches!(
            "pkcs11:object=k?module-path=/m.so"
                .parse::<KeySource>()
                .unwrap(),
            KeySource::Pkcs11(_)
        ));
    }
}
