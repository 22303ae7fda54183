//! Outlier detection end to end: three real upstreams behind the in-process proxy, one starts
//! answering 503; it is ejected after exactly `consecutive_5xx_errors` errors, traffic moves to
//! the other two, and the sweep task re-admits it after `base_ejection_time_ms`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use jalin_proxy::cluster::{ClusterEvent, events};
use jalin_proxy::outlier::{EjectReason, OutlierEvent};
use jalin_tests::client;
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, Mode};

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_after_exactly_n_errors_and_readmitted() {
    let a = ControlledUpstream::start("a").await.unwrap();
    let b = ControlledUpstream::start("b").await.unwrap();
    let c = ControlledUpstream::start("c").await.unwrap();
    let yaml = OutboundConfig::new("outlier-svc", &[a.addr, b.addr, c.addr])
        .policy(
            r#"
            load_balancer: round_robin
            outlier_detection:
              consecutive_5xx_errors: 3
              interval_ms: 20
              base_ejection_time_ms: 200
              max_ejection_percent: 34
            "#,
        )
        .http_routes(
            r#"
            - destinations:
                - destination: { host: outlier-svc }
                  weight: 100
              retries: { attempts: 0 }
            "#,
        )
        .yaml();
    let mut ev = events();
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let http = client::http1_client();
    let addr = proxy.addr("out");

    // Healthy: round robin reaches all three.
    for _ in 0..6 {
        let (status, _, _) = client::get(&http, addr, "/").await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!((a.requests(), b.requests(), c.requests()), (2, 2, 2));

    // b fails: count the errors it answers until the detector ejects it.
    b.set(Mode::Status(503));
    let ejected_at = tokio::time::timeout(HANG_GUARD, async {
        for _ in 0..100 {
            client::get(&http, addr, "/").await.unwrap();
            while let Ok(ClusterEvent { cluster, event }) = ev.try_recv() {
                if let OutlierEvent::Ejected { host, reason, .. } = event
                    && host == b.addr
                {
                    assert_eq!(&*cluster, "outlier-svc");
                    assert_eq!(reason, EjectReason::Consecutive5xx);
                    return b.requests() - 2;
                }
            }
        }
        panic!("b was never ejected");
    })
    .await
    .unwrap();
    assert_eq!(
        ejected_at, 3,
        "ejected after exactly consecutive_5xx_errors errors"
    );

    // Traffic moves away: none reaches b while it is ejected (bounded by the ejection: the
    // requests stop as soon as the re-admission event arrives).
    let before = b.requests();
    let mut served = 0;
    let mut readmit_seen = false;
    for _ in 0..20 {
        let (status, upstream, _) = client::get(&http, addr, "/").await.unwrap();
        if readmitted(&mut ev, b.addr) {
            readmit_seen = true;
            break;
        }
        assert_eq!(status, 200);
        assert_ne!(upstream, "b");
        assert_eq!(
            b.requests(),
            before,
            "no request reached the ejected endpoint"
        );
        served += 1;
    }
    assert!(served > 0);

    // Re-admitted after the ejection time by the sweep task: wait on the event, not a clock.
    b.set(Mode::Ok);
    if !readmit_seen {
        tokio::time::timeout(HANG_GUARD, async {
            loop {
                if let OutlierEvent::Readmitted { host } = ev.recv().await.unwrap().event
                    && host == b.addr
                {
                    return;
                }
            }
        })
        .await
        .expect("b is re-admitted after base_ejection_time_ms");
    }
    let before = b.requests();
    for _ in 0..6 {
        let (status, _, _) = client::get(&http, addr, "/").await.unwrap();
        assert_eq!(status, 200);
    }
    assert!(
        b.requests() > before,
        "b takes traffic again after re-admission"
    );
}

/// True when a re-admission of `host` is among the pending events.
fn readmitted(
    ev: &mut tokio::sync::broadcast::Receiver<ClusterEvent>,
    host: std::net::SocketAddr,
) -> bool {
    while let Ok(e) = ev.try_recv() {
        if matches!(e.event, OutlierEvent::Readmitted { host: h } if h == host) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_and_eject_as_local_origin_errors() {
    let good = ControlledUpstream::start("good").await.unwrap();
    // A port nothing listens on: bind, note, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let yaml = OutboundConfig::new("local-origin", &[dead, good.addr])
        .policy(
            r#"
            load_balancer: round_robin
            outlier_detection:
              consecutive_5xx_errors: null
              split_external_local_origin_errors: true
              consecutive_local_origin_failures: 2
              max_ejection_percent: 50
            "#,
        )
        .yaml();
    let mut ev = events();
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let http = client::http1_client();
    // No route table: Istio's default policy retries connect failures on the other endpoint.
    let mut ejected = false;
    for _ in 0..20 {
        let (status, upstream, _) = client::get(&http, proxy.addr("out"), "/").await.unwrap();
        assert_eq!((status, upstream.as_str()), (200, "good"));
        while let Ok(e) = ev.try_recv() {
            if let OutlierEvent::Ejected { host, reason, .. } = e.event
                && host == dead
            {
                assert_eq!(reason, EjectReason::ConsecutiveLocalOriginFailures);
                ejected = true;
            }
        }
        if ejected {
            break;
        }
    }
    assert!(ejected, "the unreachable endpoint is ejected");
}

/// Reads `metric{labels}` from the proxy's `/metrics` (0 when the series is absent).
async fn metric(proxy: &TestProxy, series: &str) -> u64 {
    let body = client::curl(&format!("http://{}/metrics", proxy.admin()), &["-sS"])
        .await
        .unwrap()
        .body;
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_traffic_bypasses_a_fully_ejected_cluster_within_its_allowance() {
    let a = ControlledUpstream::start("a").await.unwrap();
    let b = ControlledUpstream::start("b").await.unwrap();
    // Every endpoint may be ejected (maxEjectionPercent 100), for far longer than the test;
    // emergency traffic may bypass ejections twice per (long) window.
    let svc = "bypass-svc";
    let yaml = OutboundConfig::new(svc, &[a.addr, b.addr])
        .policy(
            r#"
            load_balancer: round_robin
            outlier_detection:
              consecutive_5xx_errors: 1
              interval_ms: 600000
              base_ejection_time_ms: 600000
              max_ejection_percent: 100
            priority:
              bypass: { max_per_window: 2, window_ms: 600000 }
            "#,
        )
        .emergency_routes("retries: { attempts: 0 }")
        .yaml();
    let mut ev = events();
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let url = format!("http://{}/", proxy.addr("out"));

    // Both endpoints fail once each and are ejected.
    a.set(Mode::Status(503));
    b.set(Mode::Status(503));
    let mut ejected = std::collections::HashSet::new();
    for _ in 0..2 {
        let out = client::curl(&url, &[]).await.unwrap();
        assert_eq!(out.status, 503, "{}", out.body);
    }
    tokio::time::timeout(HANG_GUARD, async {
        while ejected.len() < 2 {
            let e = ev.recv().await.unwrap();
            if &*e.cluster == svc
                && let OutlierEvent::Ejected { host, .. } = e.event
            {
                ejected.insert(host);
            }
        }
    })
    .await
    .expect("both endpoints are ejected");
    assert!(ejected.contains(&a.addr) && ejected.contains(&b.addr));
    // They recover, but stay ejected for base_ejection_time_ms.
    a.set(Mode::Ok);
    b.set(Mode::Ok);
    let reached = || a.requests() + b.requests();
    let before = reached();

    // Standard traffic: no healthy upstream, and nothing reaches an endpoint.
    let standard = client::curl(&url, &[]).await.unwrap();
    assert_eq!(standard.status, 503, "{}", standard.body);
    assert!(standard.body.contains("ejected"), "{}", standard.body);
    assert_eq!(reached(), before);
    let bypass = format!("jalin_emergency_bypass_total{{cluster=\"{svc}\",class=\"emergency\"}}");
    assert_eq!(metric(&proxy, &bypass).await, 0, "standard never bypasses");

    // Emergency traffic: through the audited bypass, twice (the allowance).
    for n in 1..=2 {
        let out = client::curl(&url, &["-H", "x-child-access-reason: emergency"])
            .await
            .unwrap();
        assert_eq!(out.status, 200, "emergency request {n}: {}", out.body);
        assert_eq!(
            reached(),
            before + n,
            "emergency request {n} reached an endpoint"
        );
        assert_eq!(metric(&proxy, &bypass).await, n, "each bypass is counted");
    }

    // The allowance is spent: emergency traffic is refused too, and nothing reaches an endpoint.
    let refused = client::curl(&url, &["-H", "x-child-access-reason: emergency"])
        .await
        .unwrap();
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(reached(), before + 2);
    assert_eq!(metric(&proxy, &bypass).await, 2);
    // The endpoints are still ejected: the bypass did not re-admit them.
    let standard = client::curl(&url, &[]).await.unwrap();
    assert_eq!(standard.status, 503);
}
