//! The result of authorizing a request: verdict, the deciding policy and rule (for logs,
//! metrics and `jalin authz explain`), AUDIT and dry-run results, and a pending external
//! (CUSTOM) check.
//!
//! CUSTOM is a two-step protocol so the engine stays free of I/O:
//! 1. [`super::WorkloadAuthz::evaluate`] returns a decision; if [`Decision::custom_check`] is
//!    `Some`, the proxy must ask that provider (over HTTP, with a timeout) before acting.
//! 2. The proxy feeds the answer to [`Decision::complete_custom`]: `Allowed` keeps the
//!    DENY/ALLOW verdict already computed; `Denied` and `Failed` (timeout, transport error,
//!    unknown provider) deny: CUSTOM fails closed.
//!
//! Until the check is completed, [`Decision::is_allowed`] is false.

use std::sync::Arc;

use http::StatusCode;

use crate::model::authz::Action;

/// Body of a denied request, as Envoy's RBAC filter sends it. Policy names never leak.
pub const DENY_BODY: &str = "RBAC: access denied";

/// A policy and the rule of it that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    /// `namespace/name`.
    pub policy: Arc<str>,
    pub action: Action,
    /// Index into the policy's `rules`.
    pub rule: usize,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Why the verdict is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No enforced ALLOW or DENY policy matched and no ALLOW policy applies: allowed.
    NoPolicy,
    /// An ALLOW policy matched (named in [`Decision::policy`]).
    AllowMatched,
    /// A DENY policy matched.
    DenyMatched,
    /// ALLOW policies apply to the workload and none matched.
    NoAllowMatched,
    /// The CUSTOM provider denied the request, or could not be asked (fail closed).
    CustomDenied,
    /// Several CUSTOM providers apply to the workload; Istio supports one, so every request is
    /// denied until the configuration is fixed.
    CustomProviderConflict,
    /// The path cannot be normalised (`%00`, not origin form): 400, before any policy.
    InvalidPath,
}

/// A CUSTOM check the proxy must make before acting on the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCheck {
    /// Extension provider name (from `meshConfig.extensionProviders`).
    pub provider: Arc<str>,
    /// The CUSTOM policy and rule that triggered the check.
    pub policy: PolicyMatch,
}

/// The external authorizer's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CustomResult {
    Allowed,
    Denied,
    /// Timeout, connection error, bad answer, or unknown provider: treated as denied.
    Failed,
}

/// What the dry-run (`istio.io/dry-run`) policies would have done. Never enforced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shadow {
    /// The first dry-run DENY policy that matched.
    pub deny: Option<PolicyMatch>,
    /// Dry-run ALLOW policies: `Some(Some(m))` one matched, `Some(None)` some apply and none
    /// matched (they would deny), `None` there are none.
    pub allow: Option<Option<PolicyMatch>>,
    /// The first dry-run CUSTOM policy that would have triggered an external check.
    pub custom: Option<PolicyMatch>,
}

impl Shadow {
    /// The verdict the dry-run policies alone would give, if there are any.
    pub fn verdict(&self) -> Option<Verdict> {
        if self.deny.is_some() || matches!(self.allow, Some(None)) {
            Some(Verdict::Deny)
        } else if matches!(self.allow, Some(Some(_))) {
            Some(Verdict::Allow)
        } else {
            None
        }
    }
}

/// The engine's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny (provisional while [`Self::custom_check`] is pending).
    pub verdict: Verdict,
    pub reason: Reason,
    /// The policy that decided (DENY or ALLOW match, or the CUSTOM policy that denied).
    pub policy: Option<PolicyMatch>,
    /// An external check still to be made.
    pub custom: Option<CustomCheck>,
    /// The first AUDIT policy that matched (the request should be audit-logged).
    pub audit: Option<PolicyMatch>,
    /// Dry-run results, for logs and metrics.
    pub shadow: Shadow,
}

impl Decision {
    pub(crate) fn new(verdict: Verdict, reason: Reason, policy: Option<PolicyMatch>) -> Self {
        Decision {
            verdict,
            reason,
            policy,
            custom: None,
            audit: None,
            shadow: Shadow::default(),
        }
    }

    /// True when the request may proceed: allowed and no external check pending.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow && self.custom.is_none()
    }

    /// The external check the proxy must make, if any.
    pub fn custom_check(&self) -> Option<&CustomCheck> {
        self.custom.as_ref()
    }

    /// Folds the external authorizer's answer in (fail closed on `Denied` and `Failed`).
    pub fn complete_custom(mut self, result: CustomResult) -> Self {
        if let Some(check) = self.custom.take()
            && result != CustomResult::Allowed
        {
            self.verdict = Verdict::Deny;
            self.reason = Reason::CustomDenied;
            self.policy = Some(check.policy);
        }
        self
    }

    /// The HTTP status for a denied request: 400 for an invalid path, 403 otherwise.
    pub fn deny_status(&self) -> StatusCode {
        match self.reason {
            Reason::InvalidPath => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// The response to send for a denied request: `403 RBAC: access denied` (as Envoy), or 400.
    pub fn deny_response(&self) -> http::Response<&'static str> {
        let body = if self.reason == Reason::InvalidPath {
            "Bad Request"
        } else {
            DENY_BODY
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = self.deny_status();
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        resp
    }

    /// `allow` or `deny`, the `result` label of jalin's decision metric.
    pub fn result_label(&self) -> &'static str {
        if self.is_allowed() { "allow" } else { "deny" }
    }

    /// `ns/name`, action and rule of the deciding policy, for logs: `ns/name[ALLOW rule 0]`,
    /// or `-` when no policy decided.
    pub fn policy_label(&self) -> String {
        match &self.policy {
            Some(m) => format!("{}[{:?} rule {}]", m.policy, m.action, m.rule),
            None => "-".into(),
        }
    }
}
