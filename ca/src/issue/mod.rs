//! Issuance: turns a checked CSR into a short-lived workload certificate signed by the mesh
//! intermediate: URI SAN `spiffe://<td>/ns/<ns>/sa/<sa>`, ECDSA P-256, EKU serverAuth+clientAuth,
//! keyUsage digitalSignature, CA:false, random serial, AKI/SKI. Every issuance and refusal goes
//! to the audit log and to metrics.

pub mod audit;
pub mod csr;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;

use crate::chain::{
    self, ChainError, ChainReport, KeySource, PemFileError, certs_to_pem, parse_cert,
    validate_chain,
};
use crate::metrics as ca_metrics;
use crate::signer::{CaSigner, SignerError};
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use audit::{AuditBuffer, AuditEvent, AuditLog, rfc3339};
pub use csr::{CheckedCsr, CsrError, check_csr, new_workload_csr};

/// Default workload certificate lifetime. Istio's DEFAULT_WORKLOAD_CERT_TTL is 24 h too.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default ceiling on requested lifetimes. Istio's MAX_WORKLOAD_CERT_TTL defaults to 90 days.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// notBefore is set this far in the past so that hosts whose clocks run slightly behind the CA
/// accept a fresh certificate.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60);

/// Lifetime policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    /// Used when the request names no TTL.
    pub default_ttl: Duration,
    /// Requests above this are refused (Istio's behaviour).
    pub max_ttl: Duration,
}

impl Default for TtlPolicy {
    fn default() -> Self {
        Self {
            default_ttl: DEFAULT_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// The CA's configuration, as the control plane and the CLI give it.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// SPIFFE trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// PEM file: the issuing intermediate first, then further intermediates.
    pub chain_path: PathBuf,
    /// PEM file: one or several roots.
    pub roots_path: PathBuf,
    /// The intermediate's key.
    pub key: KeySource,
    /// Lifetimes.
    pub ttl: TtlPolicy,
}

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaLoadError {
    #[error(transparent)]
    Pem(#[from] PemFileError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error("trust domain: {0}")]
    TrustDomain(#[from] SpiffeIdError),
    #[error(
        "TTL policy: default TTL {default:?} is above the maximum {max:?}; lower ttl.default or raise ttl.max"
    )]
    TtlPolicy { default: Duration, max: Duration },
    #[error("the intermediate certificate cannot act as rcgen issuer: {0}")]
    Issuer(String),
    #[error(
        "CA self-test failed: {0}. Report the intermediate's subject (openssl x509 -noout -subject -nameopt RFC2253) to the jalin maintainers"
    )]
    SelfTest(String),
    #[error(
        "the intermediate's subject {subject:?} cannot be written as the issuer name of workload certificates ({reason}); multi-valued RDNs (e.g. OU=a+CN=b) are not supported: ask the agency PKI for an intermediate with one attribute per RDN"
    )]
    UnsupportedIssuerName { subject: String, reason: String },
}

/// Why a certificate was not issued. `code()` is the audit and metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("identity {requested} is in trust domain {got:?}, this CA issues for {expected:?}")]
    TrustDomain {
        requested: String,
        got: String,
        expected: String,
    },
    #[error("requested TTL {requested}s is above the maximum {max}s")]
    TtlTooLong { requested: u64, max: u64 },
    #[error("requested TTL must be at least 1 second")]
    TtlZero,
    #[error("caller not authenticated: {reason}")]
    Unauthenticated { code: &'static str, reason: String },
    #[error("caller {caller} may not obtain a certificate for {requested}")]
    IdentityMismatch { caller: String, requested: String },
    #[error("signing failed: {0}")]
    Signing(String),
}

impl IssueError {
    /// Stable machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Csr(_) => "invalid_csr",
            Self::TrustDomain { .. } => "trust_domain",
            Self::TtlTooLong { .. } => "ttl_too_long",
            Self::TtlZero => "ttl_zero",
            Self::Unauthenticated { code, .. } => code,
            Self::IdentityMismatch { .. } => "identity_mismatch",
            Self::Signing(_) => "signing_failed",
        }
    }
}

/// An issued certificate.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The workload certificate.
    pub cert: CertificateDer<'static>,
    /// The workload certificate followed by the intermediates, PEM.
    pub chain_pem: String,
    /// The identity in the certificate.
    pub id: SpiffeId,
    /// Serial, hex.
    pub serial_hex: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Who asked, for the audit line.
#[derive(Debug, Clone, Default)]
pub struct AuditContext {
    pub auth_method: Option<&'static str>,
    pub caller: Option<String>,
    pub peer: Option<String>,
}

/// The mesh CA: the checked chain, the root bundle, the signing key and the policy.
pub struct WorkloadCa {
    trust_domain: TrustDomain,
    issuer: rcgen::Issuer<'static, CaSigner>,
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
    report: ChainReport,
    ttl: TtlPolicy,
    audit: AuditLog,
}

impl std::fmt::Debug for WorkloadCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadCa")
            .field("trust_domain", &self.trust_domain)
            .field("signer", self.issuer.key())
            .finish_non_exhaustive()
    }
}

impl WorkloadCa {
    /// Loads the files named by `config`, checks the chain at `now` and opens the key.
    pub fn load(config: &CaConfig, audit: AuditLog, now: SystemTime) -> Result<Self, CaLoadError> {
        let chain = chain::read_certs(&config.chain_path)?;
        let roots = chain::read_certs(&config.roots_path)?;
        TrustDomain::new(&config.trust_domain)?;
        // Check the chain before touching the key: a bad chain is the likelier mistake.
        validate_chain(&chain, &roots, &config.trust_domain, now)?;
        let first = chain
            .first()
            .ok_or_else(|| CaLoadError::Issuer("empty chain".into()))?;
        let cert = parse_cert(first).map_err(|e| CaLoadError::Issuer(e.to_string()))?;
        let signer = CaSigner::open(&config.key, &cert)?;
        Self::new(
            &config.trust_domain,
            chain,
            roots,
            signer,
            config.ttl,
            audit,
            now,
        )
    }

    /// Builds the CA from parts already in memory; checks the chain and the key as `load` does.
    pub fn new(
        trust_domain: &str,
        chain: Vec<CertificateDer<'static>>,
        roots: Vec<CertificateDer<'static>>,
        signer: CaSigner,
        ttl: TtlPolicy,
        audit: AuditLog,
        now: SystemTime,
    ) -> Result<Self, CaLoadError> {
        let trust_domain = TrustDomain::new(trust_domain)?;
        if ttl.default_ttl > ttl.max_ttl {
            return Err(CaLoadError::TtlPolicy {
                default: ttl.default_ttl,
                max: ttl.max_ttl,
            });
        }
        let report = validate_chain(&chain, &roots, trust_domain.as_str(), now)?;
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        // Drop a trailing root copy, as validate_chain did.
        let mut chain = chain;
        chain.truncate(report.certs.len() - 1);
        let first = chain
            .first()
            .ok_or_else(|| CaLoadError::Issuer("empty chain".into()))?;
        let cert = parse_cert(first).map_err(|e| CaLoadError::Issuer(e.to_string()))?;
        signer.check_matches(&cert, &format!("{signer:?}"))?;
        let issuer = rcgen::Issuer::from_ca_cert_der(first, signer).map_err(|e| {
            CaLoadError::UnsupportedIssuerName {
                subject: cert.subject().to_string(),
                reason: e.to_string(),
            }
        })?;
        ca_metrics::record_chain_expiry(&report, now);
        let ca = Self {
            trust_domain,
            issuer,
            chain,
            roots,
            report,
            ttl,
            audit,
        };
        ca.self_test(now)?;
        Ok(ca)
    }

    /// Issues a probe certificate and checks it chains to the intermediate byte for byte:
    /// rcgen re-encodes the issuer name, and an agency subject it cannot reproduce exactly
    /// (multi-valued RDNs, unusual string types) would yield leaves no verifier accepts.
    fn self_test(&self, now: SystemTime) -> Result<(), CaLoadError> {
        let fail = |reason: String| CaLoadError::SelfTest(reason);
        let id = SpiffeId::workload(&self.trust_domain, "jalin-system", "ca-self-test")
            .map_err(|e| fail(e.to_string()))?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| fail(e.to_string()))?;
        let probe = self
            .sign(&id, &key, Duration::from_secs(60), &[], now)
            .map_err(|e| fail(e.to_string()))?;
        let first = self
            .chain
            .first()
            .ok_or_else(|| fail("empty chain".into()))?;
        let inter = parse_cert(first).map_err(|e| fail(e.to_string()))?;
        let leaf = parse_cert(&probe.cert).map_err(|e| fail(e.to_string()))?;
        if leaf.issuer().as_raw() != inter.subject().as_raw() {
            return Err(fail(format!(
                "the issuer name written into leaves does not match the intermediate's subject {:?} byte for byte",
                inter.subject().to_string()
            )));
        }
        leaf.verify_signature(Some(inter.public_key()))
            .map_err(|e| {
                fail(format!(
                    "a probe certificate does not verify with the intermediate: {e}"
                ))
            })
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The chain (issuing intermediate first, root excluded).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The root bundle.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The root bundle as PEM.
    pub fn roots_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    /// What the start-up check found.
    pub fn report(&self) -> &ChainReport {
        &self.report
    }

    /// The lifetime policy.
    pub fn ttl_policy(&self) -> TtlPolicy {
        self.ttl
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Re-publishes expiry metrics and logs a warning when a CA certificate nears expiry.
    pub fn refresh_expiry_metrics(&self, now: SystemTime) {
        ca_metrics::record_chain_expiry(&self.report, now);
    }

    /// Resolves the requested TTL against the policy (0 = default; above max = refused).
    pub fn resolve_ttl(&self, requested_secs: u64) -> Result<Duration, IssueError> {
        if requested_secs == 0 {
            return Ok(self.ttl.default_ttl);
        }
        if requested_secs > self.ttl.max_ttl.as_secs() {
            return Err(IssueError::TtlTooLong {
                requested: requested_secs,
                max: self.ttl.max_ttl.as_secs(),
            });
        }
        Ok(Duration::from_secs(requested_secs))
    }

    /// Signs a certificate for `id` over `public_key`. No authorisation here: callers decide
    /// who may have `id`. Does not audit; see [`WorkloadCa::issue`].
    pub fn sign(
        &self,
        id: &SpiffeId,
        public_key: &impl rcgen::PublicKeyData,
        ttl: Duration,
        extra_dns: &[String],
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        if id.trust_domain() != &self.trust_domain {
            return Err(IssueError::TrustDomain {
                requested: id.to_string(),
                got: id.trust_domain().to_string(),
                expected: self.trust_domain.to_string(),
            });
        }
        if ttl.is_zero() {
            return Err(IssueError::TtlZero);
        }
        let signing_err = |e: rcgen::Error| IssueError::Signing(e.to_string());
        let not_before = now.checked_sub(CLOCK_SKEW_ALLOWANCE).unwrap_or(now);
        let mut not_after = now + ttl;
        // Never outlive the intermediate: such a certificate would fail verification anyway.
        if let Some(inter) = self.report.intermediate() {
            let limit = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(inter.not_after_unix).unwrap_or(0));
            if not_after > limit {
                not_after = limit;
            }
        }
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial)
            .map_err(|_| IssueError::Signing("no randomness".into()))?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.subject_alt_names = vec![SanType::URI(
            id.to_string().try_into().map_err(signing_err)?,
        )];
        for dns in extra_dns {
            params.subject_alt_names.push(SanType::DnsName(
                dns.clone().try_into().map_err(signing_err)?,
            ));
        }
        // keyEncipherment is for RSA key transport; workload keys are EC, so digitalSignature only.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(signing_err)?;
        let der = cert.der().clone();
        let mut chain_pem = certs_to_pem([&der]);
        chain_pem.push_str(&certs_to_pem(&self.chain));
        Ok(IssuedCert {
            cert: der,
            chain_pem,
            id: id.clone(),
            serial_hex: hex::encode(serial),
            not_before,
            not_after,
        })
    }

    /// Full issuance for an authenticated caller: TTL policy, trust domain, signing, audit,
    /// metrics. `id` is the identity the caller is entitled to.
    pub fn issue(
        &self,
        ctx: &AuditContext,
        id: &SpiffeId,
        csr: &CheckedCsr,
        ttl_secs: u64,
        now: SystemTime,
    ) -> Result<IssuedCert, IssueError> {
        let result = self
            .resolve_ttl(ttl_secs)
            .and_then(|ttl| self.sign(id, &csr.public_key, ttl, &[], now));
        match &result {
            Ok(issued) => self.audit_issued(ctx, issued, now),
            Err(e) => self.audit_refused(
                ctx,
                csr.requested.as_ref().or(Some(id)),
                Some(ttl_secs),
                e,
                now,
            ),
        }
        result
    }

    /// Audits and counts an issuance.
    pub fn audit_issued(&self, ctx: &AuditContext, issued: &IssuedCert, now: SystemTime) {
        ca_metrics::record_issued(ctx.auth_method.unwrap_or("unknown"));
        let ttl = issued
            .not_after
            .duration_since(now)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        tracing::info!(spiffe_id = %issued.id, serial = %issued.serial_hex, ttl_seconds = ttl, "certificate issued");
        self.audit.write(&AuditEvent {
            ts: rfc3339(now),
            event: "certificate_issued",
            auth_method: ctx.auth_method,
            caller: ctx.caller.clone(),
            requested: Some(issued.id.to_string()),
            spiffe_id: Some(issued.id.to_string()),
            peer: ctx.peer.clone(),
            serial: Some(issued.serial_hex.clone()),
            not_after: Some(rfc3339(issued.not_after)),
            ttl_seconds: Some(ttl),
            reason_code: None,
            reason: None,
        });
    }

    /// Audits and counts a refusal.
    pub fn audit_refused(
        &self,
        ctx: &AuditContext,
        requested: Option<&SpiffeId>,
        ttl_secs: Option<u64>,
        err: &IssueError,
        now: SystemTime,
    ) {
        ca_metrics::record_refused(err.code());
        tracing::warn!(reason = err.code(), error = %err, caller = ?ctx.caller, "certificate refused");
        self.audit.write(&AuditEvent {
            ts: rfc3339(now),
            event: "certificate_refused",
            auth_method: ctx.auth_method,
            caller: ctx.caller.clone(),
            requested: requested.map(ToString::to_string),
            peer: ctx.peer.clone(),
            ttl_seconds: ttl_secs,
            reason_code: Some(err.code()),
            reason: Some(err.to_string()),
            ..AuditEvent::default()
        });
    }
}
