//! Shared by the deploy manifest tests: parsing each document into its Kubernetes type with a
//! round trip that catches unknown fields, loading the control plane's objects, and small
//! evaluators (label selectors, probe ports) that mirror the API server's behaviour.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Ports the control plane serves (the agreed interface): xDS, xDS+CA over mTLS, monitoring
/// (`/ready`, `/live`, `/metrics`), injection webhook.
pub const CONTROL_PORTS: [i32; 4] = [15010, 15012, 15014, 15017];
pub const MONITORING_PORT: i32 = 15014;
pub const WEBHOOK_PORT: i32 = 15017;

/// One manifest document, in its Kubernetes type.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a few dozen short-lived values in a test
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    ConfigMap(ConfigMap),
    Service(Service),
    Deployment(Box<Deployment>),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
    MutatingWebhookConfiguration(MutatingWebhookConfiguration),
    PodDisruptionBudget(PodDisruptionBudget),
    NetworkPolicy(NetworkPolicy),
    PriorityClass(PriorityClass),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
}

#[derive(Debug)]
pub struct Doc {
    /// `file#index Kind/name`, for messages.
    pub origin: String,
    pub kind: String,
    pub object: Object,
}

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

pub fn chart_dir() -> PathBuf {
    deploy_dir().join("helm/jalin")
}

/// Deserializes `raw` into `T`, then serializes it back and requires the same document: the
/// Kubernetes types ignore unknown fields, so a misspelled or misplaced field shows up as a field
/// the round trip lost.
pub fn typed<T: DeserializeOwned + Serialize>(raw: &Value, origin: &str) -> Result<T> {
    let object: T = serde_json::from_value(raw.clone())
        .with_context(|| format!("{origin}: does not match the Kubernetes schema"))?;
    let back = serde_json::to_value(&object)?;
    if let Some(diff) = first_difference(raw, &back, "") {
        bail!("{origin}: {diff}");
    }
    Ok(object)
}

/// The first place where `written` and `round_trip` differ, as a field path and what to check.
pub fn first_difference(written: &Value, round_trip: &Value, path: &str) -> Option<String> {
    match (written, round_trip) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let here = format!("{path}.{key}");
                match b.get(key) {
                    None => {
                        return Some(format!(
                            "field `{here}` is not part of the schema at this place \
                             (misspelled or misplaced?)"
                        ));
                    }
                    Some(other) => {
                        if let Some(diff) = first_difference(value, other, &here) {
                            return Some(diff);
                        }
                    }
                }
            }
            b.keys()
                .find(|key| !a.contains_key(*key))
                .map(|key| format!("field `{path}.{key}` appeared in the round trip"))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]"))),
        (a, b) if a == b => None,
        (a, b) => Some(format!(
            "field `{path}`: written {a}, read back as {b} (wrong type or format?)"
        )),
    }
}

pub fn str_field<'a>(raw: &'a Value, field: &str, origin: &str) -> Result<&'a str> {
    raw.get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("{origin}: expected a string field `{field}`"))
}

/// Parses every document of one YAML file into its typed object.
pub fn parse_file(path: &Path) -> Result<Vec<Doc>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file = path
        .strip_prefix(deploy_dir())
        .unwrap_or(path)
        .display()
        .to_string();
    let raws: Vec<Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("deploy/{file}: not valid YAML"))?;
    let mut docs = Vec::new();
    for (i, raw) in raws.iter().enumerate() {
        let at = format!("deploy/{file}#{i}");
        let api_version = str_field(raw, "apiVersion", &at)?;
        let kind = str_field(raw, "kind", &at)?;
        let name = raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .with_context(|| format!("{at}: {kind} has no metadata.name"))?;
        let origin = format!("{at} {kind}/{name}");
        let object = match (api_version, kind) {
            ("v1", "Namespace") => Object::Namespace(typed(raw, &origin)?),
            ("v1", "ServiceAccount") => Object::ServiceAccount(typed(raw, &origin)?),
            ("v1", "ConfigMap") => Object::ConfigMap(typed(raw, &origin)?),
            ("v1", "Service") => Object::Service(typed(raw, &origin)?),
            ("apps/v1", "Deployment") => Object::Deployment(Box::new(typed(raw, &origin)?)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                Object::ClusterRole(typed(raw, &origin)?)
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                Object::ClusterRoleBinding(typed(raw, &origin)?)
            }
            ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                Object::MutatingWebhookConfiguration(typed(raw, &origin)?)
            }
            ("policy/v1", "PodDisruptionBudget") => {
                Object::PodDisruptionBudget(typed(raw, &origin)?)
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                Object::NetworkPolicy(typed(raw, &origin)?)
            }
            ("scheduling.k8s.io/v1", "PriorityClass") => {
                Object::PriorityClass(typed(raw, &origin)?)
            }
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                Object::CustomResourceDefinition(Box::new(typed(raw, &origin)?))
            }
            _ => bail!(
                "{origin}: unexpected apiVersion {api_version} kind {kind}; deploy/ ships only \
                 the kinds this test knows (add the type here if a new kind is intended)"
            ),
        };
        docs.push(Doc {
            origin,
            kind: kind.to_owned(),
            object,
        });
    }
    Ok(docs)
}

/// Every `deploy/manifests/*.yaml`, by file name.
pub fn manifests() -> Result<BTreeMap<String, Vec<Doc>>> {
    let dir = deploy_dir().join("manifests");
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            out.insert(name, parse_file(&path)?);
        }
    }
    Ok(out)
}

/// The objects of `deploy/manifests/jalin.yaml`, one of each kind it is expected to hold.
pub struct ControlPlane {
    pub deployment: Deployment,
    pub service: Service,
    pub service_account: ServiceAccount,
    pub config_map: ConfigMap,
    pub cluster_role: ClusterRole,
    pub binding: ClusterRoleBinding,
    pub webhook: MutatingWebhookConfiguration,
    pub pdb: PodDisruptionBudget,
    pub network_policy: NetworkPolicy,
    pub priority_class: PriorityClass,
}

pub fn control_plane() -> ControlPlane {
    let docs = parse_file(&deploy_dir().join("manifests/jalin.yaml")).unwrap();
    macro_rules! one {
        ($variant:ident) => {{
            let mut found: Vec<_> = docs
                .iter()
                .filter_map(|d| match &d.object {
                    Object::$variant(o) => Some(o.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                found.len(),
                1,
                "jalin.yaml must hold exactly one {}",
                stringify!($variant)
            );
            found.remove(0)
        }};
    }
    ControlPlane {
        deployment: *one!(Deployment),
        service: one!(Service),
        service_account: one!(ServiceAccount),
        config_map: one!(ConfigMap),
        cluster_role: one!(ClusterRole),
        binding: one!(ClusterRoleBinding),
        webhook: one!(MutatingWebhookConfiguration),
        pdb: one!(PodDisruptionBudget),
        network_policy: one!(NetworkPolicy),
        priority_class: one!(PriorityClass),
    }
}

pub fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

pub fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    let template = &d.spec.as_ref().unwrap().template;
    template.metadata.as_ref().unwrap().labels.clone().unwrap()
}

pub fn container_ports(c: &Container) -> BTreeSet<i32> {
    c.ports.iter().flatten().map(|p| p.container_port).collect()
}

/// Evaluates a label selector the way the API server does.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => panic!("unknown label selector operator {other}"),
        }
    });
    by_labels && by_expressions
}

/// The probe's HTTP port as a number, resolving a named port against the container.
pub fn probe_port(probe: &Probe, c: &Container) -> (i32, String) {
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("{}: probes must be httpGet", c.name));
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{}: probe names undeclared port {name}", c.name))
                .container_port
        }
    };
    (port, get.path.clone().unwrap_or_default())
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn yaml_value(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn mesh_config(cp: &ControlPlane) -> Value {
    let data = cp.config_map.data.as_ref().unwrap();
    let text = data
        .get("mesh.yaml")
        .expect("ConfigMap jalin-mesh has key mesh.yaml");
    serde_saphyr::from_str(text).expect("mesh.yaml in ConfigMap jalin-mesh is YAML")
}

/// Chart files that are plain YAML (no template actions), relative to the chart.
pub fn plain_chart_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            plain_chart_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            && !fs::read_to_string(&path).unwrap().contains("{{")
        {
            out.push(path);
        }
    }
}

/// Port numbers written in a chart template after `key: `.
pub fn template_ports(template: &str, key: &str) -> BTreeSet<i32> {
    let text = fs::read_to_string(chart_dir().join("templates").join(template)).unwrap();
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches("- ").strip_prefix(key))
        .filter_map(|rest| rest.trim().parse().ok())
        .collect()
}

/// Dotted paths of the leaves of a values tree (an empty map is a leaf).
pub fn leaf_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(child, &path, out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}
