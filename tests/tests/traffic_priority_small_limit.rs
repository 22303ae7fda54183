//! Priority admission with a tiny `http2MaxRequests` end to end: the default reservation (10 %)
//! never takes the only slot, so a cluster limited to one request still serves standard traffic
//! (before, every standard request waited out the queue and got 503 `priorityQueueTimeout`).
//! Which class goes first under overload is unit-tested in `jalin_proxy::admission::priority`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use jalin_tests::client;
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::ControlledUpstream;

/// Guards a step that must finish; never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// One request slot and the default priority policy.
fn yaml(svc: &str, up: SocketAddr) -> String {
    OutboundConfig::new(svc, &[up])
        .policy(
            r#"
            connection_pool: { http2_max_requests: 1 }
            priority: {}
            "#,
        )
        .emergency_routes("")
        .yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_one_serves_standard_traffic() {
    let up = ControlledUpstream::start("one").await.unwrap();
    let proxy = TestProxy::start(&yaml("one-slot", up.addr)).await.unwrap();
    let http = client::http1_client();
    for _ in 0..3 {
        let (status, upstream, _) =
            tokio::time::timeout(HANG_GUARD, client::get(&http, proxy.addr("out"), "/"))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(status, 200, "standard traffic takes the only slot");
        assert_eq!(upstream, "one");
    }
    assert_eq!(up.requests(), 3);
}
