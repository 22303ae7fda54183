//! The seed policies `policies-10` (child-profile), `-15` (emergency-access), `-16`
//! (emergency-override) and `-30` (mesh emergency-override), built as the importer maps them,
//! and the requests they must admit and refuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "authz_cases/support.rs"]
mod support;

use jalin_xds::authz::{Engine, EngineConfig, WorkloadAuthz};
use jalin_xds::model::authz::{Action, AuthorizationPolicy};
use support::*;

/// `policies-10-authorizationpolicy-child-profile-access-policy.yaml`.
pub fn child_profile() -> AuthorizationPolicy {
    with_selector(
        pol(
            "child-services",
            "child-profile-access-policy",
            Action::Allow,
            vec![
                r(
                    vec![s(|s| {
                        s.principals =
                            v(&["cluster.local/ns/child-services/sa/child-profile-client"]);
                        s.namespaces = v(&["child-services", "emergency"]);
                    })],
                    vec![o(|o| {
                        o.methods = v(&["GET", "POST", "PUT"]);
                        o.paths = v(&["/api/v1/child/*"]);
                    })],
                    vec![
                        when("source.certificate_fingerprint", &["*"]),
                        when(
                            "request.headers[x-child-access-reason]",
                            &["emergency", "care-coordination", "medical-emergency"],
                        ),
                    ],
                ),
                r(
                    vec![s(|s| {
                        s.principals = v(&["cluster.local/ns/emergency/sa/emergency-response"])
                    })],
                    vec![o(|o| {
                        o.methods = v(&["GET", "POST"]);
                        o.paths = v(&["/api/v1/child/emergency/*"]);
                    })],
                    vec![when(
                        "request.headers[x-emergency-authorization]",
                        &["verified"],
                    )],
                ),
            ],
        ),
        &[("app", "child-profile-service")],
    )
}

/// `policies-15-authorizationpolicy-emergency-access-policy.yaml`.
pub fn emergency_access() -> AuthorizationPolicy {
    with_selector(
        pol(
            "emergency",
            "emergency-access-policy",
            Action::Allow,
            vec![
                r(
                    vec![s(|s| {
                        s.principals = v(&["cluster.local/ns/emergency/sa/emergency-responder"]);
                        s.namespaces = v(&["emergency"]);
                    })],
                    vec![o(|o| {
                        o.methods = v(&["GET", "POST", "PUT"]);
                        o.paths = v(&["/api/v1/emergency/*"]);
                    })],
                    vec![
                        when("source.certificate_fingerprint", &["*"]),
                        when("request.headers[x-emergency-authorization]", &["verified"]),
                        when(
                            "request.headers[x-emergency-type]",
                            &["child-safety", "medical-emergency", "security-incident"],
                        ),
                    ],
                ),
                r(
                    vec![s(|s| {
                        s.principals =
                            v(&["cluster.local/ns/child-services/sa/child-protection-officer"])
                    })],
                    vec![o(|o| {
                        o.methods = v(&["POST"]);
                        o.paths = v(&["/api/v1/emergency/child-safety/*"]);
                    })],
                    vec![
                        when(
                            "request.headers[x-child-protection-authorization]",
                            &["verified"],
                        ),
                        when(
                            "request.headers[x-emergency-severity]",
                            &["critical", "high"],
                        ),
                    ],
                ),
            ],
        ),
        &[("app", "emergency-response-service")],
    )
}

/// `policies-16-authorizationpolicy-emergency-override-policy.yaml`.
pub fn emergency_override() -> AuthorizationPolicy {
    with_selector(
        pol(
            "emergency",
            "emergency-override-policy",
            Action::Allow,
            vec![r(
                vec![s(|s| {
                    s.principals = v(&["cluster.local/ns/emergency/sa/emergency-override"])
                })],
                vec![o(|o| {
                    o.methods = v(&["GET", "POST"]);
                    o.paths = v(&["/*"]);
                })],
                vec![
                    when(
                        "request.headers[x-emergency-override-authorization]",
                        &[
                            "legal-authority",
                            "court-order",
                            "child-protection-emergency",
                        ],
                    ),
                    when(
                        "request.headers[x-emergency-override-reason]",
                        &["immediate-child-danger", "life-threatening-emergency"],
                    ),
                    when(
                        "request.headers[x-emergency-override-duration]",
                        &["15-minutes", "30-minutes", "1-hour"],
                    ),
                ],
            )],
        ),
        &[("emergency-override", "true")],
    )
}

/// `policies-30-authorizationpolicy-emergency-override-mesh-policy.yaml` (root namespace).
pub fn emergency_override_mesh() -> AuthorizationPolicy {
    with_selector(
        pol(
            "istio-system",
            "emergency-override-mesh-policy",
            Action::Allow,
            vec![r(
                vec![s(|s| {
                    s.principals = v(&["cluster.local/ns/emergency/sa/emergency-coordinator"])
                })],
                vec![o(|o| {
                    o.methods = v(&["GET", "POST", "PUT"]);
                    o.paths = v(&["/*"]);
                })],
                vec![
                    when(
                        "request.headers[x-emergency-authorization]",
                        &[
                            "court-order",
                            "child-protection-emergency",
                            "medical-emergency",
                        ],
                    ),
                    when(
                        "request.headers[x-emergency-duration]",
                        &["15-minutes", "30-minutes", "1-hour", "4-hours"],
                    ),
                    when(
                        "request.headers[x-emergency-justification]",
                        &[
                            "immediate-child-danger",
                            "life-threatening",
                            "court-mandated",
                        ],
                    ),
                ],
            )],
        ),
        &[("emergency-access", "enabled")],
    )
}

pub fn seed_set() -> Vec<AuthorizationPolicy> {
    vec![
        child_profile(),
        emergency_access(),
        emergency_override(),
        emergency_override_mesh(),
    ]
}

fn at(ns: &str, l: &[(&str, &str)]) -> WorkloadAuthz {
    Engine::compile(&seed_set(), &EngineConfig::default())
        .unwrap()
        .for_workload(ns, &labels(l))
}

fn child_profile_wl() -> WorkloadAuthz {
    at("child-services", &[("app", "child-profile-service")])
}

fn emergency_wl() -> WorkloadAuthz {
    at("emergency", &[("app", "emergency-response-service")])
}

const CLIENT: &str = "spiffe://cluster.local/ns/child-services/sa/child-profile-client";
const RESPONSE: &str = "spiffe://cluster.local/ns/emergency/sa/emergency-response";

fn client_req() -> Req {
    req()
        .principal(CLIENT)
        .path("/api/v1/child/123")
        .header("x-child-access-reason", "care-coordination")
}

/// (name, workload, request, allowed, deciding `policy#rule` or "-")
fn seed_cases() -> Vec<(&'static str, WorkloadAuthz, Req, bool, &'static str)> {
    vec![
        (
            "child-profile: client with reason and certificate is allowed",
            child_profile_wl(),
            client_req(),
            true,
            "child-services/child-profile-access-policy#0",
        ),
        (
            "child-profile: PUT is allowed",
            child_profile_wl(),
            client_req().method("PUT"),
            true,
            "",
        ),
        (
            "child-profile: DELETE is refused",
            child_profile_wl(),
            client_req().method("DELETE"),
            false,
            "-",
        ),
        (
            "child-profile: missing access reason is refused",
            child_profile_wl(),
            req().principal(CLIENT).path("/api/v1/child/123"),
            false,
            "-",
        ),
        (
            "child-profile: unknown access reason is refused",
            child_profile_wl(),
            client_req().header("x-child-access-reason", "curiosity"),
            false,
            "-",
        ),
        (
            "child-profile: another service account is refused",
            child_profile_wl(),
            client_req().principal("spiffe://cluster.local/ns/child-services/sa/other"),
            false,
            "-",
        ),
        (
            "child-profile: plaintext peer is refused",
            child_profile_wl(),
            client_req().plaintext(),
            false,
            "-",
        ),
        (
            "child-profile: path outside /api/v1/child/ is refused",
            child_profile_wl(),
            client_req().path("/api/v1/admin"),
            false,
            "-",
        ),
        (
            "child-profile: traversal out of /api/v1/child/ is refused",
            child_profile_wl(),
            client_req().path("/api/v1/child/../admin"),
            false,
            "-",
        ),
        (
            "child-profile: traversal inside /api/v1/child/ is allowed",
            child_profile_wl(),
            client_req().path("/api/v1/child/x/../123"),
            true,
            "",
        ),
        (
            "child-profile: emergency-response reaches the emergency path with verified authorization",
            child_profile_wl(),
            req()
                .principal(RESPONSE)
                .path("/api/v1/child/emergency/42")
                .header("x-emergency-authorization", "verified"),
            true,
            "child-services/child-profile-access-policy#1",
        ),
        (
            "child-profile: emergency-response outside the emergency path is refused",
            child_profile_wl(),
            req()
                .principal(RESPONSE)
                .path("/api/v1/child/42")
                .header("x-emergency-authorization", "verified"),
            false,
            "-",
        ),
        (
            "child-profile: emergency-response without verified authorization is refused",
            child_profile_wl(),
            req().principal(RESPONSE).path("/api/v1/child/emergency/42"),
            false,
            "-",
        ),
        (
            "child-profile: emergency-response PUT is refused",
            child_profile_wl(),
            req()
                .principal(RESPONSE)
                .method("PUT")
                .path("/api/v1/child/emergency/42")
                .header("x-emergency-authorization", "verified"),
            false,
            "-",
        ),
        (
            "emergency-access: responder with all headers is allowed",
            emergency_wl(),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-responder")
                .method("POST")
                .path("/api/v1/emergency/incidents")
                .header("x-emergency-authorization", "verified")
                .header("x-emergency-type", "child-safety"),
            true,
            "emergency/emergency-access-policy#0",
        ),
        (
            "emergency-access: responder without emergency type is refused",
            emergency_wl(),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-responder")
                .path("/api/v1/emergency/incidents")
                .header("x-emergency-authorization", "verified"),
            false,
            "-",
        ),
        (
            "emergency-access: child-protection-officer POST child-safety critical is allowed",
            emergency_wl(),
            req()
                .principal("spiffe://cluster.local/ns/child-services/sa/child-protection-officer")
                .method("POST")
                .path("/api/v1/emergency/child-safety/case-9")
                .header("x-child-protection-authorization", "verified")
                .header("x-emergency-severity", "critical"),
            true,
            "emergency/emergency-access-policy#1",
        ),
        (
            "emergency-access: child-protection-officer with low severity is refused",
            emergency_wl(),
            req()
                .principal("spiffe://cluster.local/ns/child-services/sa/child-protection-officer")
                .method("POST")
                .path("/api/v1/emergency/child-safety/case-9")
                .header("x-child-protection-authorization", "verified")
                .header("x-emergency-severity", "low"),
            false,
            "-",
        ),
        (
            "emergency-access: child-protection-officer GET is refused",
            emergency_wl(),
            req()
                .principal("spiffe://cluster.local/ns/child-services/sa/child-protection-officer")
                .path("/api/v1/emergency/child-safety/case-9")
                .header("x-child-protection-authorization", "verified")
                .header("x-emergency-severity", "high"),
            false,
            "-",
        ),
        (
            "emergency-override: applies only to workloads labelled emergency-override=true",
            at(
                "emergency",
                &[
                    ("app", "emergency-response-service"),
                    ("emergency-override", "true"),
                ],
            ),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-override")
                .path("/anything")
                .header("x-emergency-override-authorization", "court-order")
                .header("x-emergency-override-reason", "immediate-child-danger")
                .header("x-emergency-override-duration", "1-hour"),
            true,
            "emergency/emergency-override-policy#0",
        ),
        (
            "emergency-override: an unlisted duration is refused",
            at("emergency", &[("emergency-override", "true")]),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-override")
                .path("/anything")
                .header("x-emergency-override-authorization", "court-order")
                .header("x-emergency-override-reason", "immediate-child-danger")
                .header("x-emergency-override-duration", "1-week"),
            false,
            "-",
        ),
        (
            "emergency-override: the override identity cannot use it on unlabelled workloads",
            emergency_wl(),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-override")
                .path("/api/v1/emergency/x")
                .header("x-emergency-override-authorization", "court-order")
                .header("x-emergency-override-reason", "immediate-child-danger")
                .header("x-emergency-override-duration", "1-hour"),
            false,
            "-",
        ),
        (
            "mesh emergency-override: coordinator reaches an emergency-access workload in any namespace",
            at(
                "child-services",
                &[
                    ("app", "child-profile-service"),
                    ("emergency-access", "enabled"),
                ],
            ),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-coordinator")
                .method("PUT")
                .path("/api/v1/child/123")
                .header("x-emergency-authorization", "court-order")
                .header("x-emergency-duration", "4-hours")
                .header("x-emergency-justification", "court-mandated"),
            true,
            "istio-system/emergency-override-mesh-policy#0",
        ),
        (
            "mesh emergency-override: DELETE is refused",
            at(
                "child-services",
                &[
                    ("app", "child-profile-service"),
                    ("emergency-access", "enabled"),
                ],
            ),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-coordinator")
                .method("DELETE")
                .path("/api/v1/child/123")
                .header("x-emergency-authorization", "court-order")
                .header("x-emergency-duration", "4-hours")
                .header("x-emergency-justification", "court-mandated"),
            false,
            "-",
        ),
        (
            "mesh emergency-override: without the emergency-access label the coordinator is refused",
            child_profile_wl(),
            req()
                .principal("spiffe://cluster.local/ns/emergency/sa/emergency-coordinator")
                .path("/api/v1/child/123")
                .header("x-emergency-authorization", "court-order")
                .header("x-emergency-duration", "4-hours")
                .header("x-emergency-justification", "court-mandated"),
            false,
            "-",
        ),
        (
            "mesh emergency-override: the child-profile client still passes on a labelled workload",
            at(
                "child-services",
                &[
                    ("app", "child-profile-service"),
                    ("emergency-access", "enabled"),
                ],
            ),
            client_req(),
            true,
            "child-services/child-profile-access-policy#0",
        ),
        (
            "a workload no seed policy selects allows everything",
            at("child-services", &[("app", "other")]),
            req(),
            true,
            "-",
        ),
    ]
}

#[test]
fn seed_policies_admit_and_refuse_as_istio_does() {
    let mut failures = Vec::new();
    for (name, w, r, allow, by) in seed_cases() {
        let d = w.evaluate(&r.attrs());
        let got = d
            .policy
            .as_ref()
            .map_or("-".to_string(), |m| format!("{}#{}", m.policy, m.rule));
        if d.is_allowed() != allow || (!by.is_empty() && got != by) {
            failures.push(format!(
                "{name}: expected allow={allow} by {by:?}, got {:?} by {got} ({:?})",
                d.verdict, d.reason
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
