//! HTTP/3 against the real `jalin-proxy` binary: a `tls` + `http3: true` listener serves a GET
//! and a 1 MiB POST over QUIC, and on SIGTERM an in-flight HTTP/3 request finishes within the
//! drain (the client got GOAWAY) and the process exits 0. Synchronised on the proxy's log lines,
//! the upstream's arrival signal and the process's exit, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod http3_common;

use bytes::Bytes;
use http::StatusCode;
use jalin_tests::process::{ProxyProcess, message};

use http3_common::{H3Client, Pki, Upstream, await_goaway, hold, proxy_yaml, release_and_finish};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_http3_and_drains_it_on_sigterm() {
    let binary = jalin_tests::proxy::binary();
    let pki = Pki::new();
    let mut upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, proxy_yaml(&pki, upstream.addr)).unwrap();
    let mut proxy = ProxyProcess::start(&binary, &config, &["--drain-duration", "30s"]).unwrap();
    let addr = proxy
        .address_of(|l| message(l) == "listening for HTTP/3 (QUIC)")
        .await;
    let tcp = proxy.listening("gw").await;
    assert_eq!(tcp, addr, "HTTP/3 shares the TCP listener's port");

    let client = H3Client::connect(&pki, addr).await;
    let (rsp, body, _) = client.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(body.is_empty());
    let big: Bytes = (0..1024 * 1024)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let (rsp, body, _) = client.request("POST", "/echo", Some(big.clone())).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(body == big, "the 1 MiB body came back altered");

    // One request held by the upstream, then SIGTERM.
    let held = hold(&client, &mut upstream).await;
    proxy.signal("-TERM");
    proxy.line(|l| message(l) == "draining").await;

    // GOAWAY reaches the client; the held request completes, then the process exits cleanly.
    await_goaway(&client).await;
    release_and_finish(&upstream, held).await;
    let (status, _) = proxy.exit().await;
    assert!(status.success(), "a drained proxy exits 0: {status}");
}
