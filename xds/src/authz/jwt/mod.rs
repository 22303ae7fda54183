//! RequestAuthentication: which JWT issuers a workload accepts, where tokens are read from, and
//! Istio's outcome rules: a request with an invalid token is rejected (401); a request with no
//! token is accepted with no request principal (an ALLOW policy on `requestPrincipals` then
//! refuses it with 403).
//!
//! Compile with [`Authn::compile`] once per update (JWKS documents the proxy fetched from
//! `jwksUri` are passed in; fetching is the proxy's job), select per workload with
//! [`Authn::for_workload`], then call [`WorkloadAuthn::authenticate`] per request with `now`.
//!
//! A token whose `iss` no rule of the workload names is treated as absent, as Envoy's
//! `allow_missing` requirement (which Istio configures) does: the request carries no request
//! principal. When several locations hold tokens, every one must be valid; the principal comes
//! from the first (in the order the rules list their locations).

mod jwks;
mod token;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName};

pub use jwks::{JwksError, JwsAlg};
pub use token::{CLOCK_SKEW, JwtError, MAX_TOKEN_BYTES, RequestAuth};

use super::select::applies;
use crate::model::authz::RequestAuthentication;

/// Where a token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenLocation {
    /// A header, with a prefix (for example `Authorization` with `Bearer `).
    Header { name: HeaderName, prefix: String },
    /// A query parameter.
    Param(String),
}

#[derive(Debug)]
struct CompiledRule {
    policy: String,
    issuer: String,
    audiences: Vec<String>,
    /// `None` when the JWKS could not be loaded: tokens from this issuer are rejected.
    keys: Option<Arc<[jwks::Jwk]>>,
    locations: Vec<TokenLocation>,
    forward: bool,
    claim_headers: Vec<(HeaderName, Vec<String>)>,
}

#[derive(Debug)]
struct CompiledRa {
    namespace: String,
    selector: Option<BTreeMap<String, String>>,
    rules: Vec<Arc<CompiledRule>>,
}

/// A problem in a RequestAuthentication, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}RequestAuthentication/{policy}: {field}: {message}")]
pub struct AuthnCompileError {
    /// `file:line: ` or empty.
    pub location: String,
    pub policy: String,
    pub field: String,
    pub message: String,
}

/// The `jwksUri`s of rules without an inline `jwks`: the documents the proxy must fetch (with
/// its own timeout, size bound and refresh) and pass to [`Authn::compile`].
pub fn jwks_uris(policies: &[RequestAuthentication]) -> std::collections::BTreeSet<String> {
    policies
        .iter()
        .flat_map(|p| &p.jwt_rules)
        .filter(|r| r.jwks.is_none())
        .filter_map(|r| r.jwks_uri.clone())
        .collect()
}

/// All RequestAuthentications of a configuration, compiled.
#[derive(Debug, Default)]
pub struct Authn {
    root_namespace: String,
    policies: Vec<CompiledRa>,
    warnings: Vec<String>,
}

impl Authn {
    /// Compiles `policies`. `fetched` maps a `jwksUri` to the JWKS document the proxy loaded
    /// from it; an issuer whose JWKS is missing or unusable rejects all its tokens (fail
    /// closed, as Istio does) and is listed in [`Self::warnings`]. A malformed inline `jwks` or
    /// header name is an error.
    pub fn compile(
        policies: &[RequestAuthentication],
        root_namespace: &str,
        fetched: &BTreeMap<String, String>,
    ) -> Result<Self, Vec<AuthnCompileError>> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        for ra in policies {
            let key = ra.meta.key();
            let location = ra
                .meta
                .source
                .as_ref()
                .map(|s| format!("{}:{}: ", s.file, s.line))
                .unwrap_or_default();
            let err = |field: String, message: String| AuthnCompileError {
                location: location.clone(),
                policy: key.clone(),
                field,
                message,
            };
            let mut rules = Vec::new();
            for (i, r) in ra.jwt_rules.iter().enumerate() {
                let field = format!("spec.jwtRules[{i}]");
                if r.issuer.is_empty() {
                    errors.push(err(format!("{field}.issuer"), "issuer is required".into()));
                    continue;
                }
                let keys = match (&r.jwks, &r.jwks_uri) {
                    (Some(inline), _) => match jwks::parse_jwks(inline) {
                        Ok(k) => Some(Arc::from(k)),
                        Err(e) => {
                            errors.push(err(format!("{field}.jwks"), e.to_string()));
                            continue;
                        }
                    },
                    (None, Some(uri)) => {
                        match fetched.get(uri).map(|d| jwks::parse_jwks(d)) {
                            Some(Ok(k)) => Some(Arc::from(k)),
                            Some(Err(e)) => {
                                warnings.push(format!("{key}: {field}.jwksUri {uri}: {e}; tokens from {} are rejected", r.issuer));
                                None
                            }
                            None => {
                                warnings.push(format!("{key}: {field}.jwksUri {uri}: JWKS not loaded; tokens from {} are rejected", r.issuer));
                                None
                            }
                        }
                    }
                    (None, None) => {
                        errors.push(err(
                            field.clone(),
                            "one of `jwks` or `jwksUri` is required".into(),
                        ));
                        continue;
                    }
                };
                let mut locations = Vec::new();
                for (j, h) in r.from_headers.iter().enumerate() {
                    match HeaderName::from_bytes(h.name.as_bytes()) {
                        Ok(name) => locations.push(TokenLocation::Header {
                            name,
                            prefix: h.prefix.clone(),
                        }),
                        Err(_) => errors.push(err(
                            format!("{field}.fromHeaders[{j}].name"),
                            format!("`{}` is not a valid HTTP header name", h.name),
                        )),
                    }
                }
                locations.extend(r.from_params.iter().cloned().map(TokenLocation::Param));
                if locations.is_empty() {
                    locations.push(TokenLocation::Header {
                        name: http::header::AUTHORIZATION,
                        prefix: "Bearer ".into(),
                    });
                    locations.push(TokenLocation::Param("access_token".into()));
                }
                let mut claim_headers = Vec::new();
                for (j, c) in r.output_claim_to_headers.iter().enumerate() {
                    match HeaderName::from_bytes(c.header.as_bytes()) {
                        Ok(name) => claim_headers
                            .push((name, c.claim.split('.').map(str::to_owned).collect())),
                        Err(_) => errors.push(err(
                            format!("{field}.outputClaimToHeaders[{j}].header"),
                            format!("`{}` is not a valid HTTP header name", c.header),
                        )),
                    }
                }
                rules.push(Arc::new(CompiledRule {
                    policy: key.clone(),
                    issuer: r.issuer.clone(),
                    audiences: r.audiences.clone(),
                    keys,
                    locations,
                    forward: r.forward_original_token,
                    claim_headers,
                }));
            }
            out.push(CompiledRa {
                namespace: ra.meta.namespace.clone(),
                selector: ra.selector.as_ref().map(|s| s.match_labels.clone()),
                rules,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Authn {
            root_namespace: root_namespace.to_owned(),
            policies: out,
            warnings,
        })
    }

    /// Issuers whose JWKS could not be loaded (their tokens are rejected).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The JWT rules that apply to a workload: mesh-wide (root namespace), its namespace's,
    /// and those whose selector matches its labels.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadAuthn {
        let rules = self
            .policies
            .iter()
            .filter(|p| {
                applies(
                    &p.namespace,
                    p.selector.as_ref(),
                    &self.root_namespace,
                    namespace,
                    labels,
                )
            })
            .flat_map(|p| p.rules.iter().cloned())
            .collect();
        WorkloadAuthn { rules }
    }
}

/// The JWT rules of one workload.
#[derive(Debug, Default, Clone)]
pub struct WorkloadAuthn {
    rules: Vec<Arc<CompiledRule>>,
}

/// The outcome of authenticating a request that is let through.
#[derive(Debug, Default)]
pub struct AuthnOutcome {
    /// The validated token, if there was one.
    pub auth: Option<RequestAuth>,
    /// Headers to remove before forwarding (token headers whose rule does not set
    /// `forwardOriginalToken`).
    pub strip_headers: Vec<HeaderName>,
    /// Headers to add from claims (`outputClaimToHeaders`), values already rendered.
    pub claim_headers: Vec<(HeaderName, String)>,
}

impl WorkloadAuthn {
    /// True when no RequestAuthentication applies (every request passes with no principal).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Authenticates a request. `query` is the part of the request target after `?`, if any.
    /// `Err` means the proxy answers 401 with the error's text as the body.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: SystemTime,
    ) -> Result<AuthnOutcome, JwtError> {
        let mut out = AuthnOutcome::default();
        let mut seen: Vec<&TokenLocation> = Vec::new();
        for rule in &self.rules {
            for loc in &rule.locations {
                if seen.contains(&loc) {
                    continue;
                }
                seen.push(loc);
                let Some(tok) = extract(loc, headers, query) else {
                    continue;
                };
                let parsed = token::parse(tok)?;
                let Some(iss) = parsed.issuer().map(str::to_owned) else {
                    // No issuer: Envoy cannot pick a provider; treat as unknown issuer.
                    continue;
                };
                // Every rule for this issuer that reads this location may accept the token
                // (Envoy's `requires_any`); the first error is reported if none does.
                let mut accepted = None;
                let mut first_err = None;
                for r in self
                    .rules
                    .iter()
                    .filter(|r| r.issuer == iss && r.locations.contains(loc))
                {
                    let verifier = token::Verifier {
                        issuer: &r.issuer,
                        audiences: &r.audiences,
                        keys: r.keys.as_deref(),
                    };
                    match token::verify(&parsed, &verifier, now) {
                        Ok(a) => {
                            accepted = Some((r, a));
                            break;
                        }
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                let (owner, auth) = match (accepted, first_err) {
                    (Some(ok), _) => ok,
                    (None, Some(e)) => return Err(e),
                    // No rule for this issuer here: an unknown issuer counts as no token.
                    (None, None) => continue,
                };
                tracing::debug!(policy = %owner.policy, issuer = %owner.issuer, "JWT validated");
                if let TokenLocation::Header { name, .. } = loc
                    && !owner.forward
                {
                    out.strip_headers.push(name.clone());
                }
                if out.auth.is_none() {
                    for (h, path) in &owner.claim_headers {
                        if let Some(v) = auth.claim(path).and_then(render_claim) {
                            out.claim_headers.push((h.clone(), v));
                        }
                    }
                    out.auth = Some(auth);
                }
            }
        }
        Ok(out)
    }
}

fn extract<'h>(
    loc: &TokenLocation,
    headers: &'h HeaderMap,
    query: Option<&'h str>,
) -> Option<&'h str> {
    match loc {
        TokenLocation::Header { name, prefix } => {
            let v = headers.get(name)?.to_str().ok()?;
            if prefix.is_empty() {
                return Some(v.trim());
            }
            // Prefix match is case-insensitive for the scheme (`bearer` == `Bearer`).
            let head = v.get(..prefix.len())?;
            head.eq_ignore_ascii_case(prefix)
                .then(|| v[prefix.len()..].trim())
        }
        TokenLocation::Param(p) => query?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == p).then_some(v)
        }),
    }
}

fn render_claim(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(_) | serde_json::Value::Number(_) => Some(v.to_string()),
        serde_json::Value::Array(a) => {
            let parts: Vec<String> = a.iter().filter_map(render_claim).collect();
            Some(parts.join(","))
        }
        _ => None,
    }
}
