//! From files to typed resources: walk paths, split documents, recognise kinds and API versions,
//! apply compatibility mappings, deserialise typed specs (errors carry the field path and line),
//! validate, and report everything else as skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::destination_rule::DestinationRuleSpec;
use super::diag::{Finding, Mode, Severity, Sink};
use super::security::{AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec};
use super::service::{GatewaySpec, ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec};
use super::telemetry::TelemetrySpec;
use super::virtual_service::VirtualServiceSpec;
use super::yaml::{Locator, Node, parse_documents};
use super::{compat, validate};

/// The Istio kinds jalin imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    VirtualService,
    DestinationRule,
    ServiceEntry,
    Sidecar,
    Gateway,
    WorkloadEntry,
    Telemetry,
}

impl Kind {
    /// The kind for `group` and `kind`, when jalin imports it.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        Some(match (group, kind) {
            ("security.istio.io", "AuthorizationPolicy") => Kind::AuthorizationPolicy,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            ("security.istio.io", "RequestAuthentication") => Kind::RequestAuthentication,
            ("networking.istio.io", "VirtualService") => Kind::VirtualService,
            ("networking.istio.io", "DestinationRule") => Kind::DestinationRule,
            ("networking.istio.io", "ServiceEntry") => Kind::ServiceEntry,
            ("networking.istio.io", "Sidecar") => Kind::Sidecar,
            ("networking.istio.io", "Gateway") => Kind::Gateway,
            ("networking.istio.io", "WorkloadEntry") => Kind::WorkloadEntry,
            ("telemetry.istio.io", "Telemetry") => Kind::Telemetry,
            _ => return None,
        })
    }

    /// API versions Istio serves for this kind's group.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::AuthorizationPolicy | Kind::PeerAuthentication | Kind::RequestAuthentication => {
                &["v1beta1", "v1"]
            }
            Kind::Telemetry => &["v1alpha1", "v1"],
            _ => &["v1alpha3", "v1beta1", "v1"],
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::Gateway => "Gateway",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::Telemetry => "Telemetry",
        }
    }
}

/// `metadata`: the fields jalin reads. Other Kubernetes bookkeeping fields (uid,
/// resourceVersion, managedFields, ...) describe the stored object, not the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    pub name: String,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A typed spec. One per resource, built once per load: variant sizes do not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    AuthorizationPolicy(AuthorizationPolicySpec),
    PeerAuthentication(PeerAuthenticationSpec),
    RequestAuthentication(RequestAuthenticationSpec),
    VirtualService(VirtualServiceSpec),
    DestinationRule(DestinationRuleSpec),
    ServiceEntry(ServiceEntrySpec),
    Sidecar(SidecarSpec),
    Gateway(GatewaySpec),
    WorkloadEntry(WorkloadEntrySpec),
    Telemetry(TelemetrySpec),
}

/// One valid Istio resource with where it was written.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: Kind,
    pub api_version: String,
    pub name: String,
    /// `metadata.namespace`, or `default` as Kubernetes does.
    pub namespace: String,
    pub metadata: Metadata,
    pub file: String,
    pub line: usize,
    pub spec: Spec,
    /// Field path to line, for findings raised after parsing (linter, importer, translation);
    /// shared, so copies of the resource (the store's, the converted config's) share one map.
    pub locator: Arc<Locator>,
}

impl Resource {
    /// `Kind/namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind.as_str(), self.namespace, self.name)
    }

    /// A finding about `path` of this resource.
    pub fn finding(&self, severity: Severity, path: &str, message: impl Into<String>) -> Finding {
        Finding::located(
            severity,
            self.file.clone(),
            self.id(),
            &self.locator,
            path,
            message,
        )
    }
}

/// Everything read from a set of paths.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Valid resources, in file order.
    pub resources: Vec<Resource>,
    /// Resources that parsed into typed form but failed validation (the linter still reads them).
    pub invalid: Vec<Resource>,
    /// Errors, warnings, unsupported fields and skipped documents.
    pub findings: Vec<Finding>,
    /// Files read.
    pub files: Vec<String>,
}

impl Loaded {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

/// Largest policy file read (a bound, not a limit anyone should meet: the seeds are ~1 KiB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Deepest directory nesting walked (guards against symlink loops).
const MAX_DEPTH: usize = 32;

/// Read every `.yaml`/`.yml` file under `paths` (directories recursively, in name order),
/// validating as `jalin validate` does.
pub fn load_paths(paths: &[PathBuf]) -> Loaded {
    load_paths_with(paths, Mode::Validate)
}

/// [`load_paths`] for a given [`Mode`].
pub fn load_paths_with(paths: &[PathBuf], mode: Mode) -> Loaded {
    let mut out = Loaded::default();
    let mut files = Vec::new();
    for p in paths {
        collect_files(p, &mut files, &mut out.findings, 0);
    }
    for f in files {
        let name = f.display().to_string();
        let too_big = std::fs::metadata(&f)
            .map(|m| m.len() > MAX_FILE_BYTES)
            .unwrap_or(false);
        if too_big {
            out.findings.push(file_error(
                &name,
                0,
                format!(
                    "larger than {} MiB; split it into smaller files",
                    MAX_FILE_BYTES >> 20
                ),
            ));
            continue;
        }
        match std::fs::read_to_string(&f) {
            Ok(text) => load_str_with(&name, &text, &mut out, mode),
            Err(e) => out
                .findings
                .push(file_error(&name, 0, format!("cannot read the file: {e}"))),
        }
    }
    out
}

fn collect_files(p: &Path, files: &mut Vec<PathBuf>, findings: &mut Vec<Finding>, depth: usize) {
    if p.is_dir() {
        if depth > MAX_DEPTH {
            findings.push(file_error(
                &p.display().to_string(),
                0,
                format!(
                    "directories nested deeper than {MAX_DEPTH} levels (a symlink loop?); not read"
                ),
            ));
            return;
        }
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                findings.push(file_error(
                    &p.display().to_string(),
                    0,
                    format!("cannot list the directory: {e}"),
                ));
                return;
            }
        };
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                collect_files(&e, files, findings, depth + 1);
            }
        }
    } else if p.exists() {
        files.push(p.to_path_buf());
    } else {
        findings.push(file_error(
            &p.display().to_string(),
            0,
            "no such file or directory".into(),
        ));
    }
}

fn file_error(file: &str, line: usize, message: String) -> Finding {
    Finding {
        severity: Severity::Error,
        file: file.into(),
        line,
        resource: None,
        path: String::new(),
        message,
        code: None,
    }
}

/// Parse one file's text into `out`, validating as `jalin validate` does.
pub fn load_str(file: &str, text: &str, out: &mut Loaded) {
    load_str_with(file, text, out, Mode::Validate)
}

/// [`load_str`] for a given [`Mode`].
pub fn load_str_with(file: &str, text: &str, out: &mut Loaded, mode: Mode) {
    out.files.push(file.to_string());
    let docs = match parse_documents(text) {
        Ok(d) => d,
        Err(e) => {
            out.findings.push(file_error(
                file,
                e.line,
                format!("invalid YAML: {}", e.message),
            ));
            return;
        }
    };
    for doc in docs {
        load_document(file, doc.root, out, mode);
    }
}

fn text_of<'n>(root: &'n Node, key: &str) -> Option<&'n str> {
    root.get(key).and_then(Node::as_str)
}

fn load_document(file: &str, mut root: Node, out: &mut Loaded, mode: Mode) {
    let line = root.line;
    if root.as_map().is_none() {
        out.findings.push(file_error(
            file,
            line,
            "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
        ));
        return;
    }
    let api_version = text_of(&root, "apiVersion").unwrap_or("").to_string();
    let kind_text = text_of(&root, "kind").unwrap_or("").to_string();
    let meta_node = root.get("metadata");
    let name = meta_node
        .and_then(|m| text_of(m, "name"))
        .unwrap_or("")
        .to_string();
    let ns = meta_node
        .and_then(|m| text_of(m, "namespace"))
        .unwrap_or("default")
        .to_string();
    let (group, version) = api_version
        .rsplit_once('/')
        .unwrap_or(("", api_version.as_str()));
    let Some(kind) = Kind::from_group_kind(group, &kind_text) else {
        let what = if kind_text.is_empty() {
            "a document without `kind`".to_string()
        } else {
            format!("{api_version} {kind_text}")
        };
        out.findings.push(Finding {
            severity: Severity::Skipped,
            file: file.into(),
            line,
            resource: Some(match meta_node.and_then(|m| text_of(m, "namespace")) {
                Some(n) => format!("{kind_text}/{n}/{name}"),
                None => format!("{kind_text}/{name}"),
            }),
            path: String::new(),
            message: format!("{what} is not an Istio kind jalin imports; skipped"),
            code: None,
        });
        return;
    };
    let resource = format!("{}/{ns}/{name}", kind.as_str());
    let mut notes = compat::Notes {
        file,
        resource: resource.clone(),
        findings: Vec::new(),
    };
    if !kind.versions().contains(&version) {
        let locator = Locator::new(&root);
        let mut sink = Sink::new(file, resource, &locator);
        sink.error(
            "apiVersion",
            format!(
                "`{api_version}` is not a version of {}; expected {}",
                kind.as_str(),
                kind.versions()
                    .iter()
                    .map(|v| format!("{group}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        out.findings.extend(sink.findings);
        return;
    }
    if let Some(spec) = root.entry_mut("spec") {
        match kind {
            Kind::DestinationRule => compat::destination_rule(&mut spec.value, &mut notes),
            Kind::Telemetry => compat::telemetry(&mut spec.value, &mut notes),
            _ => {}
        }
    }
    let locator = Arc::new(Locator::new(&root));
    let mut sink = Sink::new(file, resource, &locator);
    sink.mode = mode;
    sink.findings = notes.findings;
    if sink.has_errors() {
        // A conflicting non-standard spelling: typed parsing would only repeat it.
        out.findings.extend(sink.findings);
        return;
    }
    for e in root.as_map().unwrap_or(&[]) {
        if !matches!(
            e.key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            sink.error(
                &e.key,
                format!(
                    "unknown top-level field `{}`; expected apiVersion, kind, metadata, spec",
                    e.key
                ),
            );
        }
    }
    if name.is_empty() {
        sink.error("metadata", "`metadata.name` is required");
    }
    let metadata: Option<Metadata> = typed(root.get("metadata"), "metadata", &mut sink);
    let spec_node = root.get("spec");
    let spec = match kind {
        Kind::AuthorizationPolicy => {
            typed(spec_node, "spec", &mut sink).map(Spec::AuthorizationPolicy)
        }
        Kind::PeerAuthentication => {
            typed(spec_node, "spec", &mut sink).map(Spec::PeerAuthentication)
        }
        Kind::RequestAuthentication => {
            typed(spec_node, "spec", &mut sink).map(Spec::RequestAuthentication)
        }
        Kind::VirtualService => typed(spec_node, "spec", &mut sink).map(Spec::VirtualService),
        Kind::DestinationRule => typed(spec_node, "spec", &mut sink).map(Spec::DestinationRule),
        Kind::ServiceEntry => typed(spec_node, "spec", &mut sink).map(Spec::ServiceEntry),
        Kind::Sidecar => typed(spec_node, "spec", &mut sink).map(Spec::Sidecar),
        Kind::Gateway => typed(spec_node, "spec", &mut sink).map(Spec::Gateway),
        Kind::WorkloadEntry => typed(spec_node, "spec", &mut sink).map(Spec::WorkloadEntry),
        Kind::Telemetry => typed(spec_node, "spec", &mut sink).map(Spec::Telemetry),
    };
    let (Some(spec), Some(metadata)) = (spec, metadata) else {
        out.findings.extend(sink.findings);
        return;
    };
    let res = Resource {
        kind,
        api_version,
        name,
        namespace: ns,
        metadata,
        file: file.into(),
        line,
        spec,
        locator: Arc::clone(&locator),
    };
    validate::resource(&res, &mut sink);
    sink.findings.sort_by_key(|f| f.line);
    let ok = !sink.has_errors();
    out.findings.extend(sink.findings);
    if ok {
        out.resources.push(res);
    } else {
        out.invalid.push(res);
    }
}

/// Deserialise `node` (at `base`) into `T`; a missing node is `T::default()` as an empty object.
fn typed<T: DeserializeOwned>(node: Option<&Node>, base: &str, sink: &mut Sink<'_>) -> Option<T> {
    let json = match node {
        Some(n) if !matches!(n.value, super::yaml::Value::Null) => n.to_json(),
        _ => serde_json::Value::Object(Default::default()),
    };
    match serde_path_to_error::deserialize::<_, T>(json) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." {
                base.to_string()
            } else {
                format!("{base}.{inner}")
            };
            let path = path.replace(".[", "[");
            let msg = e.into_inner().to_string();
            sink.error(&path, describe_serde_error(&msg));
            None
        }
    }
}

/// serde's messages, phrased for a person editing YAML.
fn describe_serde_error(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail
            .trim_start_matches(", ")
            .replace("expected one of ", "");
        return format!("unknown field `{field}`; expected one of {expected}");
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (v, tail) = rest.split_once('`').unwrap_or((rest, ""));
        return format!(
            "unknown value `{v}`; expected one of {}",
            tail.trim_start_matches(", ")
                .replace("expected one of ", "")
        );
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && rest.ends_with("expected a string")
        && (rest.starts_with("integer")
            || rest.starts_with("boolean")
            || rest.starts_with("floating point"))
    {
        return format!(
            "{msg}; quote the value so YAML reads it as a string (e.g. \"8080\" or \"true\")"
        );
    }
    msg.to_string()
}
