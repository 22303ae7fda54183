//! HTTP/2 stream-reset floods end to end, with the `h2` crate as a raw h2c (prior knowledge)
//! client of a jalin listener: the CVE-2023-44487 "rapid reset" pattern (open a stream, reset it
//! at once, repeat) and a client that opens streams past `SETTINGS_MAX_CONCURRENT_STREAMS` so
//! the proxy must refuse them (its own resets). Either way the proxy ends the attacking
//! connection with GOAWAY `ENHANCE_YOUR_CALM` within a bounded number of streams, and a
//! well-behaved client on another connection is still served.
//!
//! An attacker that paces its resets (a few per round trip) stays under h2's limits; the
//! proxy's premature-reset heuristic (Envoy's) closes that connection too, within a bounded
//! number of streams, and leaves a busy well-behaved connection alone.
//!
//! Synchronisation is by frame order, not time: the attacker queues its whole burst before its
//! connection task may run (a current-thread runtime of its own), so the burst leaves in one
//! write, before the client has read the proxy's SETTINGS. Within the limit, a PING follows the
//! burst: the proxy handles a connection's frames in order, so its PONG means it read the whole
//! burst and kept the connection. Past the limit the attacker writes nothing more and reads the
//! proxy's GOAWAY; a proxy that keeps the connection fails the test when [`HANG_GUARD`] runs out.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use h2::{Ping, Reason};
use http::Request;
use jalin_proxy::http::premature::PREMATURE_RESET_CLOSED;
use jalin_proxy::limits::{
    MAX_CONCURRENT_STREAMS, MAX_LOCAL_ERROR_RESET_STREAMS, MAX_PENDING_ACCEPT_RESET_STREAMS,
    PREMATURE_RESET_TOTAL_STREAM_COUNT,
};
use jalin_tests::client::curl;
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, Mode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Guards a step that must finish, so a proxy that hangs fails the test instead of hanging it.
/// Never used to wait for something to happen.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// How the attacker treats each stream it opens.
#[derive(Debug, Clone, Copy)]
enum Attack {
    /// HEADERS then RST_STREAM(CANCEL) straight away (CVE-2023-44487).
    RapidReset,
    /// HEADERS only, keeping every stream open, past the proxy's concurrent-stream limit.
    OverConcurrency,
}

/// How the attacking connection ended.
#[derive(Debug)]
enum Verdict {
    /// The proxy answered the PING sent after the burst, or kept the connection open for
    /// [`HANG_GUARD`]: it took every stream.
    Survived,
    /// The connection ended, with this error if any.
    Closed(Option<h2::Error>),
}

/// The attacker's socket. Reads wait until the first burst has been written, so the client
/// applies none of the proxy's SETTINGS (its concurrent-stream limit) before the burst leaves;
/// every flush after [`Gate::arm`] is counted, so the attacker knows a queued burst is on the
/// wire before it queues the PING that must follow it (h2 writes a queued PING ahead of queued
/// stream frames).
struct BurstIo {
    tcp: TcpStream,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    reads_open: AtomicBool,
    /// Writes are dropped (reported written): the attacker sends nothing after its burst.
    muted: AtomicBool,
    read_waker: Mutex<Option<Waker>>,
    flushes: watch::Sender<u64>,
}

impl Gate {
    /// From now on, flushes open the read side and are counted.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

impl AsyncRead for BurstIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.gate.reads_open.load(Ordering::SeqCst) {
            *self.gate.read_waker.lock().unwrap() = Some(cx.waker().clone());
            if !self.gate.reads_open.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for BurstIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.gate.muted.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = std::task::ready!(Pin::new(&mut self.tcp).poll_flush(cx));
        if r.is_ok() && self.gate.armed.load(Ordering::SeqCst) {
            self.gate.reads_open.store(true, Ordering::SeqCst);
            if let Some(w) = self.gate.read_waker.lock().unwrap().take() {
                w.wake();
            }
            self.gate.flushes.send_modify(|n| *n += 1);
        }
        Poll::Ready(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Opens one h2c connection to `addr`, queues `streams` streams treated as `attack`, then
/// pings. Runs on a current-thread runtime of its own thread, so the client's connection task
/// writes nothing until a whole burst is queued.
/// With `ping_after_burst` false, a burst attack instead waits (bounded by [`HANG_GUARD`]) for
/// the proxy to end the connection.
async fn attack(
    addr: SocketAddr,
    streams: usize,
    attack: Attack,
    ping_after_burst: bool,
) -> anyhow::Result<Verdict> {
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let gate = Arc::new(Gate::default());
            let mut flushed = gate.flushes.subscribe();
            flushed.borrow_and_update();
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let io = BurstIo {
                tcp,
                gate: gate.clone(),
            };
            let (mut send, mut conn) = h2::client::handshake(io).await?;
            let mut ping = conn.ping_pong().context("ping_pong already taken")?;
            let conn = tokio::spawn(conn);
            // Open streams stay open until the verdict: dropping them would reset them.
            let mut open = Vec::new();
            for _ in 0..streams {
                let req = Request::get(format!("http://{addr}/")).body(())?;
                let (rsp, mut stream) = send.send_request(req, true)?;
                match attack {
                    Attack::RapidReset => stream.send_reset(Reason::CANCEL),
                    Attack::OverConcurrency => open.push((rsp, stream)),
                }
            }
            gate.arm();
            // The burst is on the wire (or the connection failed) before the PING is queued.
            let _ = flushed.changed().await;
            if ping_after_burst {
                if ping.ping(Ping::opaque()).await.is_ok() {
                    return Ok(Verdict::Survived);
                }
            } else {
                // A write (a SETTINGS ack) that meets the proxy's closed socket would fail with
                // EPIPE before the client reads the GOAWAY.
                gate.muted.store(true, Ordering::SeqCst);
            }
            let error = match tokio::time::timeout(HANG_GUARD, conn).await {
                Ok(ended) => ended?.err(),
                Err(_) => return Ok(Verdict::Survived),
            };
            Ok(Verdict::Closed(error))
        })
    })
    .await?
}

/// After an attack on another connection: the client's connection opened before it is still
/// served, and so is a new one.
async fn others_are_served(good: &mut GoodClient, addr: SocketAddr) {
    assert_eq!(
        good.get(addr).await,
        200,
        "the open connection is still served"
    );
    let mut fresh = GoodClient::connect(addr).await;
    assert_eq!(fresh.get(addr).await, 200, "a new connection is served");
}

/// A well-behaved h2c client: GET `/` on its own connection.
struct GoodClient {
    send: h2::client::SendRequest<Bytes>,
    _conn: jalin_tests::AbortOnDrop,
}

impl GoodClient {
    async fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (send, conn) = h2::client::handshake(tcp).await.unwrap();
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self {
            send,
            _conn: jalin_tests::AbortOnDrop(conn),
        }
    }

    async fn get(&mut self, addr: SocketAddr) -> u16 {
        let send = self.send.clone().ready().await.unwrap();
        self.send = send;
        let req = Request::get(format!("http://{addr}/")).body(()).unwrap();
        let (rsp, _) = self.send.send_request(req, true).unwrap();
        let rsp = tokio::time::timeout(HANG_GUARD, rsp)
            .await
            .unwrap()
            .unwrap();
        let status = rsp.status().as_u16();
        let mut body = rsp.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            body.flow_control().release_capacity(chunk.len()).unwrap();
        }
        status
    }
}

async fn proxy_to(up: &ControlledUpstream) -> TestProxy {
    TestProxy::start(&OutboundConfig::new("h2-reset", &[up.addr]).yaml())
        .await
        .unwrap()
}

/// The proxy ended the connection with GOAWAY `ENHANCE_YOUR_CALM` (h2's flood limits).
fn assert_calmed(verdict: Verdict, what: &str) {
    match verdict {
        Verdict::Survived => panic!("the proxy kept the connection after {what}"),
        Verdict::Closed(Some(e)) => {
            assert!(e.is_go_away(), "{what}: expected GOAWAY, got {e:?}");
            assert!(
                e.is_remote(),
                "{what}: the proxy must send the GOAWAY: {e:?}"
            );
            assert_eq!(e.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{what}: {e:?}");
        }
        Verdict::Closed(None) => panic!("{what}: the connection ended without a GOAWAY error"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_burst_gets_goaway_and_other_connections_are_served() {
    let up = ControlledUpstream::start("up").await.unwrap();
    let proxy = proxy_to(&up).await;
    let addr = proxy.addr("out");
    let mut good = GoodClient::connect(addr).await;
    assert_eq!(good.get(addr).await, 200);

    // Control: a burst within the limit is an ordinary client cancelling requests.
    let within = attack(
        addr,
        MAX_PENDING_ACCEPT_RESET_STREAMS,
        Attack::RapidReset,
        true,
    )
    .await
    .unwrap();
    assert!(
        matches!(within, Verdict::Survived),
        "{MAX_PENDING_ACCEPT_RESET_STREAMS} resets are within the limit: {within:?}"
    );

    // Past the limit: the proxy sends GOAWAY before it reads the PING after the burst.
    let burst = 4 * MAX_PENDING_ACCEPT_RESET_STREAMS;
    let verdict = attack(addr, burst, Attack::RapidReset, false)
        .await
        .unwrap();
    assert_calmed(verdict, &format!("{burst} rapid resets"));

    others_are_served(&mut good, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_stream_flood_gets_goaway_and_other_connections_are_served() {
    let up = ControlledUpstream::start("up").await.unwrap();
    let proxy = proxy_to(&up).await;
    let addr = proxy.addr("out");
    let mut good = GoodClient::connect(addr).await;
    assert_eq!(good.get(addr).await, 200);

    // Streams stay open upstream, so every stream past MAX_CONCURRENT_STREAMS is refused by
    // the proxy (RST_STREAM REFUSED_STREAM), and those resets count toward its limit.
    up.set(Mode::Hold);
    let concurrent = usize::try_from(MAX_CONCURRENT_STREAMS).unwrap();
    let burst = concurrent + MAX_LOCAL_ERROR_RESET_STREAMS + 64;
    let verdict = attack(addr, burst, Attack::OverConcurrency, false)
        .await
        .unwrap();
    assert_calmed(
        verdict,
        &format!("{burst} streams against a limit of {concurrent}"),
    );

    up.set(Mode::Ok);
    up.release();
    others_are_served(&mut good, addr).await;
}

/// Streams opened and reset per round trip by the paced attacker: well under
/// `MAX_PENDING_ACCEPT_RESET_STREAMS`, so h2's own limit never trips.
const PACED_BATCH: usize = 5;

/// The paced attacker gives up (and the test fails) after this many streams.
const PACED_BOUND: usize = 600;

/// How a paced attack ended.
#[derive(Debug)]
enum PacedEnd {
    /// [`PACED_BOUND`] streams were opened and the connection is still open.
    Survived,
    /// The connection ended after `streams` streams; `error` is its first error (the proxy's
    /// GOAWAY, if it sent one).
    Closed { streams: usize, error: h2::Error },
}

/// Opens and at once resets streams in batches of [`PACED_BATCH`] on one h2c connection, each
/// batch followed by one ordinary request whose response it waits for, until the proxy ends
/// the connection or [`PACED_BOUND`] is reached.
///
/// The ordinary request is the round trip that paces the batches. A PING would not do: h2
/// answers a PING while reading frames, before hyper accepts the streams read with it, so on
/// loopback PING-paced batches pile up in the accept queue and trip h2's own
/// pending-accept-reset limit (the attack this test is not about). The proxy accepts streams in
/// order, so the response means the whole batch was accepted.
async fn paced_attack(addr: SocketAddr) -> anyhow::Result<PacedEnd> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut send, conn) = h2::client::handshake(tcp).await?;
    let conn = tokio::spawn(conn);
    let mut streams = 0;
    // Any failure ends the attack; how the connection ended is read below.
    'attack: while streams < PACED_BOUND {
        for i in 0..=PACED_BATCH {
            send = match send.clone().ready().await {
                Ok(s) => s,
                Err(_) => break 'attack,
            };
            let req = Request::get(format!("http://{addr}/")).body(())?;
            let Ok((rsp, mut stream)) = send.send_request(req, true) else {
                break 'attack;
            };
            streams += 1;
            if i < PACED_BATCH {
                stream.send_reset(Reason::CANCEL);
                continue;
            }
            let rsp = tokio::time::timeout(HANG_GUARD, rsp)
                .await
                .context("the pacing request hung")?;
            let Ok(rsp) = rsp else { break 'attack };
            anyhow::ensure!(rsp.status() == 200, "pacing request: {}", rsp.status());
            let mut body = rsp.into_body();
            while let Some(chunk) = body.data().await {
                let Ok(chunk) = chunk else { break 'attack };
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        }
    }
    if streams >= PACED_BOUND {
        return Ok(PacedEnd::Survived);
    }
    // Refusing new streams is not enough: the proxy must close the connection.
    let _ended = tokio::time::timeout(HANG_GUARD, conn)
        .await
        .context("the proxy stopped taking streams but kept the connection open")??;
    // The connection's first error (a GOAWAY received before the socket closed, or the socket
    // closing without one) is what every later request fails with.
    let req = Request::get(format!("http://{addr}/")).body(())?;
    let Err(error) = send.send_request(req, true) else {
        anyhow::bail!("a request was accepted on a connection that ended");
    };
    Ok(PacedEnd::Closed { streams, error })
}

/// The sum of `name`'s samples in the proxy's `/metrics`.
async fn counter(proxy: &TestProxy, name: &str) -> f64 {
    let metrics = curl(&format!("http://{}/metrics", proxy.admin()), &["-sS"])
        .await
        .unwrap()
        .body;
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_resets_under_the_h2_limit_get_the_connection_closed() {
    let up = ControlledUpstream::start("up").await.unwrap();
    let proxy = proxy_to(&up).await;
    let addr = proxy.addr("out");
    let mut good = GoodClient::connect(addr).await;
    assert_eq!(good.get(addr).await, 200);
    let closed_before = counter(&proxy, PREMATURE_RESET_CLOSED).await;

    match paced_attack(addr).await.unwrap() {
        PacedEnd::Survived => panic!(
            "the proxy kept a connection that opened {PACED_BOUND} streams and reset \
             {PACED_BATCH} of every {}",
            PACED_BATCH + 1
        ),
        PacedEnd::Closed { streams, error } => {
            assert!(
                error.is_go_away() && error.is_remote(),
                "after {streams} streams: expected the proxy's GOAWAY, got {error:?}"
            );
            // Not h2's ENHANCE_YOUR_CALM: the pacing kept under that limit; this is the
            // premature-reset heuristic's graceful GOAWAY.
            assert_eq!(
                error.reason(),
                Some(Reason::NO_ERROR),
                "after {streams} streams: {error:?}"
            );
            // Closed by the early check, once the resets are half the heuristic's count.
            let early = usize::try_from(PREMATURE_RESET_TOTAL_STREAM_COUNT / 2).unwrap();
            let resets = streams / (PACED_BATCH + 1) * PACED_BATCH + streams % (PACED_BATCH + 1);
            assert!(
                resets >= early,
                "closed after {resets} resets, before {early}: {error:?}"
            );
        }
    }
    assert!(
        counter(&proxy, PREMATURE_RESET_CLOSED).await > closed_before,
        "{PREMATURE_RESET_CLOSED} counts the closed connection"
    );

    others_are_served(&mut good, addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_client_that_sometimes_cancels_is_not_closed() {
    let up = ControlledUpstream::start("up").await.unwrap();
    let proxy = proxy_to(&up).await;
    let addr = proxy.addr("out");
    let mut client = GoodClient::connect(addr).await;

    // 1,000 completed requests, and one cancelled (reset before its response) per ten: a
    // premature share of 1 in 11, far under half. Twice the heuristic's stream count, so the
    // connection is judged on its totals, not only by the early check.
    let requests = 2 * usize::try_from(PREMATURE_RESET_TOTAL_STREAM_COUNT).unwrap();
    for i in 0..requests {
        if i % 10 == 0 {
            let send = client.send.clone().ready().await;
            let mut send = send.unwrap_or_else(|e| panic!("closed after {i} requests: {e:?}"));
            let req = Request::get(format!("http://{addr}/")).body(()).unwrap();
            let (_rsp, mut stream) = send.send_request(req, true).unwrap();
            stream.send_reset(Reason::CANCEL);
        }
        assert_eq!(client.get(addr).await, 200, "request {i}");
    }
    let send = client.send.clone().ready().await;
    assert!(send.is_ok(), "the connection is still open: {send:?}");
    assert_eq!(client.get(addr).await, 200, "and still served");
}
