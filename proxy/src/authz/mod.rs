//! Authorization and request authentication in the inbound path: the `authorization` section
//! of the configuration (native AuthorizationPolicy, RequestAuthentication and
//! PeerAuthentication lists, JWKS files, CUSTOM providers), compiled once per configuration
//! into a [`Security`] for this workload, and applied per request by [`check`] and per opaque
//! connection by [`check_tcp`].
//!
//! Invariant: a request never compiles anything; [`Security`] is immutable and swapped whole on
//! reload. Policy names never reach a client: they go to the log and the decision metric.

mod check;
mod custom;
mod jwks;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jalin_xds::authz::jwt::{Authn, WorkloadAuthn};
use jalin_xds::authz::{
    DEFAULT_ROOT_NAMESPACE, Engine, EngineConfig, TrustDomains, WorkloadAuthz, resolve_mtls,
};
use jalin_xds::model::authz::{AuthorizationPolicy, RequestAuthentication};
use jalin_xds::model::peer_auth::{MtlsMode, PeerAuthentication};
use serde::{Deserialize, Serialize};

pub use check::{AUTHZ_DECISIONS, check, check_tcp};
pub use custom::CustomClient;
pub use jwks::{JWKS_REFRESHES, JWKS_RETRY_AFTER, Refreshed};

use crate::config::{ConfigError, ProxyConfig};

/// Longest a CUSTOM provider may be given.
pub const MAX_PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// A CUSTOM provider's timeout when the file names none.
pub const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 500;

/// The `authorization` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationSection {
    /// Istio's root namespace: policies there apply mesh-wide.
    #[serde(default = "default_root_namespace")]
    pub root_namespace: String,
    /// Other trust domains that count as local (`meshConfig.trustDomainAliases`).
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// Native AuthorizationPolicies (as `jalin import` writes them).
    #[serde(default)]
    pub policies: Vec<AuthorizationPolicy>,
    /// Native RequestAuthentications (JWT).
    #[serde(default)]
    pub request_authentications: Vec<RequestAuthentication>,
    /// Native PeerAuthentications: the inbound mTLS mode per port.
    #[serde(default)]
    pub peer_authentications: Vec<PeerAuthentication>,
    /// JWKS documents for `jwksUri`s, read from files instead of fetched.
    #[serde(default)]
    pub jwks_files: BTreeMap<String, PathBuf>,
    /// CA certificates (PEM files) trusted for `https://` jwksUris besides the system store
    /// (an agency's private PKI).
    #[serde(default)]
    pub jwks_trust: Vec<PathBuf>,
    /// How often fetched `jwksUri`s are fetched again, so an identity provider's key rotation
    /// takes effect without a reload; absent: 5 minutes (Envoy's default). 1 s to 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_ms: Option<u64>,
    /// Proxies in front of this one whose `x-forwarded-for` entries are trusted (`remote.ip`).
    #[serde(default)]
    pub num_trusted_proxies: u32,
    /// CUSTOM action providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, CustomProvider>,
}

fn default_root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.to_owned()
}

/// An external authorizer reached over HTTP (Envoy's `ext_authz` HTTP service): the request's
/// method, path and headers are sent to `url` + path; 2xx allows, anything else denies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProvider {
    /// `http://host:port[/prefix]`.
    pub url: String,
    #[serde(default = "default_provider_timeout")]
    pub timeout_ms: u64,
}

fn default_provider_timeout() -> u64 {
    DEFAULT_PROVIDER_TIMEOUT_MS
}

/// This workload's compiled security settings.
#[derive(Debug, Default)]
pub struct Security {
    pub authz: WorkloadAuthz,
    pub authn: WorkloadAuthn,
    peer_auth: Vec<PeerAuthentication>,
    root_namespace: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    pub num_trusted_proxies: u32,
    pub providers: HashMap<Arc<str>, CustomClient>,
    /// Headers RequestAuthentication fills from claims: removed from every request first, so
    /// a client without a token cannot write them.
    pub claim_headers: Vec<http::HeaderName>,
    /// The JWKS documents in force, by `jwksUri` (files and fetched), for the next refresh.
    pub jwks: BTreeMap<String, String>,
}

impl Security {
    /// Compiles the section for the workload of the `identity` section. Reads JWKS files and
    /// fetches `jwksUri`s (bounded); a URI that cannot be fetched rejects its issuer's tokens.
    pub async fn build(config: &ProxyConfig, file: &str) -> Result<Self, ConfigError> {
        let fetched = jwks::load(&config.authorization, file).await?;
        Self::build_with_jwks(config, file, fetched)
    }

    /// [`Security::build`] with the JWKS documents already at hand (a refresh round's).
    pub fn build_with_jwks(
        config: &ProxyConfig,
        file: &str,
        fetched: BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let a = &config.authorization;
        let err = |path: &str, message: String, hint: &str| {
            ConfigError::field(file, format!("authorization.{path}"), message, hint)
        };
        if let Some(ms) = a.jwks_refresh_ms
            && !jwks::JWKS_REFRESH_RANGE_MS.contains(&ms)
        {
            return Err(err(
                "jwks_refresh_ms",
                format!("{ms} ms is out of range"),
                "use 1000..=86400000 ms (1 s to 24 h); leave it out for 5 minutes",
            ));
        }
        let (namespace, labels, td) = match &config.identity {
            Some(id) => (
                id.namespace.clone(),
                id.labels.clone(),
                id.trust_domain.clone(),
            ),
            None if a.policies.is_empty() && a.request_authentications.is_empty() => {
                return Ok(Self::default());
            }
            None => {
                return Err(err(
                    "policies",
                    "policies need the workload's namespace and labels".into(),
                    "add an `identity` section naming the workload",
                ));
            }
        };
        let engine_config = EngineConfig {
            root_namespace: a.root_namespace.clone(),
            trust_domains: TrustDomains {
                local: td,
                aliases: a.trust_domain_aliases.clone(),
            },
            ..EngineConfig::default()
        };
        let engine = Engine::compile(&a.policies, &engine_config).map_err(|e| {
            err(
                "policies",
                e.to_string(),
                "fix the policy; the previous configuration stays in force",
            )
        })?;
        let authn = Authn::compile(&a.request_authentications, &a.root_namespace, &fetched)
            .map_err(|errors| {
                err(
                    "request_authentications",
                    errors
                        .iter()
                        .map(|e| format!("{}{}: {}: {}", e.location, e.policy, e.field, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                    "fix the RequestAuthentication",
                )
            })?;
        for w in authn.warnings() {
            tracing::warn!(warning = %w, "RequestAuthentication");
        }
        let mut providers = HashMap::new();
        for (name, p) in &a.providers {
            let timeout = Duration::from_millis(p.timeout_ms);
            if timeout.is_zero() || timeout > MAX_PROVIDER_TIMEOUT {
                return Err(err(
                    &format!("providers.{name}.timeout_ms"),
                    format!("{} ms is out of range", p.timeout_ms),
                    "use 1..=10000 ms",
                ));
            }
            let client = CustomClient::new(&p.url, timeout).map_err(|m| {
                err(
                    &format!("providers.{name}.url"),
                    m,
                    "use http://host:port[/prefix]",
                )
            })?;
            providers.insert(Arc::from(name.as_str()), client);
        }
        let claim_headers = a
            .request_authentications
            .iter()
            .flat_map(|ra| &ra.jwt_rules)
            .flat_map(|r| &r.output_claim_to_headers)
            .filter_map(|c| http::HeaderName::from_bytes(c.header.as_bytes()).ok())
            .collect();
        Ok(Self {
            claim_headers,
            authz: engine.for_workload(&namespace, &labels),
            authn: authn.for_workload(&namespace, &labels),
            peer_auth: a.peer_authentications.clone(),
            root_namespace: a.root_namespace.clone(),
            namespace,
            labels,
            num_trusted_proxies: a.num_trusted_proxies,
            providers,
            jwks: fetched,
        })
    }

    /// Fetches the remote JWKS documents again (see [`jwks::refresh`]); `None` when there are
    /// none to fetch.
    pub async fn refresh_jwks(
        &self,
        config: &ProxyConfig,
        file: &str,
    ) -> Option<Result<Refreshed, ConfigError>> {
        jwks::refresh(&config.authorization, file, &self.jwks).await
    }

    /// How often `config`'s JWKS documents are refreshed.
    pub fn jwks_refresh_interval(config: &ProxyConfig) -> Duration {
        jwks::refresh_interval(&config.authorization)
    }

    /// The PeerAuthentication mode of `port` for this workload.
    pub fn mtls_mode(&self, port: u16) -> MtlsMode {
        resolve_mtls(
            &self.peer_auth,
            &self.root_namespace,
            &self.namespace,
            &self.labels,
            port,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config(extra: &str) -> ProxyConfig {
        let text = format!(
            "identity:\n  trust_domain: cluster.local\n  namespace: child-services\n  service_account: svc\n  labels: {{ app: child-profile-service }}\n  trust_bundles: [/r.pem]\n  certificate: external\nauthorization:\n{extra}"
        );
        parse("f.yaml", &text).unwrap().0
    }

    #[tokio::test]
    async fn peer_authentication_resolves_per_port() {
        let cfg = config(
            "  peer_authentications:\n    - meta: { name: ns, namespace: child-services }\n      mode: STRICT\n    - meta: { name: wl, namespace: child-services }\n      selector: { match_labels: { app: child-profile-service } }\n      port_level: { 9090: PERMISSIVE }\n",
        );
        let sec = Security::build(&cfg, "f.yaml").await.unwrap();
        assert_eq!(sec.mtls_mode(8080), MtlsMode::Strict);
        assert_eq!(sec.mtls_mode(9090), MtlsMode::Permissive);
    }

    #[tokio::test]
    async fn an_invalid_policy_rejects_the_configuration() {
        let cfg = config(
            "  policies:\n    - meta: { name: p, namespace: child-services }\n      action: CUSTOM\n      rules: [ {} ]\n",
        );
        let err = Security::build(&cfg, "f.yaml").await.unwrap_err();
        assert_eq!(err.path, "authorization.policies");
        assert!(err.message.contains("provider"), "{err}");
    }

    #[tokio::test]
    async fn policies_without_identity_are_rejected() {
        let text = "authorization:\n  policies:\n    - meta: { name: p, namespace: ns }\n";
        let cfg = parse("f.yaml", text).unwrap().0;
        let err = Security::build(&cfg, "f.yaml").await.unwrap_err();
        assert!(err.hint.contains("identity"), "{err}");
    }

    #[tokio::test]
    async fn provider_timeout_is_bounded() {
        let cfg =
            config("  providers:\n    ext: { url: \"http://127.0.0.1:1\", timeout_ms: 60000 }\n");
        let err = Security::build(&cfg, "f.yaml").await.unwrap_err();
        assert_eq!(err.path, "authorization.providers.ext.timeout_ms");
    }

    #[tokio::test]
    async fn jwks_refresh_is_bounded() {
        for ms in [0, 999, 86_400_001] {
            let cfg = config(&format!("  jwks_refresh_ms: {ms}\n"));
            let err = Security::build(&cfg, "f.yaml").await.unwrap_err();
            assert_eq!(err.path, "authorization.jwks_refresh_ms", "{ms}");
        }
        let cfg = config("  jwks_refresh_ms: 1000\n");
        assert_eq!(
            Security::jwks_refresh_interval(&cfg),
            Duration::from_secs(1)
        );
        Security::build(&cfg, "f.yaml").await.unwrap();
        assert_eq!(
            Security::jwks_refresh_interval(&config("  jwks_trust: []\n")),
            jwks::DEFAULT_JWKS_REFRESH
        );
    }

    #[test]
    fn a_refresh_round_is_labelled_by_what_it_found() {
        let round = |changed, failed| Refreshed {
            documents: BTreeMap::new(),
            changed,
            failed,
        };
        assert_eq!(round(true, 1).outcome(), "updated");
        assert_eq!(round(false, 0).outcome(), "unchanged");
        assert_eq!(round(false, 2).outcome(), "failed");
    }
}
