//! `jalin lint`: configuration that is valid Istio but almost certainly not what its author
//! meant. Each finding has a stable code (`lint/...`), the file and line, and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::gateway::covers;
use crate::istio::security::{AuthorizationPolicySpec, AuthzAction, Rule, WorkloadSelector};
use crate::istio::values::{ConditionKey, condition_key};
use crate::istio::virtual_service::VirtualServiceSpec;
use crate::istio::{Finding, Loaded, Resource, Severity, Spec};

/// Istio's default root namespace: policies there apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// A workload the linter knows of: its namespace and labels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub namespace: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Read a `--workloads` file: a YAML list of `{namespace, labels}`.
pub fn load_workloads(path: &Path) -> Result<Vec<Workload>, Box<Finding>> {
    let file = path.display().to_string();
    let err = |line: usize, message: String| {
        Box::new(Finding {
            severity: Severity::Error,
            file: file.clone(),
            line,
            resource: None,
            path: String::new(),
            message,
            code: None,
        })
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(0, format!("cannot read the workloads file: {e}")))?;
    serde_saphyr::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(0);
        let msg = e.to_string();
        err(
            line,
            format!(
                "expected a list of `{{namespace, labels}}` workloads: {}",
                msg.lines().next().unwrap_or("")
            ),
        )
    })
}

fn flag(res: &Resource, code: &str, path: &str, message: String) -> Finding {
    let mut f = res.finding(Severity::Lint, path, message);
    f.code = Some(code.into());
    f
}

/// Every lint finding for the loaded configuration. Resources that failed validation are linted
/// too, so a policy with an unknown `when` key also gets its structural problems reported.
pub fn lint(loaded: &Loaded, extra_workloads: &[Workload]) -> Vec<Finding> {
    let all: Vec<&Resource> = loaded.resources.iter().chain(&loaded.invalid).collect();
    let mut out = Vec::new();
    let workloads = known_workloads(&all, extra_workloads);
    for r in &all {
        if let Spec::AuthorizationPolicy(ap) = &r.spec {
            separate_rules(r, ap, &mut out);
            when_only_allow(r, ap, &mut out);
            never_matches(r, ap, &mut out);
            mesh_wide_allow(r, ap, &mut out);
            deny_http_on_tcp(r, ap, &all, &mut out);
        }
        if !workloads.is_empty() {
            let selector = match &r.spec {
                Spec::AuthorizationPolicy(s) => s.selector.as_ref(),
                Spec::PeerAuthentication(s) => s.selector.as_ref(),
                Spec::RequestAuthentication(s) => s.selector.as_ref(),
                Spec::Telemetry(s) => s.selector.as_ref(),
                _ => None,
            };
            if let Some(sel) = selector {
                selector_matches_nothing(r, sel, &workloads, &mut out);
            }
        }
    }
    jwt_without_request_authentication(&all, &mut out);
    overlapping_virtual_services(&all, &mut out);
    unused_subsets(&all, &mut out);
    gateway_bindings(loaded, &mut out);
    out
}

/// VirtualServices naming a Gateway that does not exist (`lint/gateway-not-found`, Istio's
/// IST0101), hosts no server of their Gateway serves (`lint/host-not-on-gateway`) and Gateways
/// without a selector (`lint/gateway-selects-nothing`).
fn gateway_bindings(loaded: &Loaded, out: &mut Vec<Finding>) {
    let mut ignored = Vec::new();
    let native = crate::istio::convert::convert_only(&loaded.resources, &mut ignored);
    let bound = crate::istio::gateway::bind(&native, &fqdn);
    out.extend(bound.findings.into_iter().map(|mut f| {
        f.severity = Severity::Lint;
        f
    }));
}

fn rule_parts(rule: &Rule) -> (bool, bool, bool) {
    (
        rule.from.as_ref().is_some_and(|f| !f.is_empty()),
        rule.to.as_ref().is_some_and(|t| !t.is_empty()),
        !rule.when.is_empty(),
    )
}

/// `from`, `to` and `when` written as separate rules: Istio ORs rules, so each part alone matches.
fn separate_rules(r: &Resource, ap: &AuthorizationPolicySpec, out: &mut Vec<Finding>) {
    let rules = ap.rules.as_deref().unwrap_or(&[]);
    let single: Vec<(usize, &str)> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| match rule_parts(rule) {
            (true, false, false) => Some((i, "from")),
            (false, true, false) => Some((i, "to")),
            (false, false, true) => Some((i, "when")),
            _ => None,
        })
        .collect();
    let kinds: BTreeSet<&str> = single.iter().map(|(_, k)| *k).collect();
    if single.len() < 2 || kinds.len() < 2 {
        return;
    }
    let action = ap.action.unwrap_or_default();
    let list = single
        .iter()
        .map(|(i, k)| format!("rules[{i}] has only `{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let effect = match action {
        AuthzAction::Allow => {
            "allows a request that satisfies any ONE of them (e.g. any operation from those sources)"
        }
        AuthzAction::Deny => "denies a request that satisfies any ONE of them",
        _ => "matches a request that satisfies any ONE of them",
    };
    out.push(flag(r, "lint/separate-rules", "spec.rules", format!(
        "{list}: Istio ORs rules, so this {action:?} policy {effect}; if all must hold, write `from`, `to` and `when` in ONE rule (`- from: ... to: ... when: ...`)"
    )));
}

/// An ALLOW rule with only `when` conditions that read neither the caller nor the request.
fn when_only_allow(r: &Resource, ap: &AuthorizationPolicySpec, out: &mut Vec<Finding>) {
    if ap.action.unwrap_or_default() != AuthzAction::Allow {
        return;
    }
    for (i, rule) in ap.rules.iter().flatten().enumerate() {
        if rule_parts(rule) != (false, false, true) {
            continue;
        }
        let about_caller_or_request = rule.when.iter().any(|c| {
            ["request.", "source.", "remote.", "connection."]
                .iter()
                .any(|p| c.key.starts_with(p))
        });
        if about_caller_or_request {
            continue;
        }
        let keys = rule
            .when
            .iter()
            .map(|c| format!("`{}`", c.key))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(flag(r, "lint/when-only-allow", &format!("spec.rules[{i}]"), format!(
            "this rule has only `when` ({keys}), which checks neither the caller nor the request: whenever it holds, the policy allows ANY request from ANY source to ANY path"
        )));
    }
}

/// Why a rule can never match, if it cannot.
fn unsatisfiable(rule: &Rule) -> Option<String> {
    for (j, f) in rule.from.iter().flatten().enumerate() {
        let Some(s) = &f.source else { continue };
        for (field, yes, no) in [
            ("principals", &s.principals, &s.not_principals),
            ("namespaces", &s.namespaces, &s.not_namespaces),
            (
                "requestPrincipals",
                &s.request_principals,
                &s.not_request_principals,
            ),
            ("ipBlocks", &s.ip_blocks, &s.not_ip_blocks),
        ] {
            if !yes.is_empty()
                && (no.iter().any(|n| n == "*") || yes.iter().all(|v| no.contains(v)))
            {
                return Some(format!(
                    "from[{j}].source: every value of `{field}` is excluded by its `not` form"
                ));
            }
        }
        if !s.principals.is_empty()
            && !s.namespaces.is_empty()
            && !s.namespaces.iter().any(|n| n == "*")
        {
            let exact: Vec<&String> = s.principals.iter().filter(|p| !p.contains('*')).collect();
            if exact.len() == s.principals.len()
                && exact.iter().all(|p| {
                    !s.namespaces
                        .iter()
                        .any(|n| p.contains(&format!("/ns/{n}/sa/")))
                })
            {
                return Some(format!(
                    "from[{j}].source: no principal is in one of the namespaces {:?} (fields are ANDed)",
                    s.namespaces
                ));
            }
        }
    }
    for (j, t) in rule.to.iter().flatten().enumerate() {
        let Some(o) = &t.operation else { continue };
        for (field, yes, no) in [
            ("methods", &o.methods, &o.not_methods),
            ("paths", &o.paths, &o.not_paths),
            ("ports", &o.ports, &o.not_ports),
            ("hosts", &o.hosts, &o.not_hosts),
        ] {
            if !yes.is_empty()
                && (no.iter().any(|n| n == "*") || yes.iter().all(|v| no.contains(v)))
            {
                return Some(format!(
                    "to[{j}].operation: every value of `{field}` is excluded by its `not` form"
                ));
            }
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Vec<String>>> = BTreeMap::new();
    for c in &rule.when {
        if !c.values.is_empty()
            && (c.not_values.iter().any(|n| n == "*")
                || c.values.iter().all(|v| c.not_values.contains(v)))
        {
            return Some(format!(
                "when `{}`: every value is excluded by `notValues`",
                c.key
            ));
        }
        if !c.values.is_empty() {
            by_key.entry(&c.key).or_default().push(&c.values);
        }
    }
    for (key, lists) in by_key {
        if lists.len() < 2 || key == crate::istio::values::CERT_FINGERPRINT_KEY {
            continue;
        }
        let exact = lists.iter().all(|l| l.iter().all(|v| !v.contains('*')));
        let first: BTreeSet<&String> = lists[0].iter().collect();
        if exact
            && lists[1..]
                .iter()
                .any(|l| l.iter().all(|v| !first.contains(v)))
        {
            return Some(format!(
                "two `when` conditions on `{key}` have no value in common (conditions are ANDed)"
            ));
        }
    }
    None
}

/// ALLOW policies that can never match anything.
fn never_matches(r: &Resource, ap: &AuthorizationPolicySpec, out: &mut Vec<Finding>) {
    if ap.action.unwrap_or_default() != AuthzAction::Allow {
        return;
    }
    let rules = ap.rules.as_deref().unwrap_or(&[]);
    if rules.is_empty() {
        out.push(flag(r, "lint/allow-never-matches", "spec", "this ALLOW policy has no rules, so it matches no request: the selected workloads deny every request no other ALLOW policy allows (Istio's allow-nothing pattern; if intended, say so in a comment or an annotation)".into()));
        return;
    }
    let reasons: Vec<String> = rules
        .iter()
        .enumerate()
        .filter_map(|(i, rule)| unsatisfiable(rule).map(|w| format!("rules[{i}].{w}")))
        .collect();
    if reasons.len() == rules.len() {
        out.push(flag(
            r,
            "lint/allow-never-matches",
            "spec.rules",
            format!("this ALLOW policy can never match: {}", reasons.join("; ")),
        ));
    }
}

/// An ALLOW policy without a selector in the root namespace applies to every workload of the
/// mesh, and in Istio a workload with any ALLOW policy denies every request no ALLOW policy
/// matches: the whole mesh becomes deny-by-default for whatever these rules do not allow.
fn mesh_wide_allow(r: &Resource, ap: &AuthorizationPolicySpec, out: &mut Vec<Finding>) {
    let selects_all = ap
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty())
        && ap.target_ref.is_none()
        && ap.target_refs.is_empty();
    if r.namespace != ROOT_NAMESPACE
        || ap.action.unwrap_or_default() != AuthzAction::Allow
        || !selects_all
    {
        return;
    }
    out.push(flag(r, "lint/mesh-wide-allow", "spec", format!(
        "this ALLOW policy has no selector and is in the root namespace `{ROOT_NAMESPACE}`, so it applies to every workload in the mesh: in Istio a workload with any ALLOW policy denies every request no ALLOW policy matches, so every workload in every namespace now denies whatever these rules do not allow. Add a `selector` for the workloads it is meant for, or move the policy into the namespace it is meant for"
    )));
}

/// DENY rules with HTTP-only attributes on ports that may carry plain TCP: for TCP traffic the
/// HTTP attributes cannot be read, and Istio then denies on the remaining fields alone.
fn deny_http_on_tcp(
    r: &Resource,
    ap: &AuthorizationPolicySpec,
    all: &[&Resource],
    out: &mut Vec<Finding>,
) {
    if ap.action != Some(AuthzAction::Deny) {
        return;
    }
    let tcp_ports = declared_tcp_ports(all);
    for (i, rule) in ap.rules.iter().flatten().enumerate() {
        let http_to = rule
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .any(|o| o.uses_http());
        let http_from = rule
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .any(|s| !s.request_principals.is_empty() || !s.not_request_principals.is_empty());
        let http_when = rule
            .when
            .iter()
            .any(|c| condition_key(&c.key) == Ok(ConditionKey::Http));
        if !(http_to || http_from || http_when) {
            continue;
        }
        let ports: Vec<&String> = rule
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .flat_map(|o| &o.ports)
            .collect();
        let tcp: Vec<&&String> = ports
            .iter()
            .filter(|p| p.parse::<u64>().is_ok_and(|n| tcp_ports.contains(&n)))
            .collect();
        let why = if ports.is_empty() {
            "the rule names no `ports`, so it also applies to any TCP port of the workload"
                .to_string()
        } else if !tcp.is_empty() {
            format!("port(s) {tcp:?} are declared TCP")
        } else {
            continue;
        };
        out.push(flag(r, "lint/deny-http-on-tcp", &format!("spec.rules[{i}]"), format!(
            "this DENY rule uses HTTP-only attributes (methods, paths, hosts, request headers or JWT fields) and {why}: on a TCP connection those attributes cannot be read and the rule denies on its other fields alone; restrict it to HTTP ports with `to.operation.ports`"
        )));
    }
}

fn declared_tcp_ports(all: &[&Resource]) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    let tcp = |p: Option<&String>| {
        p.is_some_and(|p| {
            matches!(
                p.to_ascii_uppercase().as_str(),
                "TCP" | "TLS" | "MONGO" | "MYSQL" | "REDIS"
            )
        })
    };
    for r in all {
        match &r.spec {
            Spec::ServiceEntry(s) => out.extend(
                s.ports
                    .iter()
                    .filter(|p| tcp(p.protocol.as_ref()))
                    .map(|p| p.target_port.unwrap_or(p.number)),
            ),
            Spec::Sidecar(s) => out.extend(
                s.ingress
                    .iter()
                    .filter_map(|l| l.port.as_ref())
                    .filter(|p| tcp(p.protocol.as_ref()))
                    .map(|p| p.number),
            ),
            _ => {}
        }
    }
    out
}

fn known_workloads(all: &[&Resource], extra: &[Workload]) -> Vec<Workload> {
    let mut out: Vec<Workload> = extra.to_vec();
    for r in all {
        match &r.spec {
            Spec::WorkloadEntry(w) => out.push(Workload {
                namespace: r.namespace.clone(),
                labels: w.labels.clone(),
            }),
            Spec::ServiceEntry(s) => {
                if let Some(sel) = &s.workload_selector {
                    out.push(Workload {
                        namespace: r.namespace.clone(),
                        labels: sel.labels.clone(),
                    });
                }
                out.extend(s.endpoints.iter().map(|e| Workload {
                    namespace: r.namespace.clone(),
                    labels: e.labels.clone(),
                }));
            }
            _ => {}
        }
    }
    out
}

fn selector_matches_nothing(
    r: &Resource,
    sel: &WorkloadSelector,
    workloads: &[Workload],
    out: &mut Vec<Finding>,
) {
    let matches = workloads.iter().any(|w| {
        (r.namespace == ROOT_NAMESPACE || w.namespace == r.namespace)
            && sel
                .match_labels
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
    });
    if !matches {
        out.push(flag(r, "lint/selector-matches-nothing", "spec.selector", format!(
            "no known workload in namespace `{}` has the labels {:?}; the policy applies to nothing (check the labels, or add the workload to --workloads)",
            r.namespace, sel.match_labels
        )));
    }
}

/// ALLOW rules on JWT attributes (`requestPrincipals`, `request.auth.*`) for workloads no
/// RequestAuthentication covers: no token is ever validated there, so those rules never match.
fn jwt_without_request_authentication(all: &[&Resource], out: &mut Vec<Finding>) {
    let ras: Vec<(&Resource, Option<&WorkloadSelector>)> = all
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::RequestAuthentication(s) => Some((*r, s.selector.as_ref())),
            _ => None,
        })
        .collect();
    for r in all {
        let Spec::AuthorizationPolicy(ap) = &r.spec else {
            continue;
        };
        if ap.action.unwrap_or_default() != AuthzAction::Allow {
            continue;
        }
        let covered = ras.iter().any(|(ra, sel)| {
            (ra.namespace == r.namespace || ra.namespace == ROOT_NAMESPACE)
                && match (sel, &ap.selector) {
                    (None, _) => true,
                    (Some(s), Some(p)) => s
                        .match_labels
                        .iter()
                        .all(|(k, v)| p.match_labels.get(k) == Some(v)),
                    (Some(_), None) => false,
                }
        });
        if covered {
            continue;
        }
        for (i, rule) in ap.rules.iter().flatten().enumerate() {
            let jwt_from = rule
                .from
                .iter()
                .flatten()
                .filter_map(|f| f.source.as_ref())
                .any(|s| !s.request_principals.is_empty());
            let jwt_when = rule
                .when
                .iter()
                .any(|c| c.key.starts_with("request.auth.") && !c.values.is_empty());
            if jwt_from || jwt_when {
                out.push(flag(r, "lint/jwt-without-request-authentication", &format!("spec.rules[{i}]"), format!(
                    "this rule matches on JWT attributes, but no RequestAuthentication in `{}` (or `{ROOT_NAMESPACE}`) covers these workloads, so no token is validated and the rule never matches; add a RequestAuthentication",
                    r.namespace
                )));
            }
        }
    }
}

/// A host's fully qualified form, as Istio resolves short names in the resource's namespace.
pub fn fqdn(host: &str, namespace: &str) -> String {
    crate::server::translate::routes::qualify(host, namespace, "cluster.local")
}

fn overlapping_virtual_services(all: &[&Resource], out: &mut Vec<Finding>) {
    let vss: Vec<(&Resource, &VirtualServiceSpec)> = all
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(v) => Some((*r, v)),
            _ => None,
        })
        .collect();
    for (i, (a, av)) in vss.iter().enumerate() {
        for (b, bv) in &vss[i + 1..] {
            let ga: BTreeSet<&str> = if av.gateways.is_empty() {
                ["mesh"].into()
            } else {
                av.gateways.iter().map(String::as_str).collect()
            };
            let gb: BTreeSet<&str> = if bv.gateways.is_empty() {
                ["mesh"].into()
            } else {
                bv.gateways.iter().map(String::as_str).collect()
            };
            if ga.is_disjoint(&gb) {
                continue;
            }
            for (hi, h) in av.hosts.iter().enumerate() {
                let ha = fqdn(h, &a.namespace);
                if let Some(other) = bv.hosts.iter().find(|x| {
                    let hb = fqdn(x, &b.namespace);
                    covers(&ha, &hb) || covers(&hb, &ha)
                }) {
                    out.push(flag(a, "lint/overlapping-virtual-services", &format!("spec.hosts[{hi}]"), format!(
                        "host `{h}` is also routed by {} ({}:{}, host `{other}`): for sidecars Istio uses only one VirtualService per host, so the other's routes are ignored; merge them into one VirtualService",
                        b.id(), b.file, b.line
                    )));
                }
            }
        }
    }
}

fn unused_subsets(all: &[&Resource], out: &mut Vec<Finding>) {
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    for r in all {
        if let Spec::VirtualService(v) = &r.spec {
            let dests = v
                .http
                .iter()
                .flat_map(|h| {
                    h.route
                        .iter()
                        .map(|d| &d.destination)
                        .chain(h.mirror.iter())
                        .chain(h.mirrors.iter().map(|m| &m.destination))
                })
                .chain(
                    v.tls
                        .iter()
                        .flat_map(|t| t.route.iter().map(|d| &d.destination)),
                )
                .chain(
                    v.tcp
                        .iter()
                        .flat_map(|t| t.route.iter().map(|d| &d.destination)),
                );
            for d in dests {
                if let Some(s) = &d.subset {
                    used.insert((fqdn(&d.host, &r.namespace), s.clone()));
                }
            }
        }
    }
    for r in all {
        let Spec::DestinationRule(DestinationRuleSpec { host, subsets, .. }) = &r.spec else {
            continue;
        };
        let h = fqdn(host, &r.namespace);
        for (i, s) in subsets.iter().enumerate() {
            let is_used = used.iter().any(|(uh, us)| us == &s.name && covers(&h, uh));
            if !is_used {
                out.push(flag(r, "lint/unused-subset", &format!("spec.subsets[{i}].name"), format!(
                    "no VirtualService route sends traffic to subset `{}` of `{host}`, so its labels and traffic policy never take effect; route to it or remove it",
                    s.name
                )));
            }
        }
    }
}
