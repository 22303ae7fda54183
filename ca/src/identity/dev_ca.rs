//! An in-memory development CA (root → intermediate → workload leaves) implementing
//! [`CertificateSource`], for tests, demos and the proxy's test harness. NOT FOR PRODUCTION:
//! its keys live in process memory and it authenticates nobody.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

use super::source::{CertificateSource, IssuedChain, SourceError};
use crate::spiffe::{SpiffeId, TrustDomain};

/// Why the development CA could not be built or could not sign.
#[derive(Debug, thiserror::Error)]
#[error("development CA: {0}")]
pub struct DevCaError(String);

impl From<rcgen::Error> for DevCaError {
    fn from(e: rcgen::Error) -> Self {
        Self(e.to_string())
    }
}

/// A development root and intermediate held in memory.
pub struct DevCa {
    trust_domain: TrustDomain,
    root: CertificateDer<'static>,
    root_pem: String,
    intermediate: CertificateDer<'static>,
    intermediate_pem: String,
    issuer: Issuer<'static, KeyPair>,
    ttl: Mutex<Duration>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain.as_str())
            .finish_non_exhaustive()
    }
}

/// A random positive 16-byte serial (RFC 5280 §4.1.2.2: at most 20 octets, positive).
pub fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// The label every development CA certificate carries in its subject.
pub const DEV_LABEL: &str = "NOT FOR PRODUCTION";

/// Parameters of a development CA certificate (root or intermediate), shared by [`DevCa`] and
/// `jalin ca init-dev`: subject labelled [`DEV_LABEL`], CA:true with `path_len`, keyCertSign,
/// a random serial, and, when `dns_constraint` is given, a permitted DNS subtree.
pub(crate) fn dev_ca_params(
    common_name: &str,
    path_len: u8,
    dns_constraint: Option<&str>,
    not_before: SystemTime,
    not_after: SystemTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::OrganizationName,
        format!("jalin development ({DEV_LABEL})"),
    );
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = dns_constraint.map(|name| rcgen::NameConstraints {
        permitted_subtrees: vec![rcgen::GeneralSubtree::DnsName(name.to_owned())],
        excluded_subtrees: vec![],
    });
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params
}

impl DevCa {
    /// A new root (pathLen 1) and intermediate (pathLen 0), valid for 30 days, issuing
    /// workload certificates of `ttl` for `trust_domain`.
    pub fn new(trust_domain: TrustDomain, ttl: Duration) -> Result<Self, DevCaError> {
        Self::named("jalin dev", trust_domain, ttl)
    }

    /// Like [`DevCa::new`], with subject names "<name> root" and "<name> intermediate".
    pub fn named(name: &str, trust_domain: TrustDomain, ttl: Duration) -> Result<Self, DevCaError> {
        let not_before = SystemTime::now() - Duration::from_secs(300);
        let not_after = SystemTime::now() + Duration::from_secs(30 * 86_400);
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut root_params =
            dev_ca_params(&format!("{name} root"), 1, None, not_before, not_after);
        root_params.use_authority_key_identifier_extension = false;
        let root = root_params.self_signed(&root_key)?;
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let int_params = dev_ca_params(
            &format!("{name} intermediate"),
            0,
            None,
            not_before,
            not_after,
        );
        let intermediate = int_params.signed_by(&int_key, &root_issuer)?;
        Ok(Self {
            trust_domain,
            root: root.der().clone(),
            root_pem: root.pem(),
            intermediate: intermediate.der().clone(),
            intermediate_pem: intermediate.pem(),
            issuer: Issuer::new(int_params, int_key),
            ttl: Mutex::new(ttl),
        })
    }

    /// The root certificate (DER), for trust bundles.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// The root certificate, PEM (for tools such as openssl and curl).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The intermediate certificate, PEM.
    pub fn intermediate_pem(&self) -> &str {
        &self.intermediate_pem
    }

    /// The intermediate certificate (DER).
    pub fn intermediate(&self) -> CertificateDer<'static> {
        self.intermediate.clone()
    }

    /// The intermediate as an rcgen issuer, to mint arbitrary (including invalid) test leaves.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Changes the lifetime of the next certificates.
    pub fn set_ttl(&self, ttl: Duration) {
        if let Ok(mut guard) = self.ttl.lock() {
            *guard = ttl;
        }
    }

    fn ttl(&self) -> Duration {
        self.ttl
            .lock()
            .map(|g| *g)
            .unwrap_or(Duration::from_secs(3600))
    }

    /// The parameters of a well-formed workload leaf for `id`: EKU clientAuth + serverAuth,
    /// CA:false, valid from now for the CA's TTL, plus `dns_names` (for non-mesh clients such
    /// as curl that check host names).
    pub fn leaf_params(
        &self,
        id: &SpiffeId,
        dns_names: &[&str],
    ) -> Result<CertificateParams, DevCaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into()?));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = SystemTime::now();
        params.not_before = OffsetDateTime::from(now);
        params.not_after = OffsetDateTime::from(now + self.ttl());
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }

    /// Signs `params` for `public_key` with the intermediate; returns leaf + intermediate.
    pub fn sign_params(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<Vec<CertificateDer<'static>>, DevCaError> {
        let leaf = params.signed_by(public_key, &self.issuer)?;
        Ok(vec![leaf.der().clone(), self.intermediate.clone()])
    }

    /// Issues a workload certificate for `id` with a fresh key (for tests and demos).
    pub fn issue(
        &self,
        id: &SpiffeId,
        dns_names: &[&str],
    ) -> Result<(Vec<CertificateDer<'static>>, KeyPair), DevCaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let chain = self.sign_params(&self.leaf_params(id, dns_names)?, &key)?;
        Ok((chain, key))
    }

    /// Issues a workload certificate for `id` with a fresh key, as PEM: (leaf, PKCS#8 key);
    /// append [`DevCa::intermediate_pem`] for the full chain. For tools such as openssl and curl.
    pub fn issue_pem(
        &self,
        id: &SpiffeId,
        dns_names: &[&str],
    ) -> Result<(String, String), DevCaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let leaf = self
            .leaf_params(id, dns_names)?
            .signed_by(&key, &self.issuer)?;
        Ok((leaf.pem(), key.serialize_pem()))
    }

    /// Signs a CSR: exactly one SPIFFE URI SAN in this CA's trust domain, nothing else.
    pub fn sign_csr(
        &self,
        csr: &CertificateSigningRequestDer<'_>,
    ) -> Result<Vec<CertificateDer<'static>>, DevCaError> {
        let req = CertificateSigningRequestParams::from_der(csr)?;
        let id = match req.params.subject_alt_names.as_slice() {
            [SanType::URI(uri)] => SpiffeId::parse(uri.as_str())
                .map_err(|e| DevCaError(format!("CSR URI SAN: {e}")))?,
            other => {
                return Err(DevCaError(format!(
                    "CSR must carry exactly one SPIFFE URI SAN, got {other:?}"
                )));
            }
        };
        if id.trust_domain() != &self.trust_domain {
            return Err(DevCaError(format!(
                "CSR asks for {id}, outside trust domain {}",
                self.trust_domain
            )));
        }
        self.sign_params(&self.leaf_params(&id, &[])?, &req.public_key)
    }
}

#[async_trait::async_trait]
impl CertificateSource for DevCa {
    async fn sign(
        &self,
        csr: CertificateSigningRequestDer<'static>,
    ) -> Result<IssuedChain, SourceError> {
        let chain = self
            .sign_csr(&csr)
            .map_err(|e| SourceError::Rejected(e.to_string()))?;
        Ok(IssuedChain {
            chain,
            roots: Vec::new(),
        })
    }
}
