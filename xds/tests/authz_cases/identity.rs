//! Table cases: hosts, methods, ports, peer identities, trust domains and addresses.

use jalin_xds::authz::remote_ip;

use super::*;
use crate::support::*;

pub fn identity() -> Vec<Case> {
    vec![
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
            allow_from(|s| s.principals = v(&[BAR_SLEEP])),
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
            allow_from(|s| s.principals = v(&[BAR_SLEEP])),
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
            allow_from(|s| s.principals = v(&[BAR_SLEEP])),
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
    ]
}
