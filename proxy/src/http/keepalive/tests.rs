//! Keep-alive timing against hyper's real HTTP/1.1 server over an in-memory pipe, on tokio's
//! paused clock: idle waits, slow heads and silent connections.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::KeepAlive;

const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";

type Served = JoinHandle<Result<(), hyper::Error>>;

fn builder() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    b
}

fn service() -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Send {
    service_fn(|_req| async {
        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

/// A connection served with keep-alive timing; returns the client's end.
fn serve() -> (DuplexStream, Served) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let keepalive = KeepAlive::new(IDLE_TIMEOUT);
    let mut b = builder();
    b.timer(keepalive.timer());
    let io = TokioIo::new(keepalive.io(server));
    let served = tokio::spawn(async move { b.serve_connection(io, service()).await });
    (client, served)
}

/// The same connection with hyper's own timer, for contrast.
fn serve_with_hyper_timer() -> (DuplexStream, Served) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let mut b = builder();
    b.timer(TokioTimer::new());
    let served =
        tokio::spawn(async move { b.serve_connection(TokioIo::new(server), service()).await });
    (client, served)
}

/// Sends one request and reads its whole response (it ends with the body "ok").
async fn exchange(client: &mut DuplexStream) {
    client.write_all(REQUEST).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nok") {
        let n = client.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "connection closed before the response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// Waits for the server to close the connection; returns when that happened.
async fn closed(client: &mut DuplexStream, served: Served) -> Instant {
    let mut buf = [0u8; 64];
    assert_eq!(
        client.read(&mut buf).await.unwrap(),
        0,
        "expected the server to close"
    );
    let at = Instant::now();
    let result = served.await.unwrap();
    assert!(
        result.is_err_and(|e| e.is_timeout()),
        "the connection should end on the header timer"
    );
    at
}

#[tokio::test(start_paused = true)]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let (mut client, served) = serve();
    exchange(&mut client).await;
    tokio::time::sleep(HEADER_TIMEOUT * 6).await;
    exchange(&mut client).await;
    assert!(!served.is_finished());
}

#[tokio::test(start_paused = true)]
async fn hyper_alone_closes_an_idle_connection_at_the_header_timeout() {
    // The behaviour this module exists to avoid.
    let (mut client, served) = serve_with_hyper_timer();
    exchange(&mut client).await;
    let idle_from = Instant::now();
    let at = closed(&mut client, served).await;
    assert_eq!(at - idle_from, HEADER_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_is_cut_at_the_header_timeout_from_its_first_byte() {
    let (mut client, served) = serve();
    exchange(&mut client).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let first_byte = Instant::now();
    let at = closed(&mut client, served).await;
    assert_eq!(at - first_byte, HEADER_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_head_completed_within_the_bound_after_an_idle_wait_is_served() {
    let (mut client, served) = serve();
    exchange(&mut client).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(HEADER_TIMEOUT - Duration::from_secs(1)).await;
    client.write_all(b"host: a\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 256];
    let n = client.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    assert!(!served.is_finished());
}

#[tokio::test(start_paused = true)]
async fn a_silent_new_connection_is_closed_at_the_header_timeout() {
    let start = Instant::now();
    let (mut client, served) = serve();
    let at = closed(&mut client, served).await;
    assert_eq!(at - start, HEADER_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_at_the_idle_timeout() {
    let (mut client, served) = serve();
    exchange(&mut client).await;
    let idle_from = Instant::now();
    let at = closed(&mut client, served).await;
    assert_eq!(at - idle_from, IDLE_TIMEOUT);
}
