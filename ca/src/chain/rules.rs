//! The start-up checks of the CA chain, free of I/O: every certificate from the issuing
//! intermediate up to a configured root is checked against the rules below, at a given `now`.
//!
//! Rules, in the order they are checked for each certificate (issuing intermediate first):
//! 1. it parses as X.509;
//! 2. basicConstraints is present with CA:true;
//! 3. keyUsage is present and has keyCertSign;
//! 4. `now` lies within notBefore..=notAfter;
//! 5. pathLenConstraint allows the CA certificates below it plus the workload leaf;
//! 6. name constraints (URI subtrees, RFC 5280 §4.2.1.10) permit the SPIFFE trust domain;
//! 7. its signature verifies with the next certificate's key, the last one with a configured root.
//!
//! Invariant: a `ChainReport` is only returned when every rule held for every certificate.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

/// Where a certificate sits in the imported chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The intermediate whose key signs workload certificates (position 0).
    IssuingIntermediate,
    /// A further intermediate between the issuing one and the root.
    Intermediate,
    /// A configured root (trust anchor).
    Root,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IssuingIntermediate => "issuing intermediate",
            Self::Intermediate => "intermediate",
            Self::Root => "root",
        })
    }
}

/// The rule a certificate broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainRule {
    #[error("the chain file holds no certificate")]
    EmptyChain,
    #[error("the root bundle holds no certificate")]
    EmptyRootBundle,
    #[error("does not parse as an X.509 certificate: {0}")]
    Unparseable(String),
    #[error("has no basicConstraints extension")]
    MissingBasicConstraints,
    #[error("basicConstraints says CA:false")]
    NotCa,
    #[error("has no keyUsage extension")]
    MissingKeyUsage,
    #[error("keyUsage lacks keyCertSign")]
    NoKeyCertSign,
    #[error("is not valid yet: notBefore {not_before} is after now ({now})")]
    NotYetValid { not_before: String, now: String },
    #[error("has expired: notAfter {not_after} is before now ({now})")]
    Expired { not_after: String, now: String },
    #[error(
        "pathLenConstraint {path_len} is too small: {below} CA certificate(s) sit below it before the workload leaf"
    )]
    PathLenExceeded { path_len: u32, below: usize },
    #[error(
        "name constraints do not permit the trust domain {trust_domain:?} (permitted URI subtrees: {permitted})"
    )]
    TrustDomainNotPermitted {
        trust_domain: String,
        permitted: String,
    },
    #[error(
        "name constraints exclude the trust domain {trust_domain:?} (excluded URI subtree {excluded:?})"
    )]
    TrustDomainExcluded {
        trust_domain: String,
        excluded: String,
    },
    #[error("signature does not verify with the key of {issuer:?}: {reason}")]
    BadSignature { issuer: String, reason: String },
    #[error("is not issued by any configured root (its issuer is {issuer:?})")]
    NoMatchingRoot { issuer: String },
    #[error(
        "is not issued by the next certificate in the chain ({next:?}); its issuer is {issuer:?}"
    )]
    OutOfOrder { issuer: String, next: String },
}

impl ChainRule {
    /// What the operator should do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            Self::EmptyChain => {
                "put the intermediate certificate (PEM) first in the chain file, followed by any further intermediates"
            }
            Self::EmptyRootBundle => {
                "give the agency root certificate(s) as PEM in the root bundle file"
            }
            Self::Unparseable(_) => {
                "check the file holds PEM 'CERTIFICATE' blocks (openssl x509 -in FILE -noout -text)"
            }
            Self::MissingBasicConstraints | Self::NotCa => {
                "ask the agency PKI for a CA certificate (basicConstraints critical, CA:TRUE)"
            }
            Self::MissingKeyUsage | Self::NoKeyCertSign => {
                "ask the agency PKI to issue the intermediate with keyUsage keyCertSign (and cRLSign)"
            }
            Self::NotYetValid { .. } => {
                "check the clock of this host (NTP) or wait until notBefore"
            }
            Self::Expired { .. } => {
                "renew the certificate with the agency PKI and import the new one"
            }
            Self::PathLenExceeded { .. } => {
                "remove intermediates from the chain or ask the agency PKI for a certificate with a larger pathLenConstraint"
            }
            Self::TrustDomainNotPermitted { .. } | Self::TrustDomainExcluded { .. } => {
                "configure the trust domain the PKI allows, or ask the agency PKI for name constraints that permit it"
            }
            Self::BadSignature { .. } => {
                "the certificate was not signed by the next one: check the order and the files"
            }
            Self::NoMatchingRoot { .. } => {
                "add the root that issued the chain to the root bundle, or import the intermediate issued under the configured root"
            }
            Self::OutOfOrder { .. } => {
                "order the chain file from the issuing intermediate up towards the root"
            }
        }
    }
}

/// An unusable chain: which certificate, which rule, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CA chain refused: certificate #{position} ({role}) subject \"{subject}\" {rule}. To fix: {}", rule.hint())]
pub struct ChainError {
    /// 0 is the issuing intermediate; roots are numbered after the chain.
    pub position: usize,
    pub role: CertRole,
    pub subject: String,
    pub rule: ChainRule,
}

/// A summary of one certificate, for `inspect`, metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub position: usize,
    pub role: CertRole,
    pub subject: String,
    pub issuer: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub path_len: Option<u32>,
    /// Name constraints, rendered (`permitted DNS:.cluster.local`, ...).
    pub name_constraints: Vec<String>,
    pub serial_hex: String,
}

impl CertSummary {
    /// Whole days until notAfter at `now` (negative once expired).
    pub fn days_left(&self, now: SystemTime) -> i64 {
        (self.not_after_unix - unix_secs(now)).div_euclid(86_400)
    }
}

/// The outcome of a successful check.
#[derive(Debug, Clone)]
pub struct ChainReport {
    /// The chain certificates (issuing first) followed by the root that anchors it.
    pub certs: Vec<CertSummary>,
    /// Index into the root bundle of the anchoring root.
    pub root_index: usize,
    /// Non-fatal findings (e.g. URI name constraints, which rustls-webpki refuses for leaves).
    pub warnings: Vec<String>,
}

impl ChainReport {
    /// The issuing intermediate.
    pub fn intermediate(&self) -> Option<&CertSummary> {
        self.certs.first()
    }

    /// The anchoring root.
    pub fn root(&self) -> Option<&CertSummary> {
        self.certs.last()
    }
}

pub(crate) fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn asn1_now(now: SystemTime) -> Result<ASN1Time, ChainRule> {
    ASN1Time::from_timestamp(unix_secs(now))
        .map_err(|e| ChainRule::Unparseable(format!("current time not representable: {e}")))
}

fn fmt_time(t: ASN1Time) -> String {
    t.to_rfc2822().unwrap_or_else(|_| t.timestamp().to_string())
}

/// Parses a certificate, mapping failure to the chain rule.
pub(crate) fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, ChainRule> {
    match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(ChainRule::Unparseable(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(ChainRule::Unparseable(e.to_string())),
    }
}

fn fmt_general_name(n: &GeneralName<'_>) -> String {
    match n {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::RFC822Name(m) => format!("email:{m}"),
        GeneralName::IPAddress(ip) => format!("IP:{}", hex::encode(ip)),
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        other => format!("{other}"),
    }
}

/// Renders name constraints for display.
pub(crate) fn render_name_constraints(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(nc)) = cert.name_constraints() {
        for (label, trees) in [
            ("permitted", &nc.value.permitted_subtrees),
            ("excluded", &nc.value.excluded_subtrees),
        ] {
            for t in trees.iter().flatten() {
                out.push(format!("{label} {}", fmt_general_name(&t.base)));
            }
        }
    }
    out
}

pub(crate) fn summarize(
    position: usize,
    role: CertRole,
    cert: &X509Certificate<'_>,
) -> CertSummary {
    CertSummary {
        position,
        role,
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
        path_len: cert
            .basic_constraints()
            .ok()
            .flatten()
            .and_then(|bc| bc.value.path_len_constraint),
        name_constraints: render_name_constraints(cert),
        serial_hex: hex::encode(cert.raw_serial()),
    }
}

/// RFC 5280 §4.2.1.10 URI constraint on the host part: `.example.com` matches sub-domains only,
/// `example.com` matches that host only.
fn uri_constraint_matches(constraint: &str, host: &str) -> bool {
    let constraint = constraint.to_ascii_lowercase();
    match constraint.strip_prefix('.') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(&format!(".{suffix}")),
        None => host == constraint,
    }
}

/// RFC 5280 DNS constraint: `example.com` matches it and its sub-domains; a leading dot matches
/// sub-domains only.
fn dns_constraint_matches(constraint: &str, name: &str) -> bool {
    let c = constraint.to_ascii_lowercase();
    match c.strip_prefix('.') {
        Some(suffix) => name.ends_with(&format!(".{suffix}")),
        None => name == c || name.ends_with(&format!(".{c}")),
    }
}

/// Rules 2-6 for one CA certificate; `below` is how many CA certificates sit under it.
fn check_ca_rules(
    cert: &X509Certificate<'_>,
    below: usize,
    trust_domain: &str,
    now: ASN1Time,
    warnings: &mut Vec<String>,
) -> Result<(), ChainRule> {
    let bc = cert
        .basic_constraints()
        .map_err(|e| ChainRule::Unparseable(format!("basicConstraints: {e}")))?
        .ok_or(ChainRule::MissingBasicConstraints)?;
    if !bc.value.ca {
        return Err(ChainRule::NotCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| ChainRule::Unparseable(format!("keyUsage: {e}")))?
        .ok_or(ChainRule::MissingKeyUsage)?;
    if !ku.value.key_cert_sign() {
        return Err(ChainRule::NoKeyCertSign);
    }
    let validity = cert.validity();
    if now < validity.not_before {
        return Err(ChainRule::NotYetValid {
            not_before: fmt_time(validity.not_before),
            now: fmt_time(now),
        });
    }
    if now > validity.not_after {
        return Err(ChainRule::Expired {
            not_after: fmt_time(validity.not_after),
            now: fmt_time(now),
        });
    }
    if let Some(path_len) = bc.value.path_len_constraint
        && usize::try_from(path_len).unwrap_or(usize::MAX) < below
    {
        return Err(ChainRule::PathLenExceeded { path_len, below });
    }
    let nc = cert
        .name_constraints()
        .map_err(|e| ChainRule::Unparseable(format!("nameConstraints: {e}")))?;
    if let Some(nc) = nc {
        let uri =
            |trees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>| -> Vec<String> {
                trees
                    .iter()
                    .flatten()
                    .filter_map(|t| match t.base {
                        GeneralName::URI(u) => Some(u.to_owned()),
                        _ => None,
                    })
                    .collect()
            };
        let permitted = uri(&nc.value.permitted_subtrees);
        let excluded = uri(&nc.value.excluded_subtrees);
        if !permitted.is_empty()
            && !permitted
                .iter()
                .any(|c| uri_constraint_matches(c, trust_domain))
        {
            return Err(ChainRule::TrustDomainNotPermitted {
                trust_domain: trust_domain.to_owned(),
                permitted: permitted.join(", "),
            });
        }
        if let Some(ex) = excluded
            .iter()
            .find(|c| uri_constraint_matches(c, trust_domain))
        {
            return Err(ChainRule::TrustDomainExcluded {
                trust_domain: trust_domain.to_owned(),
                excluded: ex.clone(),
            });
        }
        let dns: Vec<&str> = nc
            .value
            .permitted_subtrees
            .iter()
            .flatten()
            .filter_map(|t| match t.base {
                GeneralName::DNSName(d) => Some(d),
                _ => None,
            })
            .collect();
        if !dns.is_empty() && !dns.iter().any(|d| dns_constraint_matches(d, trust_domain)) {
            warnings.push(format!(
                "{} permits DNS names {:?} only; the trust domain {trust_domain:?} is outside them, so \
                 the CA's own server name must be one of them (SPIFFE URI SANs are not affected)",
                cert.subject(),
                dns
            ));
        }
        if !permitted.is_empty() || !excluded.is_empty() {
            warnings.push(format!(
                "{} carries URI name constraints; jalin checks the trust domain against them, but \
                 rustls-webpki refuses URI-constrained leaves, so peers verifying with stock webpki will fail",
                cert.subject()
            ));
        }
    }
    Ok(())
}

/// Checks `chain` (issuing intermediate first; a trailing copy of the root is ignored) against
/// the root `bundle` for the SPIFFE `trust_domain` at `now`.
pub fn validate_chain(
    chain: &[CertificateDer<'_>],
    bundle: &[CertificateDer<'_>],
    trust_domain: &str,
    now: SystemTime,
) -> Result<ChainReport, ChainError> {
    let err = |position: usize, role: CertRole, subject: String, rule: ChainRule| ChainError {
        position,
        role,
        subject,
        rule,
    };
    if chain.is_empty() {
        return Err(err(
            0,
            CertRole::IssuingIntermediate,
            String::new(),
            ChainRule::EmptyChain,
        ));
    }
    if bundle.is_empty() {
        return Err(err(
            chain.len(),
            CertRole::Root,
            String::new(),
            ChainRule::EmptyRootBundle,
        ));
    }
    let asn1_now =
        asn1_now(now).map_err(|r| err(0, CertRole::IssuingIntermediate, String::new(), r))?;
    let role_of = |i: usize| {
        if i == 0 {
            CertRole::IssuingIntermediate
        } else {
            CertRole::Intermediate
        }
    };
    let mut parsed = Vec::with_capacity(chain.len());
    for (i, der) in chain.iter().enumerate() {
        parsed.push(parse(der).map_err(|r| err(i, role_of(i), String::new(), r))?);
    }
    let mut roots = Vec::with_capacity(bundle.len());
    for (i, der) in bundle.iter().enumerate() {
        roots.push(parse(der).map_err(|r| err(chain.len() + i, CertRole::Root, String::new(), r))?);
    }
    // A chain file may end with the root itself: drop it, the bundle is the authority.
    while parsed.len() > 1
        && parsed
            .last()
            .is_some_and(|c| roots.iter().any(|r| r.as_raw() == c.as_raw()))
    {
        parsed.pop();
    }

    let mut warnings = Vec::new();
    let mut certs = Vec::with_capacity(parsed.len() + 1);
    for (i, cert) in parsed.iter().enumerate() {
        let subject = cert.subject().to_string();
        check_ca_rules(cert, i, trust_domain, asn1_now, &mut warnings)
            .map_err(|r| err(i, role_of(i), subject.clone(), r))?;
        if let Some(next) = parsed.get(i + 1) {
            if cert.issuer().as_raw() != next.subject().as_raw() {
                return Err(err(
                    i,
                    role_of(i),
                    subject,
                    ChainRule::OutOfOrder {
                        issuer: cert.issuer().to_string(),
                        next: next.subject().to_string(),
                    },
                ));
            }
            cert.verify_signature(Some(next.public_key()))
                .map_err(|e| {
                    err(
                        i,
                        role_of(i),
                        subject.clone(),
                        ChainRule::BadSignature {
                            issuer: next.subject().to_string(),
                            reason: e.to_string(),
                        },
                    )
                })?;
        }
        certs.push(summarize(i, role_of(i), cert));
    }

    let top_index = parsed.len() - 1;
    let top = &parsed[top_index];
    let top_subject = top.subject().to_string();
    let mut last_failure = None;
    for (ri, root) in roots.iter().enumerate() {
        if root.subject().as_raw() != top.issuer().as_raw() {
            continue;
        }
        if let Err(e) = top.verify_signature(Some(root.public_key())) {
            last_failure = Some(err(
                top_index,
                role_of(top_index),
                top_subject.clone(),
                ChainRule::BadSignature {
                    issuer: root.subject().to_string(),
                    reason: e.to_string(),
                },
            ));
            continue;
        }
        let position = parsed.len() + ri;
        check_ca_rules(root, parsed.len(), trust_domain, asn1_now, &mut warnings)
            .map_err(|r| err(position, CertRole::Root, root.subject().to_string(), r))?;
        certs.push(summarize(position, CertRole::Root, root));
        return Ok(ChainReport {
            certs,
            root_index: ri,
            warnings,
        });
    }
    Err(last_failure.unwrap_or_else(|| {
        err(
            top_index,
            role_of(top_index),
            top_subject,
            ChainRule::NoMatchingRoot {
                issuer: top.issuer().to_string(),
            },
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_constraint_semantics() {
        assert!(uri_constraint_matches("cluster.local", "cluster.local"));
        assert!(!uri_constraint_matches("cluster.local", "a.cluster.local"));
        assert!(uri_constraint_matches(".gov.example", "mesh.gov.example"));
        assert!(!uri_constraint_matches(".gov.example", "gov.example"));
        assert!(!uri_constraint_matches(".gov.example", "evilgov.example"));
        assert!(dns_constraint_matches("gov.example", "mesh.gov.example"));
        assert!(dns_constraint_matches("gov.example", "gov.example"));
        assert!(!dns_constraint_matches("gov.example", "evilgov.example"));
        assert!(!dns_constraint_matches(".gov.example", "gov.example"));
    }
}
