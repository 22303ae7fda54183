//! HTTP/3 at a listener with `tls` and `http3: true`, end to end through the in-process proxy:
//! a real QUIC client (quinn + h3, as a user's client is built) against the proxy's UDP port,
//! a real h2c/HTTP/1.1 upstream, real certificates from a test root. Everything waits on
//! signals (the upstream's arrival channel, stream and connection events), never on time; the
//! timeouts only stop a hung test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jalin_tests::AbortOnDrop;
use jalin_tests::proxy::TestProxy;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};

/// Only stops a hung test (a 2-core machine shared by several builds); nothing asserts on time.
const HANG: Duration = Duration::from_secs(60);
const HOST: &str = "gw.example.gov";

type BoxBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A test root, the gateway's certificate files it issued, and a client config trusting it.
struct Pki {
    _dir: tempfile::TempDir,
    root: rustls::pki_types::CertificateDer<'static>,
    chain: String,
    key: String,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Government Root");
        let root_key = KeyPair::generate().unwrap();
        let root = params.self_signed(&root_key).unwrap();
        let issuer = Issuer::new(params, root_key);
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::DnsName(HOST.try_into().unwrap())];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let chain = dir.path().join("gw.pem");
        std::fs::write(&chain, cert.pem()).unwrap();
        let key_path = dir.path().join("gw.key");
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Self {
            root: root.der().clone(),
            chain: chain.display().to_string(),
            key: key_path.display().to_string(),
            _dir: dir,
        }
    }

    fn client_tls(&self, alpn: &[u8]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        let mut c = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    }
}

/// What the upstream reports to the test.
#[derive(Debug)]
enum Seen {
    /// A `/hold` request arrived; it is answered after `release`.
    Held,
    /// A `/sink` request arrived.
    SinkStarted,
    /// A `/sink` request's body ended: its length, or that it was cut.
    Sink(Result<usize, String>),
}

/// An h2c/HTTP/1.1 upstream: `/echo` streams the body back (with `x-method` and
/// `x-transfer-encoding`), `/grpc` answers gRPC-shaped with trailers, `/hold` waits for
/// `release`, `/sink` reads the body and reports how it ended.
struct Upstream {
    addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    release: Arc<Notify>,
    _task: AbortOnDrop,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, seen) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let rel = release.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (tx, rel) = (tx.clone(), rel.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (tx, rel) = (tx.clone(), rel.clone());
                        async move { Ok::<_, Infallible>(answer(req, tx, rel).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            release,
            _task: AbortOnDrop(task),
        }
    }

    async fn next(&mut self) -> Seen {
        tokio::time::timeout(HANG, self.seen.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

fn boxed(b: impl Into<Bytes>) -> BoxBody {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

async fn answer(
    req: Request<Incoming>,
    tx: mpsc::UnboundedSender<Seen>,
    release: Arc<Notify>,
) -> Response<BoxBody> {
    match req.uri().path() {
        "/grpc" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "7".parse().unwrap());
            trailers.insert("grpc-message", "denied%20by%20test".parse().unwrap());
            let frames = futures::stream::iter([
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
                Ok(Frame::trailers(trailers)),
            ]);
            let mut rsp = Response::new(
                StreamBody::new(frames)
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            );
            rsp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            rsp
        }
        "/hold" => {
            let _ = tx.send(Seen::Held);
            release.notified().await;
            Response::new(boxed("held"))
        }
        "/sink" => {
            let _ = tx.send(Seen::SinkStarted);
            let r = req.into_body().collect().await;
            let _ = tx.send(Seen::Sink(
                r.map(|c| c.to_bytes().len()).map_err(|e| e.to_string()),
            ));
            Response::new(boxed("sunk"))
        }
        _ => {
            let method = req.method().to_string();
            let te = req
                .headers()
                .get("transfer-encoding")
                .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
            let mut rsp = Response::new(req.into_body().map_err(Into::into).boxed_unsync());
            rsp.headers_mut()
                .insert("x-method", method.parse().unwrap());
            rsp.headers_mut()
                .insert("x-transfer-encoding", te.parse().unwrap());
            rsp
        }
    }
}

/// The proxy with one `tls` + `http3: true` listener `gw` in front of `upstream`.
async fn proxy(pki: &Pki, upstream: SocketAddr) -> TestProxy {
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: gw\n    address: 127.0.0.1:0\n    direction: outbound\n    service: app\n    http3: true\n    tls:\n      certificate_chain: {}\n      private_key: {}\nservices:\n  - name: app\n    protocol: auto\n    endpoints:\n      - address: {upstream}\n",
        pki.chain, pki.key
    );
    TestProxy::start(&yaml).await.unwrap()
}

type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One HTTP/3 client connection; its driver runs in a task that reports when it ends.
struct H3Client {
    send: SendRequest,
    closed: tokio::sync::oneshot::Receiver<String>,
    _driver: AbortOnDrop,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    async fn connect(pki: &Pki, addr: SocketAddr) -> Self {
        let tls = pki.client_tls(b"h3");
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint.connect(addr, HOST).unwrap().await.unwrap();
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .unwrap();
        let (tx, closed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            let _ = tx.send(e.to_string());
        });
        Self {
            send,
            closed,
            _driver: AbortOnDrop(task),
            _endpoint: endpoint,
        }
    }

    /// Sends `method path` with `body` (none: the head ends the stream) and returns the
    /// response head, body and trailers.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> (Response<()>, Bytes, Option<HeaderMap>) {
        let mut send = self.send.clone();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://{HOST}{path}"));
        if let Some(b) = &body {
            req = req.header("content-length", b.len());
        }
        let stream = send.send_request(req.body(()).unwrap()).await.unwrap();
        let (mut tx, mut rx) = stream.split();
        let upload = async move {
            if let Some(b) = body {
                for chunk in b.chunks(64 * 1024) {
                    tx.send_data(Bytes::copy_from_slice(chunk)).await.unwrap();
                }
            }
            tx.finish().await.unwrap();
        };
        let download = async move {
            let rsp = rx.recv_response().await.unwrap();
            let mut data = BytesMut::new();
            while let Some(mut chunk) = rx.recv_data().await.unwrap() {
                data.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            let trailers = rx.recv_trailers().await.unwrap();
            (rsp, data.freeze(), trailers)
        };
        let ((), out) = tokio::time::timeout(HANG, async { tokio::join!(upload, download) })
            .await
            .unwrap();
        out
    }
}

async fn metrics(proxy: &TestProxy) -> String {
    let client = jalin_tests::client::http1_client();
    let (_, _, body) = jalin_tests::client::get(&client, proxy.admin(), "/metrics")
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

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
    let mut send = client.send.clone();
    let req = Request::get(format!("https://{HOST}/hold"))
        .body(())
        .unwrap();
    let mut held = send.send_request(req).await.unwrap();
    held.finish().await.unwrap();
    assert!(matches!(upstream.next().await, Seen::Held));
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

    let mut send = client.send.clone();
    let req = Request::get(format!("https://{HOST}/hold"))
        .body(())
        .unwrap();
    let mut held = send.send_request(req).await.unwrap();
    held.finish().await.unwrap();
    assert!(matches!(upstream.next().await, Seen::Held));

    let handle = proxy.handle.clone();
    let drained = tokio::spawn(async move { handle.shutdown(HANG).await });

    // GOAWAY: the client refuses new requests on this connection once it has it. Each probe is
    // either refused locally (GOAWAY seen) or sent and rejected or answered by the server.
    let goaway = tokio::time::timeout(HANG, async {
        loop {
            let probe = Request::get(format!("https://{HOST}/echo"))
                .body(())
                .unwrap();
            match send.send_request(probe).await {
                Err(e) => break e,
                Ok(mut s) => {
                    let _ = s.finish().await;
                    let _ = s.recv_response().await;
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(
        goaway.to_string().to_lowercase().contains("clos"),
        "{goaway}"
    );

    // The in-flight request still completes.
    upstream.release.notify_one();
    let rsp = tokio::time::timeout(HANG, held.recv_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut data = BytesMut::new();
    while let Some(mut c) = held.recv_data().await.unwrap() {
        data.extend_from_slice(&c.copy_to_bytes(c.remaining()));
    }
    assert_eq!(&data[..], b"held");
    drop(held);

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
