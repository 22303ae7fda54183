//! Retries end to end: a reset upstream is recovered from on another endpoint, perTryTimeout
//! fires and the request is retried, and a retry budget caps the retries an outage causes
//! (counted as upstream attempts).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use jalin_tests::client::{self, curl};
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, Mode};

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn yaml(svc: &str, ups: &[SocketAddr], policy: &str, retries: &str) -> String {
    OutboundConfig::new(svc, ups)
        .policy(policy)
        .http_routes(&format!(
            r#"
            - destinations:
                - destination: {{ host: {svc} }}
                  weight: 100
              retries: {retries}
            "#
        ))
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_from_a_reset_upstream() {
    let bad = ControlledUpstream::start("bad").await.unwrap();
    let good = ControlledUpstream::start("good").await.unwrap();
    bad.set(Mode::Reset);
    let proxy = TestProxy::start(&yaml(
        "retry-reset",
        &[bad.addr, good.addr],
        "{ load_balancer: round_robin }",
        "{ attempts: 2, retry_on: \"reset,connect-failure\" }",
    ))
    .await
    .unwrap();
    let http = client::http1_client();
    for _ in 0..20 {
        let (status, upstream, _) =
            tokio::time::timeout(HANG_GUARD, client::get(&http, proxy.addr("out"), "/"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!((status, upstream.as_str()), (200, "good"));
    }
    assert!(
        bad.requests() >= 5,
        "the resetting upstream was tried: {}",
        bad.requests()
    );
    assert_eq!(good.requests(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reset_in_retry_on_a_reset_is_not_retried() {
    let bad = ControlledUpstream::start("bad").await.unwrap();
    bad.set(Mode::Reset);
    let proxy = TestProxy::start(&yaml(
        "retry-reset-off",
        &[bad.addr],
        "{}",
        "{ attempts: 2, retry_on: \"connect-failure\" }",
    ))
    .await
    .unwrap();
    let out = curl(&format!("http://{}/", proxy.addr("out")), &[])
        .await
        .unwrap();
    assert_eq!(out.status, 502);
    assert_eq!(bad.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_try_timeout_fires_and_the_request_is_retried() {
    let slow = ControlledUpstream::start("slow").await.unwrap();
    slow.set(Mode::Hold);
    let proxy = TestProxy::start(&yaml(
        "retry-per-try",
        &[slow.addr],
        "{}",
        "{ attempts: 1, per_try_timeout_ms: 100, retry_on: \"5xx\" }",
    ))
    .await
    .unwrap();
    let out = tokio::time::timeout(
        HANG_GUARD,
        curl(&format!("http://{}/", proxy.addr("out")), &[]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status, 504, "{}", out.body);
    assert!(out.body.contains("timeout"), "{}", out.body);
    assert_eq!(
        slow.requests(),
        2,
        "first try and one retry, each timed out"
    );
    slow.release();
}

/// An outage: `n` requests through service `svc` (`policy`, up to 3 retries on 5xx) to one
/// upstream that answers 503; each is answered 503. Returns the attempts the upstream saw.
async fn outage_attempts(svc: &str, policy: &str, n: usize) -> u64 {
    let down = ControlledUpstream::start("down").await.unwrap();
    down.set(Mode::Status(503));
    let proxy = TestProxy::start(&yaml(
        svc,
        &[down.addr],
        policy,
        "{ attempts: 3, retry_on: \"5xx\" }",
    ))
    .await
    .unwrap();
    let http = client::http1_client();
    for _ in 0..n {
        let (status, _, _) =
            tokio::time::timeout(HANG_GUARD, client::get(&http, proxy.addr("out"), "/"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(status, 503);
    }
    down.requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_caps_retries_during_an_outage() {
    // 3 retries per request would be 400 attempts for 100 requests; the budget allows 20 % of
    // the requests (plus no reserve) as retries.
    let attempts = outage_attempts(
        "retry-budget",
        "{ retry_budget: { ratio: 0.2, min_retries_per_second: 0, ttl_ms: 60000 } }",
        100,
    )
    .await;
    assert!(
        (100..=121).contains(&attempts),
        "100 requests, at most 20 % retries (+1 for the window edge); saw {attempts} attempts"
    );
    assert!(attempts > 100, "the budget does allow some retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_budget_the_same_outage_retries_every_request() {
    let attempts = outage_attempts("retry-nobudget", "{}", 10).await;
    assert_eq!(attempts, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_bounds_every_try_together() {
    let slow = ControlledUpstream::start("slow").await.unwrap();
    slow.set(Mode::Hold);
    // Up to 5 retries of 10 s each, but the route allows 150 ms in all: one try, then 504.
    let yaml = yaml(
        "route-timeout",
        &[slow.addr],
        "{}",
        "{ attempts: 5, per_try_timeout_ms: 10000, retry_on: \"5xx\" }",
    )
    .replace(
        "        retries:",
        "        timeout_ms: 150\n        retries:",
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let out = tokio::time::timeout(
        HANG_GUARD,
        curl(&format!("http://{}/", proxy.addr("out")), &[]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status, 504, "{}", out.body);
    assert_eq!(
        slow.requests(),
        1,
        "the route timeout leaves no time for a retry"
    );
    slow.release();
}
