//! Binds a proxy's scoping identity to the certificate it connected with: the namespace and
//! service account a proxy is scoped by come from the SPIFFE ID of its verified client
//! certificate, never from what its node metadata claims.
//!
//! Invariants:
//! - over TLS, a stream whose metadata `NAMESPACE` or `SERVICE_ACCOUNT` disagrees with the
//!   certificate is refused (`PERMISSION_DENIED`); a missing field is filled from the certificate;
//! - labels still come from the metadata (as in Istio), but a proxy can only be scoped inside the
//!   certificate's namespace, so claimed labels select among that namespace's (and the root
//!   namespace's) policies only;
//! - without a client certificate a stream is refused (`UNAUTHENTICATED`) unless the control plane
//!   was started with `--insecure-xds`, the only case where metadata is trusted as sent.
//!
//! The decision ([`Admission::decide`]) is free of I/O; [`Admission::admit`] parses the
//! certificate, and the caller logs and counts refusals.

use jalin_ca::spiffe::{SpiffeId, spiffe_id_from_cert_der};
use jalin_xds::transport::{NodeInfo, Peer};

use super::scope::{META_NAMESPACE, META_SERVICE_ACCOUNT};

/// Which identity the control plane believes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The mesh's trust domain; a certificate of another one is refused (`None`: not checked).
    pub trust_domain: Option<String>,
    /// Streams without a client certificate are scoped by their metadata (`--insecure-xds`).
    pub trust_metadata_without_certificate: bool,
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No verified client certificate, and metadata is not trusted.
    #[error(
        "xDS needs a workload certificate: connect over mTLS with the certificate the mesh CA issued to this proxy"
    )]
    NoCertificate,
    /// The certificate carries no workload SPIFFE ID.
    #[error(
        "the client certificate carries no workload SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>): {0}"
    )]
    NotWorkload(String),
    /// The certificate is of another trust domain.
    #[error(
        "the client certificate {id} is of trust domain {got:?}, this mesh's is {expected:?}; use a certificate from this mesh's CA"
    )]
    TrustDomain {
        /// The certificate's SPIFFE ID.
        id: String,
        /// Its trust domain.
        got: String,
        /// The mesh's.
        expected: String,
    },
    /// Metadata claims another namespace or service account than the certificate.
    #[error(
        "node metadata {field} {claimed:?} disagrees with the client certificate, which says {certified:?} ({id}); a proxy's {what} comes from its certificate: fix {field} in the proxy's bootstrap or issue it a certificate for {claimed:?}"
    )]
    Disagrees {
        /// The metadata key (`NAMESPACE`, `SERVICE_ACCOUNT`).
        field: &'static str,
        /// What it means, for the message.
        what: &'static str,
        /// What the metadata says.
        claimed: String,
        /// What the certificate says.
        certified: String,
        /// The certificate's SPIFFE ID.
        id: String,
    },
}

impl Refusal {
    /// The label of `jalin_control_xds_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::NotWorkload(_) => "not_a_workload_id",
            Refusal::TrustDomain { .. } => "trust_domain",
            Refusal::Disagrees { field, .. } if *field == META_NAMESPACE => "namespace",
            Refusal::Disagrees { .. } => "service_account",
        }
    }

    /// The gRPC status the proxy receives.
    pub fn status(&self) -> tonic::Status {
        match self {
            Refusal::NoCertificate => tonic::Status::unauthenticated(self.to_string()),
            _ => tonic::Status::permission_denied(self.to_string()),
        }
    }
}

impl Admission {
    /// Admits `node` connected from `peer`: returns the node with `NAMESPACE` and
    /// `SERVICE_ACCOUNT` as the verified certificate says, or why it is refused.
    pub fn admit(&self, node: NodeInfo, peer: &Peer) -> Result<NodeInfo, Refusal> {
        let certified = peer.leaf().map(|leaf| {
            spiffe_id_from_cert_der(leaf.as_ref()).map_err(|e| Refusal::NotWorkload(e.to_string()))
        });
        match certified {
            None => self.decide(node, None),
            Some(Ok(id)) => self.decide(node, Some(&id)),
            Some(Err(refusal)) => Err(refusal),
        }
    }

    /// The decision, given the certificate's SPIFFE ID (`None`: no client certificate).
    pub fn decide(&self, mut node: NodeInfo, id: Option<&SpiffeId>) -> Result<NodeInfo, Refusal> {
        let Some(id) = id else {
            return if self.trust_metadata_without_certificate {
                Ok(node)
            } else {
                Err(Refusal::NoCertificate)
            };
        };
        let Some((namespace, service_account)) = id.workload_parts() else {
            return Err(Refusal::NotWorkload(id.to_string()));
        };
        if let Some(expected) = &self.trust_domain
            && id.trust_domain().as_str() != expected
        {
            return Err(Refusal::TrustDomain {
                id: id.to_string(),
                got: id.trust_domain().to_string(),
                expected: expected.clone(),
            });
        }
        for (field, what, certified) in [
            (META_NAMESPACE, "namespace", namespace),
            (META_SERVICE_ACCOUNT, "service account", service_account),
        ] {
            match node.metadata.get(field) {
                Some(claimed) if !claimed.is_empty() && claimed != certified => {
                    return Err(Refusal::Disagrees {
                        field,
                        what,
                        claimed: claimed.clone(),
                        certified: certified.to_owned(),
                        id: id.to_string(),
                    });
                }
                _ => {
                    node.metadata.insert(field.to_owned(), certified.to_owned());
                }
            }
        }
        Ok(node)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn node(ns: Option<&str>, sa: Option<&str>) -> NodeInfo {
        let mut metadata = BTreeMap::new();
        if let Some(ns) = ns {
            metadata.insert(META_NAMESPACE.to_owned(), ns.to_owned());
        }
        if let Some(sa) = sa {
            metadata.insert(META_SERVICE_ACCOUNT.to_owned(), sa.to_owned());
        }
        metadata.insert("LABELS".to_owned(), "app=web".to_owned());
        NodeInfo {
            id: "p".into(),
            cluster: String::new(),
            metadata,
        }
    }

    fn strict() -> Admission {
        Admission {
            trust_domain: Some("cluster.local".into()),
            trust_metadata_without_certificate: false,
        }
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn the_certificate_decides_namespace_and_service_account() {
        let cert = id("spiffe://cluster.local/ns/a/sa/web");
        let ok = strict()
            .decide(node(Some("a"), Some("web")), Some(&cert))
            .unwrap();
        assert_eq!(ok.metadata["LABELS"], "app=web");
        // Missing fields are filled from the certificate.
        let filled = strict().decide(node(None, None), Some(&cert)).unwrap();
        assert_eq!(filled.metadata[META_NAMESPACE], "a");
        assert_eq!(filled.metadata[META_SERVICE_ACCOUNT], "web");

        let lie = strict()
            .decide(node(Some("b"), Some("web")), Some(&cert))
            .unwrap_err();
        assert_eq!(lie.reason(), "namespace");
        assert_eq!(lie.status().code(), tonic::Code::PermissionDenied);
        let msg = lie.to_string();
        assert!(msg.contains("NAMESPACE \"b\""), "{msg}");
        assert!(msg.contains("says \"a\""), "{msg}");

        let sa = strict()
            .decide(node(Some("a"), Some("admin")), Some(&cert))
            .unwrap_err();
        assert_eq!(sa.reason(), "service_account");
        assert!(sa.to_string().contains("SERVICE_ACCOUNT \"admin\""));
    }

    #[test]
    fn other_trust_domains_and_non_workload_ids_are_refused() {
        let other = id("spiffe://elsewhere.example/ns/a/sa/web");
        let e = strict()
            .decide(node(Some("a"), None), Some(&other))
            .unwrap_err();
        assert_eq!(e.reason(), "trust_domain");
        let host = id("spiffe://cluster.local/gateway");
        let e = strict().decide(node(None, None), Some(&host)).unwrap_err();
        assert_eq!(e.reason(), "not_a_workload_id");
    }

    #[test]
    fn metadata_is_trusted_only_without_a_certificate_and_only_when_allowed() {
        let e = strict().decide(node(Some("a"), None), None).unwrap_err();
        assert_eq!(e.status().code(), tonic::Code::Unauthenticated);
        let insecure = Admission {
            trust_metadata_without_certificate: true,
            ..strict()
        };
        let n = insecure.decide(node(Some("b"), None), None).unwrap();
        assert_eq!(n.metadata[META_NAMESPACE], "b");
        // A certificate still wins when there is one.
        let cert = id("spiffe://cluster.local/ns/a/sa/web");
        assert!(insecure.decide(node(Some("b"), None), Some(&cert)).is_err());
    }
}
