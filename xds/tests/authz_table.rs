//! The authorization table: each case names the Istio behaviour it pins, builds native
//! policies, sends one request to workload `foo/httpbin`, and checks the verdict and the
//! deciding policy and rule.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "authz_support.rs"]
mod support;

use jalin_xds::authz::{
    EngineConfig, PathNormalization, PeerIdentity, Reason, TrustDomains, Verdict, remote_ip,
};
use jalin_xds::model::authz::{Action, AuthorizationPolicy};
use serde_json::json;
use support::*;

struct Case {
    name: &'static str,
    policies: Vec<AuthorizationPolicy>,
    req: Req,
    allow: bool,
    /// `""`: not checked; `"-"`: no deciding policy; `"ns/name#rule"`.
    by: &'static str,
    config: EngineConfig,
}

fn c(
    name: &'static str,
    policies: Vec<AuthorizationPolicy>,
    req: Req,
    allow: bool,
    by: &'static str,
) -> Case {
    Case {
        name,
        policies,
        req,
        allow,
        by,
        config: EngineConfig::default(),
    }
}

impl Case {
    fn cfg(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }
}

fn allow_get_on(paths: &[&str]) -> Vec<AuthorizationPolicy> {
    vec![allow(
        "paths",
        vec![r(vec![], vec![o(|o| o.paths = v(paths))], vec![])],
    )]
}

fn deny_paths(paths: &[&str]) -> Vec<AuthorizationPolicy> {
    vec![deny(
        "block",
        vec![r(vec![], vec![o(|o| o.paths = v(paths))], vec![])],
    )]
}

fn allow_from(f: impl FnOnce(&mut jalin_xds::model::authz::Source)) -> Vec<AuthorizationPolicy> {
    vec![allow("from", vec![r(vec![s(f)], vec![], vec![])])]
}

fn allow_to(f: impl FnOnce(&mut jalin_xds::model::authz::Operation)) -> Vec<AuthorizationPolicy> {
    vec![allow("to", vec![r(vec![], vec![o(f)], vec![])])]
}

fn allow_when(conds: Vec<jalin_xds::model::authz::Condition>) -> Vec<AuthorizationPolicy> {
    vec![allow("when", vec![r(vec![], vec![], conds)])]
}

fn deny_when(conds: Vec<jalin_xds::model::authz::Condition>) -> Vec<AuthorizationPolicy> {
    vec![deny("when", vec![r(vec![], vec![], conds)])]
}

fn td(local: &str, aliases: &[&str]) -> EngineConfig {
    EngineConfig {
        trust_domains: TrustDomains {
            local: local.into(),
            aliases: v(aliases),
        },
        ..Default::default()
    }
}

fn cases() -> Vec<Case> {
    let bar_sleep = "cluster.local/ns/bar/sa/sleep";
    vec![
        // --- policy presence and empty forms -------------------------------------------------
        c("no policy at all allows", vec![], req(), true, "-"),
        c(
            "spec {} as ALLOW allows nothing",
            vec![allow("empty", vec![])],
            req(),
            false,
            "-",
        ),
        c(
            "spec {} as DENY matches nothing",
            vec![deny("empty", vec![])],
            req(),
            true,
            "-",
        ),
        c(
            "rules [{}] as ALLOW allows everything",
            vec![allow("all", vec![any()])],
            req().plaintext(),
            true,
            "foo/all#0",
        ),
        c(
            "rules [{}] as DENY denies everything",
            vec![deny("all", vec![any()])],
            req(),
            false,
            "foo/all#0",
        ),
        c(
            "ALLOW policies present but none matching denies",
            allow_get_on(&["/x"]),
            req(),
            false,
            "-",
        ),
        c(
            "DENY beats ALLOW when both match",
            vec![allow("all", vec![any()]), deny("all-deny", vec![any()])],
            req(),
            false,
            "foo/all-deny#0",
        ),
        c(
            "non-matching DENY falls through to a matching ALLOW",
            vec![
                deny(
                    "d",
                    vec![r(vec![], vec![o(|o| o.methods = v(&["DELETE"]))], vec![])],
                ),
                allow("a", vec![any()]),
            ],
            req(),
            true,
            "foo/a#0",
        ),
        c(
            "AUDIT alone never denies",
            vec![pol("foo", "audit", Action::Audit, vec![any()])],
            req(),
            true,
            "-",
        ),
        c(
            "AUDIT does not rescue a request no ALLOW matches",
            vec![
                pol("foo", "audit", Action::Audit, vec![any()]),
                allow(
                    "a",
                    vec![r(vec![], vec![o(|o| o.paths = v(&["/x"]))], vec![])],
                ),
            ],
            req(),
            false,
            "-",
        ),
        // --- boolean structure ---------------------------------------------------------------
        c(
            "rules are ORed: the second rule decides",
            vec![allow(
                "or",
                vec![
                    r(vec![], vec![o(|o| o.paths = v(&["/x"]))], vec![]),
                    r(vec![], vec![o(|o| o.methods = v(&["GET"]))], vec![]),
                ],
            )],
            req(),
            true,
            "foo/or#1",
        ),
        c(
            "from and to are ANDed: matching source but wrong operation denies",
            vec![allow(
                "and",
                vec![r(
                    vec![s(|s| s.principals = v(&[bar_sleep]))],
                    vec![o(|o| o.methods = v(&["POST"]))],
                    vec![],
                )],
            )],
            req(),
            false,
            "-",
        ),
        c(
            "source fields are ANDed: principal matches, namespace does not",
            allow_from(|s| {
                s.principals = v(&[bar_sleep]);
                s.ip_blocks = v(&["192.168.0.0/16"]);
            }),
            req(),
            false,
            "-",
        ),
        c(
            "values are ORed: any listed method",
            allow_to(|o| o.methods = v(&["POST", "GET"])),
            req(),
            true,
            "foo/to#0",
        ),
        c(
            "when conditions are ANDed: one failing condition denies",
            allow_when(vec![
                when("request.headers[x-a]", &["1"]),
                when("request.headers[x-b]", &["2"]),
            ]),
            req().header("x-a", "1"),
            false,
            "-",
        ),
        c(
            "sources in from are ORed",
            vec![allow(
                "f",
                vec![r(
                    vec![
                        s(|s| s.principals = v(&["cluster.local/ns/x/sa/y"])),
                        s(|s| s.namespaces = v(&["bar"])),
                    ],
                    vec![],
                    vec![],
                )],
            )],
            req(),
            true,
            "foo/f#0",
        ),
        // --- paths ----------------------------------------------------------------------------
        c(
            "exact path matches",
            allow_get_on(&["/info"]),
            req().path("/info"),
            true,
            "foo/paths#0",
        ),
        c(
            "exact path does not match with a trailing slash",
            allow_get_on(&["/info"]),
            req().path("/info/"),
            false,
            "-",
        ),
        c(
            "prefix path /api/* matches below it",
            allow_get_on(&["/api/*"]),
            req().path("/api/v1/x"),
            true,
            "",
        ),
        c(
            "prefix path /api/* matches /api/ itself",
            allow_get_on(&["/api/*"]),
            req().path("/api/"),
            true,
            "",
        ),
        c(
            "prefix path /api/* does not match /api",
            allow_get_on(&["/api/*"]),
            req().path("/api"),
            false,
            "",
        ),
        c(
            "suffix path *.html matches",
            allow_get_on(&["*.html"]),
            req().path("/a/b.html"),
            true,
            "",
        ),
        c(
            "presence path * matches any path",
            allow_get_on(&["*"]),
            req().path("/anything/at/all"),
            true,
            "",
        ),
        c(
            "paths are case-sensitive",
            allow_get_on(&["/admin"]),
            req().path("/Admin"),
            false,
            "",
        ),
        c(
            "notPaths excludes a path from an ALLOW rule",
            allow_to(|o| {
                o.paths = v(&["/api/*"]);
                o.not_paths = v(&["/api/admin"]);
            }),
            req().path("/api/admin"),
            false,
            "-",
        ),
        c(
            "notPaths alone allows other paths",
            allow_to(|o| o.not_paths = v(&["/secret"])),
            req().path("/public"),
            true,
            "",
        ),
        c(
            "query string is not part of the path",
            allow_get_on(&["/info"]),
            req().path("/info?x=/secret"),
            true,
            "",
        ),
        c(
            "normalisation: /a/../admin is /admin for DENY",
            deny_paths(&["/admin"]),
            req().path("/public/../admin"),
            false,
            "foo/block#0",
        ),
        c(
            "normalisation: /./admin is /admin",
            deny_paths(&["/admin"]),
            req().path("/./admin"),
            false,
            "",
        ),
        c(
            "normalisation: //admin is merged to /admin",
            deny_paths(&["/admin"]),
            req().path("//admin"),
            false,
            "",
        ),
        c(
            "normalisation: a//b is merged inside a path",
            deny_paths(&["/a/b"]),
            req().path("/a//b"),
            false,
            "",
        ),
        c(
            "normalisation: backslash becomes slash",
            deny_paths(&["/admin/x"]),
            req().path("/admin\\x"),
            false,
            "",
        ),
        c(
            "normalisation: encoded unreserved characters are decoded",
            deny_paths(&["/admin"]),
            req().path("/%61dmin"),
            false,
            "",
        ),
        c(
            "normalisation: encoded dots are dot segments",
            deny_paths(&["/admin"]),
            req().path("/x/%2e%2e/admin"),
            false,
            "",
        ),
        c(
            "normalisation MERGE_SLASHES keeps %2F encoded, so an exact DENY does not see /a%2Fb as /a/b",
            deny_paths(&["/admin/secret"]),
            req().path("/admin%2Fsecret"),
            true,
            "-",
        ),
        c(
            "normalisation MERGE_SLASHES: a prefix DENY still covers /admin%2Fsecret",
            deny_paths(&["/admin*"]),
            req().path("/admin%2fsecret"),
            false,
            "",
        ),
        Case {
            config: EngineConfig {
                path_normalization: PathNormalization::DecodeAndMergeSlashes,
                ..Default::default()
            },
            ..c(
                "normalisation DECODE_AND_MERGE_SLASHES decodes %2F",
                deny_paths(&["/admin/secret"]),
                req().path("/admin%2Fsecret"),
                false,
                "",
            )
        },
        Case {
            config: EngineConfig {
                path_normalization: PathNormalization::Base,
                ..Default::default()
            },
            ..c(
                "normalisation BASE does not merge slashes",
                deny_paths(&["/admin"]),
                req().path("//admin"),
                true,
                "",
            )
        },
        c(
            "path template {*} matches one segment",
            allow_get_on(&["/users/{*}/profile"]),
            req().path("/users/42/profile"),
            true,
            "",
        ),
        c(
            "path template {*} does not match two segments",
            allow_get_on(&["/users/{*}/profile"]),
            req().path("/users/4/2/profile"),
            false,
            "",
        ),
        c(
            "path template {**} matches several segments",
            allow_get_on(&["/files/{**}"]),
            req().path("/files/a/b/c.txt"),
            true,
            "",
        ),
        c(
            "path template {**} needs at least one segment",
            allow_get_on(&["/files/{**}"]),
            req().path("/files/"),
            false,
            "",
        ),
        // --- hosts, methods, ports --------------------------------------------------------------
        c(
            "hosts are case-insensitive",
            allow_to(|o| o.hosts = v(&["HTTPBIN.foo"])),
            req().host("httpbin.FOO"),
            true,
            "",
        ),
        c(
            "a host without port matches the authority with a port",
            allow_to(|o| o.hosts = v(&["httpbin.foo"])),
            req().host("httpbin.foo:8000"),
            true,
            "",
        ),
        c(
            "a host with a port needs that port",
            allow_to(|o| o.hosts = v(&["httpbin.foo:9000"])),
            req().host("httpbin.foo:8000"),
            false,
            "",
        ),
        c(
            "suffix hosts *.example.com",
            allow_to(|o| o.hosts = v(&["*.example.com"])),
            req().host("api.Example.com"),
            true,
            "",
        ),
        c(
            "notHosts excludes a host",
            allow_to(|o| o.not_hosts = v(&["httpbin.foo"])),
            req().host("httpbin.foo"),
            false,
            "",
        ),
        c(
            "methods: other method denied",
            allow_to(|o| o.methods = v(&["GET"])),
            req().method("POST"),
            false,
            "",
        ),
        c(
            "notMethods: excluded method denied",
            allow_to(|o| o.not_methods = v(&["DELETE"])),
            req().method("DELETE"),
            false,
            "",
        ),
        c(
            "notMethods: other method allowed",
            allow_to(|o| o.not_methods = v(&["DELETE"])),
            req().method("PUT"),
            true,
            "",
        ),
        c(
            "ports: listed destination port matches",
            allow_to(|o| o.ports = v(&["8000"])),
            req().port(8000),
            true,
            "",
        ),
        c(
            "ports: other destination port denied",
            allow_to(|o| o.ports = v(&["8000"])),
            req().port(9090),
            false,
            "",
        ),
        c(
            "notPorts: excluded port denied",
            allow_to(|o| o.not_ports = v(&["9090"])),
            req().port(9090),
            false,
            "",
        ),
        // --- peer identities -------------------------------------------------------------------
        c(
            "exact principal matches",
            allow_from(|s| s.principals = v(&[bar_sleep])),
            req(),
            true,
            "foo/from#0",
        ),
        c(
            "principal prefix",
            allow_from(|s| s.principals = v(&["cluster.local/ns/bar/*"])),
            req(),
            true,
            "",
        ),
        c(
            "principal suffix",
            allow_from(|s| s.principals = v(&["*/sa/sleep"])),
            req(),
            true,
            "",
        ),
        c(
            "principal * matches any mTLS peer",
            allow_from(|s| s.principals = v(&["*"])),
            req(),
            true,
            "",
        ),
        c(
            "plaintext peer never matches principals *",
            allow_from(|s| s.principals = v(&["*"])),
            req().plaintext(),
            false,
            "",
        ),
        c(
            "plaintext peer never matches an exact principal",
            allow_from(|s| s.principals = v(&[bar_sleep])),
            req().plaintext(),
            false,
            "",
        ),
        c(
            "plaintext peer matches notPrincipals",
            allow_from(|s| s.not_principals = v(&["cluster.local/ns/evil/sa/x"])),
            req().plaintext(),
            true,
            "",
        ),
        c(
            "DENY notPrincipals * refuses plaintext peers",
            vec![deny(
                "require-mtls",
                vec![r(vec![s(|s| s.not_principals = v(&["*"]))], vec![], vec![])],
            )],
            req().plaintext(),
            false,
            "foo/require-mtls#0",
        ),
        c(
            "DENY notPrincipals * lets mTLS peers through",
            vec![deny(
                "require-mtls",
                vec![r(vec![s(|s| s.not_principals = v(&["*"]))], vec![], vec![])],
            )],
            req(),
            true,
            "-",
        ),
        c(
            "namespaces match the peer's namespace",
            allow_from(|s| s.namespaces = v(&["bar"])),
            req(),
            true,
            "",
        ),
        c(
            "namespaces prefix",
            allow_from(|s| s.namespaces = v(&["ba*"])),
            req(),
            true,
            "",
        ),
        c(
            "plaintext peer never matches namespaces",
            allow_from(|s| s.namespaces = v(&["bar"])),
            req().plaintext(),
            false,
            "",
        ),
        c(
            "notNamespaces excludes the peer's namespace",
            allow_from(|s| s.not_namespaces = v(&["bar"])),
            req(),
            false,
            "",
        ),
        c(
            "serviceAccounts ns/sa matches",
            allow_from(|s| s.service_accounts = v(&["bar/sleep"])),
            req(),
            true,
            "",
        ),
        c(
            "serviceAccounts other account denied",
            allow_from(|s| s.service_accounts = v(&["bar/other"])),
            req(),
            false,
            "",
        ),
        c(
            "serviceAccounts never match a plaintext peer",
            allow_from(|s| s.service_accounts = v(&["bar/sleep"])),
            req().plaintext(),
            false,
            "",
        ),
        c(
            "notServiceAccounts excludes",
            allow_from(|s| s.not_service_accounts = v(&["bar/sleep"])),
            req(),
            false,
            "",
        ),
        c(
            "trust domain alias: policy on old-td matches a new-td peer",
            allow_from(|s| s.principals = v(&["old-td/ns/bar/sa/sleep"])),
            req().principal("spiffe://new-td/ns/bar/sa/sleep"),
            true,
            "",
        )
        .cfg(td("new-td", &["old-td"])),
        c(
            "trust domain alias: policy on new-td matches an old-td peer",
            allow_from(|s| s.principals = v(&["new-td/ns/bar/sa/sleep"])),
            req().principal("spiffe://old-td/ns/bar/sa/sleep"),
            true,
            "",
        )
        .cfg(td("new-td", &["old-td"])),
        c(
            "cluster.local in a policy means the local trust domain",
            allow_from(|s| s.principals = v(&[bar_sleep])),
            req().principal("spiffe://gov.example/ns/bar/sa/sleep"),
            true,
            "",
        )
        .cfg(td("gov.example", &[])),
        c(
            "a foreign trust domain is matched literally",
            allow_from(|s| s.principals = v(&["other.td/ns/bar/sa/sleep"])),
            req(),
            false,
            "",
        ),
        c(
            "serviceAccounts accept an alias trust domain",
            allow_from(|s| s.service_accounts = v(&["bar/sleep"])),
            req().principal("spiffe://old-td/ns/bar/sa/sleep"),
            true,
            "",
        )
        .cfg(td("new-td", &["old-td"])),
        c(
            "serviceAccounts refuse a foreign trust domain",
            allow_from(|s| s.service_accounts = v(&["bar/sleep"])),
            req().principal("spiffe://foreign.td/ns/bar/sa/sleep"),
            false,
            "",
        ),
        c(
            "when source.principal honours trust domain aliases",
            allow_when(vec![when("source.principal", &["old-td/ns/bar/sa/sleep"])]),
            req().principal("spiffe://new-td/ns/bar/sa/sleep"),
            true,
            "",
        )
        .cfg(td("new-td", &["old-td"])),
        c(
            "when source.namespace",
            allow_when(vec![when("source.namespace", &["bar"])]),
            req(),
            true,
            "",
        ),
        // --- addresses ------------------------------------------------------------------------
        c(
            "ipBlocks CIDR matches the peer address",
            allow_from(|s| s.ip_blocks = v(&["10.0.0.0/24"])),
            req(),
            true,
            "",
        ),
        c(
            "ipBlocks single address",
            allow_from(|s| s.ip_blocks = v(&["10.0.0.5"])),
            req(),
            true,
            "",
        ),
        c(
            "ipBlocks outside the block denied",
            allow_from(|s| s.ip_blocks = v(&["10.9.0.0/16"])),
            req(),
            false,
            "",
        ),
        c(
            "notIpBlocks excludes the peer",
            allow_from(|s| s.not_ip_blocks = v(&["10.0.0.0/8"])),
            req(),
            false,
            "",
        ),
        c(
            "IPv4-mapped IPv6 peers match IPv4 blocks",
            allow_from(|s| s.ip_blocks = v(&["10.0.0.0/24"])),
            req().source_ip("::ffff:10.0.0.5"),
            true,
            "",
        ),
        c(
            "remoteIpBlocks match the client from X-Forwarded-For",
            allow_from(|s| s.remote_ip_blocks = v(&["203.0.113.0/24"])),
            {
                let r0 = req().header("x-forwarded-for", "203.0.113.7, 10.0.0.2");
                let ip = remote_ip(&r0.headers, 2, r0.source_ip);
                r0.remote_ip(&ip.to_string())
            },
            true,
            "",
        ),
        c(
            "remoteIpBlocks do not match the proxy address",
            allow_from(|s| s.remote_ip_blocks = v(&["10.0.0.0/24"])),
            req().remote_ip("203.0.113.7"),
            false,
            "",
        ),
        c(
            "ipBlocks still see the direct peer when XFF names a client",
            allow_from(|s| s.ip_blocks = v(&["203.0.113.0/24"])),
            req().remote_ip("203.0.113.7"),
            false,
            "",
        ),
        c(
            "when source.ip",
            allow_when(vec![when("source.ip", &["10.0.0.0/24"])]),
            req(),
            true,
            "",
        ),
        c(
            "when remote.ip notValues",
            allow_when(vec![when_not("remote.ip", &["10.0.0.5"])]),
            req(),
            false,
            "",
        ),
        c(
            "when destination.ip",
            allow_when(vec![when("destination.ip", &["10.0.1.0/24"])]),
            req(),
            true,
            "",
        ),
        c(
            "when destination.port",
            allow_when(vec![when("destination.port", &["8000"])]),
            req(),
            true,
            "",
        ),
        c(
            "when destination.port other port",
            allow_when(vec![when("destination.port", &["8000"])]),
            req().port(8001),
            false,
            "",
        ),
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
        // --- TCP ------------------------------------------------------------------------------
    ]
}

#[test]
fn authorization_table() {
    let cases = cases();
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
