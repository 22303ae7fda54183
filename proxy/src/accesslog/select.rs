//! Istio `Telemetry` documents -> the access logging in force for one workload and mode.
//! Pure: no I/O.
//!
//! Precedence, as Istio documents it: a Telemetry in the root namespace applies mesh-wide, one
//! in the workload's namespace without a selector overrides it, one there whose
//! `selector.matchLabels` matches the workload's labels overrides both. Each level overrides
//! the less specific per mode (`CLIENT`: outbound requests, `SERVER`: inbound): providers,
//! `disabled` and format as far as the level sets them. Several Telemetries on one level: the
//! first by name is used and the others are reported.
//!
//! The seeds' shape is accepted: an `accessLogging` entry may carry `overrides`, each
//! `{match: {mode}, disabled, format, providers}`; each override is read as an `accessLogging`
//! entry of its own, after its parent, with the providers of its parent or else of the first
//! entry naming providers (the mapping `jalin import` applies too). `format` (an entry's or an
//! override's) is jalin's: an Envoy format string for that mode (Istio sets formats on the
//! MeshConfig provider, which `access_log.providers` also accepts).

use std::collections::BTreeMap;

use jalin_xds::model::meta::WorkloadSelector;
use serde::Deserialize;

/// Traffic direction as Istio's `match.mode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    ClientAndServer,
    /// Outbound requests (this workload is the client).
    Client,
    /// Inbound requests (this workload is the server).
    Server,
}

impl Mode {
    fn covers(self, m: Mode) -> bool {
        self == Mode::ClientAndServer || self == m
    }
}

/// A Telemetry document (`metadata` and `spec`; `apiVersion` and `kind` are checked).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Doc {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    metadata: Meta,
    #[serde(default)]
    spec: Spec,
}

#[derive(Debug, Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
}

/// Only what access logging reads; `metrics` and `tracing` belong to other consumers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default)]
    selector: Option<Selector>,
    #[serde(default)]
    target_ref: Option<serde_json::Value>,
    #[serde(default)]
    target_refs: Vec<serde_json::Value>,
    // `accessLogging` is read entry by entry in `parse`, for precise error paths.
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeMatch {
    #[serde(default)]
    mode: Option<Mode>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderRef {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterExpr {
    expression: String,
}

/// `accessLogging[i]`, or one of its (seed-shape) `overrides`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default, rename = "match")]
    match_: Option<ModeMatch>,
    #[serde(default)]
    providers: Option<Vec<ProviderRef>>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    filter: Option<FilterExpr>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    overrides: Vec<Entry>,
}

/// One access-logging rule after the seed shape is flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    mode: Mode,
    providers: Option<Vec<String>>,
    disabled: Option<bool>,
    format: Option<String>,
    /// Field path of the rule in its document, for warnings.
    path: String,
    filter: Option<String>,
}

/// A parsed Telemetry: its key (`ns/name`) and rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telemetry {
    pub namespace: String,
    pub name: String,
    selector: Option<WorkloadSelector>,
    targeted: bool,
    rules: Vec<Rule>,
}

impl Telemetry {
    /// `ns/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A document that cannot be read: the field path in it and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub path: String,
    pub message: String,
}

/// Reads a Telemetry document (with its `metadata`; a control plane's spec alone is made one
/// by [`super::document_from_resource`]).
pub fn parse(doc: &serde_json::Value) -> Result<Telemetry, ParseError> {
    let err = |path: &str, message: String| ParseError {
        path: path.to_owned(),
        message,
    };
    let d = Doc::deserialize(doc).map_err(|e| {
        err(
            "",
            format!("{e}; expected a telemetry.istio.io Telemetry with metadata.name and spec"),
        )
    })?;
    if let Some(k) = &d.kind
        && k != "Telemetry"
    {
        return Err(err("kind", format!("is `{k}`; expected `Telemetry`")));
    }
    if let Some(v) = &d.api_version
        && !v.starts_with("telemetry.istio.io/")
    {
        return Err(err(
            "apiVersion",
            format!("is `{v}`; expected telemetry.istio.io/v1, v1beta1 or v1alpha1"),
        ));
    }
    // Entries again, one by one, for a precise path on a bad field.
    let raw = doc
        .pointer("/spec/accessLogging")
        .and_then(|v| v.as_array())
        .map_or(&[][..], Vec::as_slice);
    let mut entries = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let mut entry = Entry::deserialize(e).map_err(|x| {
            err(
                &format!("spec.accessLogging[{i}]"),
                format!(
                    "{x}; expected `match: {{mode: CLIENT|SERVER|CLIENT_AND_SERVER}}`, `providers`, \
                     `disabled`, `filter`, `format` or `overrides`"
                ),
            )
        })?;
        // An empty list names no provider (Istio: the defaults); the control plane sends one.
        let none_if_empty = |p: &mut Option<Vec<ProviderRef>>| {
            if p.as_ref().is_some_and(Vec::is_empty) {
                *p = None;
            }
        };
        none_if_empty(&mut entry.providers);
        for o in &mut entry.overrides {
            none_if_empty(&mut o.providers);
        }
        entries.push(entry);
    }
    let first_providers = entries
        .iter()
        .find_map(|e| e.providers.as_ref())
        .map(|p| names(p));
    let mut rules = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let path = format!("spec.accessLogging[{i}]");
        let own = e.providers.as_ref().map(|p| names(p));
        let bare = e.match_.is_none()
            && e.providers.is_none()
            && e.disabled.is_none()
            && e.format.is_none()
            && e.filter.is_none();
        if !bare || e.overrides.is_empty() {
            rules.push(rule(e, own.clone(), path.clone()));
        }
        for (j, o) in e.overrides.iter().enumerate() {
            let opath = format!("{path}.overrides[{j}]");
            if !o.overrides.is_empty() {
                return Err(err(&opath, "overrides do not nest".into()));
            }
            let providers = o
                .providers
                .as_ref()
                .map(|p| names(p))
                .or_else(|| own.clone())
                .or_else(|| first_providers.clone());
            rules.push(rule(o, providers, opath));
        }
    }
    Ok(Telemetry {
        namespace: d.metadata.namespace,
        name: d.metadata.name,
        selector: d.spec.selector.map(|s| WorkloadSelector {
            match_labels: s.match_labels,
        }),
        targeted: d.spec.target_ref.is_some() || !d.spec.target_refs.is_empty(),
        rules,
    })
}

fn names(p: &[ProviderRef]) -> Vec<String> {
    p.iter().map(|r| r.name.clone()).collect()
}

fn rule(e: &Entry, providers: Option<Vec<String>>, path: String) -> Rule {
    Rule {
        mode: e
            .match_
            .as_ref()
            .and_then(|m| m.mode)
            .unwrap_or(Mode::ClientAndServer),
        providers,
        disabled: e.disabled,
        format: e.format.clone(),
        filter: e.filter.as_ref().map(|f| f.expression.clone()),
        path,
    }
}

/// The workload a proxy serves, as selection sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub root_namespace: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// What is in force for one mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The Telemetry (`ns/name`) that last set the providers, for warnings.
    pub resource: String,
    pub providers: Vec<String>,
    /// jalin's per-entry format; `None`: the provider's, else Istio's default.
    pub format: Option<String>,
    /// Field path of the entry that set `format` in its document (`spec.accessLogging[1]...`).
    pub format_path: String,
}

/// The selection for one workload: per mode, `None` when access logging is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub client: Option<Selected>,
    pub server: Option<Selected>,
    /// What the operator should know (ignored Telemetries, filters not evaluated).
    pub warnings: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    resource: String,
    providers: Option<Vec<String>>,
    disabled: bool,
    format: Option<(String, String)>,
}

/// Selects the access logging in force for `w` among `all`.
pub fn select(all: &[Telemetry], w: &Workload) -> Selection {
    let mut warnings = Vec::new();
    let mut levels: [Vec<&Telemetry>; 3] = Default::default();
    for t in all {
        if t.rules.is_empty() {
            continue;
        }
        if t.targeted {
            warnings.push(format!(
                "Telemetry {}: targetRef(s) select gateways and waypoints, not a sidecar; its \
                 access logging is not applied here",
                t.key()
            ));
            continue;
        }
        let level = match &t.selector {
            None if t.namespace == w.root_namespace => 0,
            None if t.namespace == w.namespace => 1,
            Some(sel) if t.namespace == w.namespace => {
                if !sel.matches(&w.labels) {
                    continue;
                }
                2
            }
            _ => continue,
        };
        levels[level].push(t);
    }
    let mut client = State::default();
    let mut server = State::default();
    for level in &mut levels {
        level.sort_by(|a, b| a.name.cmp(&b.name));
        let Some((t, rest)) = level.split_first() else {
            continue;
        };
        for other in rest {
            warnings.push(format!(
                "Telemetry {}: {} applies at the same level and is used (first by name); \
                 this one's access logging is ignored, as Istio ignores all but one",
                other.key(),
                t.key()
            ));
        }
        for r in &t.rules {
            if let Some(f) = &r.filter {
                warnings.push(format!(
                    "Telemetry {} {}.filter: the CEL expression `{f}` is not evaluated; every \
                     request of this mode is logged",
                    t.key(),
                    r.path
                ));
            }
            for (mode, state) in [(Mode::Client, &mut client), (Mode::Server, &mut server)] {
                if !r.mode.covers(mode) {
                    continue;
                }
                state.resource = t.key();
                if let Some(p) = &r.providers {
                    state.providers = Some(p.clone());
                    state.format = None;
                }
                if let Some(f) = &r.format {
                    state.format = Some((f.clone(), r.path.clone()));
                }
                state.disabled = r.disabled.unwrap_or(false);
            }
        }
    }
    let done = |s: State| -> Option<Selected> {
        if s.disabled || s.resource.is_empty() {
            return None;
        }
        Some(Selected {
            resource: s.resource,
            // No providers named anywhere: Istio's default provider (`envoy`, stdout).
            providers: s.providers.unwrap_or_else(|| vec!["envoy".to_owned()]),
            format_path: s.format.as_ref().map(|f| f.1.clone()).unwrap_or_default(),
            format: s.format.map(|f| f.0),
        })
    };
    Selection {
        client: done(client),
        server: done(server),
        warnings,
    }
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
