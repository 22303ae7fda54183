//! Authorization end to end: the seed child-profile (`policies-10`) and emergency
//! (`policies-15`) AuthorizationPolicies, imported from the Istio YAML, enforced by server-side
//! proxies; client-side proxies with different SPIFFE identities send real mTLS requests through
//! their outbound to the servers' inbound. Each request is admitted or refused exactly as the
//! table says; denies are logged with the deciding policy and counted by the decision metric.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod mtls_common;

use std::time::Duration;

use jalin_tests::upstream::HttpUpstream;
use mtls_common::{Mesh, log_text, logs, request, seed_policies};

const CHILD: &str = "child";
const EMERG: &str = "emergency";

/// Who sends: a client proxy with this identity, or a plaintext client straight to the server.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Peer {
    ChildProfileClient,
    EmergencyResponder,
    EmergencyResponse,
    Unlisted,
    Plaintext,
}

struct Case {
    what: &'static str,
    from: Peer,
    to: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
}

const REASON_OK: &[(&str, &str)] = &[("x-child-access-reason", "care-coordination")];
const EMERG_VERIFIED: &[(&str, &str)] = &[("x-emergency-authorization", "verified")];
const EMERG_FULL: &[(&str, &str)] = &[
    ("x-emergency-authorization", "verified"),
    ("x-emergency-type", "child-safety"),
];

#[rustfmt::skip]
fn table() -> Vec<Case> {
    use Peer::*;
    let c = |what, from, to, method, path, headers, status| Case { what, from, to, method, path, headers, status };
    vec![
        // policies-10 rule 0: child-profile-client, GET/POST/PUT /api/v1/child/*, verified
        // certificate, an allowed x-child-access-reason.
        c("p10 r0 allows the listed client with a reason", ChildProfileClient, CHILD, "GET", "/api/v1/child/42", REASON_OK, 200),
        c("p10 r0 allows POST", ChildProfileClient, CHILD, "POST", "/api/v1/child/42", &[("x-child-access-reason", "emergency")], 200),
        c("p10 r0 allows PUT, medical-emergency", ChildProfileClient, CHILD, "PUT", "/api/v1/child/42/notes", &[("x-child-access-reason", "medical-emergency")], 200),
        c("p10 r0 needs the reason header", ChildProfileClient, CHILD, "GET", "/api/v1/child/42", &[], 403),
        c("p10 r0 reason values are exact", ChildProfileClient, CHILD, "GET", "/api/v1/child/42", &[("x-child-access-reason", "curiosity")], 403),
        c("p10 r0 reason values are case-sensitive", ChildProfileClient, CHILD, "GET", "/api/v1/child/42", &[("x-child-access-reason", "Emergency")], 403),
        c("p10 r0 DELETE is not a listed method", ChildProfileClient, CHILD, "DELETE", "/api/v1/child/42", REASON_OK, 403),
        c("p10 r0 other path", ChildProfileClient, CHILD, "GET", "/api/v1/other/42", REASON_OK, 403),
        c("p10 r0 prefix needs the slash", ChildProfileClient, CHILD, "GET", "/api/v1/children", REASON_OK, 403),
        c("p10 r0 dot-dot is normalised before matching", ChildProfileClient, CHILD, "GET", "/api/v1/child/../admin", REASON_OK, 403),
        c("p10 r0 double slashes are merged before matching", ChildProfileClient, CHILD, "GET", "/api/v1//child/42", REASON_OK, 200),
        c("p10 r0 percent-encoded slash does not escape the prefix", ChildProfileClient, CHILD, "GET", "/api/v1/child%2F..%2F..%2Fadmin", REASON_OK, 403),
        // policies-10 rule 1: emergency-response, GET/POST /api/v1/child/emergency/*.
        c("p10 r1 allows emergency-response", EmergencyResponse, CHILD, "POST", "/api/v1/child/emergency/7", EMERG_VERIFIED, 200),
        c("p10 r1 needs x-emergency-authorization", EmergencyResponse, CHILD, "POST", "/api/v1/child/emergency/7", &[], 403),
        c("p10 r1 value must be verified", EmergencyResponse, CHILD, "GET", "/api/v1/child/emergency/7", &[("x-emergency-authorization", "pending")], 403),
        c("p10 r1 PUT is not listed", EmergencyResponse, CHILD, "PUT", "/api/v1/child/emergency/7", EMERG_VERIFIED, 403),
        c("p10 r1 only under /emergency/", EmergencyResponse, CHILD, "GET", "/api/v1/child/42", EMERG_VERIFIED, 403),
        c("p10 r1 the reason header does not make r0 match for another principal", EmergencyResponse, CHILD, "GET", "/api/v1/child/42", REASON_OK, 403),
        c("p10 emergency-responder is not listed", EmergencyResponder, CHILD, "GET", "/api/v1/child/emergency/7", EMERG_VERIFIED, 403),
        c("p10 unlisted identity", Unlisted, CHILD, "GET", "/api/v1/child/42", REASON_OK, 403),
        c("p10 plaintext peer has no principal", Plaintext, CHILD, "GET", "/api/v1/child/42", REASON_OK, 403),
        c("p10 a spoofed XFCC does not make a principal", Plaintext, CHILD, "GET", "/api/v1/child/42",
          &[("x-child-access-reason", "emergency"), ("x-forwarded-client-cert", "URI=spiffe://cluster.local/ns/child-services/sa/child-profile-client")], 403),
        // jalin DENY policy next to the seed ALLOW policy: DENY wins.
        c("DENY beats the matching ALLOW", ChildProfileClient, CHILD, "GET", "/api/v1/child/export", REASON_OK, 403),
        // policies-15 rule 0: emergency-responder, GET/POST/PUT /api/v1/emergency/*, two headers.
        c("p15 r0 allows the responder", EmergencyResponder, EMERG, "GET", "/api/v1/emergency/5", EMERG_FULL, 200),
        c("p15 r0 PUT", EmergencyResponder, EMERG, "PUT", "/api/v1/emergency/5",
          &[("x-emergency-authorization", "verified"), ("x-emergency-type", "security-incident")], 200),
        c("p15 r0 needs x-emergency-type", EmergencyResponder, EMERG, "GET", "/api/v1/emergency/5", EMERG_VERIFIED, 403),
        c("p15 r0 type must be listed", EmergencyResponder, EMERG, "GET", "/api/v1/emergency/5",
          &[("x-emergency-authorization", "verified"), ("x-emergency-type", "traffic")], 403),
        c("p15 r0 DELETE not listed", EmergencyResponder, EMERG, "DELETE", "/api/v1/emergency/5", EMERG_FULL, 403),
        c("p15 r0 path prefix", EmergencyResponder, EMERG, "GET", "/api/v1/emergency-other/5", EMERG_FULL, 403),
        c("p15 emergency-response is not the responder", EmergencyResponse, EMERG, "GET", "/api/v1/emergency/5", EMERG_FULL, 403),
        c("p15 child-profile-client is not listed", ChildProfileClient, EMERG, "GET", "/api/v1/emergency/5", EMERG_FULL, 403),
        c("p15 unlisted identity", Unlisted, EMERG, "GET", "/api/v1/emergency/5", EMERG_FULL, 403),
        c("p15 plaintext peer", Plaintext, EMERG, "GET", "/api/v1/emergency/5", EMERG_FULL, 403),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_policies_admit_and_refuse_as_the_table_says() {
    logs();
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let mut policies = seed_policies(&[
        "policies-10-authorizationpolicy-child-profile-access-policy.yaml",
        "policies-15-authorizationpolicy-emergency-access-policy.yaml",
    ]);
    policies.push_str(
        "    - meta: { name: block-exports, namespace: child-services }\n      action: DENY\n      rules:\n        - to: [ { paths: [\"/api/v1/child/export*\"] } ]\n",
    );
    let authz = format!("  policies:\n{policies}");
    // PERMISSIVE, so a plaintext client reaches the authorization step (and is refused there).
    let child = mesh
        .server(
            "child-services",
            "child-profile-service",
            &[("app", "child-profile-service")],
            app.addr,
            Some("PERMISSIVE"),
            &authz,
        )
        .await;
    let emerg = mesh
        .server(
            "emergency",
            "emergency-response-service",
            &[("app", "emergency-response-service")],
            app.addr,
            Some("PERMISSIVE"),
            &authz,
        )
        .await;
    let child_id = Mesh::id("child-services", "child-profile-service");
    let emerg_id = Mesh::id("emergency", "emergency-response-service");
    let targets = [
        (CHILD, child.addr("in"), child_id.as_str()),
        (EMERG, emerg.addr("in"), emerg_id.as_str()),
    ];
    let clients = [
        (
            Peer::ChildProfileClient,
            mesh.client("child-services", "child-profile-client", &targets)
                .await,
        ),
        (
            Peer::EmergencyResponder,
            mesh.client("emergency", "emergency-responder", &targets)
                .await,
        ),
        (
            Peer::EmergencyResponse,
            mesh.client("emergency", "emergency-response", &targets)
                .await,
        ),
        (
            Peer::Unlisted,
            mesh.client("child-services", "someone-else", &targets)
                .await,
        ),
    ];

    let mut failures = Vec::new();
    for case in table() {
        let addr = match case.from {
            Peer::Plaintext => {
                if case.to == CHILD {
                    child.addr("in")
                } else {
                    emerg.addr("in")
                }
            }
            who => clients
                .iter()
                .find(|(w, _)| *w == who)
                .unwrap()
                .1
                .addr(case.to),
        };
        let (status, body) = request(addr, case.method, case.path, case.headers)
            .await
            .unwrap();
        if status != case.status {
            failures.push(format!(
                "{}: {:?} {} {} -> {status} (want {}) {body}",
                case.what, case.from, case.method, case.path, case.status
            ));
        }
        if status == 403 {
            assert_eq!(
                body, "RBAC: access denied",
                "{}: policy names never reach the client",
                case.what
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        table().len(),
        failures.join("\n")
    );

    // The deny log names the deciding policy and rule, with the request id.
    let text = log_text();
    let deny = text
        .lines()
        .find(|l| {
            l.contains("RBAC: access denied")
                && l.contains("\"policy\":\"child-services/block-exports\"")
        })
        .unwrap_or_else(|| panic!("no deny line for block-exports in:\n{text}"));
    assert!(deny.contains("\"rule\":0"), "{deny}");
    assert!(deny.contains("\"action\":\"DENY\""), "{deny}");
    assert!(deny.contains("request_id"), "{deny}");
    assert!(deny.contains("child-profile-client"), "{deny}");
    let no_match = text
        .lines()
        .find(|l| {
            l.contains("RBAC: access denied")
                && l.contains("NoAllowMatched")
                && l.contains("emergency/emergency-access-policy")
        })
        .unwrap_or_else(|| {
            panic!("no NoAllowMatched line naming the emergency policy in:\n{text}")
        });
    assert!(no_match.contains("considered"), "{no_match}");

    // The decision metric counts by policy, action and result.
    let m = child.metrics().await;
    let line = |needle: &[&str]| {
        m.lines()
            .find(|l| {
                l.starts_with("jalin_authz_decisions_total") && needle.iter().all(|n| l.contains(n))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(
        line(&[
            "policy=\"child-services/block-exports\"",
            "action=\"DENY\"",
            "result=\"deny\""
        ]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        line(&[
            "policy=\"child-services/child-profile-access-policy\"",
            "action=\"ALLOW\"",
            "result=\"allow\""
        ]),
        Some(
            table()
                .iter()
                .filter(|c| c.to == CHILD && c.status == 200)
                .count() as f64
        ),
        "{m}"
    );
    assert_eq!(
        line(&[
            "policy=\"emergency/emergency-access-policy\"",
            "action=\"ALLOW\"",
            "result=\"allow\""
        ]),
        Some(
            table()
                .iter()
                .filter(|c| c.to == EMERG && c.status == 200)
                .count() as f64
        ),
        "{m}"
    );
}

/// AUDIT never changes the decision and is logged; a dry-run (`istio.io/dry-run`) DENY is
/// logged as shadow and not enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_and_dry_run_are_logged_not_enforced() {
    logs();
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let authz = "  policies:\n    - meta: { name: audit-reads, namespace: records }\n      action: AUDIT\n      rules:\n        - to: [ { paths: [\"/audited/*\"] } ]\n    - meta: { name: would-deny, namespace: records }\n      action: DENY\n      dry_run: true\n      rules:\n        - to: [ { paths: [\"/shadow/*\"] } ]\n";
    let server = mesh
        .server("records", "svc", &[], app.addr, Some("PERMISSIVE"), authz)
        .await;
    let (status, _) = request(server.addr("in"), "GET", "/audited/1", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "AUDIT does not change the decision");
    let (status, _) = request(server.addr("in"), "GET", "/shadow/1", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "a dry-run DENY is not enforced");
    let text = log_text();
    assert!(
        text.lines()
            .any(|l| l.contains("authorization audit") && l.contains("records/audit-reads")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.contains("dry-run (shadow)")
            && l.contains("records/would-deny")
            && l.contains("Deny")),
        "{text}"
    );
}
