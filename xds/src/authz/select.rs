//! Which namespace-scoped policies apply to a workload: Istio's selection rule, shared by
//! AuthorizationPolicy, RequestAuthentication and PeerAuthentication.
//!
//! A policy applies when it lives in the workload's namespace or in the root namespace (mesh
//! wide), and its selector, if any, matches the workload's labels. An empty `matchLabels`
//! selects every workload, as no selector does.

use std::collections::BTreeMap;

/// True when a policy in `policy_ns` with `selector` applies to a workload in `ns` with `labels`.
pub(crate) fn applies(
    policy_ns: &str,
    selector: Option<&BTreeMap<String, String>>,
    root_ns: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    (policy_ns == ns || policy_ns == root_ns)
        && selector.is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}
