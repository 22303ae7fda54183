//! HTTP/2 stream-reset floods end to end, with the `h2` crate as a raw h2c (prior knowledge)
//! client of a jalin listener: the CVE-2023-44487 "rapid reset" pattern (open a stream, reset it
//! at once, repeat) and a client that opens streams past `SETTINGS_MAX_CONCURRENT_STREAMS` so
//! the proxy must refuse them (its own resets). Either way the proxy ends the attacking
//! connection with GOAWAY `ENHANCE_YOUR_CALM` within a bounded number of streams, and a
//! well-behaved client on another connection is still served.
//!
//! Synchronisation is by frame order, not time: the attacker queues its whole burst before its
//! connection task may run (a current-thread runtime of its own), so the burst leaves in one
//! write, and then sends a PING. The proxy handles a connection's frames in order, so a PONG
//! means it read the whole burst and kept the connection; a GOAWAY means the limit held.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use h2::{Ping, Reason};
use http::Request;
use jalin_proxy::limits::{
    MAX_CONCURRENT_STREAMS, MAX_LOCAL_ERROR_RESET_STREAMS, MAX_PENDING_ACCEPT_RESET_STREAMS,
};
use jalin_tests::proxy::{OutboundConfig, TestProxy};
use jalin_tests::upstream::{ControlledUpstream, Mode};
use tokio::net::TcpStream;

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
    /// The proxy answered the PING sent after the burst: it accepted every stream.
    Survived,
    /// The connection failed with this error.
    Closed(h2::Error),
}

/// Opens one h2c connection to `addr`, queues `streams` streams treated as `attack`, then
/// pings. Runs on a current-thread runtime of its own thread, so the client's connection task
/// writes nothing until the whole burst is queued.
async fn attack(addr: SocketAddr, streams: usize, attack: Attack) -> anyhow::Result<Verdict> {
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let tcp = TcpStream::connect(addr).await?;
            let (mut send, mut conn) = h2::client::handshake(tcp).await?;
            let mut ping = conn.ping_pong().context("ping_pong already taken")?;
            let conn = tokio::spawn(conn);
            let mut open = Vec::new();
            for _ in 0..streams {
                let req = Request::get(format!("http://{addr}/")).body(())?;
                let (rsp, mut stream) = send.send_request(req, true)?;
                match attack {
                    Attack::RapidReset => stream.send_reset(Reason::CANCEL),
                    Attack::OverConcurrency => open.push((rsp, stream)),
                }
            }
            if ping.ping(Ping::opaque()).await.is_ok() {
                return Ok(Verdict::Survived);
            }
            match tokio::time::timeout(HANG_GUARD, conn).await?? {
                Ok(()) => anyhow::bail!("connection ended cleanly, without an error"),
                Err(e) => Ok(Verdict::Closed(e)),
            }
        })
    })
    .await?
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

fn assert_calmed(verdict: Verdict, what: &str) {
    match verdict {
        Verdict::Survived => panic!("the proxy kept the connection after {what}"),
        Verdict::Closed(e) => {
            assert!(e.is_go_away(), "{what}: expected GOAWAY, got {e:?}");
            assert!(
                e.is_remote(),
                "{what}: the proxy must send the GOAWAY: {e:?}"
            );
            assert_eq!(e.reason(), Some(Reason::ENHANCE_YOUR_CALM), "{what}: {e:?}");
        }
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
    let within = attack(addr, MAX_PENDING_ACCEPT_RESET_STREAMS, Attack::RapidReset)
        .await
        .unwrap();
    assert!(
        matches!(within, Verdict::Survived),
        "{MAX_PENDING_ACCEPT_RESET_STREAMS} resets are within the limit: {within:?}"
    );

    // Past the limit: the proxy sends GOAWAY before it reads the PING after the burst.
    let burst = 4 * MAX_PENDING_ACCEPT_RESET_STREAMS;
    let verdict = attack(addr, burst, Attack::RapidReset).await.unwrap();
    assert_calmed(verdict, &format!("{burst} rapid resets"));

    assert_eq!(
        good.get(addr).await,
        200,
        "the open connection is still served"
    );
    let mut fresh = GoodClient::connect(addr).await;
    assert_eq!(fresh.get(addr).await, 200, "a new connection is served");
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
    let verdict = attack(addr, burst, Attack::OverConcurrency).await.unwrap();
    assert_calmed(
        verdict,
        &format!("{burst} streams against a limit of {concurrent}"),
    );

    up.set(Mode::Ok);
    up.release();
    assert_eq!(
        good.get(addr).await,
        200,
        "the open connection is still served"
    );
    let mut fresh = GoodClient::connect(addr).await;
    assert_eq!(fresh.get(addr).await, 200, "a new connection is served");
}
