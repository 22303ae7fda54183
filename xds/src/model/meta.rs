//! Identity of a resource: name, namespace, where it came from, and which workloads it selects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a resource was written: the file and 1-based line of its document, for error messages
/// and for `jalin authz explain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    /// Path of the file the resource was read from.
    pub file: String,
    /// 1-based line of the resource's document start.
    pub line: usize,
}

/// Name, namespace and origin of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourceMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; the importer fills in `default` when it is absent, as Istio does.
    pub namespace: String,
    /// Where the resource was written, when it came from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRef>,
}

impl ResourceMeta {
    /// `namespace/name`, the form used in logs, metrics and decisions.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A label selector (`matchLabels`). An absent selector selects every workload in the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels that must all be present with these values.
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// True when every label of the selector is carried by `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|have| have == v))
    }
}
