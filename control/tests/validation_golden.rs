//! Golden tests: the exact text (file:line: Kind/ns/name: path: message) of each validation rule.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use jalin_control::istio::{Loaded, Severity, load_str};

/// Errors of one document, rendered exactly as `jalin validate` prints them.
fn errors(body: &str) -> Vec<String> {
    let mut out = Loaded::default();
    load_str("t.yaml", body, &mut out);
    out.findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.to_string())
        .collect()
}

fn ap(spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{spec}"
    )
}

fn one(body: &str) -> String {
    let e = errors(body);
    assert_eq!(e.len(), 1, "expected exactly one error, got {e:#?}");
    e[0].clone()
}

#[test]
fn service_accounts_with_principals() {
    let e = one(&ap(
        "  rules:\n  - from:\n    - source:\n        principals: [a]\n        serviceAccounts: [ns/sa]\n",
    ));
    assert_eq!(
        e,
        "t.yaml:11: AuthorizationPolicy/ns/p: spec.rules[0].from[0].source.serviceAccounts: `serviceAccounts` cannot be combined with `principals` or `namespaces` (or their `not` forms); use one or the other"
    );
}

#[test]
fn selector_and_target_refs() {
    let e = errors(&ap(
        "  selector:\n    matchLabels: {app: a}\n  targetRefs:\n  - kind: Gateway\n    name: gw\n",
    ));
    assert_eq!(
        e[0],
        "t.yaml:9: AuthorizationPolicy/ns/p: spec.targetRefs: `selector` and `targetRef`/`targetRefs` are mutually exclusive; use one of them"
    );
}

#[test]
fn port_level_mtls_needs_selector() {
    let body = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: pa\n  namespace: ns\nspec:\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: PERMISSIVE\n";
    assert_eq!(
        one(body),
        "t.yaml:9: PeerAuthentication/ns/pa: spec.portLevelMtls: `portLevelMtls` needs a `selector`: port-level modes apply only to selected workloads"
    );
}

#[test]
fn path_template_double_star_last() {
    let e = one(&ap(
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/a/{**}/b\"]\n",
    ));
    assert_eq!(
        e,
        "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].to[0].operation.paths[0]: `/a/{**}/b`: `{**}` must be the last segment of the path; expected e.g. `/api/{*}/items/{**}`"
    );
    let e = one(&ap(
        "  rules:\n  - to:\n    - operation:\n        paths: [\"/a/{*}/b*\"]\n",
    ));
    assert!(e.ends_with("`/a/{*}/b*` mixes `*` with `{*}`/`{**}` templates; use either a prefix/suffix `*` or path templates"), "{e}");
}

#[test]
fn custom_needs_provider_and_provider_needs_custom() {
    assert_eq!(
        one(&ap("  action: CUSTOM\n  rules:\n  - {}\n")),
        "t.yaml:7: AuthorizationPolicy/ns/p: spec.action: the CUSTOM action needs `provider.name`, the name of an extension authorizer"
    );
    assert_eq!(
        one(&ap("  action: AUDIT\n  provider:\n    name: ext\n")),
        "t.yaml:8: AuthorizationPolicy/ns/p: spec.provider: `provider` is only allowed with the CUSTOM action, not Audit; remove it or set `action: CUSTOM`"
    );
}

#[test]
fn custom_with_dry_run() {
    let body = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: ns\n  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  action: CUSTOM\n  provider: {name: ext}\n";
    assert_eq!(
        one(body),
        "t.yaml:7: AuthorizationPolicy/ns/p: metadata.annotations[\"istio.io/dry-run\"]: dry-run is not supported for the CUSTOM action (the external authorizer is always called); remove the annotation"
    );
}

#[test]
fn unknown_when_key() {
    let e = one(&ap(
        "  rules:\n  - when:\n    - key: custom.case_active\n      values: [\"true\"]\n",
    ));
    assert!(e.starts_with("t.yaml:9: AuthorizationPolicy/ns/p: spec.rules[0].when[0].key: unknown condition key `custom.case_active`; expected one of request.headers[<name>], source.ip,"), "{e}");
}

#[test]
fn invalid_ip_and_port() {
    let e = errors(&ap(
        "  rules:\n  - from:\n    - source:\n        ipBlocks: [\"10.0.0.0/33\"]\n    to:\n    - operation:\n        ports: [\"70000\"]\n",
    ));
    assert_eq!(
        e,
        [
            "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].from[0].source.ipBlocks[0]: `10.0.0.0/33` is not an IP address or CIDR block; expected e.g. `10.1.2.3` or `10.0.0.0/16`",
            "t.yaml:13: AuthorizationPolicy/ns/p: spec.rules[0].to[0].operation.ports[0]: `70000` is not a port; expected a number in [0, 65535]",
        ]
    );
}

#[test]
fn unknown_field_names_its_path() {
    let e = one(&ap(
        "  rules:\n  - from:\n    - source:\n        principal: [a]\n",
    ));
    assert!(e.starts_with("t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].from[0].source.principal: unknown field `principal`; expected one of `principals`"), "{e}");
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata:\n  name: v\n  namespace: ns\nspec:\n  hosts: [svc]\n  http:\n{http}"
    )
}

#[test]
fn regex_and_weights_and_durations() {
    let e = one(&vs(
        "  - match:\n    - uri:\n        regex: \"(a\"\n    route:\n    - destination: {host: svc}\n",
    ));
    assert_eq!(
        e,
        "t.yaml:11: VirtualService/ns/v: spec.http[0].match[0].uri.regex: `(a` is not a valid RE2 regular expression: unclosed group"
    );
    let e = one(&vs(
        "  - route:\n    - destination: {host: a}\n      weight: 60\n    - destination: {host: b}\n      weight: 30\n",
    ));
    assert_eq!(
        e,
        "t.yaml:9: VirtualService/ns/v: spec.http[0].route: the weights of the 2 destinations add up to 90; they must add up to 100"
    );
    let e = one(&vs(
        "  - route:\n    - destination: {host: a}\n    timeout: 10 seconds\n",
    ));
    assert_eq!(
        e,
        "t.yaml:11: VirtualService/ns/v: spec.http[0].timeout: `10 seconds` is not a duration such as `500ms`, `10s`, `1m` or `1h30m`"
    );
}

#[test]
fn destination_rule_bounds_and_conflicts() {
    let body = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\n  namespace: ns\nspec:\n  host: svc\n  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 150\n      consecutiveErrors: 2\n      consecutive5xxErrors: 3\n";
    assert_eq!(
        one(body),
        "t.yaml:11: DestinationRule/ns/d: spec.trafficPolicy.outlierDetection.consecutiveErrors: both `consecutiveErrors` and `consecutive5xxErrors` are set; `consecutiveErrors` is deprecated: keep only `consecutive5xxErrors`"
    );
    let bounds = body.replace("      consecutiveErrors: 2\n", "");
    assert_eq!(
        one(&bounds),
        "t.yaml:10: DestinationRule/ns/d: spec.trafficPolicy.outlierDetection.maxEjectionPercent: `150` is not a percentage; expected 0 to 100"
    );
}

#[test]
fn wrong_api_version() {
    let body = "apiVersion: security.istio.io/v1alpha3\nkind: AuthorizationPolicy\nmetadata:\n  name: p\nspec: {}\n";
    assert_eq!(
        one(body),
        "t.yaml:1: AuthorizationPolicy/default/p: apiVersion: `security.istio.io/v1alpha3` is not a version of AuthorizationPolicy; expected security.istio.io/v1beta1, security.istio.io/v1"
    );
}

#[test]
fn yaml_syntax_error_has_a_line() {
    let e = one("apiVersion: v1\nkind: [\n");
    assert!(e.starts_with("t.yaml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
}

#[test]
fn lines_are_per_document_in_multi_document_files() {
    let body = format!(
        "{}---\n{}",
        ap("  rules:\n  - {}\n"),
        ap("  rules:\n  - when:\n    - key: source.ip\n      values: [nope]\n")
    );
    let e = one(&body);
    assert_eq!(
        e,
        "t.yaml:19: AuthorizationPolicy/ns/p: spec.rules[0].when[0].values[0]: `nope` is not an IP address or CIDR block (key `source.ip`)"
    );
}
