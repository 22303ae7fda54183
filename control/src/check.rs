//! `jalin check --rules FILE`: compliance rules in the format of the `child-services-policy-rules`
//! ConfigMap (STRICT mTLS required in a namespace, an authorization policy required, outlier
//! detection bounds), evaluated against imported resources.
//!
//! FILE is either that ConfigMap (rules under `data."validation-rules.yaml"`) or the bare rules
//! YAML. Requirement semantics: `mtls: STRICT` — the namespace's effective PeerAuthentication
//! mode (namespace policy, else the root namespace's) is STRICT and no workload or port policy
//! in it weakens that; `authorizationPolicy: true` — the namespace has an AuthorizationPolicy
//! (or one in the root namespace applies mesh-wide); `circuitBreaker` — every DestinationRule of
//! the namespace (host, port-level and subset policies) has outlier detection with
//! `maxEjectionPercent` at most, and `minHealthPercent`, `consecutive5xxErrors`,
//! `consecutiveGatewayErrors` at least, the given values.

use std::path::Path;

use serde::Deserialize;

use crate::istio::destination_rule::{OutlierDetection, TrafficPolicy};
use crate::istio::diag::{Finding, Severity};
use crate::istio::security::MtlsMode;
use crate::istio::yaml::{Locator, Node, parse_documents};
use crate::istio::{Resource, Spec};
use crate::lint::ROOT_NAMESPACE;

/// The rules document.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesDoc {
    rules: Vec<ComplianceRule>,
}

/// One compliance rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplianceRule {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub selector: RuleSelector,
    pub required: Required,
}

/// Which resources a rule is about.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSelector {
    pub namespace: String,
}

/// What a rule requires.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Required {
    #[serde(default)]
    pub mtls: Option<MtlsMode>,
    #[serde(default)]
    pub authorization_policy: Option<bool>,
    #[serde(default)]
    pub circuit_breaker: Option<Bounds>,
}

/// Outlier-detection bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Bounds {
    pub max_ejection_percent: Option<i64>,
    pub min_health_percent: Option<i64>,
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<i64>,
    pub consecutive_gateway_errors: Option<i64>,
}

/// Loaded rules, each with where it was written.
#[derive(Debug, Clone)]
pub struct Rules {
    pub file: String,
    pub rules: Vec<(ComplianceRule, usize)>,
}

fn file_err(file: &str, line: usize, message: String) -> Box<Finding> {
    Box::new(Finding {
        severity: Severity::Error,
        file: file.into(),
        line,
        resource: None,
        path: String::new(),
        message,
        code: None,
    })
}

/// Read a rules file (the ConfigMap or bare rules YAML).
pub fn load_rules(path: &Path) -> Result<Rules, Box<Finding>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| file_err(&file, 0, format!("cannot read the rules file: {e}")))?;
    parse_rules(&file, &text)
}

/// Parse rules from text (see [`load_rules`]).
pub fn parse_rules(file: &str, text: &str) -> Result<Rules, Box<Finding>> {
    let docs = parse_documents(text)
        .map_err(|e| file_err(file, e.line, format!("invalid YAML: {}", e.message)))?;
    let Some(doc) = docs.into_iter().next() else {
        return Err(file_err(file, 0, "the rules file is empty".into()));
    };
    let (root, offset, base) = if doc.root.get("kind").and_then(Node::as_str) == Some("ConfigMap") {
        let Some(entry) = doc
            .root
            .get("data")
            .and_then(|d| d.as_map())
            .and_then(|m| m.iter().find(|e| e.key == "validation-rules.yaml"))
        else {
            return Err(file_err(
                file,
                doc.root.line,
                "this ConfigMap has no `data.\"validation-rules.yaml\"`; expected the rules there"
                    .into(),
            ));
        };
        let Some(inner) = entry.value.as_str() else {
            return Err(file_err(
                file,
                entry.line,
                "`validation-rules.yaml` must be a string holding the rules YAML".into(),
            ));
        };
        let inner_docs = parse_documents(inner).map_err(|e| {
            file_err(
                file,
                entry.line + e.line,
                format!("invalid YAML in validation-rules.yaml: {}", e.message),
            )
        })?;
        let Some(d) = inner_docs.into_iter().next() else {
            return Err(file_err(
                file,
                entry.line,
                "validation-rules.yaml is empty".into(),
            ));
        };
        (d.root, entry.line, "data[\"validation-rules.yaml\"].")
    } else {
        (doc.root, 0, "")
    };
    let locator = Locator::new(&root);
    let parsed: RulesDoc = serde_path_to_error::deserialize(root.to_json()).map_err(|e| {
        let p = e.path().to_string().replace(".[", "[");
        let line = locator.line(&p) + offset;
        let mut f = file_err(file, line, format!("{}; expected `rules: [{{name, selector: {{namespace}}, required: {{mtls | authorizationPolicy | circuitBreaker}}}}]`", e.inner()));
        f.path = format!("{base}{p}");
        f
    })?;
    let rules = parsed
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, locator.line(&format!("rules[{i}]")) + offset))
        .collect();
    Ok(Rules {
        file: file.into(),
        rules,
    })
}

/// Evaluate every rule; each violation is a finding (code `check/<rule name>`).
pub fn evaluate(rules: &Rules, resources: &[Resource]) -> Vec<Finding> {
    let mut out = Vec::new();
    for (rule, line) in &rules.rules {
        let ns = rule.selector.namespace.as_str();
        let code = format!("check/{}", rule.name);
        let at_rule = |message: String| Finding {
            severity: Severity::Lint,
            file: rules.file.clone(),
            line: *line,
            resource: None,
            path: String::new(),
            message: format!("rule `{}`: {message}", rule.name),
            code: Some(code.clone()),
        };
        let at = |r: &Resource, path: &str, message: String| {
            let mut f = r.finding(
                Severity::Lint,
                path,
                format!("rule `{}` ({}:{line}): {message}", rule.name, rules.file),
            );
            f.code = Some(code.clone());
            f
        };
        if let Some(want) = rule.required.mtls {
            check_mtls(ns, want, resources, &mut out, &at_rule, &at);
        }
        if rule.required.authorization_policy == Some(true) {
            let has = resources.iter().any(|r| {
                matches!(r.spec, Spec::AuthorizationPolicy(_))
                    && (r.namespace == ns || r.namespace == ROOT_NAMESPACE)
            });
            if !has {
                out.push(at_rule(format!("namespace `{ns}` has no AuthorizationPolicy (and none applies mesh-wide from `{ROOT_NAMESPACE}`)")));
            }
        }
        if let Some(b) = &rule.required.circuit_breaker {
            let mut any = false;
            for r in resources.iter().filter(|r| r.namespace == ns) {
                let Spec::DestinationRule(d) = &r.spec else {
                    continue;
                };
                any = true;
                let empty = TrafficPolicy::default();
                let top = d.traffic_policy.as_ref().unwrap_or(&empty);
                check_outlier(
                    r,
                    "spec.trafficPolicy",
                    top.outlier_detection.as_ref(),
                    b,
                    &mut out,
                    &at,
                );
                for (i, pl) in top.port_level_settings.iter().enumerate() {
                    let od = pl
                        .outlier_detection
                        .as_ref()
                        .or(top.outlier_detection.as_ref());
                    check_outlier(
                        r,
                        &format!("spec.trafficPolicy.portLevelSettings[{i}]"),
                        od,
                        b,
                        &mut out,
                        &at,
                    );
                }
                for (i, s) in d.subsets.iter().enumerate() {
                    if let Some(od) = s
                        .traffic_policy
                        .as_ref()
                        .and_then(|t| t.outlier_detection.as_ref())
                    {
                        check_outlier(
                            r,
                            &format!("spec.subsets[{i}].trafficPolicy"),
                            Some(od),
                            b,
                            &mut out,
                            &at,
                        );
                    }
                }
            }
            if !any {
                out.push(at_rule(format!(
                    "namespace `{ns}` has no DestinationRule, so no outlier detection bounds apply"
                )));
            }
        }
    }
    out
}

fn mode_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Unset => "UNSET",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

fn check_mtls(
    ns: &str,
    want: MtlsMode,
    resources: &[Resource],
    out: &mut Vec<Finding>,
    at_rule: &dyn Fn(String) -> Finding,
    at: &dyn Fn(&Resource, &str, String) -> Finding,
) {
    let pas: Vec<(&Resource, &crate::istio::security::PeerAuthenticationSpec)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::PeerAuthentication(p) => Some((r, p)),
            _ => None,
        })
        .collect();
    let mode_of = |p: &crate::istio::security::PeerAuthenticationSpec| {
        p.mtls.as_ref().map(|m| m.mode).unwrap_or_default()
    };
    let ns_wide = pas
        .iter()
        .find(|(r, p)| r.namespace == ns && p.selector.is_none());
    let mesh = pas
        .iter()
        .find(|(r, p)| r.namespace == ROOT_NAMESPACE && p.selector.is_none());
    let ns_mode = ns_wide
        .map(|(_, p)| mode_of(p))
        .filter(|m| *m != MtlsMode::Unset);
    let effective = ns_mode
        .or_else(|| {
            mesh.map(|(_, p)| mode_of(p))
                .filter(|m| *m != MtlsMode::Unset)
        })
        .unwrap_or(MtlsMode::Permissive);
    if effective != want {
        match ns_wide {
            Some((r, _)) if ns_mode.is_some() => out.push(at(r, "spec.mtls.mode", format!("namespace `{ns}` mode is {}, required {}", mode_name(effective), mode_name(want)))),
            _ => out.push(at_rule(format!("namespace `{ns}` has no PeerAuthentication setting mode {} (effective mode {}, inherited from the mesh); add one without a selector", mode_name(want), mode_name(effective)))),
        }
    }
    for (r, p) in pas
        .iter()
        .filter(|(r, p)| r.namespace == ns && p.selector.is_some())
    {
        let m = mode_of(p);
        if m != MtlsMode::Unset && m != want {
            out.push(at(
                r,
                "spec.mtls.mode",
                format!(
                    "workload policy sets {}, required {} in `{ns}`",
                    mode_name(m),
                    mode_name(want)
                ),
            ));
        }
        for (port, pm) in &p.port_level_mtls {
            if pm.mode != MtlsMode::Unset && pm.mode != want {
                out.push(at(
                    r,
                    &format!("spec.portLevelMtls.{port}.mode"),
                    format!(
                        "port {port} sets {}, required {} in `{ns}`",
                        mode_name(pm.mode),
                        mode_name(want)
                    ),
                ));
            }
        }
    }
}

fn check_outlier(
    r: &Resource,
    path: &str,
    od: Option<&OutlierDetection>,
    b: &Bounds,
    out: &mut Vec<Finding>,
    at: &dyn Fn(&Resource, &str, String) -> Finding,
) {
    let Some(od) = od else {
        out.push(at(
            r,
            path,
            "no outlier detection (circuit breaking) is configured".into(),
        ));
        return;
    };
    let p = format!("{path}.outlierDetection");
    // Istio defaults when a field is absent: maxEjectionPercent 10, minHealthPercent 0, consecutive5xxErrors 5.
    let checks: [(&str, Option<i64>, i64, Option<i64>, bool); 4] = [
        (
            "maxEjectionPercent",
            b.max_ejection_percent,
            10,
            od.max_ejection_percent,
            true,
        ),
        (
            "minHealthPercent",
            b.min_health_percent,
            0,
            od.min_health_percent,
            false,
        ),
        (
            "consecutive5xxErrors",
            b.consecutive_5xx_errors,
            5,
            od.consecutive_5xx_errors,
            false,
        ),
        (
            "consecutiveGatewayErrors",
            b.consecutive_gateway_errors,
            0,
            od.consecutive_gateway_errors,
            false,
        ),
    ];
    for (field, bound, default, have, at_most) in checks {
        let Some(bound) = bound else { continue };
        let v = have.unwrap_or(default);
        let bad = if at_most { v > bound } else { v < bound };
        if bad {
            let rel = if at_most { "at most" } else { "at least" };
            let shown = if have.is_some() {
                format!("{v}")
            } else {
                format!("{v} (Istio's default)")
            };
            out.push(at(
                r,
                &format!("{p}.{field}"),
                format!("`{field}` is {shown}; required {rel} {bound}"),
            ));
        }
    }
}
