//! Table cases: policy presence, empty forms, boolean structure, paths and their normalisation.

use jalin_xds::authz::{EngineConfig, PathNormalization};
use jalin_xds::model::authz::Action;

use super::*;
use crate::support::*;

pub fn structure() -> Vec<Case> {
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
                    vec![s(|s| s.principals = v(&[BAR_SLEEP]))],
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
                s.principals = v(&[BAR_SLEEP]);
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
    ]
}
