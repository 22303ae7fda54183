//! The native authorization engine: Istio AuthorizationPolicy semantics, compiled once per
//! configuration update and evaluated per request without I/O, locks or regex compilation.
//!
//! ```text
//! Engine::compile(policies, config)    once per update       -> Engine
//! engine.for_workload(ns, labels)      once per update/workload -> WorkloadAuthz
//! authz.evaluate(&RequestAttrs)        per request            -> Decision
//! ```
//!
//! Semantics (Istio's): CUSTOM is evaluated first, then DENY, then ALLOW. No ALLOW policy means
//! allow; ALLOW policies that all fail to match mean deny; AUDIT never changes the decision.
//! A policy with no rules (`spec: {}`) matches nothing, so as an ALLOW policy it denies all; a
//! rule with nothing in it (`rules: [{}]`) matches everything. Rules are ORed; `from`, `to`
//! and `when` are ANDed; the fields of a source or operation are ANDed; the values of a field are
//! ORed; `notX` negates. Policies marked `istio.io/dry-run` are evaluated and reported in
//! [`Decision::shadow`], never enforced.
//!
//! The proxy's inbound sequence, per request, after peer authentication:
//!
//! 1. [`jwt::WorkloadAuthn::authenticate`] (RequestAuthentication): `Err` answers 401
//!    ([`jwt::JwtError::unauthorized_response`]); `Ok` gives the optional [`jwt::RequestAuth`].
//! 2. [`WorkloadAuthz::evaluate`] with [`RequestAttrs`] (peer from the connection's
//!    [`PeerIdentity`], `remote_ip` from [`remote_ip`] with `numTrustedProxies`).
//! 3. If [`Decision::custom_check`] is `Some`, ask that provider with a timeout and fold the
//!    answer in with [`Decision::complete_custom`] (fail closed).
//! 4. If not [`Decision::is_allowed`], log [`Decision::policy_label`] and answer
//!    [`Decision::deny_response`]; count the decision by policy, action and result.
//!
//! Both [`WorkloadAuthz`] and [`jwt::WorkloadAuthn`] are built once per configuration update
//! and workload, and shared by reference (`Arc`) with every request.
//!
//! Invariants: policies are evaluated in a fixed order (action group, then `namespace/name`), so
//! the deciding policy of a request is deterministic; an applied [`WorkloadAuthz`] is immutable
//! and shared (`Arc`) by every request of that workload.

mod compile;
mod decision;
mod evaluate;
pub mod jwt;
mod matcher;
mod path;
pub mod peer_auth;
mod request;
mod select;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use compile::{CLUSTER_LOCAL, TrustDomains};
pub use decision::{
    CustomCheck, CustomResult, DENY_BODY, Decision, PolicyMatch, Reason, Shadow, Verdict,
};
pub use matcher::{TemplateError, split_port};
pub use path::{PathError, PathNormalization, normalize_path};
pub use peer_auth::resolve_mtls;
pub use request::{PeerIdentity, RequestAttrs, remote_ip};

use crate::model::authz::{Action, AuthorizationPolicy};
use compile::{CompiledRule, RuleCompiler};
use evaluate::Ctx;

/// Mesh-wide settings the engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Istio's root namespace (`istio-system` by default): policies there apply mesh-wide.
    pub root_namespace: String,
    /// Local trust domain and aliases.
    pub trust_domains: TrustDomains,
    /// Path normalisation before matching.
    pub path_normalization: PathNormalization,
}

/// Istio's default root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            trust_domains: TrustDomains::default(),
            path_normalization: PathNormalization::default(),
        }
    }
}

/// A problem in one AuthorizationPolicy:
/// `file:line: AuthorizationPolicy/ns/name: spec.rules[0]...: what is wrong and what is expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}AuthorizationPolicy/{policy}: {field}: {message}")]
pub struct PolicyError {
    /// `file:line: `, or empty when the policy did not come from a file.
    pub location: String,
    /// `namespace/name`.
    pub policy: String,
    /// Field path, Istio spelling.
    pub field: String,
    pub message: String,
}

/// Every problem found while compiling; the update is rejected whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid authorization polic{}:\n{}", .errors.len(), if .errors.len() == 1 { "y" } else { "ies" },
    .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct CompileError {
    pub errors: Vec<PolicyError>,
}

impl PolicyError {
    pub(crate) fn new(p: &AuthorizationPolicy, field: String, message: String) -> PolicyError {
        PolicyError {
            location: p
                .meta
                .source
                .as_ref()
                .map(|s| format!("{}:{}: ", s.file, s.line))
                .unwrap_or_default(),
            policy: p.meta.key(),
            field,
            message,
        }
    }
}

/// One compiled policy.
#[derive(Debug)]
struct CompiledPolicy {
    key: Arc<str>,
    namespace: String,
    selector: Option<BTreeMap<String, String>>,
    action: Action,
    provider: Option<Arc<str>>,
    dry_run: bool,
    rules: Box<[CompiledRule]>,
}

impl CompiledPolicy {
    /// Index of the first matching rule.
    #[inline]
    fn first_match(&self, cx: &Ctx<'_>) -> Option<usize> {
        let deny = self.action == Action::Deny;
        self.rules.iter().position(|r| r.matches(cx, deny))
    }

    #[inline]
    fn matched(&self, cx: &Ctx<'_>) -> Option<PolicyMatch> {
        self.first_match(cx).map(|rule| PolicyMatch {
            policy: self.key.clone(),
            action: self.action,
            rule,
        })
    }
}

/// All AuthorizationPolicies of a configuration, compiled.
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    policies: Vec<Arc<CompiledPolicy>>,
}

impl Engine {
    /// Compiles every policy; any invalid policy rejects the whole set (the caller keeps the
    /// last good engine).
    pub fn compile(
        policies: &[AuthorizationPolicy],
        config: &EngineConfig,
    ) -> Result<Engine, CompileError> {
        let mut errors = Vec::new();
        let mut out = Vec::with_capacity(policies.len());
        // serviceAccounts name no trust domain: they match the local one and its aliases.
        let trust_list: Arc<[String]> = {
            let mut v: Vec<String> = vec![config.trust_domains.local.clone()];
            v.extend(config.trust_domains.aliases.iter().cloned());
            v.into()
        };
        let mut seen = BTreeSet::new();
        for p in policies {
            if !seen.insert(p.meta.key()) {
                errors.push(PolicyError::new(
                    p,
                    "metadata.name".into(),
                    "duplicate policy name in this namespace".into(),
                ));
            }
            let provider = match (p.action, p.provider.as_deref()) {
                (Action::Custom, Some(name)) if !name.is_empty() => Some(Arc::from(name)),
                (Action::Custom, _) => {
                    errors.push(PolicyError::new(
                        p,
                        "spec.provider.name".into(),
                        "action CUSTOM needs a provider (an extension provider from meshConfig)"
                            .into(),
                    ));
                    None
                }
                (_, Some(_)) => {
                    errors.push(PolicyError::new(
                        p,
                        "spec.provider".into(),
                        "provider is only allowed with action CUSTOM".into(),
                    ));
                    None
                }
                (_, None) => None,
            };
            let mut rc = RuleCompiler {
                policy: p,
                trust: &config.trust_domains,
                trust_list: trust_list.clone(),
                errors: &mut errors,
            };
            let rules: Box<[CompiledRule]> = p
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| rc.rule(i, r))
                .collect();
            out.push(Arc::new(CompiledPolicy {
                key: p.meta.key().into(),
                namespace: p.meta.namespace.clone(),
                selector: p.selector.as_ref().map(|s| s.match_labels.clone()),
                action: p.action,
                provider,
                dry_run: p.dry_run,
                rules,
            }));
        }
        if !errors.is_empty() {
            return Err(CompileError { errors });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Engine {
            config: config.clone(),
            policies: out,
        })
    }

    /// The settings the engine was compiled with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The policies that apply to a workload, grouped for evaluation.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> WorkloadAuthz {
        let mut w = WorkloadAuthz {
            path_normalization: self.config.path_normalization,
            ..Default::default()
        };
        let mut providers = BTreeSet::new();
        for p in &self.policies {
            if !select::applies(
                &p.namespace,
                p.selector.as_ref(),
                &self.config.root_namespace,
                namespace,
                labels,
            ) {
                continue;
            }
            let group = match (p.action, p.dry_run) {
                (Action::Custom, false) => {
                    if let Some(pr) = &p.provider {
                        providers.insert(pr.clone());
                    }
                    &mut w.custom
                }
                (Action::Deny, false) => &mut w.deny,
                (Action::Allow, false) => &mut w.allow,
                (Action::Audit, _) => &mut w.audit,
                (Action::Custom, true) => &mut w.dry_custom,
                (Action::Deny, true) => &mut w.dry_deny,
                (Action::Allow, true) => &mut w.dry_allow,
            };
            group.push(p.clone());
        }
        if providers.len() > 1 {
            tracing::error!(
                namespace,
                providers = ?providers,
                "several CUSTOM providers apply to one workload; only one is supported: denying all requests"
            );
            w.custom_conflict = true;
        }
        w
    }
}

/// The policies of one workload, ready to evaluate.
#[derive(Debug, Default, Clone)]
pub struct WorkloadAuthz {
    path_normalization: PathNormalization,
    custom: Vec<Arc<CompiledPolicy>>,
    deny: Vec<Arc<CompiledPolicy>>,
    allow: Vec<Arc<CompiledPolicy>>,
    audit: Vec<Arc<CompiledPolicy>>,
    dry_custom: Vec<Arc<CompiledPolicy>>,
    dry_deny: Vec<Arc<CompiledPolicy>>,
    dry_allow: Vec<Arc<CompiledPolicy>>,
    custom_conflict: bool,
}

/// One policy's result for `jalin authz explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTrace {
    pub policy: Arc<str>,
    pub action: Action,
    pub dry_run: bool,
    /// The first rule that matched, if any.
    pub matched_rule: Option<usize>,
}

impl WorkloadAuthz {
    /// Normalises a request path as this workload's policies see it. The proxy should forward
    /// this path to the application, so policy and application agree on the resource; passing
    /// it to [`Self::evaluate`] afterwards costs only a scan.
    pub fn normalize<'p>(&self, path: &'p str) -> Result<std::borrow::Cow<'p, str>, PathError> {
        normalize_path(path, self.path_normalization)
    }

    /// Evaluates an HTTP request.
    pub fn evaluate(&self, req: &RequestAttrs<'_>) -> Decision {
        self.run(req, false)
    }

    /// Evaluates an opaque TCP connection (no HTTP attributes). As in Istio, HTTP-only fields
    /// (hosts, methods, paths, request headers, request principals and claims) never match in
    /// ALLOW, AUDIT and CUSTOM policies and are ignored in DENY policies, so a DENY rule that
    /// names them denies more, never less.
    pub fn evaluate_tcp(&self, req: &RequestAttrs<'_>) -> Decision {
        self.run(req, true)
    }

    fn run(&self, req: &RequestAttrs<'_>, tcp: bool) -> Decision {
        let normalized;
        let path = if tcp {
            ""
        } else {
            match normalize_path(req.path, self.path_normalization) {
                Ok(p) => {
                    normalized = p;
                    &*normalized
                }
                Err(_) => return Decision::new(Verdict::Deny, Reason::InvalidPath, None),
            }
        };
        let cx = Ctx { req, path, tcp };
        let mut d = self.enforced(&cx);
        if !self.audit.is_empty() {
            d.audit = self.audit.iter().find_map(|p| p.matched(&cx));
        }
        if !self.dry_deny.is_empty() {
            d.shadow.deny = self.dry_deny.iter().find_map(|p| p.matched(&cx));
        }
        if !self.dry_allow.is_empty() {
            d.shadow.allow = Some(self.dry_allow.iter().find_map(|p| p.matched(&cx)));
        }
        if !self.dry_custom.is_empty() {
            d.shadow.custom = self.dry_custom.iter().find_map(|p| p.matched(&cx));
        }
        d
    }

    fn enforced(&self, cx: &Ctx<'_>) -> Decision {
        if self.custom_conflict {
            return Decision::new(Verdict::Deny, Reason::CustomProviderConflict, None);
        }
        let custom = self.custom.iter().find_map(|p| {
            let m = p.matched(cx)?;
            Some(CustomCheck {
                provider: p.provider.clone()?,
                policy: m,
            })
        });
        let mut d = if let Some(m) = self.deny.iter().find_map(|p| p.matched(cx)) {
            Decision::new(Verdict::Deny, Reason::DenyMatched, Some(m))
        } else if self.allow.is_empty() {
            Decision::new(Verdict::Allow, Reason::NoPolicy, None)
        } else if let Some(m) = self.allow.iter().find_map(|p| p.matched(cx)) {
            Decision::new(Verdict::Allow, Reason::AllowMatched, Some(m))
        } else {
            Decision::new(Verdict::Deny, Reason::NoAllowMatched, None)
        };
        d.custom = custom;
        d
    }

    /// Every applicable policy and whether it matched, in evaluation order (CUSTOM, DENY,
    /// ALLOW, AUDIT, then dry-run), for `jalin authz explain`.
    pub fn explain(&self, req: &RequestAttrs<'_>) -> Vec<PolicyTrace> {
        let path = normalize_path(req.path, self.path_normalization).unwrap_or_default();
        let cx = Ctx {
            req,
            path: &path,
            tcp: false,
        };
        self.in_order()
            .map(|p| PolicyTrace {
                policy: p.key.clone(),
                action: p.action,
                dry_run: p.dry_run,
                matched_rule: p.first_match(&cx),
            })
            .collect()
    }

    /// Names (`ns/name`) of the policies that apply, in evaluation order.
    pub fn policy_names(&self) -> Vec<Arc<str>> {
        self.in_order().map(|p| p.key.clone()).collect()
    }

    /// True when no policy applies (every request is allowed).
    pub fn is_empty(&self) -> bool {
        !self.custom_conflict && self.in_order().next().is_none()
    }

    /// Every applicable policy in evaluation order: CUSTOM, DENY, ALLOW, AUDIT, then the
    /// dry-run CUSTOM, DENY and ALLOW.
    fn in_order(&self) -> impl Iterator<Item = &Arc<CompiledPolicy>> {
        [
            &self.custom,
            &self.deny,
            &self.allow,
            &self.audit,
            &self.dry_custom,
            &self.dry_deny,
            &self.dry_allow,
        ]
        .into_iter()
        .flatten()
    }
}
