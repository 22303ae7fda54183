//! Test support for the mTLS acceptance tests: an in-process metrics recorder and log capture,
//! a test PKI, and a small HTTP/1.1 echo server/client pair over real TLS on 127.0.0.1:0.
// Test-only code: panicking on a broken test fixture is the intended failure mode.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use jalin_ca::identity::{CertStore, DevCa};
use jalin_ca::spiffe::{SpiffeId, TrustDomain};
use jalin_ca::tls::{
    Direction, InboundAction, PeerIdentity, PortMtlsMode, Refusal, TrustBundle, TrustStore,
    inbound_action, peer_identity, record_handshake_error, record_refusal,
};
use rcgen::KeyPair;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

// ---------- metrics ----------

/// A global metrics recorder that keeps counters and gauges readable by tests.
#[derive(Default)]
pub struct TestRecorder {
    counters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

fn key_string(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

fn metric_key(key: &metrics::Key) -> String {
    let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
    key_string(key.name(), &labels)
}

struct Handle(&'static TestRecorder);

impl metrics::Recorder for Handle {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let cell = self
            .0
            .counters
            .lock()
            .unwrap()
            .entry(metric_key(key))
            .or_default()
            .clone();
        metrics::Counter::from_arc(cell)
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        let cell = self
            .0
            .gauges
            .lock()
            .unwrap()
            .entry(metric_key(key))
            .or_default()
            .clone();
        metrics::Gauge::from_arc(cell)
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The process-wide test recorder (installed on first use).
pub fn recorder() -> &'static TestRecorder {
    static RECORDER: OnceLock<&'static TestRecorder> = OnceLock::new();
    RECORDER.get_or_init(|| {
        let rec: &'static TestRecorder = Box::leak(Box::default());
        metrics::set_global_recorder(Handle(rec)).expect("only this test installs a recorder");
        rec
    })
}

impl TestRecorder {
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(&key_string(name, labels))
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }

    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges
            .lock()
            .unwrap()
            .get(&key_string(name, labels))
            .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
    }
}

// ---------- logs ----------

/// Captured log output (tracing, plain text, no ANSI).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Lines containing every needle.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }
}

/// The process-wide log capture (installed on first use).
pub fn logs() -> &'static LogCapture {
    static LOGS: OnceLock<LogCapture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = LogCapture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}

// ---------- PKI ----------

pub const TD: &str = "agency.test";

pub fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
}

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::workload(&td(), ns, sa).unwrap()
}

/// The test CA (root → intermediate pathLen 0) and a trust store holding its root.
pub fn test_ca(ttl: Duration) -> (Arc<DevCa>, TrustStore) {
    let ca = Arc::new(DevCa::new(td(), ttl).unwrap());
    let trust = TrustStore::new(TrustBundle::new(vec![ca.root()], vec![td()]).unwrap());
    (ca, trust)
}

pub fn certified(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Arc<CertifiedKey> {
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Arc::new(
        CertifiedKey::from_der(chain, der, &rustls::crypto::aws_lc_rs::default_provider()).unwrap(),
    )
}

/// A resolver holding one fixed certificate.
pub fn static_certs(chain: Vec<CertificateDer<'static>>, key: &KeyPair) -> Arc<CertStore> {
    let store = Arc::new(CertStore::new());
    store.install(certified(chain, key));
    store
}

// ---------- echo server ----------

/// What the server saw for one connection.
#[derive(Debug)]
pub enum ServerEvent {
    Accepted(PeerIdentity),
    Plaintext,
    Refused(Refusal),
}

/// An HTTP/1.1 echo server: answers every request with the peer's SPIFFE ID (or "plaintext").
pub struct EchoServer {
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<ServerEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    pub async fn next_event(&mut self) -> ServerEvent {
        tokio::time::timeout(Duration::from_secs(20), self.events.recv())
            .await
            .expect("server event within 20 s")
            .expect("server alive")
    }
}

pub async fn spawn_server(config: Arc<ServerConfig>, mode: PortMtlsMode) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, events) = mpsc::unbounded_channel();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move { handle(stream, mode, acceptor, tx).await });
        }
    });
    EchoServer { addr, events, task }
}

async fn handle(
    mut stream: TcpStream,
    mode: PortMtlsMode,
    acceptor: tokio_rustls::TlsAcceptor,
    tx: mpsc::UnboundedSender<ServerEvent>,
) {
    // Read (not peek) until the detector decides, then replay the bytes to the TLS acceptor.
    let mut prefix = Vec::new();
    let action = loop {
        match inbound_action(mode, &prefix) {
            InboundAction::NeedMore(n) if prefix.len() < n => {
                let mut buf = [0u8; 64];
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => prefix.extend_from_slice(&buf[..k]),
                }
            }
            other => break other,
        }
    };
    let peer = stream.peer_addr().ok().map(|a| a.to_string());
    let stream = Prefixed {
        prefix,
        pos: 0,
        inner: stream,
    };
    match action {
        InboundAction::Refuse(refusal) => {
            record_refusal(Direction::Inbound, &refusal, peer.as_deref());
            let _ = tx.send(ServerEvent::Refused(refusal));
        }
        InboundAction::Plaintext => {
            let _ = tx.send(ServerEvent::Plaintext);
            serve_http(stream, "plaintext".to_owned()).await;
        }
        InboundAction::TerminateMtls | InboundAction::NeedMore(_) => {
            match acceptor.accept(stream).await {
                Err(err) => {
                    let refusal = record_handshake_error(Direction::Inbound, &err, peer.as_deref());
                    let _ = tx.send(ServerEvent::Refused(refusal));
                }
                Ok(tls) => {
                    let identity = peer_identity(tls.get_ref().1).unwrap();
                    let body = identity.spiffe_id.to_string();
                    let _ = tx.send(ServerEvent::Accepted(identity));
                    serve_http(tls, body).await;
                }
            }
        }
    }
}

/// A stream that first yields bytes already read from `inner`.
struct Prefixed {
    prefix: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

const MAX_HEAD: usize = 8 * 1024;

async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Option<String>> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        head.push(b[0]);
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, body: String) {
    while let Ok(Some(head)) = read_head(&mut s).await {
        let close = head.to_ascii_lowercase().contains("connection: close");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(resp.as_bytes()).await.is_err() || s.flush().await.is_err() || close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// Sends one GET and returns the body.
pub async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n").await?;
    s.flush().await?;
    let head = read_head(s).await?.ok_or(io::ErrorKind::UnexpectedEof)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, head));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Connects with `config` (SNI is informational; identity is verified by SPIFFE ID).
pub async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("peer.mesh.invalid").unwrap(), tcp)
        .await
}

/// Aborts a spawned task when dropped, so a failing test leaves nothing running.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`traffic_across_rotations`] saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Requests answered with the expected body.
    pub ok: u64,
    /// Requests that failed (connect, handshake, I/O).
    pub failed: u64,
    /// Serials the server's identity manager installed, in order.
    pub announced: Vec<String>,
    /// Serials the clients saw on new connections.
    pub observed: std::collections::HashSet<String>,
    /// Whether `serials` distinct serials were both announced and observed in time.
    pub complete: bool,
}

impl LoadReport {
    /// The rotations all happened, clients saw only certificates the manager installed, no
    /// request failed, and there was real traffic.
    pub fn assert_rotated_without_failures(&self) {
        assert!(
            self.complete,
            "rotations not all observed in time: {self:?}"
        );
        let announced: std::collections::HashSet<_> = self.announced.iter().cloned().collect();
        assert!(
            self.observed.is_subset(&announced),
            "server presented a certificate the manager never installed: {self:?}"
        );
        assert_eq!(self.failed, 0, "failed requests during rotation: {self:?}");
        assert!(self.ok >= 20, "too little traffic: {self:?}");
    }
}

/// Runs 4 clients against `addr` (a long-lived connection each, plus a new connection every
/// 4th request) until the server identity behind `rotations` has installed, and the clients
/// have seen, `serials` distinct certificates, or until `limit`. Every answer must be
/// `expected_body`.
pub async fn traffic_across_rotations(
    ccfg: Arc<ClientConfig>,
    addr: SocketAddr,
    expected_body: String,
    mut rotations: tokio::sync::watch::Receiver<Option<Arc<jalin_ca::identity::CertInfo>>>,
    first_serial: String,
    serials: usize,
    limit: Duration,
) -> LoadReport {
    use std::sync::atomic::AtomicBool;
    const WORKERS: usize = 4;
    const NEW_CONN_EVERY: u64 = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (ccfg, stop, ok, failed, seen_tx) = (
            ccfg.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen_tx.clone(),
        );
        let expected_body = expected_body.clone();
        workers.push(tokio::spawn(async move {
            // One connection kept for the whole run: it must outlive every rotation.
            let mut long = connect(ccfg.clone(), addr)
                .await
                .expect("long-lived connection");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let result = if n.is_multiple_of(NEW_CONN_EVERY) {
                    match connect(ccfg.clone(), addr).await {
                        Ok(mut tls) => {
                            let leaf = &tls.get_ref().1.peer_certificates().expect("peer")[0];
                            let _ = seen_tx.send(serial_of_der(leaf));
                            http_get(&mut tls).await
                        }
                        Err(e) => Err(e),
                    }
                } else {
                    http_get(&mut long).await
                };
                match result {
                    Ok(body) if body == expected_body => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(body) => panic!("wrong peer identity echoed: {body}"),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let mut report = LoadReport {
        announced: vec![first_serial],
        ..LoadReport::default()
    };
    let outcome = tokio::time::timeout(limit, async {
        while report.observed.len() < serials || report.announced.len() < serials {
            tokio::select! {
                changed = rotations.changed() => {
                    changed.expect("identity manager alive");
                    if let Some(info) = rotations.borrow_and_update().clone()
                        && report.announced.last() != Some(&info.serial_hex)
                    {
                        report.announced.push(info.serial_hex.clone());
                    }
                }
                Some(serial) = seen_rx.recv() => { report.observed.insert(serial); }
            }
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }
    report.complete = outcome.is_ok();
    report.ok = ok.load(Ordering::Relaxed);
    report.failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "traffic across rotations: {} ok, {} failed, announced {:?}, observed {}",
        report.ok,
        report.failed,
        report.announced,
        report.observed.len()
    );
    report
}

/// A DER certificate's serial, lowercase hex.
pub fn serial_of_der(der: &[u8]) -> String {
    let (_, cert) =
        <x509_parser::prelude::X509Certificate as x509_parser::prelude::FromDer<_>>::from_der(der)
            .expect("certificate DER");
    hex::encode(cert.raw_serial())
}
