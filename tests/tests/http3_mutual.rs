//! HTTP/3 on a `MUTUAL` gateway listener: the QUIC handshake requires a client certificate the
//! listener's roots issued, and the verified certificate reaches the upstream in
//! `x-forwarded-client-cert` exactly as on the TCP side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod http3_common;

use bytes::Bytes;
use http::{Request, StatusCode};
use jalin_tests::proxy::TestProxy;

use http3_common::{H3Client, HOST, Pki, Upstream, proxy_yaml};

#[tokio::test]
async fn mutual_needs_a_client_certificate_and_forwards_it() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let yaml = proxy_yaml(&pki, upstream.addr).replace(
        "    tls:\n",
        &format!(
            "    tls:\n      mode: MUTUAL\n      ca_certificates: {}\n",
            pki.ca
        ),
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let addr = proxy.addr("gw");

    // Without a certificate: the handshake fails, or the server closes the connection before
    // any request is answered (TLS 1.3 checks the client's certificate after its Finished).
    let refused = async {
        let client = H3Client::try_connect(pki.client_tls(b"h3"), addr).await?;
        let mut send = client.send.clone();
        let req = Request::get(format!("https://{HOST}/echo"))
            .body(())
            .unwrap();
        let mut s = send.send_request(req).await?;
        s.finish().await?;
        s.recv_response().await?;
        anyhow::Ok(())
    };
    assert!(
        refused.await.is_err(),
        "a client without a certificate was served"
    );

    let client = H3Client::try_connect(pki.client_tls_with_cert(b"h3", "client.example.gov"), addr)
        .await
        .unwrap();
    let (rsp, body, _) = client
        .request("POST", "/echo", Some(Bytes::from_static(b"hello")))
        .await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(&body[..], b"hello");
    let xfcc = rsp.headers()["x-seen-xfcc"].to_str().unwrap();
    assert!(xfcc.contains("Hash="), "{xfcc}");
    assert!(xfcc.contains("DNS=client.example.gov"), "{xfcc}");
}
