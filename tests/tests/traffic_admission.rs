//! Circuit breaking end to end: with the pool full, the next request is answered 503 with
//! `x-jalin-overflow: <limit>` while the first is still held upstream (nothing waited for it),
//! and the overflow is counted in `/metrics`. Priority classes: an emergency request takes the
//! reserved slot that standard traffic may not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use jalin_tests::client::{self, curl};
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, Mode, StreamingUpstream};

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(20);

fn yaml(svc: &str, up: SocketAddr, pool: &str, priority: &str) -> String {
    OutboundConfig::new(svc, &[up])
        .policy(&format!(
            r#"
            connection_pool: {pool}
            priority: {priority}
            "#
        ))
        .emergency_routes("")
        .yaml()
}

async fn overflow_case(svc: &str, pool: &str, priority: &str, limit: &str) {
    let up = ControlledUpstream::start("held").await.unwrap();
    up.set(Mode::Hold);
    let proxy = TestProxy::start(&yaml(svc, up.addr, pool, priority))
        .await
        .unwrap();
    let addr = proxy.addr("out");
    let http = client::http1_client();
    let first = {
        let http = http.clone();
        tokio::spawn(async move { client::get(&http, addr, "/").await.unwrap() })
    };
    tokio::time::timeout(HANG_GUARD, up.wait_requests(1))
        .await
        .unwrap();

    // The pool is full: the second request is refused while the first is still held.
    let out = tokio::time::timeout(
        HANG_GUARD,
        curl(&format!("http://{addr}/"), &["-D", "-", "-o", "/dev/null"]),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status, 503);
    let head = out.body.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(
        head.contains(&format!("x-jalin-overflow: {}", limit.to_ascii_lowercase())),
        "{head}"
    );
    assert!(
        !first.is_finished(),
        "the overflow did not wait for the held request"
    );
    assert_eq!(
        up.requests(),
        1,
        "the refused request never reached the upstream"
    );

    up.release();
    let (status, upstream, _) = tokio::time::timeout(HANG_GUARD, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status, upstream.as_str()), (200, "held"));

    let metrics = curl(&format!("http://{}/metrics", proxy.admin()), &["-sS"])
        .await
        .unwrap()
        .body;
    let line = format!("jalin_upstream_overflow_total{{cluster=\"{svc}\",limit=\"{limit}\"}}");
    assert!(
        metrics.lines().any(|l| l.starts_with(&line)),
        "{line} in\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_max_requests_overflow_is_an_immediate_503_with_the_header() {
    overflow_case(
        "overflow-requests",
        "{ http2_max_requests: 1 }",
        "{ reserved_percent: 0, max_queue_len: 0 }",
        "http2MaxRequests",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pending_overflow_is_an_immediate_503_with_the_header() {
    overflow_case(
        "overflow-pending",
        "{ max_connections: 1, http1_max_pending_requests: 0 }",
        "{}",
        "http1MaxPendingRequests",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_takes_the_reserved_slot_standard_may_not() {
    let up = ControlledUpstream::start("held").await.unwrap();
    up.set(Mode::Hold);
    // Two slots, one reserved for critical/emergency; no queue, so refusals are immediate.
    let proxy = TestProxy::start(&yaml(
        "reserved-svc",
        up.addr,
        "{ http2_max_requests: 2 }",
        "{ reserved_percent: 50, max_queue_len: 0 }",
    ))
    .await
    .unwrap();
    let addr = proxy.addr("out");
    let http = client::http1_client();
    let first = {
        let http = http.clone();
        tokio::spawn(async move { client::get(&http, addr, "/").await.unwrap() })
    };
    tokio::time::timeout(HANG_GUARD, up.wait_requests(1))
        .await
        .unwrap();
    // Standard traffic may not take the last (reserved) slot.
    let standard = curl(&format!("http://{addr}/"), &[]).await.unwrap();
    assert_eq!(standard.status, 503);
    // Emergency traffic may.
    let mut emergency = {
        let url = format!("http://{addr}/");
        tokio::spawn(async move {
            curl(&url, &["-H", "x-child-access-reason: emergency"])
                .await
                .unwrap()
        })
    };
    tokio::select! {
        () = up.wait_requests(2) => {}
        r = &mut emergency => panic!("emergency answered before reaching the upstream: {r:?}"),
        () = tokio::time::sleep(HANG_GUARD) => panic!("emergency request never arrived"),
    }
    up.release();
    let e = tokio::time::timeout(HANG_GUARD, emergency)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.status, 200);
    let (status, _, _) = tokio::time::timeout(HANG_GUARD, first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_retires_connections() {
    let up = ControlledUpstream::start("up").await.unwrap();
    let proxy = TestProxy::start(&yaml(
        "per-conn",
        up.addr,
        "{ max_requests_per_connection: 2 }",
        "{}",
    ))
    .await
    .unwrap();
    let http = client::http1_client();
    for _ in 0..6 {
        let (status, _, _) = client::get(&http, proxy.addr("out"), "/").await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(up.requests(), 6);
    assert_eq!(up.connections(), 3, "two requests per upstream connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_requests_per_connection_one_connection_serves_all() {
    let up = ControlledUpstream::start("up").await.unwrap();
    let proxy = TestProxy::start(&yaml("per-conn-off", up.addr, "{}", "{}"))
        .await
        .unwrap();
    let http = client::http1_client();
    for _ in 0..6 {
        let (status, _, _) = client::get(&http, proxy.addr("out"), "/").await.unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!(up.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holds_its_slot_until_the_response_body_ends() {
    let up = StreamingUpstream::start().await.unwrap();
    let proxy = TestProxy::start(&yaml(
        "slot-body",
        up.addr,
        "{ http2_max_requests: 1 }",
        "{ reserved_percent: 0, max_queue_len: 0 }",
    ))
    .await
    .unwrap();
    let addr = proxy.addr("out");
    let http = client::http1_client();
    // Headers and the first chunk arrive; the rest of the body is still held upstream.
    let rsp = tokio::time::timeout(
        HANG_GUARD,
        http.get(format!("http://{addr}/").parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let first = tokio::time::timeout(HANG_GUARD, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), StreamingUpstream::FIRST);

    // The streaming response still counts against http2MaxRequests.
    let refused = curl(&format!("http://{addr}/"), &["-D", "-", "-o", "/dev/null"])
        .await
        .unwrap();
    assert_eq!(refused.status, 503);
    assert!(
        refused
            .body
            .to_ascii_lowercase()
            .contains("x-jalin-overflow: http2maxrequests"),
        "{}",
        refused.body
    );

    // Once the body ends the slot is free again.
    up.release().await;
    let rest = tokio::time::timeout(HANG_GUARD, body.collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest.as_ref(), StreamingUpstream::REST);
    let next = tokio::time::timeout(
        HANG_GUARD,
        http.get(format!("http://{addr}/").parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(next.status(), 200);
    up.release().await;
}
