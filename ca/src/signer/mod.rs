//! The CA's signing key behind one type: a PKCS#8 key held in memory, or a PKCS#11 key that never
//! leaves its token. Both plug into rcgen as [`rcgen::SigningKey`], so issuance does not care
//! where the key lives.

mod ecdsa_der;
mod pkcs11;

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};
use x509_parser::certificate::X509Certificate;

use crate::chain::{KeySource, Pkcs11UriError};
pub use ecdsa_der::raw_ecdsa_to_der;
pub use pkcs11::Pkcs11Signer;

/// Why the CA key could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("cannot read the CA key file {path}: {source}. Check the path and its permissions")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the CA key file {path} is not a PEM PKCS#8 private key ({reason}). Convert it: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8"
    )]
    Pkcs8 {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error(transparent)]
    Uri(#[from] Pkcs11UriError),
    #[error("PKCS#11 {key}: {what}: {reason}")]
    Pkcs11 {
        key: String,
        what: &'static str,
        reason: String,
    },
    #[error(
        "the CA key ({key}) does not match the intermediate certificate {subject:?}: {reason}. Import the key that belongs to this certificate"
    )]
    KeyMismatch {
        key: String,
        subject: String,
        reason: String,
    },
    #[error("the CA key ({key}) has an unsupported algorithm: {reason}. Use ECDSA P-256 or P-384")]
    Algorithm { key: String, reason: String },
}

/// The intermediate's signing key.
pub enum CaSigner {
    /// A PKCS#8 key in process memory.
    Pkcs8(KeyPair),
    /// A key inside a PKCS#11 token.
    Pkcs11(Pkcs11Signer),
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pkcs8(_) => f.write_str("CaSigner::Pkcs8(<in memory>)"),
            Self::Pkcs11(k) => write!(f, "CaSigner::Pkcs11({})", k.describe()),
        }
    }
}

impl CaSigner {
    /// Opens the key from its source; `intermediate` supplies the public key the key must match.
    pub fn open(
        source: &KeySource,
        intermediate: &X509Certificate<'_>,
    ) -> Result<Self, SignerError> {
        let signer = match source {
            KeySource::Pkcs8File(path) => {
                let pem = std::fs::read_to_string(path).map_err(|source| SignerError::Read {
                    path: path.clone(),
                    source,
                })?;
                Self::from_pkcs8_pem(&pem).map_err(|e| SignerError::Pkcs8 {
                    path: path.clone(),
                    reason: e.to_string(),
                })?
            }
            KeySource::Pkcs11(uri) => {
                Self::Pkcs11(Pkcs11Signer::open(uri, intermediate.public_key().raw)?)
            }
        };
        signer.check_matches(intermediate, &source.describe())?;
        Ok(signer)
    }

    /// A PKCS#8 PEM key held in memory.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, rcgen::Error> {
        Ok(Self::Pkcs8(KeyPair::from_pem(pem)?))
    }

    /// Proves the key belongs to the certificate: signs a probe and verifies it with the
    /// certificate's public key (this also exercises the HSM path at start-up).
    pub fn check_matches(
        &self,
        cert: &X509Certificate<'_>,
        key_desc: &str,
    ) -> Result<(), SignerError> {
        let mismatch = |reason: String| SignerError::KeyMismatch {
            key: key_desc.to_owned(),
            subject: cert.subject().to_string(),
            reason,
        };
        let cert_key = &cert.public_key().subject_public_key.data;
        if self.der_bytes() != cert_key.as_ref() {
            return Err(mismatch("the public keys differ".into()));
        }
        let alg = verification_alg(self.algorithm()).ok_or_else(|| SignerError::Algorithm {
            key: key_desc.to_owned(),
            reason: format!("{:?}", self.algorithm()),
        })?;
        let probe = b"jalin-ca key probe";
        let sig = self
            .sign(probe)
            .map_err(|e| mismatch(format!("signing a probe failed: {e}")))?;
        UnparsedPublicKey::new(alg, cert_key.as_ref())
            .verify(probe, &sig)
            .map_err(|_| mismatch("a probe signature does not verify with the certificate".into()))
    }
}

fn verification_alg(
    alg: &'static SignatureAlgorithm,
) -> Option<&'static dyn signature::VerificationAlgorithm> {
    if alg == &rcgen::PKCS_ECDSA_P256_SHA256 {
        Some(&signature::ECDSA_P256_SHA256_ASN1)
    } else if alg == &rcgen::PKCS_ECDSA_P384_SHA384 {
        Some(&signature::ECDSA_P384_SHA384_ASN1)
    } else if alg == &rcgen::PKCS_ED25519 {
        Some(&signature::ED25519)
    } else if alg == &rcgen::PKCS_RSA_SHA256 {
        Some(&signature::RSA_PKCS1_2048_8192_SHA256)
    } else {
        None
    }
}

impl PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Self::Pkcs8(k) => k.der_bytes(),
            Self::Pkcs11(k) => k.der_bytes(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            Self::Pkcs8(k) => PublicKeyData::algorithm(k),
            Self::Pkcs11(k) => k.algorithm(),
        }
    }
}

impl SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Self::Pkcs8(k) => k.sign(msg),
            Self::Pkcs11(k) => k.sign(msg),
        }
    }
}
