//! `Condition::unknown_key` (a `when` key the importer could not evaluate) fails closed: it
//! holds in DENY and CUSTOM policies and never in ALLOW and AUDIT ones, for HTTP and TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "authz_cases/support.rs"]
mod support;

use jalin_xds::authz::{Reason, Verdict};
use jalin_xds::model::authz::{Action, Condition};
use support::*;

fn unknown() -> Condition {
    Condition {
        key: "custom.case_active".into(),
        values: v(&["true"]),
        unknown_key: true,
        ..Default::default()
    }
}

#[test]
fn allow_rule_with_unknown_key_grants_nothing() {
    let p = allow("a", vec![r(vec![], vec![], vec![unknown()])]);
    let d = eval(&[p], &req());
    assert_eq!(
        (d.verdict, d.reason),
        (Verdict::Deny, Reason::NoAllowMatched)
    );
    // The policy's other rules still apply.
    let p = allow(
        "a",
        vec![
            r(vec![], vec![], vec![unknown()]),
            r(vec![], vec![o(|o| o.paths = v(&["/ok"]))], vec![]),
        ],
    );
    let d = eval(&[p], &req().path("/ok"));
    assert_eq!(d.verdict, Verdict::Allow);
    assert_eq!(d.policy.unwrap().rule, 1);
}

#[test]
fn deny_rule_with_unknown_key_denies_what_its_other_fields_match() {
    let p = deny(
        "d",
        vec![r(
            vec![],
            vec![o(|o| o.paths = v(&["/secret"]))],
            vec![unknown()],
        )],
    );
    let d = eval(std::slice::from_ref(&p), &req().path("/secret"));
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::DenyMatched));
    let d = eval(std::slice::from_ref(&p), &req().path("/public"));
    assert_eq!(
        d.verdict,
        Verdict::Allow,
        "other fields still restrict the rule"
    );
    // TCP: the condition still holds.
    let w = workload(&[p], &Default::default());
    let tcp = w.evaluate_tcp(&req().attrs());
    assert_eq!(tcp.verdict, Verdict::Deny);
}

#[test]
fn custom_rule_with_unknown_key_asks_the_provider() {
    let p = custom("c", "ext", vec![r(vec![], vec![], vec![unknown()])]);
    let d = eval(&[p], &req());
    let c = d.custom_check().expect("the external authorizer is asked");
    assert_eq!(&*c.provider, "ext");
    assert!(!d.is_allowed());
}

#[test]
fn audit_rule_with_unknown_key_records_nothing() {
    let mut p = pol(
        "foo",
        "au",
        Action::Audit,
        vec![r(vec![], vec![], vec![unknown()])],
    );
    p.dry_run = false;
    let d = eval(&[p], &req());
    assert_eq!(d.audit, None);
}
