//! The authorization table: each case names the Istio behaviour it pins, builds native
//! policies, sends one request to workload `foo/httpbin`, and checks the verdict and the
//! deciding policy and rule. Cases live in `authz_cases/` by topic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "authz_cases/support.rs"]
mod support;

#[path = "authz_cases/mod.rs"]
mod cases;

use support::*;

#[test]
fn authorization_table() {
    let cases = cases::all();
    assert!(
        cases.len() >= 80,
        "the table must pin at least 80 behaviours, has {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let d = workload(&case.policies, &case.config).evaluate(&case.req.attrs());
        let by = match &d.policy {
            Some(m) => format!("{}#{}", m.policy, m.rule),
            None => "-".into(),
        };
        if d.is_allowed() != case.allow || (!case.by.is_empty() && by != case.by) {
            failures.push(format!(
                "{}: expected {} by {:?}, got {:?} by {by} ({:?})",
                case.name,
                if case.allow { "allow" } else { "deny" },
                case.by,
                d.verdict,
                d.reason
            ));
        }
        if !d.is_allowed() {
            let resp = d.deny_response();
            assert_eq!(resp.status(), 403, "{}", case.name);
            assert_eq!(*resp.body(), "RBAC: access denied", "{}", case.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
