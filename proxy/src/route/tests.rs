//! Route matcher and decision tests, including the seed's `child-profile-service-routing`
//! VirtualService (policies-17) built in code.

use std::collections::BTreeMap;

use http::HeaderMap;
use jalin_xds::model::meta::ResourceMeta;
use jalin_xds::model::route::*;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::*;

fn meta() -> ResourceMeta {
    ResourceMeta {
        name: "child-profile-service-routing".into(),
        namespace: "child-services".into(),
        source: None,
    }
}

fn dest(host: &str, subset: Option<&str>, weight: u32) -> RouteDestination {
    RouteDestination {
        destination: Destination {
            host: host.into(),
            subset: subset.map(Into::into),
            port: None,
        },
        weight,
    }
}

fn header_block(name: &str, m: StringMatch) -> RouteMatch {
    RouteMatch {
        headers: BTreeMap::from([(name.into(), m)]),
        ..Default::default()
    }
}

/// policies-17-virtualservice-child-profile-service-routing.yaml, as the importer maps it.
fn seed_policy_17() -> RouteTable {
    let svc = "child-profile-service";
    RouteTable {
        meta: meta(),
        hosts: vec![svc.into()],
        gateways: Vec::new(),
        http: vec![
            HttpRoute {
                matches: vec![header_block(
                    "x-child-access-reason",
                    StringMatch::Exact("emergency".into()),
                )],
                destinations: vec![dest(svc, Some("emergency"), 100)],
                fault: Some(Fault {
                    delay: Some(FaultDelay {
                        fixed_delay_ms: 0,
                        percentage: 0.0,
                    }),
                    abort: None,
                }),
                retries: RetryPolicy::istio(
                    3,
                    Some(10_000),
                    Some("5xx,reset,connect-failure,refused-stream"),
                ),
                priority: PriorityClass::Emergency,
                ..Default::default()
            },
            HttpRoute {
                matches: vec![header_block(
                    "x-child-access-reason",
                    StringMatch::Exact("care-coordination".into()),
                )],
                destinations: vec![dest(svc, Some("standard"), 100)],
                timeout_ms: Some(30_000),
                retries: RetryPolicy {
                    attempts: 2,
                    per_try_timeout_ms: Some(15_000),
                    ..RetryPolicy::default()
                },
                ..Default::default()
            },
            HttpRoute {
                destinations: vec![dest(svc, Some("standard"), 100)],
                timeout_ms: Some(60_000),
                ..Default::default()
            },
        ],
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

fn single(m: RouteMatch) -> CompiledRouteTable {
    CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![HttpRoute {
            matches: vec![m],
            destinations: vec![dest("a", None, 1)],
            ..Default::default()
        }],
    })
    .unwrap()
}

#[test]
fn seed_emergency_header_routes_to_emergency_subset() {
    let t = CompiledRouteTable::compile(&seed_policy_17()).unwrap();
    let h = headers(&[("x-child-access-reason", "emergency")]);
    let req = RequestView::new("GET", "/children/42", "child-profile-service", &h, 80);
    let r = t.match_route(&req).unwrap();
    assert_eq!(
        r.choose_destination(7).unwrap().subset.as_deref(),
        Some("emergency")
    );
    assert_eq!(r.priority, PriorityClass::Emergency);
    assert_eq!(r.retry.attempts, 3);
    assert_eq!(r.retry.per_try_timeout, Some(Duration::from_secs(10)));
    assert!(should_retry(
        &r.retry,
        &Outcome::Response {
            status: 500,
            grpc_status: None
        }
    ));
    assert_eq!(r.timeout, None, "no timeout by default");
    assert_eq!(
        r.fault(0.0, 0.0),
        FaultDecision::default(),
        "0 % delay never fires"
    );

    let h = headers(&[("x-child-access-reason", "care-coordination")]);
    let r = t
        .match_route(&RequestView::new(
            "GET",
            "/",
            "child-profile-service",
            &h,
            80,
        ))
        .unwrap();
    assert_eq!(
        r.choose_destination(0).unwrap().subset.as_deref(),
        Some("standard")
    );
    assert_eq!(r.timeout, Some(Duration::from_secs(30)));
    let status = |status| Outcome::Response {
        status,
        grpc_status: None,
    };
    assert!(
        should_retry(&r.retry, &status(503)),
        "no retryOn: Istio's default conditions"
    );
    assert!(!should_retry(&r.retry, &status(500)));
    assert_eq!(r.priority, PriorityClass::Standard);

    for reason in ["EMERGENCY", "emergency-ish", ""] {
        let h = headers(&[("x-child-access-reason", reason)]);
        let r = t
            .match_route(&RequestView::new(
                "GET",
                "/",
                "child-profile-service",
                &h,
                80,
            ))
            .unwrap();
        assert_eq!(r.name, "http[2]", "`{reason}` falls to the default route");
        assert_eq!(r.timeout, Some(Duration::from_secs(60)));
    }
    assert!(t.serves("child-profile-service:8080"));
    assert!(!t.serves("other-service"));
}

#[test]
fn first_match_wins_blocks_or_conditions_and() {
    let t = CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![
            HttpRoute {
                name: Some("both".into()),
                matches: vec![
                    RouteMatch {
                        uri: Some(StringMatch::Prefix("/api".into())),
                        method: Some(StringMatch::Exact("POST".into())),
                        ..Default::default()
                    },
                    RouteMatch {
                        uri: Some(StringMatch::Exact("/health".into())),
                        ..Default::default()
                    },
                ],
                destinations: vec![dest("a", None, 1)],
                ..Default::default()
            },
            HttpRoute {
                name: Some("api".into()),
                matches: vec![RouteMatch {
                    uri: Some(StringMatch::Prefix("/api".into())),
                    ..Default::default()
                }],
                destinations: vec![dest("b", None, 1)],
                ..Default::default()
            },
        ],
    })
    .unwrap();
    let h = HeaderMap::new();
    let name = |m: &str, p: &str| {
        t.match_route(&RequestView::new(m, p, "x", &h, 80))
            .map(|r| r.name.clone())
    };
    assert_eq!(
        name("POST", "/api/x").as_deref(),
        Some("both"),
        "block 0: both conditions hold"
    );
    assert_eq!(
        name("GET", "/api/x").as_deref(),
        Some("api"),
        "AND fails in block 0, later route matches"
    );
    assert_eq!(
        name("GET", "/health").as_deref(),
        Some("both"),
        "block 1 ORed"
    );
    assert_eq!(name("GET", "/other"), None, "no catch-all: no route");
    let hit = t
        .match_route_hit(&RequestView::new("GET", "/health", "x", &h, 80))
        .unwrap();
    assert_eq!(hit.block, Some(1));
}

#[test]
fn uri_kinds_and_ignore_case() {
    let h = HeaderMap::new();
    let hits = |t: &CompiledRouteTable, p: &str| {
        t.match_route(&RequestView::new("GET", p, "x", &h, 80))
            .is_some()
    };
    let t = single(RouteMatch {
        uri: Some(StringMatch::Exact("/a".into())),
        ..Default::default()
    });
    assert!(hits(&t, "/a") && hits(&t, "/a?x=1") && !hits(&t, "/a/b") && !hits(&t, "/A"));
    let t = single(RouteMatch {
        uri: Some(StringMatch::Prefix("/a".into())),
        ignore_uri_case: true,
        ..Default::default()
    });
    assert!(hits(&t, "/a/b") && hits(&t, "/A/b") && !hits(&t, "/b"));
    let t = single(RouteMatch {
        uri: Some(StringMatch::Exact("/Case".into())),
        ignore_uri_case: true,
        ..Default::default()
    });
    assert!(hits(&t, "/case") && hits(&t, "/CASE"));
    let t = single(RouteMatch {
        uri: Some(StringMatch::Regex("/v[0-9]+/.*".into())),
        ..Default::default()
    });
    assert!(
        hits(&t, "/v12/x") && !hits(&t, "/x/v1/y"),
        "regex is anchored"
    );
}

#[test]
fn method_authority_port_source() {
    let h = HeaderMap::new();
    let t = single(RouteMatch {
        method: Some(StringMatch::Regex("GET|HEAD".into())),
        ..Default::default()
    });
    assert!(
        t.match_route(&RequestView::new("HEAD", "/", "x", &h, 80))
            .is_some()
    );
    assert!(
        t.match_route(&RequestView::new("POST", "/", "x", &h, 80))
            .is_none()
    );
    let t = single(RouteMatch {
        authority: Some(StringMatch::Prefix("api.".into())),
        ..Default::default()
    });
    assert!(
        t.match_route(&RequestView::new("GET", "/", "api.gov", &h, 80))
            .is_some()
    );
    assert!(
        t.match_route(&RequestView::new("GET", "/", "www.gov", &h, 80))
            .is_none()
    );
    let t = single(RouteMatch {
        port: Some(8443),
        ..Default::default()
    });
    assert!(
        t.match_route(&RequestView::new("GET", "/", "x", &h, 8443))
            .is_some()
    );
    assert!(
        t.match_route(&RequestView::new("GET", "/", "x", &h, 80))
            .is_none()
    );

    let t = single(RouteMatch {
        source_labels: BTreeMap::from([("app".into(), "case-worker".into())]),
        source_namespace: Some("child-services".into()),
        ..Default::default()
    });
    let labels = BTreeMap::from([
        ("app".to_owned(), "case-worker".to_owned()),
        ("v".to_owned(), "1".to_owned()),
    ]);
    let mut req = RequestView::new("GET", "/", "x", &h, 80);
    assert!(
        t.match_route(&req).is_none(),
        "unknown source never matches a source condition"
    );
    req.source_labels = Some(&labels);
    assert!(t.match_route(&req).is_none(), "namespace missing");
    req.source_namespace = Some("child-services");
    assert!(t.match_route(&req).is_some());
    req.source_namespace = Some("other");
    assert!(t.match_route(&req).is_none());
}

#[test]
fn header_kinds_without_headers_and_query() {
    let t = single(header_block("x-v", StringMatch::Prefix("v1".into())));
    let m = |t: &CompiledRouteTable, h: &[(&str, &str)], p: &str| {
        let h = headers(h);
        t.match_route(&RequestView::new("GET", p, "x", &h, 80))
            .is_some()
    };
    assert!(m(&t, &[("x-v", "v1.2")], "/") && !m(&t, &[("x-v", "v2")], "/") && !m(&t, &[], "/"));
    let t = single(header_block("x-v", StringMatch::Regex("v[12]".into())));
    assert!(m(&t, &[("x-v", "v2")], "/") && !m(&t, &[("x-v", "v3")], "/"));
    let t = single(header_block("x-v", StringMatch::Present));
    assert!(m(&t, &[("x-v", "")], "/") && !m(&t, &[], "/"));
    let t = single(header_block("x-v", StringMatch::Exact("a,b".into())));
    assert!(
        m(&t, &[("x-v", "a"), ("x-v", "b")], "/"),
        "repeated headers joined with a comma"
    );

    let t = single(RouteMatch {
        without_headers: BTreeMap::from([("x-debug".into(), StringMatch::Present)]),
        ..Default::default()
    });
    assert!(m(&t, &[], "/") && !m(&t, &[("x-debug", "1")], "/"));

    let t = single(RouteMatch {
        query_params: BTreeMap::from([
            ("case".into(), StringMatch::Exact("42".into())),
            ("mode".into(), StringMatch::Regex("r(ead|o)".into())),
        ]),
        ..Default::default()
    });
    assert!(m(&t, &[], "/p?case=42&mode=read"));
    assert!(m(&t, &[], "/p?mode=ro&case=42"));
    assert!(!m(&t, &[], "/p?case=42"), "AND across parameters");
    assert!(!m(&t, &[], "/p?case=420&mode=ro"));
    assert!(!m(&t, &[], "/p"));
}

#[test]
fn weighted_choice_90_10_within_3_percent() {
    let t = CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![HttpRoute {
            destinations: vec![dest("a", Some("v1"), 90), dest("a", Some("v2"), 10)],
            ..Default::default()
        }],
    })
    .unwrap();
    let h = HeaderMap::new();
    let r = t
        .match_route(&RequestView::new("GET", "/", "x", &h, 80))
        .unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let n = 5_000;
    let v1 = (0..n)
        .filter(|_| {
            r.choose_destination(rng.random())
                .unwrap()
                .subset
                .as_deref()
                == Some("v1")
        })
        .count();
    let share = v1 as f64 / n as f64;
    assert!((share - 0.9).abs() <= 0.03, "v1 share {share}");
}

#[test]
fn fault_mirror_rewrite_redirect_headers() {
    let mut route = HttpRoute {
        matches: vec![RouteMatch {
            uri: Some(StringMatch::Prefix("/old".into())),
            ..Default::default()
        }],
        destinations: vec![dest("a", None, 1)],
        fault: Some(Fault {
            delay: Some(FaultDelay {
                fixed_delay_ms: 250,
                percentage: 50.0,
            }),
            abort: Some(FaultAbort {
                error: AbortError::HttpStatus(503),
                percentage: 10.0,
            }),
        }),
        mirror: Some(Mirror {
            destination: Destination {
                host: "shadow".into(),
                subset: None,
                port: None,
            },
            percentage: 25.0,
        }),
        rewrite: Some(Rewrite {
            uri: Some("/new".into()),
            authority: Some("b.svc".into()),
            uri_regex_rewrite: None,
        }),
        ..Default::default()
    };
    route.headers.request.set.insert("x-set".into(), "1".into());
    route.headers.request.add.insert("x-add".into(), "2".into());
    route.headers.request.remove.push("x-secret".into());
    let t = CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![route],
    })
    .unwrap();
    let h = HeaderMap::new();
    let hit = t
        .match_route_hit(&RequestView::new("GET", "/old/x", "a", &h, 80))
        .unwrap();
    let r = hit.route;
    assert_eq!(r.fault(0.49, 0.5).delay, Some(Duration::from_millis(250)));
    assert_eq!(r.fault(0.51, 0.5), FaultDecision::default());
    assert_eq!(r.fault(0.99, 0.09).abort, Some(AbortError::HttpStatus(503)));
    let mut rng = StdRng::seed_from_u64(9);
    let mirrored = (0..4_000)
        .filter(|_| r.mirror(rng.random()).is_some())
        .count();
    assert!((900..=1_100).contains(&mirrored), "mirrored {mirrored}");
    assert_eq!(
        r.rewrite_path("/old/x", hit.block).as_deref(),
        Some("/new/x"),
        "prefix replaced"
    );
    assert_eq!(r.rewrite_authority.as_deref(), Some("b.svc"));

    let mut hm = headers(&[("x-secret", "k"), ("x-set", "0"), ("x-add", "1")]);
    r.apply_request_headers(&mut hm);
    assert!(hm.get("x-secret").is_none());
    assert_eq!(hm.get("x-set").unwrap(), "1");
    assert_eq!(hm.get_all("x-add").iter().count(), 2);

    let re = HttpRoute {
        destinations: vec![dest("a", None, 1)],
        rewrite: Some(Rewrite {
            uri: None,
            authority: None,
            uri_regex_rewrite: Some(RegexRewrite {
                pattern: "^/service/([^/]+)(/.*)$".into(),
                rewrite: "\\2/instance/\\1".into(),
            }),
        }),
        ..Default::default()
    };
    let t = CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![re],
    })
    .unwrap();
    assert_eq!(
        t.routes()[0]
            .rewrite_path("/service/foo/v1/api", None)
            .as_deref(),
        Some("/v1/api/instance/foo")
    );

    let redirect = HttpRoute {
        redirect: Some(Redirect {
            uri: Some("/v2".into()),
            authority: Some("new.gov".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let direct = HttpRoute {
        direct_response: Some(DirectResponse {
            status: 418,
            body: Some("tea".into()),
        }),
        ..Default::default()
    };
    let t = CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![redirect, direct],
    })
    .unwrap();
    let req = RequestView::new("GET", "/v1?q=1", "old.gov:8080", &h, 80);
    let r = t.match_route(&req).unwrap();
    assert_eq!(
        r.redirect_location(&req, "https"),
        Some((301, "https://new.gov/v2?q=1".into()))
    );
    assert!(r.choose_destination(1).is_none());
    assert_eq!(t.routes()[1].direct_response.as_ref().unwrap().status, 418);
}

#[test]
fn compile_errors_name_the_field() {
    let bad = RouteTable {
        meta: meta(),
        hosts: vec!["*".into()],
        gateways: Vec::new(),
        http: vec![HttpRoute {
            destinations: vec![dest("a", None, 1)],
            retries: RetryPolicy {
                retry_on: "5xx,sometimes".into(),
                ..RetryPolicy::default()
            },
            ..Default::default()
        }],
    };
    let e = CompiledRouteTable::compile(&bad).unwrap_err();
    assert_eq!(e.path, "http[0].retries.retryOn");
    assert!(e.message.contains("sometimes"));
    let mut bad_header = HttpRoute {
        destinations: vec![dest("a", None, 1)],
        ..Default::default()
    };
    bad_header
        .headers
        .response
        .set
        .insert("bad header".into(), "v".into());
    let e = CompiledRouteTable::compile(&RouteTable {
        meta: meta(),
        hosts: vec![],
        gateways: Vec::new(),
        http: vec![bad_header],
    })
    .unwrap_err();
    assert_eq!(e.path, "http[0].headers.response.set.bad header");
}
