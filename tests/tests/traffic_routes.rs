//! Routing end to end: the seed's `child-profile-service` VirtualService (policies-17 shape)
//! sends `x-child-access-reason: emergency` to the emergency subset, weights 90/10 hold over
//! 5,000 requests, and the route stage's local answers and rewrites (direct response,
//! redirect, fault abort, path rewrite, header operations, mirror) reach the wire.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use futures::StreamExt;
use jalin_tests::client::{self, curl};
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, HttpUpstream};

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_header_routes_to_the_emergency_subset() {
    let emergency = ControlledUpstream::start("emergency").await.unwrap();
    let standard = ControlledUpstream::start("standard").await.unwrap();
    let yaml = OutboundConfig::subset_endpoints(
        "child-profile-service",
        "priority",
        &[("emergency", emergency.addr), ("standard", standard.addr)],
    )
    .route_meta("child-profile-service-routing", "child-services")
    .http_routes(
        r#"
        - matches:
            - headers:
                x-child-access-reason: { exact: emergency }
          destinations:
            - destination: { host: child-profile-service, subset: emergency }
              weight: 100
          retries: { attempts: 3, per_try_timeout_ms: 10000, retry_on: "5xx,reset,connect-failure,refused-stream" }
          priority: emergency
        - matches:
            - headers:
                x-child-access-reason: { exact: care-coordination }
          destinations:
            - destination: { host: child-profile-service, subset: standard }
              weight: 100
          timeout_ms: 30000
        - destinations:
            - destination: { host: child-profile-service, subset: standard }
              weight: 100
          timeout_ms: 60000
        "#,
    )
    .yaml();
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let url = format!("http://{}/", proxy.addr("out"));
    for _ in 0..10 {
        let e = curl(&url, &["-D", "-", "-H", "x-child-access-reason: emergency"])
            .await
            .unwrap();
        assert!(e.body.contains("x-upstream: emergency"), "{}", e.body);
        let c = curl(
            &url,
            &["-D", "-", "-H", "x-child-access-reason: care-coordination"],
        )
        .await
        .unwrap();
        assert!(c.body.contains("x-upstream: standard"), "{}", c.body);
        let d = curl(&url, &["-D", "-"]).await.unwrap();
        assert!(d.body.contains("x-upstream: standard"), "{}", d.body);
    }
    assert_eq!((emergency.requests(), standard.requests()), (10, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_90_10_hold_within_3_percent_over_5000_requests() {
    let v1 = ControlledUpstream::start("v1").await.unwrap();
    let v2 = ControlledUpstream::start("v2").await.unwrap();
    let yaml = OutboundConfig::subset_endpoints(
        "weighted",
        "version",
        &[("v1", v1.addr), ("v2", v2.addr)],
    )
    .http_routes(
        r#"
            - destinations:
                - destination: { host: weighted, subset: v1 }
                  weight: 90
                - destination: { host: weighted, subset: v2 }
                  weight: 10
            "#,
    )
    .yaml();
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let addr = proxy.addr("out");
    let http = client::http1_client();
    const N: usize = 5_000;
    let ok = tokio::time::timeout(
        HANG_GUARD,
        futures::stream::iter(0..N)
            .map(|_| {
                let http = http.clone();
                async move { client::get(&http, addr, "/").await.unwrap().0 }
            })
            .buffer_unordered(32)
            .filter(|s| futures::future::ready(*s == 200))
            .count(),
    )
    .await
    .unwrap();
    assert_eq!(ok, N);
    let (a, b) = (v1.requests() as f64, v2.requests() as f64);
    assert_eq!(a + b, N as f64);
    let share = b / (a + b) * 100.0;
    assert!(
        (7.0..=13.0).contains(&share),
        "v2 share {share:.2} % (10 ± 3)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_stage_local_answers_rewrites_headers_and_mirror() {
    let up = HttpUpstream::start("main").await.unwrap();
    let shadow = ControlledUpstream::start("shadow").await.unwrap();
    let yaml = format!(
        r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: out
    address: 127.0.0.1:0
    direction: outbound
    service: stage
services:
  - name: stage
    endpoints:
      - address: {}
  - name: shadow
    protocol: http1
    endpoints:
      - address: {}
routes:
  - meta: {{ name: stage, namespace: default }}
    hosts: [stage]
    http:
      - matches: [{{ uri: {{ exact: /direct }} }}]
        direct_response: {{ status: 418, body: "short and stout" }}
      - matches: [{{ uri: {{ prefix: /old }} }}]
        redirect: {{ uri: /new, authority: example.org }}
      - matches: [{{ uri: {{ prefix: /abort }} }}]
        fault: {{ abort: {{ error: {{ http_status: 429 }}, percentage: 100.0 }} }}
        destinations:
          - destination: {{ host: stage }}
            weight: 100
      - matches: [{{ uri: {{ prefix: /api/v1/ }} }}]
        rewrite: {{ uri: /headers }}
        headers:
          request: {{ set: {{ x-route: v1 }}, remove: [x-drop-me] }}
          response: {{ add: {{ x-served-by: jalin }} }}
        mirror: {{ destination: {{ host: shadow }}, percentage: 100.0 }}
        destinations:
          - destination: {{ host: stage }}
            weight: 100
"#,
        up.addr, shadow.addr
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let base = format!("http://{}", proxy.addr("out"));

    let d = curl(&format!("{base}/direct"), &[]).await.unwrap();
    assert_eq!((d.status, d.body.as_str()), (418, "short and stout"));

    let r = curl(&format!("{base}/old/x?q=1"), &["-D", "-"])
        .await
        .unwrap();
    assert_eq!(r.status, 301);
    assert!(
        r.body
            .to_ascii_lowercase()
            .contains("location: http://example.org/new?q=1"),
        "{}",
        r.body
    );

    let a = curl(&format!("{base}/abort"), &[]).await.unwrap();
    assert_eq!(a.status, 429);
    assert_eq!(
        up.requests(),
        0,
        "aborted requests never reach the upstream"
    );

    let h = curl(
        &format!("{base}/api/v1/"),
        &["-D", "-", "-H", "x-drop-me: 1"],
    )
    .await
    .unwrap();
    assert_eq!(h.status, 200, "{}", h.body);
    let (head, json) = h.body.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("x-served-by: jalin"),
        "{head}"
    );
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["headers"]["x-route"], "v1");
    assert!(v["headers"].get("x-drop-me").is_none());
    assert!(
        v["uri"].as_str().unwrap().ends_with("/headers"),
        "{}",
        v["uri"]
    );
    // The mirror is fire and forget: wait for it to arrive.
    tokio::time::timeout(HANG_GUARD, shadow.wait_requests(1))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_cookie_is_generated_then_sticky() {
    let ups = [
        ControlledUpstream::start("h1").await.unwrap(),
        ControlledUpstream::start("h2").await.unwrap(),
        ControlledUpstream::start("h3").await.unwrap(),
    ];
    let yaml = OutboundConfig::new("sticky", &[ups[0].addr, ups[1].addr, ups[2].addr])
        .policy(
            r#"
            load_balancer:
              consistent_hash:
                cookie: { name: jalin-affinity, path: /, ttl_ms: 60000 }
            "#,
        )
        .yaml();
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let url = format!("http://{}/", proxy.addr("out"));
    for _ in 0..5 {
        // No cookie: the proxy generates one and says so.
        let first = curl(&url, &["-D", "-"]).await.unwrap();
        let head = first.body.to_ascii_lowercase();
        let line = head
            .lines()
            .find(|l| l.starts_with("set-cookie: jalin-affinity="))
            .unwrap_or_else(|| panic!("no affinity cookie in {head}"));
        assert!(
            line.contains("max-age=60") && line.contains("path=/"),
            "{line}"
        );
        let value = line
            .trim_start_matches("set-cookie: ")
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_owned();
        let upstream_of = |h: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix("x-upstream: "))
                .unwrap()
                .trim()
                .to_owned()
        };
        let chosen = upstream_of(&head);
        // With the cookie: always the same endpoint, and no new cookie.
        for _ in 0..10 {
            let again = curl(&url, &["-D", "-", "-H", &format!("cookie: {value}")])
                .await
                .unwrap();
            let h = again.body.to_ascii_lowercase();
            assert_eq!(upstream_of(&h), chosen);
            assert!(!h.contains("set-cookie"), "{h}");
        }
    }
}

/// A VirtualService acts on the calling side only, as in Istio: the same route table with a
/// 100 % abort answers the outbound listener's request, while the inbound listener in front of
/// the same service passes its request to the app untouched (no second fault, retry or rewrite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_tables_apply_on_the_calling_side_only() {
    let app = HttpUpstream::start("app").await.unwrap();
    let yaml = format!(
        r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: out
    address: 127.0.0.1:0
    direction: outbound
    service: records
  - name: in
    address: 127.0.0.1:0
    direction: inbound
    service: records
services:
  - name: records
    endpoints:
      - address: {}
routes:
  - meta: {{ name: records, namespace: default }}
    hosts: [records]
    http:
      - fault: {{ abort: {{ error: {{ http_status: 429 }}, percentage: 100.0 }} }}
        destinations:
          - destination: {{ host: records }}
            weight: 100
"#,
        app.addr
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let out = curl(&format!("http://{}/x", proxy.addr("out")), &[])
        .await
        .unwrap();
    assert_eq!(out.status, 429, "the caller's side applies the route");
    assert_eq!(app.requests(), 0);
    let inbound = curl(&format!("http://{}/x", proxy.addr("in")), &[])
        .await
        .unwrap();
    assert_eq!(inbound.status, 200, "the server's side does not route");
    assert_eq!(app.requests(), 1);
}
