//! Native PeerAuthentication: which mTLS mode each workload port accepts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ResourceMeta, WorkloadSelector};

/// An mTLS mode. `Unset` inherits from the next level up (workload, namespace, mesh), and the
/// mesh default is `Permissive`, as in Istio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the level above.
    #[default]
    Unset,
    /// Plaintext only; TLS is not terminated.
    Disable,
    /// mTLS and plaintext are both accepted (detected per connection).
    Permissive,
    /// Only mTLS is accepted.
    Strict,
}

/// One PeerAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PeerAuthentication {
    /// Name, namespace and origin.
    pub meta: ResourceMeta,
    /// `None`: namespace-wide (or mesh-wide in the root namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The mode for the whole workload (or namespace, or mesh).
    #[serde(default)]
    pub mode: MtlsMode,
    /// Per-port overrides (`portLevelMtls`); only honoured with a selector. Precedence is
    /// implemented by [`crate::authz::peer_auth::resolve_mtls`].
    #[serde(default)]
    pub port_level: BTreeMap<u16, MtlsMode>,
}
