//! The route timeout end to end, with Envoy's semantics: it runs until the upstream response is
//! complete. An upstream that never sends headers gets the client a 504; one that sends headers
//! and then stalls its body gets the response cut (HTTP/1.1: the connection closes before the
//! last chunk; HTTP/2: the stream is reset), never a complete response. Both are counted in
//! `jalin_upstream_route_timeout_total` by phase.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use jalin_tests::client::{self, curl};
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, Mode, StreamingUpstream};

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn yaml(svc: &str, up: SocketAddr, timeout_ms: u64) -> String {
    OutboundConfig::new(svc, &[up])
        .http_routes(&format!(
            r#"
            - destinations:
                - destination: {{ host: {svc} }}
                  weight: 100
              timeout_ms: {timeout_ms}
              retries: {{ attempts: 0 }}
            "#
        ))
        .yaml()
}

/// The value of `jalin_upstream_route_timeout_total` for `cluster` and `phase` (0 when absent).
async fn timeouts(proxy: &TestProxy, cluster: &str, phase: &str) -> u64 {
    let metrics = curl(&format!("http://{}/metrics", proxy.admin()), &["-sS"])
        .await
        .unwrap()
        .body;
    let series =
        format!("jalin_upstream_route_timeout_total{{cluster=\"{cluster}\",phase=\"{phase}\"}}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Requests to `service` recorded in `istio_requests_total` with response flag `flag`.
async fn requests_flagged(proxy: &TestProxy, service: &str, flag: &str) -> u64 {
    let metrics = curl(&format!("http://{}/metrics", proxy.admin()), &["-sS"])
        .await
        .unwrap()
        .body;
    let (svc, flag) = (
        format!("destination_service=\"{service}\""),
        format!("response_flags=\"{flag}\""),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains(&svc) && l.contains(&flag))
        .filter_map(|l| {
            l.rsplit_once(' ')
                .and_then(|(_, v)| v.trim().parse::<u64>().ok())
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_headers_before_the_route_timeout_is_a_504() {
    let up = ControlledUpstream::start("stalled").await.unwrap();
    up.set(Mode::Hold);
    let proxy = TestProxy::start(&yaml("timeout-headers", up.addr, 300))
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
    assert_eq!(up.requests(), 1);
    assert_eq!(timeouts(&proxy, "timeout-headers", "headers").await, 1);
    up.release();
}

/// Sends one request through `client`, checks the headers and the first chunk arrive, then
/// returns what reading the rest of the body gave.
async fn first_chunk_then_rest(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    addr: SocketAddr,
) -> Result<bytes::Bytes, hyper::Error> {
    let rsp = tokio::time::timeout(
        HANG_GUARD,
        client.get(format!("http://{addr}/").parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(rsp.status(), 200, "the headers came before the timeout");
    let mut body = rsp.into_body();
    let first = tokio::time::timeout(HANG_GUARD, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.data_ref().unwrap().as_ref(), StreamingUpstream::FIRST);
    // The upstream never sends the rest: only the route timeout can end this read.
    tokio::time::timeout(HANG_GUARD, body.collect())
        .await
        .expect("the route timeout ends a stalled body")
        .map(|c| c.to_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalled_past_the_route_timeout_is_cut_over_http1() {
    let up = StreamingUpstream::start().await.unwrap();
    // Long enough for the headers and the first chunk on a loaded machine; the body then stalls.
    let proxy = TestProxy::start(&yaml("timeout-body-h1", up.addr, 1500))
        .await
        .unwrap();
    let addr = proxy.addr("out");
    let rest = first_chunk_then_rest(&client::http1_client(), addr).await;
    let err = rest.expect_err("the response is cut, not completed");
    assert!(
        err.is_incomplete_message() || format!("{err:?}").contains("UnexpectedEof"),
        "HTTP/1.1: the connection closed before the last chunk: {err:?}"
    );
    assert_eq!(timeouts(&proxy, "timeout-body-h1", "body").await, 1);
    assert_eq!(timeouts(&proxy, "timeout-body-h1", "headers").await, 0);
    // Metered as an upstream request timeout (UT), not as a client that went away (DC).
    assert_eq!(requests_flagged(&proxy, "timeout-body-h1", "UT").await, 1);
    assert_eq!(requests_flagged(&proxy, "timeout-body-h1", "DC").await, 0);

    // The proxy keeps serving: a response that completes in time is whole.
    let next = {
        let http = client::http1_client();
        let addr = proxy.addr("out");
        tokio::spawn(async move {
            let rsp = http
                .get(format!("http://{addr}/").parse().unwrap())
                .await
                .unwrap();
            rsp.into_body().collect().await.map(|c| c.to_bytes())
        })
    };
    // Release the next response's rest (the cut one's holder may take the first release).
    for _ in 0..2 {
        up.release().await;
    }
    let body = tokio::time::timeout(HANG_GUARD, next)
        .await
        .unwrap()
        .unwrap()
        .expect("a response completed before the timeout is whole");
    assert_eq!(
        body.as_ref(),
        [StreamingUpstream::FIRST, StreamingUpstream::REST].concat()
    );
    // A response streamed to its end is metered complete (flag `-`).
    assert_eq!(requests_flagged(&proxy, "timeout-body-h1", "-").await, 1);
    assert_eq!(requests_flagged(&proxy, "timeout-body-h1", "DC").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_stalled_past_the_route_timeout_resets_the_http2_stream() {
    let up = StreamingUpstream::start().await.unwrap();
    let proxy = TestProxy::start(&yaml("timeout-body-h2", up.addr, 1500))
        .await
        .unwrap();
    let rest = first_chunk_then_rest(&client::h2_client(), proxy.addr("out")).await;
    let err = rest.expect_err("the response is cut, not completed");
    // hyper resets a stream whose body failed with INTERNAL_ERROR.
    let debug = format!("{err:?}");
    assert!(
        debug.contains("Reset") && debug.contains("INTERNAL_ERROR"),
        "HTTP/2: the stream was reset: {debug}"
    );
    assert_eq!(timeouts(&proxy, "timeout-body-h2", "body").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_complete_within_the_route_timeout_is_whole_and_metered_complete() {
    // A Content-Length body: hyper knows the end from the last data frame and polls no further.
    let up = ControlledUpstream::start("quick").await.unwrap();
    let proxy = TestProxy::start(&yaml("timeout-complete", up.addr, 10_000))
        .await
        .unwrap();
    let http = client::http1_client();
    for _ in 0..3 {
        let (status, upstream, body) =
            tokio::time::timeout(HANG_GUARD, client::get(&http, proxy.addr("out"), "/"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(
            (status, upstream.as_str(), body.as_ref()),
            (200, "quick", &b"ok\n"[..])
        );
    }
    assert_eq!(requests_flagged(&proxy, "timeout-complete", "-").await, 3);
    assert_eq!(
        requests_flagged(&proxy, "timeout-complete", "DC").await,
        0,
        "a complete response is not a downstream disconnect"
    );
    assert_eq!(timeouts(&proxy, "timeout-complete", "body").await, 0);
}
