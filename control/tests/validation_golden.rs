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

/// One document per rule, and the exact error it must produce.
#[test]
fn golden_table() {
    let pa = |spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\n  namespace: ns\nspec:\n{spec}"
        )
    };
    let ra = |spec: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: ra\n  namespace: ns\nspec:\n{spec}"
        )
    };
    let se = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\n  namespace: ns\nspec:\n{spec}"
        )
    };
    let sc = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: sc\n  namespace: ns\nspec:\n{spec}"
        )
    };
    let gw = |spec: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n  namespace: ns\nspec:\n{spec}"
        )
    };
    let tm = |spec: &str| {
        format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\n  namespace: ns\nspec:\n{spec}"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (ap("  rules:\n  - from: []\n"), "t.yaml:8: AuthorizationPolicy/ns/p: spec.rules[0].from: `from` must not be empty; omit it to match any source"),
        (ap("  rules:\n  - from:\n    - source: {}\n"), "t.yaml:9: AuthorizationPolicy/ns/p: spec.rules[0].from[0].source: `source` must set at least one field"),
        (ap("  rules:\n  - to:\n    - {}\n"), "t.yaml:9: AuthorizationPolicy/ns/p: spec.rules[0].to[0]: `operation` is required in each `to` entry"),
        (ap("  rules:\n  - when:\n    - key: source.ip\n"), "t.yaml:9: AuthorizationPolicy/ns/p: spec.rules[0].when[0].key: condition `source.ip` needs `values` or `notValues`"),
        (ap("  rules:\n  - when:\n    - key: request.headers\n      values: [a]\n"), "t.yaml:9: AuthorizationPolicy/ns/p: spec.rules[0].when[0].key: `request.headers` needs a header name in brackets, e.g. `request.headers[x-token]`"),
        (ap("  rules:\n  - when:\n    - key: destination.port\n      values: [\"http\"]\n"), "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].when[0].values[0]: `http` is not a port; `destination.port` takes numbers in [0, 65535]"),
        (ap("  rules:\n  - when:\n    - key: source.certificate_fingerprint\n      values: [\"abc\"]\n"), "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].when[0].values[0]: `abc` is not a certificate fingerprint; expected `*` or 64 hex digits (SHA-256)"),
        (ap("  rules:\n  - when:\n    - key: experimental.envoy.filters.network.mysql_proxy[db.table]\n      values: [\"[update]\"]\n"), "t.yaml:9: AuthorizationPolicy/ns/p: spec.rules[0].when[0].key: `experimental.envoy.filters.network.mysql_proxy[db.table]` reads Envoy filter metadata, which jalin (no Envoy) does not produce; the condition could never be evaluated: remove it"),
        (ap("  rules:\n  - from:\n    - source:\n        serviceAccounts: [\"just-a-name\"]\n"), "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].from[0].source.serviceAccounts[0]: `just-a-name` is not `<namespace>/<service-account>`"),
        (ap("  rules:\n  - to:\n    - operation:\n        paths: [\"/a/{id}\"]\n"), "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].to[0].operation.paths[0]: `/a/{id}`: `{id}` is not a path template; a segment is exactly `{*}` (one segment) or `{**}` (the rest of the path)"),
        (ap("  rules:\n  - to:\n    - operation:\n        ports: [8080]\n"), "t.yaml:10: AuthorizationPolicy/ns/p: spec.rules[0].to[0].operation.ports[0]: invalid type: integer `8080`, expected a string; quote the value so YAML reads it as a string (e.g. \"8080\" or \"true\")"),
        (ap("  action: MAYBE\n"), "t.yaml:7: AuthorizationPolicy/ns/p: spec.action: unknown value `MAYBE`; expected one of `ALLOW`, `DENY`, `AUDIT`, `CUSTOM`"),
        (pa("  selector:\n    matchLabels: {app: a}\n  portLevelMtls:\n    70000:\n      mode: STRICT\n"), "t.yaml:10: PeerAuthentication/ns/pa: spec.portLevelMtls.70000: `70000` is not a port; expected a number in [1, 65535]"),
        (pa("  mtls:\n    mode: STRICTER\n"), "t.yaml:8: PeerAuthentication/ns/pa: spec.mtls.mode: unknown value `STRICTER`; expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`"),
        (ra("  jwtRules:\n  - jwksUri: ftp://x\n    issuer: i\n"), "t.yaml:8: RequestAuthentication/ns/ra: spec.jwtRules[0].jwksUri: `ftp://x` is not an http(s):// or file:// URL"),
        (ra("  jwtRules:\n  - jwks: \"{}\"\n"), "t.yaml:8: RequestAuthentication/ns/ra: spec.jwtRules[0].issuer: `issuer` is required"),
        (se("  hosts: [a.example]\n  resolution: STATIC\n"), "t.yaml:8: ServiceEntry/ns/se: spec.resolution: STATIC resolution needs `endpoints` or a `workloadSelector`"),
        (se("  hosts: [a.example]\n  ports:\n  - number: 0\n    protocol: HTTP\n    name: h\n"), "t.yaml:9: ServiceEntry/ns/se: spec.ports[0].number: `0` is not a port; expected 1 to 65535"),
        (se("  hosts: [a.example]\n  addresses: [\"300.1.1.1\"]\n"), "t.yaml:8: ServiceEntry/ns/se: spec.addresses[0]: `300.1.1.1` is not an IP address or CIDR block"),
        (sc("  egress:\n  - hosts: [\"nodash\"]\n"), "t.yaml:8: Sidecar/ns/sc: spec.egress[0].hosts[0]: `nodash` is not `namespace/dnsName` (e.g. `./*` or `istio-system/*`)"),
        (gw("  servers:\n  - port: {number: 443, protocol: HTTPS, name: https}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLEST}\n"), "t.yaml:10: Gateway/ns/gw: spec.servers[0].tls.mode: `SIMPLEST` is not a TLS mode; expected PASSTHROUGH, SIMPLE, MUTUAL, AUTO_PASSTHROUGH, ISTIO_MUTUAL or OPTIONAL_MUTUAL"),
        (tm("  metrics:\n  - overrides:\n    - match: {metric: REQUESTS}\n"), "t.yaml:9: Telemetry/ns/t: spec.metrics[0].overrides[0].match.metric: `REQUESTS` is not a standard metric; expected one of ALL_METRICS, REQUEST_COUNT, REQUEST_DURATION, REQUEST_SIZE, RESPONSE_SIZE, TCP_OPENED_CONNECTIONS, TCP_CLOSED_CONNECTIONS, TCP_SENT_BYTES, TCP_RECEIVED_BYTES, GRPC_REQUEST_MESSAGES, GRPC_RESPONSE_MESSAGES (or use `customMetric`)"),
        (vs("  - route:\n    - destination: {host: a}\n    redirect: {uri: /x}\n"), "t.yaml:9: VirtualService/ns/v: spec.http[0]: `route`, `redirect`, `directResponse` and `delegate` are mutually exclusive"),
        (vs("  - route:\n    - destination: {host: a}\n    retries:\n      attempts: 2\n      retryOn: 5xx,sometimes\n"), "t.yaml:13: VirtualService/ns/v: spec.http[0].retries.retryOn: `sometimes` is not a retry condition; expected a comma-separated list of 5xx, gateway-error, reset, reset-before-request, connect-failure, envoy-ratelimited, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, http3-post-connect-failure, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable or HTTP status codes"),
        (vs("  - match:\n    - headers:\n        x-a: {exact: a, prefix: b}\n    route:\n    - destination: {host: a}\n"), "t.yaml:11: VirtualService/ns/v: spec.http[0].match[0].headers.x-a: set exactly one of `exact`, `prefix` or `regex`"),
        ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v, namespace: ns}\nspec:\n  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {host: a}\n".to_string(), "t.yaml:5: VirtualService/ns/v: spec.hosts[0]: the host `*` is only allowed on VirtualServices bound to gateways (not to `mesh`)"),
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: ns}\nspec:\n  host: a\n  trafficPolicy:\n    circuitBreaker: {interval: 1s}\n    outlierDetection: {interval: 2s}\n".to_string(), "t.yaml:7: DestinationRule/ns/d: spec.trafficPolicy.circuitBreaker: both `circuitBreaker` and `outlierDetection` are set; `circuitBreaker` is not an Istio field: move its fields into `outlierDetection`"),
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: ns}\nspec:\n  host: a\n  trafficPolicy:\n    circuitBreaker:\n      intervall: 1s\n".to_string(), "t.yaml:8: DestinationRule/ns/d: spec.trafficPolicy.circuitBreaker.intervall: unknown field `intervall`; expected one of `splitExternalLocalOriginErrors`, `consecutiveLocalOriginFailures`, `consecutiveGatewayErrors`, `consecutive5xxErrors`, `interval`, `baseEjectionTime`, `maxEjectionPercent`, `minHealthPercent`"),
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: ns}\nspec:\n  host: a\n  subsets:\n  - name: v1\n  - name: v1\n".to_string(), "t.yaml:8: DestinationRule/ns/d: spec.subsets[1].name: subset `v1` is defined twice"),
        ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: ns}\nspec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: 0s}\n".to_string(), "t.yaml:8: DestinationRule/ns/d: spec.trafficPolicy.connectionPool.tcp.connectTimeout: `0s` must be at least 1ms"),
        ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {namespace: ns}\nspec: {}\n".to_string(), "t.yaml:3: AuthorizationPolicy/ns/: metadata: `metadata.name` is required"),
        ("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {}\nextra: 1\n".to_string(), "t.yaml:5: AuthorizationPolicy/default/p: extra: unknown top-level field `extra`; expected apiVersion, kind, metadata, spec"),
    ];
    let mut failures = Vec::new();
    for (body, want) in &cases {
        let got = errors(body);
        if got.len() != 1 || got[0] != *want {
            failures.push(format!("want: {want}\n got: {got:#?}\n"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every prefix of every seed file (cut at each line) and byte-mutated copies parse without a
/// panic: a broken file is an error with a line, never a crash.
#[test]
fn truncated_and_mutated_seeds_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-policies");
    let mut seen = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for cut in 0..=lines.len() {
            let mut out = Loaded::default();
            load_str("t.yaml", &lines[..cut].join("\n"), &mut out);
            seen += 1;
        }
        for (i, _) in text.char_indices().step_by(31) {
            for replacement in ["", ":", "- ", "\"", "{", "]", "\t", "&a ", "*a"] {
                let mut m = text.clone();
                let end = m[i..].chars().next().map(|c| i + c.len_utf8()).unwrap_or(i);
                m.replace_range(i..end, replacement);
                let mut out = Loaded::default();
                load_str("t.yaml", &m, &mut out);
                for f in &out.findings {
                    assert!(!f.message.is_empty());
                }
                seen += 1;
            }
        }
    }
    assert!(seen > 2_000, "{seen}");
}
