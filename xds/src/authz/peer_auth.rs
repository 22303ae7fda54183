//! PeerAuthentication precedence: which mTLS mode a workload port accepts.
//!
//! Istio's rule: a workload policy (selector matching the workload's labels, in its namespace)
//! overrides the namespace policy (no selector, in its namespace), which overrides the mesh
//! policy (no selector, in the root namespace); the mesh default is PERMISSIVE. A level whose
//! mode is UNSET inherits from the level above. Port-level modes (only honoured on a policy
//! with a selector) override the workload mode for that port; UNSET inherits. As in Istio, a
//! policy with a selector in the root namespace is ignored (workload policies live in the
//! workload's namespace).
//!
//! Tie-break: when several policies compete at one level, Istio takes the oldest
//! (`creationTimestamp`). The native model has no timestamps, so jalin takes the
//! lexicographically smallest name, which is deterministic across restarts and replicas; the
//! linter flags competing policies so the tie-break never matters in a clean configuration.

use std::collections::BTreeMap;

use crate::model::peer_auth::{MtlsMode, PeerAuthentication};

/// The mesh default when no policy sets a mode.
pub const MESH_DEFAULT_MTLS: MtlsMode = MtlsMode::Permissive;

/// The effective mode and the policy (`ns/name`) that set it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsResolution {
    /// Never `Unset`.
    pub mode: MtlsMode,
    /// The policy that decided, or `None` for the mesh default.
    pub policy: Option<String>,
    /// True when a port-level setting decided.
    pub port_level: bool,
}

fn has_selector(p: &PeerAuthentication) -> bool {
    p.selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

fn oldest<'a>(it: impl Iterator<Item = &'a PeerAuthentication>) -> Option<&'a PeerAuthentication> {
    it.min_by(|a, b| a.meta.name.cmp(&b.meta.name))
}

/// The effective mTLS mode of `port` on a workload in `namespace` with `labels`.
pub fn resolve_mtls(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u16,
) -> MtlsMode {
    explain_mtls(policies, root_namespace, namespace, labels, port).mode
}

/// As [`resolve_mtls`], naming the deciding policy.
pub fn explain_mtls(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    port: u16,
) -> MtlsResolution {
    let mesh = oldest(
        policies
            .iter()
            .filter(|p| p.meta.namespace == root_namespace && !has_selector(p)),
    );
    let ns = oldest(
        policies
            .iter()
            .filter(|p| p.meta.namespace == namespace && !has_selector(p)),
    );
    let workload = oldest(policies.iter().filter(|p| {
        p.meta.namespace == namespace
            && p.meta.namespace != root_namespace
            && has_selector(p)
            && p.selector.as_ref().is_some_and(|s| s.matches(labels))
    }));
    let mut res = MtlsResolution {
        mode: MESH_DEFAULT_MTLS,
        policy: None,
        port_level: false,
    };
    for p in [mesh, ns, workload].into_iter().flatten() {
        if p.mode != MtlsMode::Unset {
            res.mode = p.mode;
            res.policy = Some(p.meta.key());
        }
    }
    if let Some(w) = workload
        && let Some(mode) = w.port_level.get(&port)
        && *mode != MtlsMode::Unset
    {
        res = MtlsResolution {
            mode: *mode,
            policy: Some(w.meta.key()),
            port_level: true,
        };
    }
    res
}
