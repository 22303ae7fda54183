//! The proxy's data path end to end: real clients (curl, hyper, tonic, tungstenite, raw TCP)
//! through an in-process proxy to real upstream servers, all over loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jalin_tests::client::{self, curl};
use jalin_tests::proxy::{ListenerSpec, ServiceSpec, TestProxy, config_yaml};
use jalin_tests::upstream::{
    GrpcUpstream, HttpUpstream, StreamingUpstream, TcpEchoUpstream, WsEchoUpstream, grpc,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Guards a step that must finish, so a proxy that buffers or hangs fails the test instead of
/// hanging it. Never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(20);

async fn proxy_to(upstream: std::net::SocketAddr) -> TestProxy {
    let yaml = config_yaml(
        &[
            ListenerSpec::outbound("out", "echo"),
            ListenerSpec::inbound("in", "echo"),
        ],
        &[ServiceSpec::new("echo", &[upstream])],
    );
    TestProxy::start(&yaml).await.unwrap()
}

fn headers_of(body: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    v["headers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http1_through_the_proxy() {
    let up = HttpUpstream::start("a").await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let url = format!("http://{}/headers", proxy.addr("out"));
    let out = curl(&url, &["-H", "x-forwarded-for: 10.1.2.3"])
        .await
        .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.http_version, "1.1");
    let v: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(v["version"], "HTTP/1.1");
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], proxy.addr("out").to_string());
    assert_eq!(h["x-request-id"].as_str().unwrap().len(), 36);

    // A request body is streamed to the upstream and back.
    let out = curl(
        &format!("http://{}/echo", proxy.addr("out")),
        &["--data-binary", "ping-pong"],
    )
    .await
    .unwrap();
    assert_eq!(out.body, "ping-pong");
    assert_eq!(up.requests(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h2c_prior_knowledge_through_the_proxy() {
    let up = HttpUpstream::start("a").await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let url = format!("http://{}/headers", proxy.addr("out"));
    let out = curl(
        &url,
        &["--http2-prior-knowledge", "-H", "x-request-id: keep-me"],
    )
    .await
    .unwrap();
    assert_eq!(out.status, 200, "{out:?}");
    assert_eq!(out.http_version, "2");
    let v: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    // HTTP/2 downstream stays HTTP/2 upstream (protocol `auto`).
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(v["headers"]["x-request-id"], "keep-me");

    let out = curl(
        &format!("http://{}/echo", proxy.addr("out")),
        &["--http2-prior-knowledge", "--data-binary", "h2 body"],
    )
    .await
    .unwrap();
    assert_eq!(out.body, "h2 body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_and_spoofed_identity_headers_are_removed() {
    let up = HttpUpstream::start("a").await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let args = [
        "-H",
        "Connection: keep-alive, x-secret",
        "-H",
        "x-secret: 1",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "x-forwarded-client-cert: By=spiffe://evil/ns/x/sa/y",
        "-H",
        "x-jalin-priority: emergency",
        "-H",
        "x-kept: yes",
    ];
    let inbound = curl(&format!("http://{}/headers", proxy.addr("in")), &args)
        .await
        .unwrap();
    let h = headers_of(&inbound.body);
    assert_eq!(h["x-kept"], "yes");
    for gone in [
        "x-secret",
        "keep-alive",
        "x-forwarded-client-cert",
        "x-jalin-priority",
    ] {
        assert!(h.get(gone).is_none(), "{gone} reached the upstream: {h}");
    }
    // Outbound keeps the application's own jalin headers but never a client certificate claim.
    let outbound = curl(&format!("http://{}/headers", proxy.addr("out")), &args)
        .await
        .unwrap();
    let h = headers_of(&outbound.body);
    assert_eq!(h["x-jalin-priority"], "emergency");
    assert!(h.get("x-forwarded-client-cert").is_none());
    assert!(h.get("x-secret").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_and_trailers_pass_through() {
    let up = GrpcUpstream::start().await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr("out")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);

    let ok = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: grpc::SERVING_SERVICE.into(),
        })
        .await
        .unwrap();
    assert_eq!(
        ok.into_inner().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The OK status of a unary call travels in HTTP/2 trailers: read them raw.
    let client = client::h2_client();
    let mut frame = vec![0u8];
    let msg = {
        let name = grpc::SERVING_SERVICE.as_bytes();
        let mut m = vec![0x0a, name.len() as u8];
        m.extend_from_slice(name);
        m
    };
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    let req = http::Request::post(format!(
        "http://{}/grpc.health.v1.Health/Check",
        proxy.addr("out")
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(Bytes::from(frame)))
    .unwrap();
    let rsp = client.request(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let collected = rsp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("grpc trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert!(!collected.to_bytes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_to_a_dead_endpoint_is_unavailable() {
    // A port nothing listens on: bind, take the address, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = proxy_to(dead).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr("out")))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let err = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_an_upgrade() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let up = WsEchoUpstream::start().await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let (mut ws, rsp) =
        tokio_tungstenite::connect_async(format!("ws://{}/chat", proxy.addr("out")))
            .await
            .unwrap();
    assert_eq!(rsp.status(), 101);
    for text in ["hello", "through", "jalin"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = tokio::time::timeout(HANG_GUARD, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let back = ws.next().await.unwrap().unwrap();
    assert_eq!(back.into_data().as_ref(), &[0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_echo_is_detected_as_opaque() {
    let up = TcpEchoUpstream::start().await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr("out"))
        .await
        .unwrap();
    // Not an HTTP request line: detection decides "opaque" on the first bytes.
    conn.write_all(b"\x00\x01binary hello\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    tokio::time::timeout(HANG_GUARD, conn.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"\x00\x01binary hello\r\n");
    conn.write_all(b"more").await.unwrap();
    let mut buf = [0u8; 4];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_forwards_without_detection() {
    let up = TcpEchoUpstream::start().await.unwrap();
    let mut tcp = ListenerSpec::outbound("raw", "echo");
    tcp.protocol = "tcp";
    let yaml = config_yaml(&[tcp], &[ServiceSpec::new("echo", &[up.addr])]);
    let proxy = TestProxy::start(&yaml).await.unwrap();
    // Even an HTTP-looking payload is opaque on a `tcp` listener.
    let mut conn = tokio::net::TcpStream::connect(proxy.addr("raw"))
        .await
        .unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 18];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_arrives_before_the_upstream_finishes() {
    let up = StreamingUpstream::start().await.unwrap();
    let proxy = proxy_to(up.addr).await;
    for client in [client::http1_client(), client::h2_client()] {
        let rsp = client
            .get(
                format!("http://{}/stream", proxy.addr("out"))
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let mut body = rsp.into_body();
        // The upstream holds the rest until we release it, so this frame can only arrive if
        // the proxy forwards without buffering.
        let first = tokio::time::timeout(HANG_GUARD, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(first.into_data().unwrap(), StreamingUpstream::FIRST);
        up.release().await;
        let rest = tokio::time::timeout(HANG_GUARD, body.collect())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.to_bytes(), StreamingUpstream::REST);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_pooled_upstream() {
    let up = HttpUpstream::start("a").await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let client = client::h2_client();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let (status, _, body) = client::get(&client, proxy.addr("out"), "/headers")
            .await
            .unwrap();
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["version"], "HTTP/2.0");
        seen.insert(v["headers"]["x-request-id"].as_str().unwrap().to_owned());
    }
    // Every request got its own id.
    assert_eq!(seen.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_endpoint_answers_503_with_a_reason() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = proxy_to(dead).await;
    let out = curl(&format!("http://{}/", proxy.addr("out")), &[])
        .await
        .unwrap();
    assert_eq!(out.status, 503);
    assert!(out.body.contains(&dead.to_string()), "{}", out.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    jalin_proxy::telemetry::init_logging(false);
    let up = HttpUpstream::start("a").await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let admin = proxy.admin();
    curl(&format!("http://{}/status/418", proxy.addr("out")), &[])
        .await
        .unwrap();

    assert_eq!(
        curl(&format!("http://{admin}/live"), &[])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        curl(&format!("http://{admin}/ready"), &[])
            .await
            .unwrap()
            .status,
        200
    );

    let metrics = curl(&format!("http://{admin}/metrics"), &[])
        .await
        .unwrap()
        .body;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"418\""))
        .unwrap_or_else(|| panic!("no istio_requests_total for 418 in:\n{metrics}"));
    assert!(line.contains("destination_service=\"echo\""), "{line}");
    assert!(line.contains("reporter=\"source\""), "{line}");
    assert!(
        metrics.contains("istio_request_duration_milliseconds_bucket{"),
        "{metrics}"
    );
    // Istio's size histograms, in Envoy's buckets: the 418 had no request body, and its
    // response body is the upstream's `status 418\n` (11 bytes).
    let sum = |name: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}_sum{{")) && l.contains("response_code=\"418\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name}_sum for 418 in:\n{metrics}"))
    };
    assert_eq!(sum("istio_request_bytes"), 0.0);
    assert_eq!(sum("istio_response_bytes"), 11.0);
    assert!(
        metrics.contains("istio_response_bytes_bucket{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("le=\"3600000\""),
        "Envoy's buckets: {metrics}"
    );

    let dump = curl(&format!("http://{admin}/config_dump"), &[])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["config"]["services"][0]["name"], "echo");

    let set = curl(
        &format!("http://{admin}/logging?level=debug"),
        &["-X", "PUT"],
    )
    .await
    .unwrap();
    assert_eq!(set.status, 200, "{set:?}");
    let get = curl(&format!("http://{admin}/logging"), &[]).await.unwrap();
    assert_eq!(get.body.trim(), "level=debug");
    let bad = curl(
        &format!("http://{admin}/logging?level=%3D%3D"),
        &["-X", "POST"],
    )
    .await
    .unwrap();
    assert_eq!(bad.status, 400);
    curl(
        &format!("http://{admin}/logging?level=info"),
        &["-X", "PUT"],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_downstream_to_http2_upstream_and_back() {
    let up = HttpUpstream::start("a").await.unwrap();
    let mut h2 = ServiceSpec::new("h2", &[up.addr]);
    h2.protocol = "http2";
    let mut h1 = ServiceSpec::new("h1", &[up.addr]);
    h1.protocol = "http1";
    let yaml = config_yaml(
        &[
            ListenerSpec::outbound("to-h2", "h2"),
            ListenerSpec::outbound("to-h1", "h1"),
        ],
        &[h2, h1],
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();

    let out = curl(&format!("http://{}/headers", proxy.addr("to-h2")), &[])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(out.http_version, "1.1");
    assert_eq!(v["version"], "HTTP/2.0");
    // The client's Host became the HTTP/2 authority.
    assert_eq!(v["uri"], format!("http://{}/headers", proxy.addr("to-h2")));

    let out = curl(
        &format!("http://{}/headers", proxy.addr("to-h1")),
        &["--http2-prior-knowledge"],
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(out.http_version, "2");
    assert_eq!(v["version"], "HTTP/1.1");
    assert_eq!(v["headers"]["host"], proxy.addr("to-h1").to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_listener_without_redirect_refuses_instead_of_looping() {
    let yaml = "\
admin:
  address: 127.0.0.1:0
listeners:
  - name: sidecar
    address: 127.0.0.1:0
    direction: outbound
";
    let proxy = TestProxy::start(yaml).await.unwrap();
    // Connecting straight to the listener (no iptables REDIRECT) has no original destination.
    let out = curl(&format!("http://{}/", proxy.addr("sidecar")), &[])
        .await
        .unwrap();
    assert_eq!(out.status, 503);
    assert!(out.body.contains("iptables"), "{}", out.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_head_is_refused() {
    let up = HttpUpstream::start("a").await.unwrap();
    let proxy = proxy_to(up.addr).await;
    let big = format!(
        "x-big: {}",
        "a".repeat(jalin_proxy::limits::MAX_HEADER_BYTES)
    );
    let out = curl(
        &format!("http://{}/headers", proxy.addr("out")),
        &["-H", &big],
    )
    .await
    .unwrap();
    assert_eq!(out.status, 431);
    assert_eq!(up.requests(), 0);
    // Just under the limit passes.
    let ok = format!(
        "x-big: {}",
        "a".repeat(jalin_proxy::limits::MAX_HEADER_BYTES / 2)
    );
    let out = curl(
        &format!("http://{}/headers", proxy.addr("out")),
        &["-H", &ok],
    )
    .await
    .unwrap();
    assert_eq!(out.status, 200);
}
