//! [`ControlledUpstream`]: an HTTP/1.1 server whose behaviour a test switches at run time —
//! answer 200, answer a status, reset the connection, or hold the request until released — and
//! which counts every request and signals each arrival, so traffic tests synchronise on events
//! instead of sleeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::AbortOnDrop;

/// What the upstream does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 with `x-upstream: <name>`.
    Ok,
    /// This status, with `x-upstream`.
    Status(u16),
    /// Close the connection without answering (the proxy sees a reset).
    Reset,
    /// Hold the request until [`ControlledUpstream::release`], then answer 200.
    Hold,
}

const RESET: u16 = 1;
const HOLD: u16 = 2;

fn encode(m: Mode) -> u16 {
    match m {
        Mode::Ok => 200,
        Mode::Status(s) => s,
        Mode::Reset => RESET,
        Mode::Hold => HOLD,
    }
}

/// The controllable upstream.
#[derive(Debug)]
pub struct ControlledUpstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    mode: Arc<AtomicU16>,
    requests: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    arrived: Arc<Notify>,
    release: watch::Sender<u64>,
    _task: AbortOnDrop,
}

impl ControlledUpstream {
    /// Starts a server naming itself `name`, in mode [`Mode::Ok`].
    pub async fn start(name: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let conns = connections.clone();
        let arrived = Arc::new(Notify::new());
        let (release, release_rx) = watch::channel(0u64);
        let (m, r, a) = (mode.clone(), requests.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let (m, r, a, rel) = (m.clone(), r.clone(), a.clone(), release_rx.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        let (m, r, a, mut rel) = (m.clone(), r.clone(), a.clone(), rel.clone());
                        async move {
                            // Read the release generation before announcing the arrival, so a
                            // release that follows the announcement is never missed.
                            let seen = *rel.borrow_and_update();
                            r.fetch_add(1, Ordering::SeqCst);
                            a.notify_waiters();
                            let mode = m.load(Ordering::SeqCst);
                            match mode {
                                RESET => return Err(std::io::Error::other("reset by test")),
                                HOLD => {
                                    let _ = rel.wait_for(|v| *v > seen).await;
                                }
                                _ => {}
                            }
                            let status = if mode == HOLD { 200 } else { mode };
                            let mut rsp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                            *rsp.status_mut() =
                                StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                            rsp.headers_mut()
                                .insert("x-upstream", http::HeaderValue::from_static(name));
                            Ok::<_, std::io::Error>(rsp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            name,
            mode,
            requests,
            connections,
            arrived,
            release,
            _task: AbortOnDrop(task),
        })
    }

    /// Switches the behaviour for requests that arrive from now on.
    pub fn set(&self, mode: Mode) {
        self.mode.store(encode(mode), Ordering::SeqCst);
    }

    /// Requests received so far (every try counts).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived (bounded by the caller's timeout).
    pub async fn wait_requests(&self, n: u64) {
        loop {
            let notified = self.arrived.notified();
            if self.requests() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Lets every held request answer.
    pub fn release(&self) {
        self.release.send_modify(|v| *v += 1);
    }
}
