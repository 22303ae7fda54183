//! HTTP/3 at a listener with `tls` and `http3: true`, end to end through the in-process proxy:
//! a real QUIC client (quinn + h3, as a user's client is built) against the proxy's UDP port,
//! a real h2c/HTTP/1.1 upstream, real certificates from a test root. Everything waits on
//! signals (the upstream's arrival channel, stream and connection events), never on time; the
//! timeouts only stop a hung test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod http3_common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jalin_tests::AbortOnDrop;

use http3_common::{
    H3Client, HANG, HOST, Pki, Seen, Upstream, await_goaway, hold, metrics, proxy,
    release_and_finish,
};

#[tokio::test]
async fn get_and_post_with_a_large_body_and_grpc_trailers() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let proxy = proxy(&pki, upstream.addr).await;
    let client = H3Client::connect(&pki, proxy.addr("gw")).await;

    let (rsp, body, _) = client.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.version(), http::Version::HTTP_3);
    assert_eq!(rsp.headers()["x-method"], "GET");
    // The client's FIN came with the head: forwarded as a body-less GET, not a chunked one.
    assert_eq!(rsp.headers()["x-transfer-encoding"], "none");
    assert!(body.is_empty());

    let big: Bytes = (0..1024 * 1024)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let (rsp, body, _) = client.request("POST", "/echo", Some(big.clone())).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["x-method"], "POST");
    assert_eq!(body.len(), big.len());
    assert!(body == big, "the 1 MiB body came back altered");

    let (rsp, body, trailers) = client.request("POST", "/grpc", Some(Bytes::new())).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["content-type"], "application/grpc");
    assert_eq!(&body[..], b"\0\0\0\0\x02hi");
    let trailers = trailers.expect("gRPC trailers lost");
    assert_eq!(trailers["grpc-status"], "7");
    assert_eq!(trailers["grpc-message"], "denied%20by%20test");

    let m = metrics(&proxy).await;
    assert!(
        m.lines().any(
            |l| l.starts_with("jalin_downstream_http3_connections_total{")
                && l.contains("outcome=\"accepted\"")
                && l.contains("listener=\"gw\"")
        ),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("grpc_response_status=\"7\"")),
        "{m}"
    );
}

#[tokio::test]
async fn many_streams_on_one_connection_and_a_reset_disturbs_none() {
    let pki = Pki::new();
    let mut upstream = Upstream::start().await;
    let proxy = proxy(&pki, upstream.addr).await;
    let client = H3Client::connect(&pki, proxy.addr("gw")).await;

    // A held request, then reset by the client.
    let mut held = hold(&client, &mut upstream).await;
    let mut send = client.send.clone();
    held.stop_sending(h3::error::Code::H3_REQUEST_CANCELLED);
    held.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
    drop(held);

    // An upload cut by the client mid-body, once the upstream has it: the upstream sees its body
    // cut (the forward ends).
    let req = Request::post(format!("https://{HOST}/sink"))
        .header("content-length", "1000000")
        .body(())
        .unwrap();
    let mut cut = send.send_request(req).await.unwrap();
    cut.send_data(Bytes::from(vec![7u8; 100_000]))
        .await
        .unwrap();
    assert!(matches!(upstream.next().await, Seen::SinkStarted));
    cut.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
    match upstream.next().await {
        Seen::Sink(Err(_)) => {}
        other => panic!("the upstream got a whole body from a reset stream: {other:?}"),
    }
    drop(cut);

    // 64 concurrent streams on the same connection, each with its own body.
    let requests = (0..64u32).map(|i| {
        let client = &client;
        async move {
            let body = Bytes::from(format!("stream {i} ").repeat(100 + i as usize));
            let (rsp, got, _) = client.request("POST", "/echo", Some(body.clone())).await;
            assert_eq!(rsp.status(), StatusCode::OK);
            assert_eq!(got, body, "stream {i}");
        }
    });
    futures::future::join_all(requests).await;

    // The held upstream answers at last; the proxy's write to the reset stream fails quietly and
    // the connection keeps serving.
    upstream.release.notify_one();
    let (rsp, _, _) = client.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
}

#[tokio::test]
async fn drain_sends_goaway_and_in_flight_requests_finish() {
    let pki = Pki::new();
    let mut upstream = Upstream::start().await;
    let proxy = proxy(&pki, upstream.addr).await;
    let mut client = H3Client::connect(&pki, proxy.addr("gw")).await;

    let held = hold(&client, &mut upstream).await;
    let handle = proxy.handle.clone();
    let drained = tokio::spawn(async move { handle.shutdown(HANG).await });

    // GOAWAY reaches the client, and the in-flight request still completes.
    await_goaway(&client).await;
    release_and_finish(&upstream, held).await;

    // Then the proxy finishes draining and the connection is closed.
    tokio::time::timeout(HANG, drained).await.unwrap().unwrap();
    let closed = tokio::time::timeout(HANG, &mut client.closed)
        .await
        .unwrap()
        .unwrap();
    assert!(!closed.is_empty());
}

/// The TCP listener's responses (HTTPS) advertise the HTTP/3 endpoint on the same port.
#[tokio::test]
async fn tcp_responses_carry_alt_svc_with_the_udp_port() {
    let pki = Pki::new();
    let upstream = Upstream::start().await;
    let proxy = proxy(&pki, upstream.addr).await;
    let addr = proxy.addr("gw");

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pki.client_tls(b"http/1.1")));
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let _conn = AbortOnDrop(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = Request::get("/echo")
        .header("host", HOST)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = tokio::time::timeout(HANG, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(
        rsp.headers()["alt-svc"],
        format!("h3=\":{}\"; ma=86400", addr.port()).as_str()
    );

    // The advertised endpoint answers.
    let client = H3Client::connect(&pki, SocketAddr::new(addr.ip(), addr.port())).await;
    let (rsp, _, _) = client.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
}
