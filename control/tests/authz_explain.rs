//! `jalin authz explain` through the real binary against the seed policies: allowed and denied
//! requests for the child-profile policy, DENY beating ALLOW, and unknown `when` keys failing
//! closed in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CLIENT: &str = "cluster.local/ns/child-services/sa/child-profile-client";
const POLICY10: &str = "policies-10-authorizationpolicy-child-profile-access-policy.yaml";

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-policies")
}

fn explain(config: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let o: Output = Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args(["authz", "explain", "--config", config.to_str().unwrap()])
        .args(extra)
        .output()
        .expect("run jalin");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The seeds plus `extra` files, in a temporary directory.
fn seeds_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(seeds()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
    }
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn child_profile(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "--to",
        "child-services/child-profile-service",
        "--principal",
        CLIENT,
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn child_profile_allowed_names_policy_and_rule() {
    let args = child_profile(&[
        "--method",
        "GET",
        "--path",
        "/api/v1/child/123",
        "--header",
        "x-child-access-reason=care-coordination",
    ]);
    let (code, out, err) = explain(&seeds(), &args);
    assert_eq!(code, Some(0), "{out}{err}");
    let file = seeds().join(POLICY10).display().to_string();
    assert!(
        out.contains("decision: ALLOW: an ALLOW policy matched and no DENY policy did"),
        "{out}"
    );
    assert!(
        out.contains(&format!("deciding policy: ALLOW child-services/child-profile-access-policy {file}:1 (rules[0] at {file}:11)")),
        "{out}"
    );
    // The mesh-wide ALLOW policy of the root namespace applies too, and did not match.
    assert!(
        out.contains("istio-system/security-monitoring-policy"),
        "{out}"
    );

    // The emergency responder is allowed by the second rule.
    let (code, out, _) = explain(
        &seeds(),
        &[
            "--to",
            "child-services/child-profile-service",
            "--principal",
            "cluster.local/ns/emergency/sa/emergency-response",
            "--method",
            "POST",
            "--path",
            "/api/v1/child/emergency/7",
            "--header",
            "x-emergency-authorization=verified",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, Some(0), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "ALLOW");
    assert_eq!(
        v["deciding"]["policy"],
        "child-services/child-profile-access-policy"
    );
    assert_eq!(v["deciding"]["rule"], 1);
    assert_eq!(v["deciding"]["rule_line"], 24);
    assert_eq!(v["deciding"]["file"], file);
}

#[test]
fn child_profile_denied_without_the_access_reason_or_certificate() {
    let args = child_profile(&["--method", "GET", "--path", "/api/v1/child/123"]);
    let (code, out, _) = explain(&seeds(), &args);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "decision: DENY: ALLOW policies apply to the workload and none of their rules matched"
        ),
        "{out}"
    );
    assert!(out.contains("deciding policy: none"), "{out}");
    assert!(
        out.contains("ALLOW  child-services/child-profile-access-policy"),
        "{out}"
    );
    assert!(out.contains("no rule matched"), "{out}");

    // A plaintext peer never matches `source.certificate_fingerprint: "*"` nor a principal.
    let (code, out, _) = explain(
        &seeds(),
        &[
            "--to",
            "child-services/child-profile-service",
            "--path",
            "/api/v1/child/123",
            "--header",
            "x-child-access-reason=emergency",
            "--format",
            "json",
        ],
    );
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"], "DENY");
    assert_eq!(v["reason"], "no-allow-matched");
}

const DENY_PUT: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-writes-during-audit
  namespace: child-services
spec:
  selector:
    matchLabels:
      app: child-profile-service
  action: DENY
  rules:
  - to:
    - operation:
        methods: [PUT]
";

#[test]
fn deny_beats_allow() {
    let dir = seeds_with(&[("zz-deny.yaml", DENY_PUT)]);
    let args = child_profile(&[
        "--method",
        "PUT",
        "--path",
        "/api/v1/child/123",
        "--header",
        "x-child-access-reason=emergency",
    ]);
    // Without the DENY policy the seed ALLOW policy admits this request...
    let (code, out, _) = explain(&seeds(), &args);
    assert_eq!(code, Some(0), "{out}");
    // ... with it, DENY wins.
    let (code, out, _) = explain(dir.path(), &args);
    assert_eq!(code, Some(1), "{out}");
    let deny = dir.path().join("zz-deny.yaml").display().to_string();
    assert!(
        out.contains("decision: DENY: a DENY policy matched; DENY is evaluated before ALLOW"),
        "{out}"
    );
    assert!(
        out.contains(&format!("deciding policy: DENY child-services/no-writes-during-audit {deny}:1 (rules[0] at {deny}:12)")),
        "{out}"
    );
    // The ALLOW rule still matched; it simply does not decide.
    assert!(
        out.lines().any(
            |l| l.contains("ALLOW  child-services/child-profile-access-policy")
                && l.contains("rules[0] matched (line 11)")
        ),
        "{out}"
    );
}

#[test]
fn unknown_when_keys_fail_closed_in_the_engine() {
    // compliance-03's ALLOW rule[2] has only the unknown `custom.case_active`: it grants nothing
    // (were it treated as holding, it would allow ANY request).
    let (code, out, _) = explain(
        &seeds(),
        &[
            "--to",
            "inter-agency/case-coordination",
            "--principal",
            "cluster.local/ns/other/sa/anyone",
            "--method",
            "DELETE",
            "--path",
            "/anything",
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("inter-agency/case-coordination-access"),
        "{out}"
    );
    // A DENY rule with an unknown key denies whatever its other fields match.
    let deny = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: flagged, namespace: child-services}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: [/api/v1/child/*]}}]
    when:
    - key: custom.flagged
      values: [\"yes\"]
";
    let dir = seeds_with(&[("zz-flagged.yaml", deny)]);
    let args = child_profile(&[
        "--path",
        "/api/v1/child/123",
        "--header",
        "x-child-access-reason=emergency",
    ]);
    let (code, out, _) = explain(dir.path(), &args);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("deciding policy: DENY child-services/flagged"),
        "{out}"
    );
    // Its other fields still apply: another path is not denied by it.
    let mut args = child_profile(&["--path", "/healthz"]);
    args.extend_from_slice(&["--header", "x-child-access-reason=emergency"]);
    let (_, out, _) = explain(dir.path(), &args);
    assert!(!out.contains("deciding policy: DENY"), "{out}");
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    let (code, _, err) = explain(&seeds(), &["--to", "no-namespace"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--to `no-namespace` is not `namespace/workload`"),
        "{err}"
    );
    let (code, _, err) = explain(&seeds(), &["--to", "a/b", "--header", "bad header=x"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("`bad header` is not a valid HTTP header name"),
        "{err}"
    );
    let dir = seeds_with(&[(
        "zz-bad.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: b, namespace: x}\nspec:\n  rules:\n  - from: []\n",
    )]);
    let (code, _, err) = explain(dir.path(), &["--to", "a/b"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("the configuration is invalid"), "{err}");
    assert!(
        err.contains(
            "zz-bad.yaml:6: AuthorizationPolicy/x/b: spec.rules[0].from: `from` must not be empty"
        ),
        "{err}"
    );
}
