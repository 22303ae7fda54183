//! HTTP/3 certificate rotation: after the gateway's certificate files are replaced and the
//! configuration reloaded, new QUIC connections get the new certificate while an open one keeps
//! being served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod http3_common;

use http::StatusCode;

use http3_common::{H3Client, Pki, Upstream, proxy};

#[tokio::test]
async fn a_reload_serves_new_quic_handshakes_with_the_new_certificate() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let proxy = proxy(&pki, upstream.addr).await;
    let addr = proxy.addr("gw");

    let before = H3Client::connect(&pki, addr).await;
    assert_eq!(before.leaf, pki.leaf);

    let rotated = pki.reissue();
    proxy.handle.reload().await.unwrap();

    let after = H3Client::connect(&pki, addr).await;
    assert_eq!(
        after.leaf, rotated,
        "a new handshake still got the old certificate"
    );
    let (rsp, _, _) = after.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    // The connection made before the rotation keeps working.
    let (rsp, _, _) = before.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
}
