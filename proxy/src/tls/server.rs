//! Server TLS with a listener's own certificate (Istio Gateway `servers[].tls`): the rustls
//! server config a gateway listener terminates client TLS with, built from PEM files.
//!
//! - Algorithms: the government policy ([`TlsPolicy::GOVERNMENT`], aws-lc-rs, NIST-approved
//!   suites and groups), TLS 1.3 only, or TLS 1.2 and 1.3 when `min_protocol_version` is
//!   `TLSV1_2` (Istio's gateway default). The policy's TLS 1.2 suites are ECDHE with AES-GCM, for
//!   ECDSA and RSA certificates alike (agency PKIs often issue RSA to gateways).
//! - `cipher_suites` narrows the policy's suites per protocol version (Istio `cipherSuites`; a
//!   version none of whose suites is listed keeps them all, as Envoy keeps TLS 1.3's).
//! - `SIMPLE`: server certificate only. `MUTUAL`: a client certificate is required and verified
//!   against `ca_certificates` (webpki: chain, validity, EKU clientAuth); when
//!   `subject_alt_names` is set, the verified leaf must carry at least one of them (DNS, URI,
//!   email or IP SAN, compared exactly, as Envoy's `match_typed_subject_alt_names` does with
//!   `exact`). Every refusal is logged and counted (`jalin_tls_handshake_failures_total`).
//!
//! Invariant: a config is built whole or not at all, and its errors name the file and the field
//! (`certificate_chain`, `private_key`, `ca_certificates`) but never contain key material.

use std::path::Path;
use std::sync::Arc;

use jalin_ca::tls::{Direction, Refusal, RefusalReason, TlsPolicy, record_refusal};
use jalin_xds::model::listener::{ServerTls, ServerTlsMode, TlsProtocolVersion};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Largest PEM file read (a long chain or CA bundle is a few tens of KiB).
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Which file of a [`ServerTls`] an error is about; the name is the field's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    CertificateChain,
    PrivateKey,
    CaCertificates,
}

impl TlsFile {
    /// The field name under `tls` (`listeners[i].tls.<field>`).
    pub fn field(self) -> &'static str {
        match self {
            Self::CertificateChain => "certificate_chain",
            Self::PrivateKey => "private_key",
            Self::CaCertificates => "ca_certificates",
        }
    }
}

/// Why a listener's server TLS could not be built. [`ServerTlsError::field`] names the field,
/// [`ServerTlsError::hint`] what to do. No variant carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerTlsError {
    #[error("cannot read {path}: {reason}")]
    Read {
        file: TlsFile,
        path: String,
        reason: String,
    },
    #[error("{path} is {size} bytes; the limit is {MAX_PEM_BYTES}")]
    TooLarge {
        file: TlsFile,
        path: String,
        size: u64,
    },
    #[error("{path} is not valid PEM: {reason}")]
    Pem {
        file: TlsFile,
        path: String,
        reason: String,
    },
    #[error("{path} holds no {what}")]
    Empty {
        file: TlsFile,
        path: String,
        what: &'static str,
    },
    #[error("the key in {path} is not usable: {reason}")]
    Key { path: String, reason: String },
    #[error("the key in {key} does not belong to the first certificate of {chain}")]
    KeyMismatch { key: String, chain: String },
    #[error("{path}: {reason}")]
    Roots { path: String, reason: String },
    #[error("mode MUTUAL needs ca_certificates, the roots client certificates must chain to")]
    MutualWithoutCa,
    #[error("cannot build the TLS configuration: {0}")]
    Build(String),
    #[error(transparent)]
    CipherSuite(#[from] jalin_ca::tls::UnknownCipherSuite),
    #[error(
        "no TLS 1.2 suite left in cipher_suites can be used with the {key} key of certificate_chain, so TLS 1.2 clients could never connect"
    )]
    NoTls12SuiteForKey { key: String },
}

impl ServerTlsError {
    /// The field under `tls` the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Read { file, .. }
            | Self::TooLarge { file, .. }
            | Self::Pem { file, .. }
            | Self::Empty { file, .. } => file.field(),
            Self::Key { .. } | Self::KeyMismatch { .. } => TlsFile::PrivateKey.field(),
            Self::Roots { .. } | Self::MutualWithoutCa => TlsFile::CaCertificates.field(),
            Self::Build(_) => "min_protocol_version",
            Self::CipherSuite(_) | Self::NoTls12SuiteForKey { .. } => "cipher_suites",
        }
    }

    /// What the operator should do.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Read { .. } => {
                "check the path and that the proxy's user may read the file; the last good certificate stays in force"
            }
            Self::TooLarge { .. } => {
                "point the field at a single PEM file, not a directory or archive"
            }
            Self::Pem { .. } | Self::Empty { .. } => {
                "write PEM blocks (-----BEGIN CERTIFICATE----- / -----BEGIN PRIVATE KEY-----); DER files must be converted with `openssl x509 -inform der`"
            }
            Self::Key { .. } => {
                "use a PKCS#8, SEC1 (EC) or PKCS#1 (RSA) key of an ECDSA P-256/P-384, RSA or Ed25519 certificate"
            }
            Self::KeyMismatch { .. } => {
                "install the key issued with this certificate, or put the matching leaf first in certificate_chain"
            }
            Self::Roots { .. } => {
                "list the CA certificates (PEM) that issue your clients' certificates"
            }
            Self::MutualWithoutCa => "set ca_certificates, or use mode SIMPLE",
            Self::Build(_) => "use TLSV1_2 or TLSV1_3",
            Self::NoTls12SuiteForKey { .. } => {
                "list an ECDHE-RSA suite for an RSA certificate or an ECDHE-ECDSA one for an ECDSA certificate, or set min_protocol_version: TLSV1_3"
            }
            Self::CipherSuite(_) => {
                "list only suites of the government policy (TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES256-GCM-SHA384, ECDHE-RSA-AES128-GCM-SHA256), or leave cipher_suites out for all of them"
            }
        }
    }
}

/// The TLS policy a gateway listener serves with: government algorithms, TLS 1.2 allowed
/// unless `min_protocol_version` is TLS 1.3.
pub fn policy(tls: &ServerTls) -> TlsPolicy {
    TlsPolicy::GOVERNMENT.with_tls12(tls.min_protocol_version == TlsProtocolVersion::Tls12)
}

/// Builds the server config of a listener's own TLS: reads the PEM files of `tls`, checks that
/// the key belongs to the leaf (the first certificate of `certificate_chain`), and in `MUTUAL`
/// mode requires and verifies client certificates against `ca_certificates` (and
/// `subject_alt_names`). `alpn` is offered in order (`[b"h2", b"http/1.1"]` for TCP, `[b"h3"]`
/// for QUIC). Reads the files on every call: call it again to pick up rotated files.
pub fn server_config(tls: &ServerTls, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, ServerTlsError> {
    server_config_with_leaf(tls, alpn).map(|(config, _)| config)
}

/// [`server_config`], also returning the leaf certificate it serves (for its expiry metric and
/// log line).
pub fn server_config_with_leaf(
    tls: &ServerTls,
    alpn: &[&[u8]],
) -> Result<(Arc<ServerConfig>, CertificateDer<'static>), ServerTlsError> {
    let policy = policy(tls);
    let provider = Arc::new(jalin_ca::tls::with_cipher_suites(
        policy.provider(),
        &tls.cipher_suites,
    )?);
    let chain = read_certs(&tls.certificate_chain, TlsFile::CertificateChain)?;
    let key = read_key(&tls.private_key)?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| ServerTlsError::Key {
            path: tls.private_key.clone(),
            reason: key_error(&e),
        })?;
    // TLS 1.2 suites are bound to the certificate's key type (TLS 1.3's are not): a list that
    // leaves none for this key would silently shut TLS 1.2 clients out.
    if policy.allow_tls12 {
        let algorithm = signing.algorithm();
        let mut tls12 = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .peekable();
        if tls12.peek().is_some() && !tls12.any(|s| s.usable_for_signature_algorithm(algorithm)) {
            return Err(ServerTlsError::NoTls12SuiteForKey {
                key: format!("{algorithm:?}"),
            });
        }
    }
    let leaf = chain
        .first()
        .cloned()
        .ok_or_else(|| ServerTlsError::Empty {
            file: TlsFile::CertificateChain,
            path: tls.certificate_chain.clone(),
            what: "CERTIFICATE block",
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(TlsError::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(TlsError::InconsistentKeys(_)) => {
            return Err(ServerTlsError::KeyMismatch {
                key: tls.private_key.clone(),
                chain: tls.certificate_chain.clone(),
            });
        }
        Err(e) => {
            return Err(ServerTlsError::Pem {
                file: TlsFile::CertificateChain,
                path: tls.certificate_chain.clone(),
                reason: format!("the first certificate cannot be parsed ({e})"),
            });
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(policy.versions())
        .map_err(|e| ServerTlsError::Build(e.to_string()))?;
    let builder = match tls.mode {
        ServerTlsMode::Simple => builder.with_no_client_auth(),
        ServerTlsMode::Mutual => {
            let ca = tls
                .ca_certificates
                .as_deref()
                .ok_or(ServerTlsError::MutualWithoutCa)?;
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, TlsFile::CaCertificates)? {
                roots.add(cert).map_err(|e| ServerTlsError::Roots {
                    path: ca.to_owned(),
                    reason: format!("a certificate is not usable as a trust anchor ({e})"),
                })?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ServerTlsError::Roots {
                    path: ca.to_owned(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(Arc::new(GatewayClientVerifier {
                inner,
                subject_alt_names: tls.subject_alt_names.clone(),
            }))
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((Arc::new(config), leaf))
}

/// The leaf's notAfter as Unix seconds.
pub fn not_after_unix(der: &[u8]) -> Option<i64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn read_file(path: &str, file: TlsFile) -> Result<Vec<u8>, ServerTlsError> {
    let read_err = |e: std::io::Error| ServerTlsError::Read {
        file,
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let size = std::fs::metadata(Path::new(path)).map_err(read_err)?.len();
    if size > MAX_PEM_BYTES {
        return Err(ServerTlsError::TooLarge {
            file,
            path: path.to_owned(),
            size,
        });
    }
    std::fs::read(path).map_err(read_err)
}

fn read_certs(path: &str, file: TlsFile) -> Result<Vec<CertificateDer<'static>>, ServerTlsError> {
    let bytes = read_file(path, file)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerTlsError::Pem {
            file,
            path: path.to_owned(),
            reason: pem_error(&e),
        })?;
    if certs.is_empty() {
        return Err(ServerTlsError::Empty {
            file,
            path: path.to_owned(),
            what: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, ServerTlsError> {
    let bytes = read_file(path, TlsFile::PrivateKey)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => ServerTlsError::Empty {
            file: TlsFile::PrivateKey,
            path: path.to_owned(),
            what: "PRIVATE KEY block",
        },
        e => ServerTlsError::Pem {
            file: TlsFile::PrivateKey,
            path: path.to_owned(),
            reason: pem_error(&e),
        },
    })
}

/// A PEM error without the file's bytes (a key file's lines are key material).
fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { .. } => "a block has no matching -----END line".into(),
        Error::IllegalSectionStart { .. } => "a -----BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a block's base64 body does not decode".into(),
        Error::Io(io) => io.to_string(),
        Error::NoItemsFound => "no PEM block found".into(),
        _ => "unreadable PEM".into(),
    }
}

/// A key loading error without key bytes.
fn key_error(e: &TlsError) -> String {
    match e {
        TlsError::General(m) => m.clone(),
        _ => "unsupported key type or malformed key".into(),
    }
}

/// `MUTUAL` client verification: webpki against the listener's roots, then the
/// `subject_alt_names` check; every refusal logged and counted.
#[derive(Debug)]
struct GatewayClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    subject_alt_names: Vec<String>,
}

impl ClientCertVerifier for GatewayClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        // The subject is parsed for a refusal's log line only, not on every handshake.
        let refuse = |refusal: &Refusal| {
            record_refusal(
                Direction::Inbound,
                refusal,
                subject_of(end_entity).as_deref(),
            );
        };
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            refuse(&Refusal::from_tls_error(&e));
            return Err(e);
        }
        if self.subject_alt_names.is_empty() {
            return Ok(ClientCertVerified::assertion());
        }
        let sans = subject_alt_names(end_entity);
        if self
            .subject_alt_names
            .iter()
            .any(|want| sans.contains(want))
        {
            return Ok(ClientCertVerified::assertion());
        }
        let refusal = Refusal::new(
            RefusalReason::IdentityMismatch,
            format!(
                "client certificate SANs [{}] include none of the listener's subject_alt_names [{}]",
                sans.join(", "),
                self.subject_alt_names.join(", ")
            ),
        );
        refuse(&refusal);
        Err(refusal.to_tls_error())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The certificate's subject (RFC 4514 form), for logs and `x-forwarded-client-cert`.
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some(cert.subject().to_string())
}

/// The certificate's DNS, URI, email and IP SANs as strings, in certificate order.
pub fn subject_alt_names(der: &[u8]) -> Vec<String> {
    san_entries(der).into_iter().map(|(_, v)| v).collect()
}

/// The kind of a SAN entry, as `x-forwarded-client-cert` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanKind {
    Dns,
    Uri,
    Email,
    Ip,
}

/// The certificate's SANs with their kinds, in certificate order.
pub fn san_entries(der: &[u8]) -> Vec<(SanKind, String)> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some((SanKind::Dns, (*d).to_owned())),
            GeneralName::URI(u) => Some((SanKind::Uri, (*u).to_owned())),
            GeneralName::RFC822Name(e) => Some((SanKind::Email, (*e).to_owned())),
            GeneralName::IPAddress(b) => ip_text(b).map(|ip| (SanKind::Ip, ip)),
            _ => None,
        })
        .collect()
}

fn ip_text(b: &[u8]) -> Option<String> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv4Addr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(b)
            .ok()
            .map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
