//! Acceptance: the seed policies through the real `jalin` binary (validate, import, lint, check)
//! and through the library (exact warnings, skipped kinds, native output).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jalin_control::istio::{Severity, convert, load_paths};

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-policies")
}

fn jalin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args(args)
        .output()
        .expect("run jalin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The seed directory without `compliance-03` (invalid for `validate`: its `when` key is unknown).
fn valid_seeds(dir: &Path) {
    for e in std::fs::read_dir(seeds()).unwrap() {
        let p = e.unwrap().path();
        if !p
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("compliance-03")
        {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn every_seed_resource_imports_except_the_invalid_when_key() {
    let loaded = load_paths(&[seeds()]);
    assert_eq!(loaded.files.len(), 44);
    assert_eq!(loaded.resources.len(), 32, "valid Istio resources");
    let errors: Vec<String> = loaded.errors().map(|f| f.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("compliance-03-authorizationpolicy-case-coordination-access.yaml:19: AuthorizationPolicy/inter-agency/case-coordination-access: spec.rules[2].when[0].key: unknown condition key `custom.case_active`"), "{}", errors[0]);

    // Skipped: exactly the non-Istio kinds.
    let mut skipped: Vec<String> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Skipped)
        .map(|f| {
            f.resource
                .clone()
                .unwrap()
                .split('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    skipped.sort();
    assert_eq!(
        skipped,
        [
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "ConfigMap",
            "CronJob",
            "PrometheusRule",
            "Rollout",
            "ValidatingAdmissionWebhook"
        ]
    );

    // Warnings: only the documented mappings.
    let documented = [
        "`circuitBreaker` is not an Istio field; mapped to `outlierDetection`",
        "`consecutiveErrors` is deprecated; mapped to `consecutive5xxErrors`",
        "`LEAST_CONN` is deprecated; mapped to `LEAST_REQUEST`",
        "is an outlier-detection field, not a connection-pool one;",
        "`source.certificate_fingerprint` is a jalin attribute",
        "`keepAlive` is not an Istio field; mapped to `tcpKeepalive`",
        "`portLevelSettings` is not a field of the DestinationRule spec; mapped to `spec.trafficPolicy.portLevelSettings`",
        "`portLevelMtls` needs a `selector` (Istio rejects it on a namespace- or mesh-wide policy); every port here repeats",
        "a tag override is `{operation, value}`; the string shorthand is mapped to `{operation: UPSERT, value: ...}`",
        "`overrides` is not an Istio access-logging field;",
    ];
    let warnings: Vec<_> = loaded
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .collect();
    assert_eq!(warnings.len(), 44);
    for w in &warnings {
        assert!(
            documented.iter().any(|d| w.message.contains(d)),
            "undocumented warning: {w}"
        );
        assert!(w.line > 0 && !w.path.is_empty(), "{w}");
    }
    for d in documented {
        assert!(
            warnings.iter().any(|w| w.message.contains(d)),
            "mapping never exercised by the seeds: {d}"
        );
    }

    // Unsupported: each with a reason.
    let mut findings = loaded.findings.clone();
    let native = convert::convert(&loaded.resources, &mut findings);
    let unsupported: Vec<_> = findings
        .iter()
        .filter(|f| f.severity == Severity::Unsupported)
        .collect();
    assert_eq!(unsupported.len(), 3, "{unsupported:#?}");
    for u in unsupported {
        assert!(
            u.message.contains("FILTER_STATE(wasm.")
                && u.message
                    .contains("which jalin (no Envoy, no Wasm) does not have"),
            "{u}"
        );
    }
    assert_eq!(native.authorization_policies.len(), 10);
    assert_eq!(native.peer_authentications.len(), 7);
    assert_eq!(native.destination_policies.len(), 6);
    assert_eq!(native.routes.len(), 5);
    assert_eq!(native.telemetry.len(), 3);
    assert_eq!(native.service_entries.len(), 1);
}

#[test]
fn seed_mappings_reach_the_native_model() {
    let loaded = load_paths(&[seeds()]);
    let mut f = Vec::new();
    let native = convert::convert(&loaded.resources, &mut f);
    let dp = |name: &str| {
        native
            .destination_policies
            .iter()
            .find(|d| d.meta.name == name)
            .unwrap()
    };
    use jalin_xds::model::traffic::LoadBalancer;
    let failover = dp("emergency-failover-policy");
    assert_eq!(
        failover.traffic_policy.load_balancer,
        LoadBalancer::LeastRequest
    );
    assert_eq!(
        failover
            .traffic_policy
            .outlier_detection
            .as_ref()
            .unwrap()
            .consecutive_5xx_errors,
        Some(100)
    );
    // Subsets merge field by field: the subset's pool, the host's outlier detection.
    let critical = &failover.subsets[0];
    assert_eq!(critical.traffic_policy.connection_pool.max_connections, 500);
    assert_eq!(
        critical
            .traffic_policy
            .outlier_detection
            .as_ref()
            .unwrap()
            .max_ejection_percent,
        0
    );
    let ft = dp("child-services-fault-tolerance");
    let od = ft.traffic_policy.outlier_detection.as_ref().unwrap();
    assert_eq!(
        (
            od.consecutive_5xx_errors,
            od.consecutive_gateway_errors,
            od.interval_ms
        ),
        (Some(2), Some(3), 10_000)
    );
    assert_eq!(
        ft.traffic_policy
            .connection_pool
            .tcp_keepalive
            .as_ref()
            .unwrap()
            .time_ms,
        Some(7_200_000)
    );
    let over = dp("emergency-circuit-breaker-override");
    let p8080 = &over.port_level[&8080];
    assert_eq!(
        p8080
            .outlier_detection
            .as_ref()
            .unwrap()
            .consecutive_5xx_errors,
        Some(100)
    );
    assert_eq!(p8080.outlier_detection.as_ref().unwrap().interval_ms, 500);
    assert_eq!(p8080.connection_pool.max_connections, 1000);
    let ap = native
        .authorization_policies
        .iter()
        .find(|a| a.meta.name == "child-profile-access-policy")
        .unwrap();
    assert_eq!(ap.rules[0].when[0].key, "source.certificate_fingerprint");
    assert_eq!(ap.meta.source.as_ref().unwrap().line, 1);
    let pa = native
        .peer_authentications
        .iter()
        .find(|p| p.meta.name == "child-data-mtls-strict")
        .unwrap();
    assert!(
        pa.port_level.is_empty(),
        "redundant namespace-wide port levels are dropped"
    );
}

#[test]
fn validate_exit_codes_and_json() {
    let o = jalin(&["validate", seeds().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "compliance-03 is invalid");
    assert!(stdout(&o).lines().any(|l| l.ends_with("spec.rules[2].when[0].key: unknown condition key `custom.case_active`; expected one of request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni, or jalin's source.certificate_fingerprint")));
    let dir = tempfile::tempdir().unwrap();
    valid_seeds(dir.path());
    let o = jalin(&["validate", "--format", "json", dir.path().to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["resources"], 32);
    let o = jalin(&["validate", "/nonexistent/path.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("/nonexistent/path.yaml:0: no such file or directory"));
}

#[test]
fn import_writes_native_config_and_report() {
    let src = tempfile::tempdir().unwrap();
    valid_seeds(src.path());
    let out = tempfile::tempdir().unwrap();
    let o = jalin(&[
        "import",
        src.path().to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report = std::fs::read_to_string(out.path().join("import-report.txt")).unwrap();
    assert_eq!(
        report
            .lines()
            .filter(|l| l.starts_with("imported: "))
            .count(),
        32
    );
    assert_eq!(
        report
            .lines()
            .filter(|l| l.starts_with("skipped: "))
            .count(),
        11
    );
    assert!(report.contains("policies-34-destinationrule-emergency-failover-policy.yaml:17: DestinationRule/emergency/emergency-failover-policy: spec.trafficPolicy.loadBalancer.simple: `LEAST_CONN` is deprecated; mapped to `LEAST_REQUEST`"), "{report}");
    // The native JSON reads back into the xds model types.
    let native: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("native.json")).unwrap()).unwrap();
    let aps: Vec<jalin_xds::model::authz::AuthorizationPolicy> =
        serde_json::from_value(native["authorization_policies"].clone()).unwrap();
    assert_eq!(aps.len(), 10);
    let pas: Vec<jalin_xds::model::peer_auth::PeerAuthentication> =
        serde_json::from_value(native["peer_authentications"].clone()).unwrap();
    assert_eq!(pas.len(), 7);
    assert!(out.path().join("native.yaml").exists());

    // With an invalid resource nothing native is written, unless --keep-going.
    let bad = tempfile::tempdir().unwrap();
    valid_seeds(bad.path());
    std::fs::write(
        bad.path().join("zz-bad.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: bad, namespace: x}\nspec:\n  rules:\n  - when:\n    - key: request.headers\n      values: [a]\n",
    )
    .unwrap();
    let out2 = tempfile::tempdir().unwrap();
    let o = jalin(&[
        "import",
        bad.path().to_str().unwrap(),
        "-o",
        out2.path().to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a malformed known key stays an error"
    );
    assert!(stdout(&o).contains("zz-bad.yaml:7: AuthorizationPolicy/x/bad: spec.rules[0].when[0].key: `request.headers` needs a header name in brackets"), "{}", stdout(&o));
    assert!(!out2.path().join("native.json").exists());
    assert!(out2.path().join("import-report.txt").exists());
    let o = jalin(&[
        "import",
        "--keep-going",
        bad.path().to_str().unwrap(),
        "-o",
        out2.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out2.path().join("native.json").exists());
}

/// The whole seed directory imports: compliance-03's unknown `when` key is `unsupported:`, and
/// its rule is compiled fail-closed (marked `unknown_key`, so the ALLOW rule grants nothing).
#[test]
fn import_takes_every_seed_with_the_unknown_when_key_failing_closed() {
    let out = tempfile::tempdir().unwrap();
    let o = jalin(&[
        "import",
        seeds().to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let report = std::fs::read_to_string(out.path().join("import-report.txt")).unwrap();
    assert_eq!(
        report
            .lines()
            .filter(|l| l.starts_with("imported: "))
            .count(),
        33,
        "every Istio resource of the seeds"
    );
    assert!(!report.lines().any(|l| l.starts_with("error")), "{report}");
    let line = report
        .lines()
        .find(|l| l.contains("custom.case_active"))
        .unwrap();
    assert!(line.starts_with("unsupported: "), "{line}");
    assert!(line.contains("compliance-03-authorizationpolicy-case-coordination-access.yaml:19: AuthorizationPolicy/inter-agency/case-coordination-access: spec.rules[2].when[0].key: unknown condition key `custom.case_active`"), "{line}");
    assert!(line.contains("imported fail-closed: rules[2] never matches, so it allows nothing (the policy's other rules still apply); `jalin validate` rejects it"), "{line}");
    // Every unsupported finding carries a reason.
    for l in report.lines().filter(|l| l.starts_with("unsupported: ")) {
        assert!(l.rsplit(": ").next().unwrap().len() > 20, "{l}");
    }

    let native: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("native.json")).unwrap()).unwrap();
    let aps: Vec<jalin_xds::model::authz::AuthorizationPolicy> =
        serde_json::from_value(native["authorization_policies"].clone()).unwrap();
    assert_eq!(aps.len(), 11);
    let ap = aps
        .iter()
        .find(|a| a.meta.name == "case-coordination-access")
        .unwrap();
    assert_eq!(ap.rules.len(), 3, "rule indices are kept");
    assert!(ap.rules[2].when[0].unknown_key);
    assert_eq!(ap.rules[2].when[0].key, "custom.case_active");
    // Only that condition is marked.
    let marked = aps
        .iter()
        .flat_map(|a| &a.rules)
        .flat_map(|r| &r.when)
        .filter(|c| c.unknown_key)
        .count();
    assert_eq!(marked, 1);
}

#[test]
fn unknown_when_key_in_deny_and_custom_policies_fails_closed_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.yaml"),
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: d, namespace: x}\nspec:\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [/a]}}]\n    when:\n    - key: custom.flag\n      values: [x]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: c, namespace: x}\nspec:\n  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - when:\n    - key: experimental.envoy.filters.a.b[c]\n      values: [x]\n",
    )
    .unwrap();
    let o = jalin(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "validate keeps Istio's rule");
    let out = tempfile::tempdir().unwrap();
    let o = jalin(&[
        "import",
        dir.path().to_str().unwrap(),
        "-o",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("p.yaml:9: AuthorizationPolicy/x/d: spec.rules[0].when[0].key: unknown condition key `custom.flag`"), "{text}");
    assert!(text.contains("the condition is treated as holding, so rules[0] denies every request its other fields match"), "{text}");
    assert!(text.contains("p.yaml:20: AuthorizationPolicy/x/c: spec.rules[0].when[0].key: `experimental.envoy.filters.a.b[c]` reads Envoy filter metadata"), "{text}");
    assert!(
        text.contains(
            "rules[0] sends every request its other fields match to the external authorizer"
        ),
        "{text}"
    );
}

#[test]
fn lint_flags_both_separate_rule_seeds() {
    let o = jalin(&["lint", seeds().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.contains("compliance-00-authorizationpolicy-ministry-analytics-access.yaml:8: AuthorizationPolicy/government-services/ministry-analytics-access: spec.rules: rules[0] has only `from`, rules[1] has only `to`: Istio ORs rules")), "{out}");
    assert!(lines.iter().any(|l| l.contains("compliance-03-authorizationpolicy-case-coordination-access.yaml:8: AuthorizationPolicy/inter-agency/case-coordination-access: spec.rules: rules[0] has only `from`, rules[1] has only `to`, rules[2] has only `when`")), "{out}");
    assert!(lines.iter().any(|l| l.contains("compliance-03-authorizationpolicy-case-coordination-access.yaml:18: AuthorizationPolicy/inter-agency/case-coordination-access: spec.rules[2]: this rule has only `when` (`custom.case_active`), which checks neither the caller nor the request: whenever it holds, the policy allows ANY request from ANY source to ANY path")), "{out}");
    // ... and the unknown key of the same policy, as an error.
    assert!(lines.iter().any(|l| l.contains("compliance-03-authorizationpolicy-case-coordination-access.yaml:19: AuthorizationPolicy/inter-agency/case-coordination-access: spec.rules[2].when[0].key: unknown condition key `custom.case_active`")), "{out}");
    assert!(lines.iter().any(|l| l.contains("spec.subsets[1].name: no VirtualService route sends traffic to subset `emergency` of `emergency-response-service`")), "{out}");
    // The mesh-wide ALLOW in the root namespace makes the whole mesh deny-by-default.
    let mesh_wide: Vec<&&str> = lines
        .iter()
        .filter(|l| {
            l.contains("lint/mesh-wide-allow")
                || l.contains("applies to every workload in the mesh")
        })
        .collect();
    assert_eq!(mesh_wide.len(), 1, "{out}");
    assert!(mesh_wide[0].contains("policies-28-authorizationpolicy-security-monitoring-policy.yaml:6: AuthorizationPolicy/istio-system/security-monitoring-policy: spec: this ALLOW policy has no selector and is in the root namespace `istio-system`"), "{out}");
    assert!(
        mesh_wide[0].contains(
            "every workload in every namespace now denies whatever these rules do not allow"
        ),
        "{out}"
    );
    assert!(mesh_wide[0].contains("Add a `selector`"), "{out}");
    // No other seed policy is flagged as separate rules.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains("Istio ORs rules"))
            .count(),
        2
    );
}

#[test]
fn lint_rules_on_crafted_policies() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yaml");
    std::fs::write(&f, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-get, namespace: shop}\nspec:\n  action: DENY\n  selector: {matchLabels: {app: cart}}\n  rules:\n  - to:\n    - operation:\n        methods: [DELETE]\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: never, namespace: shop}\nspec:\n  selector: {matchLabels: {app: nosuch}}\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/a/sa/x\"]\n        namespaces: [b]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v1, namespace: shop}\nspec:\n  hosts: [cart]\n  http:\n  - route:\n    - destination: {host: cart}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v2, namespace: shop}\nspec:\n  hosts: [cart.shop.svc.cluster.local]\n  http:\n  - route:\n    - destination: {host: cart}\n").unwrap();
    let w = dir.path().join("workloads.yaml");
    std::fs::write(&w, "- namespace: shop\n  labels: {app: cart}\n").unwrap();
    let o = jalin(&[
        "lint",
        "--workloads",
        w.to_str().unwrap(),
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let file = f.display().to_string();
    assert!(out.contains(&format!("{file}:8: AuthorizationPolicy/shop/deny-get: spec.rules[0]: this DENY rule uses HTTP-only attributes")), "{out}");
    assert!(out.contains(&format!("{file}:17: AuthorizationPolicy/shop/never: spec.rules: this ALLOW policy can never match: rules[0].from[0].source: no principal is in one of the namespaces [\"b\"]")), "{out}");
    assert!(out.contains(&format!("{file}:16: AuthorizationPolicy/shop/never: spec.selector: no known workload in namespace `shop` has the labels")), "{out}");
    assert!(out.contains(&format!("{file}:27: VirtualService/shop/v1: spec.hosts[0]: host `cart` is also routed by VirtualService/shop/v2")), "{out}");
    // A clean file lints clean.
    let clean = dir.path().join("clean.yaml");
    std::fs::write(&clean, "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ok, namespace: shop}\nspec:\n  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/shop/sa/web\"]}\n    to:\n    - operation: {methods: [GET]}\n").unwrap();
    let o = jalin(&["lint", clean.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn check_rules_from_the_seed_configmap_and_bare_yaml() {
    let rules = seeds().join("policies-36-configmap-child-services-policy-rules.yaml");
    let src = tempfile::tempdir().unwrap();
    valid_seeds(src.path());
    let o = jalin(&[
        "check",
        "--rules",
        rules.to_str().unwrap(),
        src.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    let flagged: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("rule `emergency-services-high-availability`"))
        .collect();
    assert_eq!(flagged.len(), 3, "{out}");
    assert!(flagged[0].contains("policies-33-destinationrule-emergency-circuit-breaker-override.yaml:14: DestinationRule/emergency/emergency-circuit-breaker-override: spec.trafficPolicy.circuitBreaker.minHealthPercent: rule `emergency-services-high-availability`"), "{out}");
    assert!(flagged[0].ends_with("policies-36-configmap-child-services-policy-rules.yaml:22): `minHealthPercent` is 0; required at least 90"), "{out}");
    assert!(
        !out.contains("child-services-mtls-required"),
        "child-services is STRICT: {out}"
    );
    assert!(
        !out.contains("child-services-authorization-required"),
        "{out}"
    );

    // Bare rules: a namespace without STRICT mTLS and without policies.
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("rules.yaml");
    std::fs::write(&bare, "rules:\n- name: media-mtls\n  selector: {namespace: media}\n  required: {mtls: STRICT}\n- name: media-authz\n  selector: {namespace: media}\n  required: {authorizationPolicy: true}\n").unwrap();
    let pa = dir.path().join("pa.yaml");
    std::fs::write(&pa, "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: m, namespace: media}\nspec:\n  mtls: {mode: PERMISSIVE}\n").unwrap();
    let o = jalin(&[
        "check",
        "--rules",
        bare.to_str().unwrap(),
        pa.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains(&format!("{}:5: PeerAuthentication/media/m: spec.mtls.mode: rule `media-mtls` ({}:2): namespace `media` mode is PERMISSIVE, required STRICT", pa.display(), bare.display())), "{out}");
    assert!(
        out.contains(&format!(
            "{}:5: rule `media-authz`: namespace `media` has no AuthorizationPolicy",
            bare.display()
        )),
        "{out}"
    );
    // An unknown requirement is an error naming the field.
    std::fs::write(
        &bare,
        "rules:\n- name: x\n  selector: {namespace: media}\n  required: {mtlz: STRICT}\n",
    )
    .unwrap();
    let o = jalin(&[
        "check",
        "--rules",
        bare.to_str().unwrap(),
        pa.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("rules[0].required"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn jwt_rules_need_a_request_authentication() {
    use jalin_control::istio::{Loaded, load_str};
    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: jwt, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart}}\n  rules:\n  - from:\n    - source: {requestPrincipals: [\"issuer/*\"]}\n";
    let mut loaded = Loaded::default();
    load_str("p.yaml", policy, &mut loaded);
    let found: Vec<String> = jalin_control::lint::lint(&loaded, &[])
        .iter()
        .map(|f| f.to_string())
        .collect();
    assert_eq!(
        found,
        [
            "p.yaml:7: AuthorizationPolicy/shop/jwt: spec.rules[0]: this rule matches on JWT attributes, but no RequestAuthentication in `shop` (or `istio-system`) covers these workloads, so no token is validated and the rule never matches; add a RequestAuthentication"
        ]
    );
    load_str(
        "ra.yaml",
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: ra, namespace: shop}\nspec:\n  jwtRules:\n  - issuer: issuer\n    jwksUri: https://issuer/jwks\n",
        &mut loaded,
    );
    assert!(jalin_control::lint::lint(&loaded, &[]).is_empty());
}

#[test]
fn only_unselected_allow_policies_of_the_root_namespace_are_mesh_wide() {
    use jalin_control::istio::{Loaded, load_str};
    let policy = |ns: &str, extra: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec:\n{extra}  rules:\n  - from:\n    - source: {{principals: [\"cluster.local/ns/a/sa/b\"]}}\n"
        )
    };
    let codes = |body: &str| {
        let mut loaded = Loaded::default();
        load_str("p.yaml", body, &mut loaded);
        jalin_control::lint::lint(&loaded, &[])
            .into_iter()
            .filter_map(|f| f.code)
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(&policy("istio-system", "")), ["lint/mesh-wide-allow"]);
    assert_eq!(
        codes(&policy("istio-system", "  selector: {}\n")),
        ["lint/mesh-wide-allow"],
        "an empty selector selects every workload too"
    );
    assert!(
        codes(&policy(
            "istio-system",
            "  selector: {matchLabels: {app: gw}}\n"
        ))
        .is_empty()
    );
    assert!(codes(&policy("istio-system", "  action: DENY\n")).is_empty());
    assert!(
        codes(&policy("shop", "")).is_empty(),
        "namespace-wide is fine"
    );
}
