//! The one configuration store both sources feed: the last accepted Istio resources from the
//! watched directory and from the Kubernetes API, and the Kubernetes service registry.
//!
//! Invariant: the store only ever holds configuration that imported without an error. An update
//! with an error is rejected whole (a directory re-import as a unit, a Kubernetes object as a
//! unit): the previous accepted state stays in force, and the rejection, with the importer's
//! `file:line: Kind/ns/name: path: message` lines, is kept for `/debug/config` and counted in
//! `jalin_control_config_rejected_total`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::istio::convert::NativeConfig;
use crate::istio::{Finding, Loaded, Mode, Resource, load_str_with};
use crate::k8s::{IstioObject, ObjectKey, ServiceRegistry};

/// Rejections remembered for `/debug/config` (older ones are dropped; the counter keeps counting).
pub const MAX_REJECTIONS_KEPT: usize = 32;
/// Reasons kept per rejection (a directory with thousands of errors must not fill memory).
pub const MAX_REASONS_PER_REJECTION: usize = 100;

/// The metric counting rejected updates, labelled by `source` (`files` or `kubernetes`).
pub const REJECTED_METRIC: &str = "jalin_control_config_rejected_total";
/// The metric counting accepted updates, labelled by `source`.
pub const ACCEPTED_METRIC: &str = "jalin_control_config_accepted_total";

/// Which source an update came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// The watched directory.
    Files,
    /// The Kubernetes API.
    Kubernetes,
}

impl SourceKind {
    fn label(self) -> &'static str {
        match self {
            SourceKind::Files => "files",
            SourceKind::Kubernetes => "kubernetes",
        }
    }
}

/// One rejected update.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    /// Unix seconds when it was rejected.
    pub at_unix: u64,
    /// Which source sent it.
    pub source: SourceKind,
    /// What was rejected: the directory, or `k8s://Kind/ns/name@rv`.
    pub origin: String,
    /// The importer's errors, one `file:line: Kind/ns/name: path: message` line each.
    pub reasons: Vec<String>,
    /// Errors beyond [`MAX_REASONS_PER_REJECTION`], not listed.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What `/debug/config` shows about the store.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStatus {
    /// Accepted updates so far; each accepted update makes a new version.
    pub accepted_version: u64,
    /// Unix seconds of the last accepted update.
    pub accepted_at_unix: Option<u64>,
    /// Resources in force, from files and from Kubernetes.
    pub resources: usize,
    /// Kubernetes services known to the registry.
    pub kubernetes_services: usize,
    /// Rejected updates so far.
    pub rejected_total: u64,
    /// The most recent rejections, newest last.
    pub rejected: VecDeque<Rejection>,
    /// Importer warnings and unsupported fields of the configuration in force.
    pub warnings: Vec<String>,
}

/// The store.
#[derive(Debug, Default)]
pub struct ConfigStore {
    files: Vec<Resource>,
    file_warnings: Vec<String>,
    kube: BTreeMap<ObjectKey, (Vec<Resource>, Vec<String>)>,
    registry: ServiceRegistry,
    status: StoreStatus,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn non_errors(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.severity != crate::istio::Severity::Error)
        .map(|f| format!("{}: {f}", f.severity.as_str()))
        .collect()
}

impl ConfigStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every file resource with a new directory import, or rejects it whole.
    pub fn apply_files(&mut self, origin: &str, loaded: Loaded) -> Result<(), Rejection> {
        if loaded.has_errors() {
            return Err(self.reject(SourceKind::Files, origin, &loaded.findings));
        }
        self.file_warnings = non_errors(&loaded.findings);
        self.files = loaded.resources;
        self.accepted(SourceKind::Files);
        Ok(())
    }

    /// Adds or replaces one Istio object from Kubernetes, or rejects it and keeps its previous
    /// accepted state (or its absence). The object is fed to the same importer as files, with
    /// its `k8s://...` origin as the file name.
    pub fn upsert_istio(&mut self, key: ObjectKey, object: &IstioObject) -> Result<(), Rejection> {
        let mut loaded = Loaded::default();
        match serde_json::to_string_pretty(&object.value) {
            // JSON is YAML; pretty-printing gives each field its own line for the findings.
            Ok(text) => load_str_with(&object.origin, &text, &mut loaded, Mode::Import),
            Err(e) => {
                let reason = format!("{}:0: the object does not serialise: {e}", object.origin);
                return Err(self.reject_lines(
                    SourceKind::Kubernetes,
                    &object.origin,
                    vec![reason],
                ));
            }
        }
        if loaded.has_errors() {
            return Err(self.reject(SourceKind::Kubernetes, &object.origin, &loaded.findings));
        }
        let warnings = non_errors(&loaded.findings);
        self.kube.insert(key, (loaded.resources, warnings));
        self.accepted(SourceKind::Kubernetes);
        Ok(())
    }

    /// Removes one Istio object from Kubernetes. Returns false when it was not in force.
    pub fn delete_istio(&mut self, key: &ObjectKey) -> bool {
        let had = self.kube.remove(key).is_some();
        if had {
            self.accepted(SourceKind::Kubernetes);
        }
        had
    }

    /// Replaces the Kubernetes service registry.
    pub fn set_registry(&mut self, registry: ServiceRegistry) {
        if registry != self.registry {
            self.registry = registry;
            self.accepted(SourceKind::Kubernetes);
        }
    }

    /// The accepted version (increases with every accepted change).
    pub fn version(&self) -> u64 {
        self.status.accepted_version
    }

    /// The configuration in force, converted to the native model.
    pub fn native(&self) -> NativeConfig {
        let all: Vec<Resource> = self
            .files
            .iter()
            .chain(self.kube.values().flat_map(|(r, _)| r.iter()))
            .cloned()
            .collect();
        // Gateway binding findings come from the translation, with the cluster domain in force.
        let mut findings = Vec::new();
        crate::istio::convert::convert_only(&all, &mut findings)
    }

    /// The Kubernetes service registry in force.
    pub fn registry(&self) -> &ServiceRegistry {
        &self.registry
    }

    /// Status for `/debug/config`.
    pub fn status(&self) -> StoreStatus {
        let mut s = self.status.clone();
        s.resources = self.files.len() + self.kube.values().map(|(r, _)| r.len()).sum::<usize>();
        s.kubernetes_services = self.registry.services.len();
        s.warnings = self
            .file_warnings
            .iter()
            .chain(self.kube.values().flat_map(|(_, w)| w.iter()))
            .chain(self.registry.warnings.iter())
            .cloned()
            .collect();
        s
    }

    fn accepted(&mut self, source: SourceKind) {
        self.status.accepted_version += 1;
        self.status.accepted_at_unix = Some(now_unix());
        metrics::counter!(ACCEPTED_METRIC, "source" => source.label()).increment(1);
    }

    fn reject(&mut self, source: SourceKind, origin: &str, findings: &[Finding]) -> Rejection {
        let lines = findings
            .iter()
            .filter(|f| f.severity == crate::istio::Severity::Error)
            .map(ToString::to_string)
            .collect();
        self.reject_lines(source, origin, lines)
    }

    fn reject_lines(
        &mut self,
        source: SourceKind,
        origin: &str,
        mut lines: Vec<String>,
    ) -> Rejection {
        let more = lines.len().saturating_sub(MAX_REASONS_PER_REJECTION);
        lines.truncate(MAX_REASONS_PER_REJECTION);
        let rejection = Rejection {
            at_unix: now_unix(),
            source,
            origin: origin.to_owned(),
            reasons: lines,
            more,
        };
        for reason in &rejection.reasons {
            tracing::warn!(
                source = source.label(),
                origin,
                "configuration rejected, the last good configuration stays in force: {reason}"
            );
        }
        metrics::counter!(REJECTED_METRIC, "source" => source.label()).increment(1);
        self.status.rejected_total += 1;
        if self.status.rejected.len() == MAX_REJECTIONS_KEPT {
            self.status.rejected.pop_front();
        }
        self.status.rejected.push_back(rejection.clone());
        rejection
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::istio::load_str;
    use crate::k8s::ResourceKind;

    fn loaded(file: &str, text: &str) -> Loaded {
        let mut l = Loaded::default();
        load_str(file, text, &mut l);
        l
    }

    const GOOD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: a\nspec:\n  action: DENY\n  rules:\n  - {}\n";
    const BAD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: q\n  namespace: a\nspec:\n  action: NOPE\n";

    #[test]
    fn a_directory_with_one_bad_file_is_rejected_whole() {
        let mut store = ConfigStore::new();
        store.apply_files("dir", loaded("good.yaml", GOOD)).unwrap();
        assert_eq!(store.version(), 1);
        let mut both = loaded("good.yaml", GOOD);
        load_str("bad.yaml", BAD, &mut both);
        let rejection = store.apply_files("dir", both).unwrap_err();
        assert_eq!(rejection.reasons.len(), 1);
        assert!(
            rejection.reasons[0].starts_with("bad.yaml:7: AuthorizationPolicy/a/q: spec.action:"),
            "{:?}",
            rejection.reasons
        );
        assert_eq!(store.version(), 1, "the last good state stays");
        assert_eq!(store.native().authorization_policies.len(), 1);
        assert_eq!(store.status().rejected_total, 1);
    }

    #[test]
    fn a_bad_kubernetes_object_keeps_its_previous_version() {
        let mut store = ConfigStore::new();
        let key = ObjectKey::new(ResourceKind::AuthorizationPolicy, "a", "p");
        let object = |action: &str, rv: &str| IstioObject {
            kind: ResourceKind::AuthorizationPolicy,
            api_version: "security.istio.io/v1".into(),
            namespace: "a".into(),
            name: "p".into(),
            resource_version: rv.into(),
            origin: format!("k8s://AuthorizationPolicy/a/p@{rv}"),
            value: serde_json::json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "a"},
                "spec": {"action": action, "rules": [{}]}
            }),
        };
        store
            .upsert_istio(key.clone(), &object("DENY", "1"))
            .unwrap();
        let rejection = store
            .upsert_istio(key.clone(), &object("NOPE", "2"))
            .unwrap_err();
        assert!(
            rejection.reasons[0].starts_with("k8s://AuthorizationPolicy/a/p@2:"),
            "{:?}",
            rejection.reasons
        );
        let native = store.native();
        assert_eq!(native.authorization_policies.len(), 1);
        assert_eq!(
            native.authorization_policies[0].action,
            jalin_xds::model::authz::Action::Deny
        );
        assert!(store.delete_istio(&key));
        assert!(store.native().authorization_policies.is_empty());
    }

    #[test]
    fn rejections_kept_are_bounded() {
        let mut store = ConfigStore::new();
        for _ in 0..MAX_REJECTIONS_KEPT + 5 {
            let _ = store.apply_files("dir", loaded("bad.yaml", BAD));
        }
        let status = store.status();
        assert_eq!(status.rejected.len(), MAX_REJECTIONS_KEPT);
        assert_eq!(status.rejected_total, (MAX_REJECTIONS_KEPT + 5) as u64);
    }
}
