//! `jalin-proxy --drain-duration` end to end, with the real binary: after SIGTERM an in-flight
//! request still completes when its upstream answers within the drain, and the proxy exits when
//! the drain runs out while an upstream still holds a request. Everything is synchronised on
//! events (the upstream's arrival signal, the proxy's log lines, the process's exit), never on
//! time; the timeouts below only stop a hung test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::Path;

use jalin_tests::client;
use jalin_tests::process::{HANG, ProxyProcess, message};
use jalin_tests::proxy::{ListenerSpec, ServiceSpec, config_yaml};
use jalin_tests::upstream::{ControlledUpstream, Mode};

/// Starts the proxy with one outbound HTTP/1.1 listener to `upstream` and `--drain-duration
/// drain`; returns it with the listener's address (its configuration lives in `dir`).
async fn start(
    binary: &Path,
    dir: &Path,
    upstream: SocketAddr,
    drain: &str,
) -> (ProxyProcess, SocketAddr) {
    let config = dir.join("proxy.yaml");
    let mut listener = ListenerSpec::outbound("out", "held");
    listener.protocol = "http1";
    let mut service = ServiceSpec::new("held", &[upstream]);
    service.protocol = "http1";
    std::fs::write(&config, config_yaml(&[listener], &[service])).unwrap();
    let mut proxy = ProxyProcess::start(binary, &config, &["--drain-duration", drain]).unwrap();
    let addr = proxy.listening("out").await;
    (proxy, addr)
}

/// Sends one request through the proxy, waits until the upstream holds it, SIGTERMs the proxy and
/// waits until the proxy says it is draining. Returns the request's task.
async fn hold_one_and_terminate(
    proxy: &mut ProxyProcess,
    addr: SocketAddr,
    upstream: &ControlledUpstream,
) -> tokio::task::JoinHandle<anyhow::Result<(u16, String, bytes::Bytes)>> {
    upstream.set(Mode::Hold);
    let request =
        tokio::spawn(async move { client::get(&client::http1_client(), addr, "/case").await });
    tokio::time::timeout(HANG, upstream.wait_requests(1))
        .await
        .expect("the request never reached the upstream");
    proxy.signal("-TERM");
    let draining = proxy.line(|l| message(l) == "draining").await;
    assert_eq!(
        draining["fields"]["deadline_ms"], 2000,
        "--drain-duration 2s is the drain used"
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_completes_within_the_drain_and_the_drain_bounds_the_exit() {
    let binary = jalin_tests::proxy::binary();
    let dir = tempfile::tempdir().unwrap();

    // 1. The upstream answers during the drain: the client gets the answer, the proxy exits
    //    cleanly without cutting anything.
    let upstream = ControlledUpstream::start("held").await.unwrap();
    let (mut proxy, addr) = start(&binary, dir.path(), upstream.addr, "2s").await;
    let request = hold_one_and_terminate(&mut proxy, addr, &upstream).await;
    upstream.release();
    let (status, from, body) = tokio::time::timeout(HANG, request)
        .await
        .expect("hung waiting for the in-flight request")
        .unwrap()
        .expect("the in-flight request completes during the drain");
    assert_eq!(
        (status, from.as_str(), &body[..]),
        (200, "held", &b"ok\n"[..])
    );
    let (exit, log) = proxy.exit().await;
    assert!(exit.success(), "a drained proxy exits 0: {exit}");
    assert!(
        !log.iter()
            .any(|l| message(l) == "drain deadline passed; closing the rest"),
        "nothing was left to cut"
    );

    // 2. The upstream holds past the drain: the proxy gives up at the deadline and exits, and the
    //    client's request fails instead of hanging on a proxy that is gone.
    let upstream = ControlledUpstream::start("held").await.unwrap();
    let (mut proxy, addr) = start(&binary, dir.path(), upstream.addr, "2s").await;
    let request = hold_one_and_terminate(&mut proxy, addr, &upstream).await;
    let (exit, log) = proxy.exit().await;
    assert!(exit.success(), "the drain's end is a clean exit: {exit}");
    let cut = log
        .iter()
        .find(|l| message(l) == "drain deadline passed; closing the rest")
        .expect("the proxy says it cut the held request at the deadline");
    assert_eq!(cut["fields"]["open"], 1, "the one held connection: {cut}");
    let outcome = tokio::time::timeout(HANG, request)
        .await
        .expect("hung waiting for the cut request")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the held request is cut when the proxy exits, not answered: {outcome:?}"
    );
    assert_eq!(
        upstream.requests(),
        1,
        "the request was not retried elsewhere"
    );
    upstream.release();
}
