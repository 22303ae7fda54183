//! SPIFFE IDs: strict parsing per the SPIFFE ID specification, the Istio principal form, and
//! extraction of the single SPIFFE URI SAN from an X.509-SVID.
//!
//! Invariants:
//! - a [`SpiffeId`] is always valid per <https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>:
//!   lowercase scheme `spiffe`, a trust domain of `[a-z0-9._-]` only (no port, no userinfo),
//!   a path of non-empty segments of `[A-Za-z0-9._-]` that are neither `.` nor `..`, no trailing
//!   slash, no query, no fragment, no percent-encoding, at most 2048 bytes in total;
//! - an X.509-SVID carries exactly one URI SAN (SPIFFE X509-SVID §2), and it is a SPIFFE ID.

use std::fmt;
use std::str::FromStr;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The URI scheme prefix of every SPIFFE ID.
const SCHEME_PREFIX: &str = "spiffe://";
/// SPIFFE ID spec §2.3: "SPIFFE IDs MUST NOT exceed 2048 bytes".
const MAX_ID_LEN: usize = 2048;
/// SPIFFE ID spec §2.1: trust domain names "MUST NOT exceed 255 characters".
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a SPIFFE ID (what was expected, so the operator can fix it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("SPIFFE ID is empty; expected spiffe://<trust-domain>/<path>")]
    Empty,
    /// The string exceeds 2048 bytes.
    #[error("SPIFFE ID is {0} bytes long; the SPIFFE spec allows at most 2048")]
    TooLong(usize),
    /// The scheme is not the lowercase `spiffe://`.
    #[error("SPIFFE ID {0:?} must start with the lowercase scheme \"spiffe://\"")]
    WrongScheme(String),
    /// The trust domain is empty.
    #[error("SPIFFE ID {0:?} has an empty trust domain")]
    EmptyTrustDomain(String),
    /// The trust domain holds a character outside `[a-z0-9._-]` (uppercase, port, userinfo...).
    #[error(
        "trust domain {domain:?} contains {found:?}; only lowercase letters, digits, '.', '-' and '_' are allowed (no port, no userinfo, no uppercase)"
    )]
    BadTrustDomainChar {
        /// The offending trust domain.
        domain: String,
        /// The first character that is not allowed.
        found: char,
    },
    /// The trust domain exceeds 255 characters.
    #[error("trust domain is {0} characters long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("SPIFFE ID {0:?} has an empty path segment (\"//\" or a trailing \"/\")")]
    EmptySegment(String),
    /// A path segment is `.` or `..`.
    #[error("SPIFFE ID {0:?} has a relative path segment (\".\" or \"..\")")]
    DotSegment(String),
    /// A path segment holds a character outside `[A-Za-z0-9._-]` (`%`, `?`, `#`, ...).
    #[error(
        "SPIFFE ID {id:?} path contains {found:?}; only letters, digits, '.', '-' and '_' are allowed (no query, fragment or percent-encoding)"
    )]
    BadPathChar {
        /// The offending SPIFFE ID.
        id: String,
        /// The first character that is not allowed.
        found: char,
    },
    /// The path is not the Istio/Kubernetes workload form `/ns/<ns>/sa/<sa>`.
    #[error(
        "SPIFFE ID {0:?} is not a workload identity; expected spiffe://<td>/ns/<namespace>/sa/<service-account>"
    )]
    NotWorkload(String),
}

/// A validated SPIFFE trust domain (for example `cluster.local` or `agency.gov`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain name (without scheme).
    pub fn new(name: &str) -> Result<Self, SpiffeIdError> {
        if name.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain(name.to_owned()));
        }
        if name.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong(name.len()));
        }
        if let Some(found) = name.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(SpiffeIdError::BadTrustDomainChar {
                domain: name.to_owned(),
                found,
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A validated SPIFFE ID. Workload identities have the path `/ns/<ns>/sa/<sa>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    /// Empty, or `/seg(/seg)*`.
    path: String,
}

impl SpiffeId {
    /// Parses a SPIFFE ID strictly per the SPIFFE ID specification.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        if id.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if id.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(id.len()));
        }
        let rest = id
            .strip_prefix(SCHEME_PREFIX)
            .ok_or_else(|| SpiffeIdError::WrongScheme(id.to_owned()))?;
        let (domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return Err(SpiffeIdError::EmptyTrustDomain(id.to_owned()));
        }
        let trust_domain = TrustDomain::new(domain)?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(SpiffeIdError::EmptySegment(id.to_owned()));
                }
                if segment == "." || segment == ".." {
                    return Err(SpiffeIdError::DotSegment(id.to_owned()));
                }
                if let Some(found) = segment
                    .chars()
                    .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
                {
                    return Err(SpiffeIdError::BadPathChar {
                        id: id.to_owned(),
                        found,
                    });
                }
            }
        }
        Ok(Self {
            trust_domain,
            path: path.to_owned(),
        })
    }

    /// Builds the workload identity `spiffe://<td>/ns/<ns>/sa/<sa>`, validating each part.
    pub fn workload(
        trust_domain: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        let id = Self::parse(&format!(
            "{SCHEME_PREFIX}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))?;
        if id.workload_parts().is_none() {
            return Err(SpiffeIdError::NotWorkload(id.to_string()));
        }
        Ok(id)
    }

    /// [`SpiffeId::workload`] with the trust domain given as text (config files, CLI flags).
    pub fn new_workload(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::workload(&TrustDomain::new(trust_domain)?, namespace, service_account)
    }

    /// Parses a SPIFFE ID that must be a workload identity `spiffe://<td>/ns/<ns>/sa/<sa>`
    /// (what the CA issues, and what CSRs and renewing callers may name).
    pub fn parse_workload(id: &str) -> Result<Self, SpiffeIdError> {
        let parsed = Self::parse(id)?;
        if parsed.workload_parts().is_none() {
            return Err(SpiffeIdError::NotWorkload(parsed.to_string()));
        }
        Ok(parsed)
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `(namespace, service_account)` when the path is exactly `/ns/<ns>/sa/<sa>`.
    pub fn workload_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path.strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The Kubernetes namespace of a workload identity.
    pub fn namespace(&self) -> Option<&str> {
        self.workload_parts().map(|(ns, _)| ns)
    }

    /// The Kubernetes service account of a workload identity.
    pub fn service_account(&self) -> Option<&str> {
        self.workload_parts().map(|(_, sa)| sa)
    }

    /// The Istio principal form: the SPIFFE ID without its scheme, `<td>/ns/<ns>/sa/<sa>`,
    /// which is what `AuthorizationPolicy` `principals` match against.
    pub fn to_istio_principal(&self) -> String {
        format!("{}{}", self.trust_domain, self.path)
    }

    /// Parses the Istio principal form `<td>/ns/<ns>/sa/<sa>` back into a SPIFFE ID.
    pub fn from_istio_principal(principal: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME_PREFIX}{principal}"))
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.trust_domain, self.path)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Why a certificate does not carry a usable SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// The certificate is not valid DER X.509.
    #[error("certificate is not valid DER X.509: {0}")]
    BadEncoding(String),
    /// The certificate has no URI SAN at all.
    #[error("certificate has no URI SAN; an X.509-SVID carries exactly one spiffe:// URI SAN")]
    NoUriSan,
    /// The certificate has more than one URI SAN.
    #[error("certificate has {0} URI SANs; an X.509-SVID carries exactly one")]
    MultipleUriSans(usize),
    /// The single URI SAN is not a valid SPIFFE ID.
    #[error("certificate URI SAN is not a SPIFFE ID: {0}")]
    InvalidId(#[from] SpiffeIdError),
}

/// Extracts the SPIFFE ID from a DER certificate: exactly one URI SAN, and it must be a SPIFFE ID.
pub fn spiffe_id_from_cert_der(der: &[u8]) -> Result<SpiffeId, SvidError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::BadEncoding(e.to_string()))?;
    spiffe_id_from_cert(&cert)
}

/// Extracts the SPIFFE ID from a parsed certificate (see [`spiffe_id_from_cert_der`]).
pub fn spiffe_id_from_cert(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::BadEncoding(e.to_string()))?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(SvidError::NoUriSan),
        [uri] => Ok(SpiffeId::parse(uri)?),
        more => Err(SvidError::MultipleUriSans(more.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_and_istio_principal() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/child-welfare/sa/case-api").unwrap();
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), Some("child-welfare"));
        assert_eq!(id.service_account(), Some("case-api"));
        assert_eq!(
            id.to_istio_principal(),
            "cluster.local/ns/child-welfare/sa/case-api"
        );
        assert_eq!(
            SpiffeId::from_istio_principal("cluster.local/ns/child-welfare/sa/case-api").unwrap(),
            id
        );
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/child-welfare/sa/case-api"
        );
        let td = TrustDomain::new("agency.gov").unwrap();
        assert_eq!(
            SpiffeId::workload(&td, "ns1", "sa1").unwrap().to_string(),
            "spiffe://agency.gov/ns/ns1/sa/sa1"
        );
    }

    #[test]
    fn trust_domain_only_and_generic_paths_are_ids_but_not_workloads() {
        let id = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(id.path(), "");
        assert!(id.workload_parts().is_none());
        let id = SpiffeId::parse("spiffe://example.org/ns/a/sa/b/extra").unwrap();
        assert!(id.workload_parts().is_none());
        let td = TrustDomain::new("example.org").unwrap();
        assert!(matches!(
            SpiffeId::workload(&td, "a/sa/b", "c"),
            Err(SpiffeIdError::NotWorkload(_))
        ));
    }

    #[test]
    fn rejects_everything_the_spec_forbids() {
        let cases: &[(&str, fn(&SpiffeIdError) -> bool)] = &[
            ("", |e| matches!(e, SpiffeIdError::Empty)),
            ("SPIFFE://td/ns/a", |e| {
                matches!(e, SpiffeIdError::WrongScheme(_))
            }),
            ("https://td/ns/a", |e| {
                matches!(e, SpiffeIdError::WrongScheme(_))
            }),
            ("spiffe:///ns/a", |e| {
                matches!(e, SpiffeIdError::EmptyTrustDomain(_))
            }),
            ("spiffe://", |e| {
                matches!(e, SpiffeIdError::EmptyTrustDomain(_))
            }),
            ("spiffe://Example.org/a", |e| {
                matches!(e, SpiffeIdError::BadTrustDomainChar { found: 'E', .. })
            }),
            ("spiffe://td:8443/a", |e| {
                matches!(e, SpiffeIdError::BadTrustDomainChar { found: ':', .. })
            }),
            ("spiffe://user@td/a", |e| {
                matches!(e, SpiffeIdError::BadTrustDomainChar { found: '@', .. })
            }),
            ("spiffe://td/", |e| {
                matches!(e, SpiffeIdError::EmptySegment(_))
            }),
            ("spiffe://td/a//b", |e| {
                matches!(e, SpiffeIdError::EmptySegment(_))
            }),
            ("spiffe://td/a/./b", |e| {
                matches!(e, SpiffeIdError::DotSegment(_))
            }),
            ("spiffe://td/a/..", |e| {
                matches!(e, SpiffeIdError::DotSegment(_))
            }),
            ("spiffe://td/a%20b", |e| {
                matches!(e, SpiffeIdError::BadPathChar { found: '%', .. })
            }),
            ("spiffe://td/a?x=1", |e| {
                matches!(e, SpiffeIdError::BadPathChar { found: '?', .. })
            }),
            ("spiffe://td/a#frag", |e| {
                matches!(e, SpiffeIdError::BadPathChar { found: '#', .. })
            }),
        ];
        for (input, check) in cases {
            let err = SpiffeId::parse(input).unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(2048));
        assert!(matches!(
            SpiffeId::parse(&long),
            Err(SpiffeIdError::TooLong(_))
        ));
        assert!(matches!(
            TrustDomain::new(&"a".repeat(256)),
            Err(SpiffeIdError::TrustDomainTooLong(256))
        ));
    }

    fn cert_with_sans(sans: Vec<rcgen::SanType>) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> rcgen::SanType {
        rcgen::SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn extracts_exactly_one_uri_san() {
        let der = cert_with_sans(vec![
            rcgen::SanType::DnsName("svc.local".try_into().unwrap()),
            uri("spiffe://td/ns/a/sa/b"),
        ]);
        assert_eq!(
            spiffe_id_from_cert_der(&der).unwrap().to_string(),
            "spiffe://td/ns/a/sa/b"
        );
        let der = cert_with_sans(vec![rcgen::SanType::DnsName(
            "svc.local".try_into().unwrap(),
        )]);
        assert_eq!(spiffe_id_from_cert_der(&der), Err(SvidError::NoUriSan));
        let der = cert_with_sans(vec![uri("spiffe://td/a"), uri("spiffe://td/b")]);
        assert_eq!(
            spiffe_id_from_cert_der(&der),
            Err(SvidError::MultipleUriSans(2))
        );
        let der = cert_with_sans(vec![uri("https://td/a")]);
        assert!(matches!(
            spiffe_id_from_cert_der(&der),
            Err(SvidError::InvalidId(SpiffeIdError::WrongScheme(_)))
        ));
        assert!(matches!(
            spiffe_id_from_cert_der(b"nope"),
            Err(SvidError::BadEncoding(_))
        ));
    }

    #[test]
    fn random_inputs_never_panic_and_valid_ids_round_trip() {
        use rand::Rng;
        const ALPHABET: &[u8] = b"spifeSPIFE:/._-%?#@aZ09 \x00\xff";
        let mut rng = rand::rng();
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let mut s = String::from(if rng.random_bool(0.7) {
                "spiffe://"
            } else {
                ""
            });
            for _ in 0..len {
                s.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
            }
            if let Ok(id) = SpiffeId::parse(&s) {
                accepted += 1;
                assert_eq!(id.to_string(), s);
                assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
                assert_eq!(
                    SpiffeId::from_istio_principal(&id.to_istio_principal()).unwrap(),
                    id
                );
            }
        }
        assert!(accepted > 0, "the generator never produced a valid ID");
    }
}
