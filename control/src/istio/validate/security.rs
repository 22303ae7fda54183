//! Validation of AuthorizationPolicy, PeerAuthentication and RequestAuthentication, following
//! Istio's documented rules; each finding names the field path and what is expected.

use crate::istio::diag::{Mode, Severity, Sink};
use crate::istio::parse::Metadata;
use crate::istio::security::{
    AuthorizationPolicySpec, AuthzAction, MtlsMode, Operation, PeerAuthenticationSpec,
    PolicyTargetReference, RequestAuthenticationSpec, Source, WorkloadSelector,
};
use crate::istio::values::{
    CERT_FINGERPRINT_KEY, ConditionKey, check_path_template, condition_key, is_fingerprint,
    is_ip_or_cidr, is_port_string, unevaluable_key,
};

/// The annotation that makes an AuthorizationPolicy dry-run.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

pub(super) fn targets(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    sink: &mut Sink<'_>,
) {
    if selector.is_some() && (target_ref.is_some() || !target_refs.is_empty()) {
        let field = if target_ref.is_some() {
            "spec.targetRef"
        } else {
            "spec.targetRefs"
        };
        sink.error(
            field,
            "`selector` and `targetRef`/`targetRefs` are mutually exclusive; use one of them",
        );
    }
    if target_ref.is_some() && !target_refs.is_empty() {
        sink.error(
            "spec.targetRef",
            "`targetRef` and `targetRefs` are mutually exclusive; use `targetRefs`",
        );
    }
    for (i, t) in target_ref.into_iter().chain(target_refs).enumerate() {
        let path = if target_ref.is_some() {
            "spec.targetRef".to_string()
        } else {
            format!("spec.targetRefs[{i}]")
        };
        if t.name.is_empty() || t.kind.is_empty() {
            sink.error(&path, "a target reference needs `kind` and `name`");
        } else {
            sink.error(&path, format!("`{}` `{}` is a Kubernetes Gateway API target, which jalin does not implement, so the policy would apply to nothing; select workloads with `selector.matchLabels`", t.kind, t.name));
        }
    }
    if let Some(s) = selector {
        for (k, v) in &s.match_labels {
            if k.is_empty() || k.contains('*') || v.contains('*') {
                sink.error(
                    &format!("spec.selector.matchLabels.{k}"),
                    "label keys must not be empty and selectors take no wildcards",
                );
            }
        }
    }
}

/// AuthorizationPolicy.
pub fn authorization_policy(spec: &AuthorizationPolicySpec, meta: &Metadata, sink: &mut Sink<'_>) {
    targets(
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        sink,
    );
    let action = spec.action.unwrap_or_default();
    match (action, &spec.provider) {
        (AuthzAction::Custom, None) => sink.error(
            "spec.action",
            "the CUSTOM action needs `provider.name`, the name of an extension authorizer",
        ),
        (AuthzAction::Custom, Some(p)) if p.name.is_empty() => {
            sink.error("spec.provider.name", "must name the extension authorizer for the CUSTOM action")
        }
        (AuthzAction::Custom, Some(_)) => {}
        (other, Some(_)) => sink.error(
            "spec.provider",
            format!("`provider` is only allowed with the CUSTOM action, not {other:?}; remove it or set `action: CUSTOM`"),
        ),
        (_, None) => {}
    }
    if let Some(v) = meta.annotations.get(DRY_RUN_ANNOTATION) {
        let path = format!("metadata.annotations[\"{DRY_RUN_ANNOTATION}\"]");
        if v != "true" && v != "false" {
            sink.error(
                &path,
                format!("`{v}` is not a boolean; expected \"true\" or \"false\""),
            );
        } else if v == "true" && action == AuthzAction::Custom {
            sink.error(&path, "dry-run is not supported for the CUSTOM action (the external authorizer is always called); remove the annotation");
        }
    }
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let rp = format!("spec.rules[{i}]");
        if let Some(from) = &rule.from {
            if from.is_empty() {
                sink.error(
                    &format!("{rp}.from"),
                    "`from` must not be empty; omit it to match any source",
                );
            }
            for (j, f) in from.iter().enumerate() {
                let sp = format!("{rp}.from[{j}].source");
                match &f.source {
                    None => sink.error(
                        &format!("{rp}.from[{j}]"),
                        "`source` is required in each `from` entry",
                    ),
                    Some(s) if s.is_empty() => {
                        sink.error(&sp, "`source` must set at least one field")
                    }
                    Some(s) => source(s, &sp, sink),
                }
            }
        }
        if let Some(to) = &rule.to {
            if to.is_empty() {
                sink.error(
                    &format!("{rp}.to"),
                    "`to` must not be empty; omit it to match any operation",
                );
            }
            for (j, t) in to.iter().enumerate() {
                let op = format!("{rp}.to[{j}].operation");
                match &t.operation {
                    None => sink.error(
                        &format!("{rp}.to[{j}]"),
                        "`operation` is required in each `to` entry",
                    ),
                    Some(o) if o.is_empty() => {
                        sink.error(&op, "`operation` must set at least one field")
                    }
                    Some(o) => operation(o, &op, sink),
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let cp = format!("{rp}.when[{j}]");
            if c.values.is_empty() && c.not_values.is_empty() {
                sink.error(
                    &format!("{cp}.key"),
                    format!("condition `{}` needs `values` or `notValues`", c.key),
                );
            }
            if sink.mode == Mode::Import && unevaluable_key(&c.key) {
                let why = match condition_key(&c.key) {
                    Err(msg) => msg,
                    Ok(_) => format!(
                        "`{}` reads Envoy filter metadata, which jalin (no Envoy) does not produce",
                        c.key
                    ),
                };
                sink.unsupported(
                    &format!("{cp}.key"),
                    format!("{why}. jalin cannot evaluate this condition, so it is imported fail-closed: {}; `jalin validate` rejects it, as Istio does", fail_closed(action, i)),
                );
                continue;
            }
            match condition_key(&c.key) {
                Err(msg) => sink.error(&format!("{cp}.key"), msg),
                Ok(kind) => condition_values(kind, &c.key, &c.values, &c.not_values, &cp, sink),
            }
        }
    }
}

/// What a rule with a condition jalin cannot evaluate does, by action (fail closed).
fn fail_closed(action: AuthzAction, rule: usize) -> String {
    match action {
        AuthzAction::Allow => format!(
            "rules[{rule}] never matches, so it allows nothing (the policy's other rules still apply)"
        ),
        AuthzAction::Deny => format!(
            "the condition is treated as holding, so rules[{rule}] denies every request its other fields match"
        ),
        AuthzAction::Custom => format!(
            "the condition is treated as holding, so rules[{rule}] sends every request its other fields match to the external authorizer"
        ),
        AuthzAction::Audit => format!("rules[{rule}] never matches, so it audits nothing"),
    }
}

fn source(s: &Source, path: &str, sink: &mut Sink<'_>) {
    let sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let other = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    if sa && other {
        let field = if s.service_accounts.is_empty() {
            "notServiceAccounts"
        } else {
            "serviceAccounts"
        };
        sink.error(
            &format!("{path}.{field}"),
            "`serviceAccounts` cannot be combined with `principals` or `namespaces` (or their `not` forms); use one or the other",
        );
    }
    for (field, list) in [
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
    ] {
        for (k, v) in list.iter().enumerate() {
            let parts: Vec<&str> = v.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty() || p.contains('*')) {
                sink.error(
                    &format!("{path}.{field}[{k}]"),
                    format!("`{v}` is not `<namespace>/<service-account>`"),
                );
            }
        }
    }
    for (field, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (k, v) in list.iter().enumerate() {
            if !is_ip_or_cidr(v) {
                sink.error(&format!("{path}.{field}[{k}]"), format!("`{v}` is not an IP address or CIDR block; expected e.g. `10.1.2.3` or `10.0.0.0/16`"));
            }
        }
    }
}

fn operation(o: &Operation, path: &str, sink: &mut Sink<'_>) {
    for (field, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
        for (k, v) in list.iter().enumerate() {
            if !is_port_string(v) {
                sink.error(
                    &format!("{path}.{field}[{k}]"),
                    format!("`{v}` is not a port; expected a number in [0, 65535]"),
                );
            }
        }
    }
    for (field, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (k, v) in list.iter().enumerate() {
            if let Err(msg) = check_path_template(v) {
                sink.error(&format!("{path}.{field}[{k}]"), msg);
            }
        }
    }
    for (field, list) in [("methods", &o.methods), ("notMethods", &o.not_methods)] {
        for (k, v) in list.iter().enumerate() {
            if v.is_empty() || v.contains(char::is_whitespace) {
                sink.error(
                    &format!("{path}.{field}[{k}]"),
                    format!("`{v}` is not an HTTP method"),
                );
            }
        }
    }
}

fn condition_values(
    kind: ConditionKey,
    key: &str,
    values: &[String],
    not_values: &[String],
    path: &str,
    sink: &mut Sink<'_>,
) {
    let all = values
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("{path}.values[{i}]"), v))
        .chain(
            not_values
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}.notValues[{i}]"), v)),
        );
    match kind {
        ConditionKey::Ip => {
            for (p, v) in all {
                if !is_ip_or_cidr(v) {
                    sink.error(&p, format!("`{v}` is not an IP address or CIDR block (key `{key}`)"));
                }
            }
        }
        ConditionKey::Port => {
            for (p, v) in all {
                if !is_port_string(v) {
                    sink.error(&p, format!("`{v}` is not a port; `destination.port` takes numbers in [0, 65535]"));
                }
            }
        }
        ConditionKey::Fingerprint => {
            sink.push(
                Severity::Warning,
                &format!("{path}.key"),
                format!("`{CERT_FINGERPRINT_KEY}` is a jalin attribute, not an Istio one: the hex SHA-256 of the verified peer certificate; `*` means any verified peer certificate"),
            );
            for (p, v) in all {
                if !is_fingerprint(v) {
                    sink.error(&p, format!("`{v}` is not a certificate fingerprint; expected `*` or 64 hex digits (SHA-256)"));
                }
            }
        }
        ConditionKey::EnvoyMetadata => sink.error(
            &format!("{path}.key"),
            format!("`{key}` reads Envoy filter metadata, which jalin (no Envoy) does not produce; the condition could never be evaluated: remove it"),
        ),
        ConditionKey::Http | ConditionKey::Any => {}
    }
}

/// PeerAuthentication.
pub fn peer_authentication(spec: &PeerAuthenticationSpec, sink: &mut Sink<'_>) {
    if !spec.port_level_mtls.is_empty() && spec.selector.is_none() {
        let mode = spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default();
        let redundant =
            mode != MtlsMode::Unset && spec.port_level_mtls.values().all(|m| m.mode == mode);
        if redundant {
            sink.push(
                Severity::Warning,
                "spec.portLevelMtls",
                format!("`portLevelMtls` needs a `selector` (Istio rejects it on a namespace- or mesh-wide policy); every port here repeats the policy's mode {}, so it is ignored with no change in effect", format!("{mode:?}").to_uppercase()),
            );
        } else {
            sink.error("spec.portLevelMtls", "`portLevelMtls` needs a `selector`: port-level modes apply only to selected workloads");
        }
    }
    for port in spec.port_level_mtls.keys() {
        if !(1..=65535).contains(port) {
            sink.error(
                &format!("spec.portLevelMtls.{port}"),
                format!("`{port}` is not a port; expected a number in [1, 65535]"),
            );
        }
    }
    targets(spec.selector.as_ref(), None, &[], sink);
}

/// RequestAuthentication.
pub fn request_authentication(spec: &RequestAuthenticationSpec, sink: &mut Sink<'_>) {
    targets(
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        sink,
    );
    for (i, r) in spec.jwt_rules.iter().enumerate() {
        let p = format!("spec.jwtRules[{i}]");
        if r.issuer.is_empty() {
            sink.error(&format!("{p}.issuer"), "`issuer` is required");
        }
        if let Some(uri) = &r.jwks_uri
            && !(uri.starts_with("https://")
                || uri.starts_with("http://")
                || uri.starts_with("file://"))
        {
            sink.error(
                &format!("{p}.jwksUri"),
                format!("`{uri}` is not an http(s):// or file:// URL"),
            );
        }
        for (j, h) in r.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                sink.error(
                    &format!("{p}.fromHeaders[{j}].name"),
                    "a header name is required",
                );
            }
        }
        for (j, c) in r.output_claim_to_headers.iter().enumerate() {
            if c.header.is_empty() || c.claim.is_empty() {
                sink.error(
                    &format!("{p}.outputClaimToHeaders[{j}]"),
                    "`header` and `claim` are both required",
                );
            }
        }
        if let Some(t) = &r.timeout
            && crate::istio::values::duration_ms(t).is_none()
        {
            sink.error(
                &format!("{p}.timeout"),
                format!("`{t}` is not {}", crate::istio::values::DURATION_HINT),
            );
        }
    }
}
