//! Authorization behaviours beyond one verdict: invalid paths, AUDIT and dry-run reporting,
//! CUSTOM's two-step protocol, TCP treatment of HTTP fields, `explain`, and compile errors.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "authz_cases/support.rs"]
mod support;

use jalin_xds::authz::{EngineConfig, Reason, Verdict};
use jalin_xds::model::authz::{Action, AuthorizationPolicy};
use support::*;

fn allow_get_on(paths: &[&str]) -> Vec<AuthorizationPolicy> {
    vec![allow(
        "paths",
        vec![r(vec![], vec![o(|o| o.paths = v(paths))], vec![])],
    )]
}

fn allow_from(f: impl FnOnce(&mut jalin_xds::model::authz::Source)) -> Vec<AuthorizationPolicy> {
    vec![allow("from", vec![r(vec![s(f)], vec![], vec![])])]
}

#[test]
fn encoded_nul_is_a_bad_request_before_any_policy() {
    let d = eval(&[allow("all", vec![any()])], &req().path("/a%00b"));
    assert_eq!(d.reason, Reason::InvalidPath);
    assert_eq!(d.deny_response().status(), 400);
}

#[test]
fn audit_is_reported_without_changing_the_verdict() {
    let d = eval(
        &[
            pol("foo", "audit", Action::Audit, vec![any()]),
            deny("d", vec![any()]),
        ],
        &req(),
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.audit.as_ref().map(|m| &*m.policy), Some("foo/audit"));
}

#[test]
fn dry_run_results_are_reported_as_shadow() {
    let d = eval(
        &[
            dry_run(deny("dry-deny", vec![any()])),
            dry_run(allow("dry-allow", allow_get_on(&["/x"])[0].rules.clone())),
        ],
        &req(),
    );
    assert!(d.is_allowed());
    assert_eq!(
        d.shadow.deny.as_ref().map(|m| &*m.policy),
        Some("foo/dry-deny")
    );
    assert_eq!(d.shadow.allow, Some(None));
    assert_eq!(d.shadow.verdict(), Some(Verdict::Deny));
}

#[test]
fn custom_is_asked_first_and_fails_closed() {
    use jalin_xds::authz::CustomResult;
    let policies = vec![
        custom(
            "ext",
            "opa",
            vec![r(vec![], vec![o(|o| o.paths = v(&["/admin*"]))], vec![])],
        ),
        allow("all", vec![any()]),
    ];
    // Not matching the CUSTOM rule: no external check.
    let d = eval(&policies, &req().path("/public"));
    assert!(d.custom_check().is_none());
    assert!(d.is_allowed());
    // Matching: the check is pending and the request is not allowed until it is completed.
    let d = eval(&policies, &req().path("/admin/x"));
    let check = d.custom_check().expect("external check");
    assert_eq!(&*check.provider, "opa");
    assert_eq!(&*check.policy.policy, "foo/ext");
    assert!(!d.is_allowed());
    assert!(
        d.clone()
            .complete_custom(CustomResult::Allowed)
            .is_allowed()
    );
    let denied = d.clone().complete_custom(CustomResult::Denied);
    assert_eq!(
        (denied.verdict, denied.reason),
        (Verdict::Deny, Reason::CustomDenied)
    );
    assert_eq!(denied.policy.as_ref().map(|m| &*m.policy), Some("foo/ext"));
    let failed = d.complete_custom(CustomResult::Failed);
    assert_eq!(
        failed.verdict,
        Verdict::Deny,
        "a timeout or error must deny"
    );
}

#[test]
fn custom_allow_still_goes_through_deny() {
    use jalin_xds::authz::CustomResult;
    let policies = vec![custom("ext", "opa", vec![any()]), deny("d", vec![any()])];
    let d = eval(&policies, &req()).complete_custom(CustomResult::Allowed);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policy.as_ref().map(|m| &*m.policy), Some("foo/d"));
}

#[test]
fn two_custom_providers_on_one_workload_deny_everything() {
    let d = eval(
        &[
            custom("a", "opa", vec![any()]),
            custom("b", "other", vec![any()]),
        ],
        &req(),
    );
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Deny, Reason::CustomProviderConflict)
    );
}

#[test]
fn tcp_drops_http_fields_allow_never_matches_deny_matches_more() {
    let allow_http = vec![allow(
        "a",
        vec![r(vec![], vec![o(|o| o.paths = v(&["/x"]))], vec![])],
    )];
    let w = workload(&allow_http, &EngineConfig::default());
    assert!(!w.evaluate_tcp(&req().attrs()).is_allowed());
    let deny_http = vec![deny(
        "d",
        vec![r(
            vec![s(|s| s.principals = v(&["cluster.local/ns/bar/sa/sleep"]))],
            vec![o(|o| o.methods = v(&["DELETE"]))],
            vec![],
        )],
    )];
    let w = workload(&deny_http, &EngineConfig::default());
    assert!(
        !w.evaluate_tcp(&req().attrs()).is_allowed(),
        "DENY with HTTP fields denies the principal on TCP"
    );
    assert!(
        w.evaluate(&req().attrs()).is_allowed(),
        "on HTTP only DELETE is denied"
    );
    assert!(
        w.evaluate_tcp(&req().principal("spiffe://cluster.local/ns/x/sa/y").attrs())
            .is_allowed()
    );
}

#[test]
fn explain_lists_every_policy_in_evaluation_order() {
    let w = workload(
        &[
            allow("a", vec![any()]),
            deny(
                "d",
                vec![r(vec![], vec![o(|o| o.paths = v(&["/x"]))], vec![])],
            ),
        ],
        &EngineConfig::default(),
    );
    let t = w.explain(&req().attrs());
    let got: Vec<(String, Option<usize>)> = t
        .iter()
        .map(|p| (p.policy.to_string(), p.matched_rule))
        .collect();
    assert_eq!(got, vec![("foo/d".into(), None), ("foo/a".into(), Some(0))]);
}

#[test]
fn compile_errors_name_the_field_and_what_is_expected() {
    use jalin_xds::authz::Engine;
    let mut bad = allow_from(|s| {
        s.ip_blocks = v(&["10.0.0.0/33"]);
    });
    bad[0].meta.source = Some(jalin_xds::model::SourceRef {
        file: "p.yaml".into(),
        line: 7,
    });
    bad.push(allow(
        "tmpl",
        vec![r(vec![], vec![o(|o| o.paths = v(&["/{**}/x"]))], vec![])],
    ));
    bad.push(allow(
        "key",
        vec![r(vec![], vec![], vec![when("request.host", &["x"])])],
    ));
    bad.push(allow(
        "sa",
        vec![r(
            vec![s(|s| {
                s.service_accounts = v(&["a/b"]);
                s.principals = v(&["x"]);
            })],
            vec![],
            vec![],
        )],
    ));
    bad.push(pol("foo", "c", Action::Custom, vec![any()]));
    let err = Engine::compile(&bad, &EngineConfig::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("p.yaml:7: AuthorizationPolicy/foo/from: spec.rules[0].from[0].source.ipBlocks[0]: `10.0.0.0/33`"), "{text}");
    assert!(
        text.contains("foo/tmpl: spec.rules[0].to[0].operation.paths[0]"),
        "{text}"
    );
    assert!(
        text.contains("unknown condition key `request.host`"),
        "{text}"
    );
    assert!(
        text.contains("serviceAccounts cannot be combined"),
        "{text}"
    );
    assert!(text.contains("CUSTOM needs a provider"), "{text}");
    assert_eq!(err.errors.len(), 5);
}

#[test]
fn the_path_the_proxy_forwards_is_the_path_policies_saw() {
    let w = workload(&[allow("all", vec![any()])], &EngineConfig::default());
    assert_eq!(w.normalize("/a//b/../c?x=1").unwrap(), "/a/c");
    assert!(w.normalize("/x%00").is_err());
}
