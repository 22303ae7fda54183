//! The workload identity the CA writes into certificates: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//!
//! Parsing is strict: lower-case trust domain of `[a-z0-9.-_]`, exactly the four path segments
//! `ns/<ns>/sa/<sa>`, no query or fragment, at most 2048 bytes (SPIFFE ID spec).

use std::fmt;
use std::str::FromStr;

/// Longest SPIFFE ID accepted, per the SPIFFE ID specification.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// A workload identity in Istio's SPIFFE layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a SPIFFE ID or one of its parts was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadIdError {
    #[error("SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
    #[error("SPIFFE ID {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error(
        "trust domain {0:?} is invalid: expected lower-case letters, digits, '.', '-' or '_' (e.g. cluster.local)"
    )]
    TrustDomain(String),
    #[error("SPIFFE ID path {0:?} is not /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error(
        "{field} {value:?} is invalid: expected 1-253 characters of letters, digits, '.', '-' or '_'"
    )]
    Segment { field: &'static str, value: String },
}

fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td.len() <= 255
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks a trust domain name on its own (config, CLI flags).
pub fn check_trust_domain(td: &str) -> Result<(), WorkloadIdError> {
    if valid_trust_domain(td) {
        Ok(())
    } else {
        Err(WorkloadIdError::TrustDomain(td.to_owned()))
    }
}

impl WorkloadId {
    /// Builds an identity from its parts, validating each.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, WorkloadIdError> {
        check_trust_domain(trust_domain)?;
        for (field, value) in [
            ("namespace", namespace),
            ("service account", service_account),
        ] {
            if !valid_segment(value) {
                return Err(WorkloadIdError::Segment {
                    field,
                    value: value.to_owned(),
                });
            }
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes service account.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The Istio principal form `<td>/ns/<ns>/sa/<sa>`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.principal())
    }
}

impl FromStr for WorkloadId {
    type Err = WorkloadIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(WorkloadIdError::TooLong);
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| WorkloadIdError::Scheme(s.to_owned()))?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_trust_domain(td)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] => Self::new(td, ns, sa),
            _ => Err(WorkloadIdError::Path(format!("/{path}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let id: WorkloadId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/web");
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "http://cluster.local/ns/a/sa/b",
            "spiffe://Cluster.Local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/b/c",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe:///ns/a/sa/b",
        ] {
            assert!(bad.parse::<WorkloadId>().is_err(), "{bad} accepted");
        }
    }
}
