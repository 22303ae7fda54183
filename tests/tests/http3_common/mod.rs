//! Shared by the HTTP/3 suites: a test root and the gateway certificate it issued, an h2c
//! upstream with signalled paths, the proxy configuration with a `tls` + `http3: true`
//! listener, and an HTTP/3 client built from quinn + h3 as a user's client is.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
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
pub const HANG: Duration = Duration::from_secs(60);
pub const HOST: &str = "gw.example.gov";

type BoxBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A test root, the gateway's certificate files it issued, and a client config trusting it.
pub struct Pki {
    _dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub root: rustls::pki_types::CertificateDer<'static>,
    /// The root's PEM file, for a `MUTUAL` listener's `ca_certificates`.
    pub ca: String,
    pub chain: String,
    pub key: String,
    /// The gateway leaf now in the files.
    pub leaf: rustls::pki_types::CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Government Root");
        let root_key = KeyPair::generate().unwrap();
        let root = params.self_signed(&root_key).unwrap();
        let issuer = Issuer::new(params, root_key);
        let dir = tempfile::tempdir().unwrap();
        let chain = dir.path().join("gw.pem");
        let key_path = dir.path().join("gw.key");
        let leaf = issue(&issuer, &chain, &key_path);
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, root.pem()).unwrap();
        Self {
            issuer,
            ca: ca.display().to_string(),
            root: root.der().clone(),
            leaf,
            chain: chain.display().to_string(),
            key: key_path.display().to_string(),
            _dir: dir,
        }
    }

    pub fn client_tls(&self, alpn: &[u8]) -> rustls::ClientConfig {
        let mut c = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    }

    /// [`Pki::client_tls`] presenting a client certificate the root issued, with DNS SAN `san`.
    pub fn client_tls_with_cert(&self, alpn: &[u8], san: &str) -> rustls::ClientConfig {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::DnsName(san.try_into().unwrap())];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut c = rustls::ClientConfig::builder()
            .with_root_certificates(self.roots())
            .with_client_auth_cert(vec![cert.der().clone()], key)
            .unwrap();
        c.alpn_protocols = vec![alpn.to_vec()];
        c
    }

    /// Writes a new gateway leaf and key over the files (a rotation) and returns the leaf.
    pub fn reissue(&self) -> rustls::pki_types::CertificateDer<'static> {
        issue(&self.issuer, self.chain.as_ref(), self.key.as_ref())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        roots
    }
}

/// Writes a leaf for [`HOST`] that `issuer` signs, with a fresh key, to `chain` and `key`.
fn issue(
    issuer: &Issuer<'static, KeyPair>,
    chain: &std::path::Path,
    key: &std::path::Path,
) -> rustls::pki_types::CertificateDer<'static> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::DnsName(HOST.try_into().unwrap())];
    let leaf_key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&leaf_key, issuer).unwrap();
    std::fs::write(chain, cert.pem()).unwrap();
    std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    cert.der().clone()
}

/// What the upstream reports to the test.
#[derive(Debug)]
pub enum Seen {
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
pub struct Upstream {
    pub addr: SocketAddr,
    seen: mpsc::UnboundedReceiver<Seen>,
    pub release: Arc<Notify>,
    _task: AbortOnDrop,
}

impl Upstream {
    pub async fn start() -> Self {
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

    pub async fn next(&mut self) -> Seen {
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
            let xfcc = req.headers().get("x-forwarded-client-cert").cloned();
            let te = req
                .headers()
                .get("transfer-encoding")
                .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
            let mut rsp = Response::new(req.into_body().map_err(Into::into).boxed_unsync());
            rsp.headers_mut()
                .insert("x-method", method.parse().unwrap());
            rsp.headers_mut()
                .insert("x-transfer-encoding", te.parse().unwrap());
            if let Some(xfcc) = xfcc {
                rsp.headers_mut().insert("x-seen-xfcc", xfcc);
            }
            rsp
        }
    }
}

/// A configuration with one `tls` + `http3: true` listener `gw` in front of `upstream`.
pub fn proxy_yaml(pki: &Pki, upstream: SocketAddr) -> String {
    format!(
        "admin:\n  address: 127.0.0.1:0\nlisteners:\n  - name: gw\n    address: 127.0.0.1:0\n    direction: outbound\n    service: app\n    http3: true\n    tls:\n      certificate_chain: {}\n      private_key: {}\nservices:\n  - name: app\n    protocol: auto\n    endpoints:\n      - address: {upstream}\n",
        pki.chain, pki.key
    )
}

/// The in-process proxy on [`proxy_yaml`].
pub async fn proxy(pki: &Pki, upstream: SocketAddr) -> TestProxy {
    TestProxy::start(&proxy_yaml(pki, upstream)).await.unwrap()
}

pub type SendRequest = h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>;

/// One HTTP/3 client connection; its driver runs in a task that reports when it ends.
pub struct H3Client {
    pub send: SendRequest,
    /// The certificate the server presented.
    pub leaf: rustls::pki_types::CertificateDer<'static>,
    pub closed: tokio::sync::oneshot::Receiver<String>,
    _driver: AbortOnDrop,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    pub async fn connect(pki: &Pki, addr: SocketAddr) -> Self {
        Self::try_connect(pki.client_tls(b"h3"), addr)
            .await
            .unwrap()
    }

    /// Connects with `tls` (its ALPN must be `h3`); fails when the handshake does.
    pub async fn try_connect(tls: rustls::ClientConfig, addr: SocketAddr) -> anyhow::Result<Self> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        let conn = endpoint.connect(addr, HOST)?.await?;
        let leaf = conn
            .peer_identity()
            .and_then(|id| {
                id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().cloned())
            .ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        let (tx, closed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            let _ = tx.send(e.to_string());
        });
        Ok(Self {
            send,
            leaf,
            closed,
            _driver: AbortOnDrop(task),
            _endpoint: endpoint,
        })
    }

    /// Sends `method path` with `body` (none: the head ends the stream) and returns the
    /// response head, body and trailers.
    pub async fn request(
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

pub async fn metrics(proxy: &TestProxy) -> String {
    let client = jalin_tests::client::http1_client();
    let (_, _, body) = jalin_tests::client::get(&client, proxy.admin(), "/metrics")
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

/// A client request stream.
pub type ClientStream = h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Sends `GET /hold` on `client` and returns its stream once the upstream holds it.
pub async fn hold(client: &H3Client, upstream: &mut Upstream) -> ClientStream {
    let mut send = client.send.clone();
    let req = Request::get(format!("https://{HOST}/hold"))
        .body(())
        .unwrap();
    let mut held = send.send_request(req).await.unwrap();
    held.finish().await.unwrap();
    assert!(matches!(upstream.next().await, Seen::Held));
    held
}

/// Waits until the client has the server's GOAWAY, which makes it refuse new requests on the
/// connection. Each probe before that is sent and then rejected or answered by the server.
pub async fn await_goaway(client: &H3Client) {
    let mut send = client.send.clone();
    let refused = tokio::time::timeout(HANG, async {
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
        refused.to_string().to_lowercase().contains("clos"),
        "{refused}"
    );
}

/// Releases the held request and checks that its whole response arrives.
pub async fn release_and_finish(upstream: &Upstream, mut held: ClientStream) {
    upstream.release.notify_one();
    let rsp = tokio::time::timeout(HANG, held.recv_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), http::StatusCode::OK);
    let mut data = BytesMut::new();
    while let Some(mut c) = held.recv_data().await.unwrap() {
        data.extend_from_slice(&c.copy_to_bytes(c.remaining()));
    }
    assert_eq!(&data[..], b"held");
}
