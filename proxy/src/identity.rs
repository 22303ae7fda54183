//! The proxy's workload identity: the `identity` section of the configuration (trust domain,
//! SPIFFE ID, labels, trust bundles, TLS policy, certificate source), and the running identity
//! built from it: the hot-swapped workload certificate, the inbound rustls server config and the
//! outbound per-destination client configs.
//!
//! Invariant: the certificate lives behind the ca crate's resolvers, so a renewal applies to the
//! next handshake and never touches an established connection. The identity is fixed for the
//! life of the process; a reload that changes the section is rejected.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use jalin_ca::identity::{
    Bootstrap, CertStore, CertificateSource, GrpcCertificateSource, GrpcSourceConfig,
    IdentityConfig, WorkloadIdentity,
};
use jalin_ca::spiffe::{SpiffeId, TrustDomain};
use jalin_ca::tls::{OutboundTls, TlsPolicy, TlsPolicyName, TrustBundle, TrustStore};
use rustls::ServerConfig;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The `identity` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// The mesh's trust domain, for example `cluster.local` or `gov.example`.
    pub trust_domain: String,
    /// The workload's namespace (the `ns` of its SPIFFE ID, and the namespace policies select).
    pub namespace: String,
    /// The workload's service account (the `sa` of its SPIFFE ID).
    pub service_account: String,
    /// The workload's labels, which policy selectors match.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// PEM files of the roots peers must chain to (several for root rotation).
    pub trust_bundles: Vec<PathBuf>,
    /// `default` (TLS 1.3) or `government` (AES-GCM, P-256/P-384).
    #[serde(default)]
    pub tls_policy: TlsPolicyName,
    /// Where the workload certificate comes from.
    pub certificate: CertificateSection,
}

/// Where the workload certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CertificateSection {
    /// The jalin CA over gRPC: a key made here, a CSR, renewal at half life.
    Ca {
        /// `https://host:port`.
        address: String,
        /// The CA's SPIFFE ID, checked instead of a host name.
        ca_id: String,
        /// A one-time join token (bare metal), read once at start.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join_token_file: Option<PathBuf>,
        /// A Kubernetes service-account token file (projected volume), read on every use.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kubernetes_token_file: Option<PathBuf>,
        /// Requested lifetime in seconds; 0 (default) asks for the CA's default.
        #[serde(default)]
        ttl_secs: u64,
    },
    /// A certificate chain and key on disk (`jalin ca issue` on bare metal); not renewed.
    Files { cert: PathBuf, key: PathBuf },
    /// The embedder passes the source to [`crate::Proxy::start_with`] (tests, `DevCa`).
    External,
}

/// The running identity of one proxy.
pub struct ProxyIdentity {
    pub spiffe_id: SpiffeId,
    pub policy: TlsPolicy,
    pub section: IdentitySection,
    /// Inbound mTLS: client certificates required and verified against the trust bundle.
    pub server_config: Arc<ServerConfig>,
    /// Outbound mTLS configs per expected server identity.
    pub outbound: Arc<OutboundTls>,
    source: Source,
}

enum Source {
    Managed {
        manager: WorkloadIdentity,
        task: tokio::task::JoinHandle<()>,
    },
    Static,
}

impl std::fmt::Debug for ProxyIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyIdentity")
            .field("spiffe_id", &self.spiffe_id.to_string())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl Drop for ProxyIdentity {
    fn drop(&mut self) {
        if let Source::Managed { task, .. } = &self.source {
            task.abort();
        }
    }
}

impl ProxyIdentity {
    /// Builds the identity of `section` (from `file`) and starts renewing it. `external` is the
    /// certificate source of `certificate: external`.
    pub fn start(
        section: &IdentitySection,
        file: &str,
        external: Option<Arc<dyn CertificateSource>>,
    ) -> Result<Self, ConfigError> {
        let err = |path: &str, message: String, hint: &str| {
            ConfigError::field(file, format!("identity.{path}"), message, hint)
        };
        let td = TrustDomain::new(&section.trust_domain).map_err(|e| {
            err(
                "trust_domain",
                e.to_string(),
                "use a DNS-like name such as cluster.local",
            )
        })?;
        let spiffe_id = SpiffeId::new_workload(
            &section.trust_domain,
            &section.namespace,
            &section.service_account,
        )
        .map_err(|e| {
            err(
                "service_account",
                e.to_string(),
                "namespace and service_account must be Kubernetes names",
            )
        })?;
        let mut pem = Vec::new();
        for (i, p) in section.trust_bundles.iter().enumerate() {
            let text = std::fs::read(p).map_err(|e| {
                err(
                    &format!("trust_bundles[{i}]"),
                    format!("cannot read {}: {e}", p.display()),
                    "give the PEM file of the mesh's root certificate(s)",
                )
            })?;
            pem.extend_from_slice(&text);
            pem.push(b'\n');
        }
        let bundle = TrustBundle::from_pem(&pem, vec![td]).map_err(|e| {
            err(
                "trust_bundles",
                e.to_string(),
                "list at least one PEM file holding the root certificate(s)",
            )
        })?;
        let trust = TrustStore::new(bundle);
        let policy = match section.tls_policy {
            TlsPolicyName::Default => TlsPolicy::DEFAULT,
            TlsPolicyName::Government => TlsPolicy::GOVERNMENT,
        };
        let (server_resolver, client_resolver, source) = match &section.certificate {
            CertificateSection::Files { cert, key } => {
                let store = Arc::new(load_static(cert, key).map_err(|m| {
                    err(
                        "certificate.files",
                        m,
                        "give the PEM chain (leaf first) and its PKCS#8 key, as `jalin ca issue` writes them",
                    )
                })?);
                (
                    store.clone() as Arc<dyn rustls::server::ResolvesServerCert>,
                    store as Arc<dyn rustls::client::ResolvesClientCert>,
                    Source::Static,
                )
            }
            CertificateSection::Ca {
                address,
                ca_id,
                join_token_file,
                kubernetes_token_file,
                ttl_secs,
            } => {
                let ca_id = SpiffeId::parse(ca_id).map_err(|e| {
                    err(
                        "certificate.ca.ca_id",
                        e.to_string(),
                        "the CA's SPIFFE ID, e.g. spiffe://<td>/ns/jalin-system/sa/jalin-ca",
                    )
                })?;
                let bootstrap = match (join_token_file, kubernetes_token_file) {
                    (Some(p), None) => {
                        let token = std::fs::read_to_string(p).map_err(|e| {
                            err(
                                "certificate.ca.join_token_file",
                                format!("cannot read {}: {e}", p.display()),
                                "write the token `jalin ca` issued for this host",
                            )
                        })?;
                        Bootstrap::JoinToken(token.trim().to_owned())
                    }
                    (None, Some(p)) => Bootstrap::KubernetesTokenFile(p.clone()),
                    _ => {
                        return Err(err(
                            "certificate.ca",
                            "exactly one of join_token_file and kubernetes_token_file is needed"
                                .into(),
                            "bare metal: join_token_file; Kubernetes: kubernetes_token_file",
                        ));
                    }
                };
                let mut cfg = GrpcSourceConfig::new(address.clone(), ca_id, bootstrap);
                cfg.ttl_secs = *ttl_secs;
                cfg.policy = policy;
                let manager = GrpcCertificateSource::identity(
                    IdentityConfig::new(spiffe_id.clone()),
                    cfg,
                    trust.clone(),
                )
                .map_err(|e| err("certificate.ca", e.to_string(), ""))?;
                managed(manager)
            }
            CertificateSection::External => {
                let Some(source) = external else {
                    return Err(err(
                        "certificate",
                        "`external` needs a certificate source from the embedder".into(),
                        "use `ca` or `files` in a configuration file",
                    ));
                };
                let manager = WorkloadIdentity::new(
                    IdentityConfig::new(spiffe_id.clone()),
                    source,
                    trust.clone(),
                )
                .map_err(|e| err("certificate", e.to_string(), ""))?;
                managed(manager)
            }
        };
        let server_config = jalin_ca::tls::server_config(&policy, trust.clone(), server_resolver)
            .map_err(|e| err("tls_policy", e.to_string(), ""))?;
        let outbound = Arc::new(OutboundTls::new(policy, trust, client_resolver));
        Ok(Self {
            spiffe_id,
            policy,
            section: section.clone(),
            server_config,
            outbound,
            source,
        })
    }

    /// True once a certificate is installed (readiness waits for it).
    pub fn is_ready(&self) -> bool {
        match &self.source {
            Source::Managed { manager, .. } => manager.current().is_some(),
            Source::Static => true,
        }
    }

    /// The certificate manager, when the certificate is issued and renewed by a CA.
    pub fn manager(&self) -> Option<&WorkloadIdentity> {
        match &self.source {
            Source::Managed { manager, .. } => Some(manager),
            Source::Static => None,
        }
    }

    /// FIPS mode of the TLS backend in force.
    pub fn fips_active(&self) -> bool {
        self.policy.fips_active()
    }
}

type Resolvers = (
    Arc<dyn rustls::server::ResolvesServerCert>,
    Arc<dyn rustls::client::ResolvesClientCert>,
    Source,
);

fn managed(manager: WorkloadIdentity) -> Resolvers {
    let task = manager.spawn();
    (
        manager.server_resolver(),
        manager.client_resolver(),
        Source::Managed { manager, task },
    )
}

fn load_static(cert: &PathBuf, key: &PathBuf) -> Result<CertStore, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the key {}: {e}", key.display()))?;
    let certified =
        CertifiedKey::from_der(chain, key, &rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| format!("certificate and key do not match: {e}"))?;
    let store = CertStore::new();
    store.install(Arc::new(certified));
    Ok(store)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: in
    address: 127.0.0.1:0
    direction: inbound
    service: app
    mtls: STRICT
services:
  - name: app
    endpoints:
      - address: 127.0.0.1:8080
";

    #[test]
    fn mtls_without_identity_is_rejected_with_its_path() {
        let err = parse("f.yaml", BASE).unwrap_err();
        assert_eq!(err.path, "listeners[0].mtls", "{err}");
        assert!(err.hint.contains("identity"), "{err}");
    }

    #[test]
    fn identity_section_parses_each_source() {
        for source in [
            "certificate: external",
            "certificate:\n    files: { cert: /c.pem, key: /k.pem }",
            "certificate:\n    ca: { address: \"https://ca:15012\", ca_id: \"spiffe://td/ns/jalin-system/sa/jalin-ca\", kubernetes_token_file: /var/run/token }",
        ] {
            let text = format!(
                "{BASE}identity:\n  trust_domain: td\n  namespace: ns\n  service_account: sa\n  labels: {{ app: x }}\n  trust_bundles: [/root.pem]\n  tls_policy: government\n  {source}\n"
            );
            let (cfg, _) = parse("f.yaml", &text).unwrap_or_else(|e| panic!("{source}: {e}"));
            let id = cfg.identity.unwrap();
            assert_eq!(id.tls_policy, jalin_ca::tls::TlsPolicyName::Government);
            assert_eq!(id.labels["app"], "x");
        }
    }

    #[test]
    fn istio_mutual_needs_a_spiffe_identity() {
        let text = format!(
            "{}    tls: {{ mode: istio_mutual, identity: not-a-spiffe-id }}\nidentity:\n  trust_domain: td\n  namespace: ns\n  service_account: sa\n  trust_bundles: [/r.pem]\n  certificate: external\n",
            BASE
        );
        let err = parse("f.yaml", &text).unwrap_err();
        assert_eq!(err.path, "services[0].tls.identity", "{err}");
        let text = text.replace(
            "    tls: { mode: istio_mutual, identity: not-a-spiffe-id }\n",
            "",
        );
        let text = text.replace(
            "      - address: 127.0.0.1:8080\n",
            "      - address: 127.0.0.1:8080\n        tls: { mode: istio_mutual }\n",
        );
        let err = parse("f.yaml", &text).unwrap_err();
        assert_eq!(err.path, "services[0].endpoints[0].tls.identity", "{err}");
    }

    #[test]
    fn unreadable_trust_bundle_names_the_field() {
        let text = format!(
            "{BASE}identity:\n  trust_domain: td\n  namespace: ns\n  service_account: sa\n  trust_bundles: [/nonexistent/root.pem]\n  certificate: external\n"
        );
        let (cfg, origin) = parse("f.yaml", &text).unwrap();
        let err = super::ProxyIdentity::start(cfg.identity.as_ref().unwrap(), &origin.file, None)
            .unwrap_err();
        assert_eq!(err.path, "identity.trust_bundles[0]", "{err}");
    }
}
