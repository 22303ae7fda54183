//! Table cases: headers, connection and certificate, request authentication, scope and dry-run.

use jalin_xds::authz::PeerIdentity;
use jalin_xds::model::authz::Action;
use serde_json::json;

use super::*;
use crate::support::*;

pub fn request() -> Vec<Case> {
    vec![
        // --- headers --------------------------------------------------------------------------
        c(
            "header exact value",
            allow_when(vec![when("request.headers[x-token]", &["abc"])]),
            req().header("x-token", "abc"),
            true,
            "",
        ),
        c(
            "header wrong value",
            allow_when(vec![when("request.headers[x-token]", &["abc"])]),
            req().header("x-token", "abd"),
            false,
            "",
        ),
        c(
            "header presence * with the header",
            allow_when(vec![when("request.headers[x-token]", &["*"])]),
            req().header("x-token", "z"),
            true,
            "",
        ),
        c(
            "header presence * without the header",
            allow_when(vec![when("request.headers[x-token]", &["*"])]),
            req(),
            false,
            "",
        ),
        c(
            "header presence * matches a header with an empty value",
            allow_when(vec![when("request.headers[x-token]", &["*"])]),
            req().header("x-token", ""),
            true,
            "",
        ),
        c(
            "header prefix value",
            allow_when(vec![when("request.headers[user-agent]", &["curl/*"])]),
            req().header("user-agent", "curl/8.1"),
            true,
            "",
        ),
        c(
            "header suffix value",
            allow_when(vec![when("request.headers[x-user]", &["*@gov.example"])]),
            req().header("x-user", "ann@gov.example"),
            true,
            "",
        ),
        c(
            "header names are case-insensitive",
            allow_when(vec![when("request.headers[X-Token]", &["abc"])]),
            req().header("x-token", "abc"),
            true,
            "",
        ),
        c(
            "header values are case-sensitive",
            allow_when(vec![when("request.headers[x-token]", &["abc"])]),
            req().header("x-token", "ABC"),
            false,
            "",
        ),
        c(
            "notValues excludes a header value",
            allow_when(vec![when_not("request.headers[x-env]", &["test"])]),
            req().header("x-env", "test"),
            false,
            "",
        ),
        c(
            "notValues matches an absent header (DENY fires)",
            deny_when(vec![when_not("request.headers[x-ok]", &["yes"])]),
            req(),
            false,
            "foo/when#0",
        ),
        c(
            "repeated headers are joined with commas",
            allow_when(vec![when("request.headers[x-a]", &["1,2"])]),
            req().header("x-a", "1").header("x-a", "2"),
            true,
            "",
        ),
        // --- connection and certificate ---------------------------------------------------------
        c(
            "when connection.sni",
            allow_when(vec![when("connection.sni", &["*.svc.cluster.local"])]),
            req().sni("httpbin.foo.svc.cluster.local"),
            true,
            "",
        ),
        c(
            "connection.sni absent",
            allow_when(vec![when("connection.sni", &["*"])]),
            req(),
            false,
            "",
        ),
        c(
            "certificate_fingerprint * matches any verified certificate",
            allow_when(vec![when("source.certificate_fingerprint", &["*"])]),
            req(),
            true,
            "",
        ),
        c(
            "certificate_fingerprint * refuses plaintext",
            allow_when(vec![when("source.certificate_fingerprint", &["*"])]),
            req().plaintext(),
            false,
            "",
        ),
        c(
            "certificate_fingerprint * matches a certificate without SPIFFE ID",
            allow_when(vec![when("source.certificate_fingerprint", &["*"])]),
            req().peer(PeerIdentity::from_certificate(
                None,
                b"agency gateway certificate",
            )),
            true,
            "",
        ),
        c(
            "certificate_fingerprint exact, colon-separated upper case",
            allow_when(vec![when(
                "source.certificate_fingerprint",
                &[
                    "3F:0C:2A:1B:5D:6E:7F:80:91:A2:B3:C4:D5:E6:F7:08:19:2A:3B:4C:5D:6E:7F:80:91:A2:B3:C4:D5:E6:F7:08",
                ],
            )]),
            req(),
            true,
            "",
        ),
        // --- request authentication -----------------------------------------------------------
        c(
            "requestPrincipals iss/sub",
            allow_from(|s| s.request_principals = v(&["https://idp.gov/alice"])),
            req().claims(json!({"iss": "https://idp.gov", "sub": "alice"})),
            true,
            "",
        ),
        c(
            "requestPrincipals * without a token denies",
            allow_from(|s| s.request_principals = v(&["*"])),
            req(),
            false,
            "",
        ),
        c(
            "DENY notRequestPrincipals * refuses requests without a token",
            vec![deny(
                "need-jwt",
                vec![r(
                    vec![s(|s| s.not_request_principals = v(&["*"]))],
                    vec![],
                    vec![],
                )],
            )],
            req(),
            false,
            "foo/need-jwt#0",
        ),
        c(
            "claims: a list claim matches any element",
            allow_when(vec![when("request.auth.claims[groups]", &["caseworker"])]),
            req().claims(json!({"iss": "i", "sub": "s", "groups": ["viewer", "caseworker"]})),
            true,
            "",
        ),
        c(
            "claims: nested claim [realm][roles]",
            allow_when(vec![when("request.auth.claims[realm][roles]", &["admin"])]),
            req().claims(json!({"iss": "i", "sub": "s", "realm": {"roles": ["admin"]}})),
            true,
            "",
        ),
        c(
            "claims: absent claim denies",
            allow_when(vec![when("request.auth.claims[groups]", &["caseworker"])]),
            req().claims(json!({"iss": "i", "sub": "s"})),
            false,
            "",
        ),
        c(
            "request.auth.audiences",
            allow_when(vec![when("request.auth.audiences", &["child-api"])]),
            req().claims(json!({"iss": "i", "sub": "s", "aud": ["x", "child-api"]})),
            true,
            "",
        ),
        c(
            "request.auth.presenter",
            allow_when(vec![when("request.auth.presenter", &["portal"])]),
            req().claims(json!({"iss": "i", "sub": "s", "azp": "portal"})),
            true,
            "",
        ),
        c(
            "request.auth.principal",
            allow_when(vec![when("request.auth.principal", &["i/s"])]),
            req().claims(json!({"iss": "i", "sub": "s"})),
            true,
            "",
        ),
        // --- scope: namespaces, root namespace, selectors ---------------------------------------
        c(
            "root-namespace policy without selector applies mesh-wide",
            vec![pol(
                "istio-system",
                "mesh-deny",
                Action::Deny,
                vec![r(vec![], vec![o(|o| o.paths = v(&["/debug*"]))], vec![])],
            )],
            req().path("/debug/pprof"),
            false,
            "istio-system/mesh-deny#0",
        ),
        c(
            "a policy in another namespace does not apply",
            vec![pol("other", "deny-all", Action::Deny, vec![any()])],
            req(),
            true,
            "-",
        ),
        c(
            "a selector matching the workload applies",
            vec![with_selector(
                deny("sel", vec![any()]),
                &[("app", "httpbin")],
            )],
            req(),
            false,
            "foo/sel#0",
        ),
        c(
            "a selector not matching the workload does not apply",
            vec![with_selector(deny("sel", vec![any()]), &[("app", "other")])],
            req(),
            true,
            "-",
        ),
        c(
            "a root-namespace selector applies in every namespace",
            vec![with_selector(
                pol(
                    "istio-system",
                    "mesh-sel",
                    Action::Allow,
                    vec![r(vec![], vec![o(|o| o.paths = v(&["/x"]))], vec![])],
                ),
                &[("app", "httpbin")],
            )],
            req(),
            false,
            "-",
        ),
        // --- dry-run --------------------------------------------------------------------------
        c(
            "dry-run DENY is not enforced",
            vec![dry_run(deny("dry", vec![any()]))],
            req(),
            true,
            "-",
        ),
        c(
            "dry-run ALLOW does not make the workload default-deny",
            vec![dry_run(allow(
                "dry",
                vec![r(vec![], vec![o(|o| o.paths = v(&["/x"]))], vec![])],
            ))],
            req(),
            true,
            "-",
        ),
    ]
}
