//! Configuration reload under traffic: accepted files switch traffic with no failed request,
//! broken files are rejected with their line while traffic continues, listeners are bound and
//! unbound, and draining lets an in-flight request finish.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use jalin_tests::client::{self, curl};
use jalin_tests::proxy::{ListenerSpec, ServiceSpec, TestProxy, config_yaml};
use jalin_tests::upstream::{HttpUpstream, StreamingUpstream};
use tokio::sync::watch;

const HANG_GUARD: Duration = Duration::from_secs(30);

/// Continuous load: several clients in a loop, counting successes and failures, publishing the
/// success count so the test can wait for progress instead of sleeping.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    progress: watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let (tx, progress) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut tasks = Vec::new();
        for i in 0..clients {
            let (stop, failures, ok, tx) = (stop.clone(), failures.clone(), ok.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                // Alternate HTTP/1.1 keep-alive and h2c clients.
                let client = if i % 2 == 0 {
                    client::http1_client()
                } else {
                    client::h2_client()
                };
                while !stop.load(Ordering::Relaxed) {
                    match client::get(&client, addr, "/headers").await {
                        Ok((200, _, _)) => {
                            let n = ok.fetch_add(1, Ordering::Relaxed) + 1;
                            tx.send_replace(n);
                        }
                        Ok((status, _, body)) => {
                            eprintln!(
                                "request failed: {status} {}",
                                String::from_utf8_lossy(&body)
                            );
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("request failed: {e:#}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        Self {
            stop,
            failures,
            progress,
            tasks,
        }
    }

    /// Waits until `n` more requests have succeeded.
    async fn advance(&mut self, n: u64) {
        let target = *self.progress.borrow_and_update() + n;
        tokio::time::timeout(HANG_GUARD, self.progress.wait_for(|v| *v >= target))
            .await
            .expect("load made no progress")
            .unwrap();
    }

    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            *self.progress.borrow(),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_continuous_load_loses_no_request() {
    let a = HttpUpstream::start("a").await.unwrap();
    let b = HttpUpstream::start("b").await.unwrap();
    let to = |ep: &HttpUpstream, extra: bool| {
        let mut listeners = vec![ListenerSpec::outbound("out", "echo")];
        if extra {
            listeners.push(ListenerSpec::inbound("extra", "echo"));
        }
        config_yaml(&listeners, &[ServiceSpec::new("echo", &[ep.addr])])
    };
    let proxy = TestProxy::start(&to(&a, false)).await.unwrap();
    let mut load = Load::start(proxy.addr("out"), 4);
    load.advance(50).await;

    for round in 0..6u64 {
        let (target, extra) = if round % 2 == 0 {
            (&b, true)
        } else {
            (&a, false)
        };
        let before = target.requests();
        let event = proxy.rewrite(&to(target, extra)).await.unwrap();
        assert_eq!(event.result, Ok(round + 2), "{event:?}");
        assert_eq!(proxy.handle.config_version(), round + 2);
        // The added listener is bound at once and the removed one is gone.
        assert_eq!(proxy.handle.listener_addr("extra").is_some(), extra);
        load.advance(50).await;
        assert!(
            target.requests() > before,
            "traffic did not move to {}",
            target.name
        );
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(
        failed, 0,
        "{failed} requests failed during reloads ({ok} succeeded)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_is_rejected_with_its_line_while_traffic_continues() {
    let a = HttpUpstream::start("a").await.unwrap();
    let good = config_yaml(
        &[ListenerSpec::outbound("out", "echo")],
        &[ServiceSpec::new("echo", &[a.addr])],
    );
    let proxy = TestProxy::start(&good).await.unwrap();
    let mut load = Load::start(proxy.addr("out"), 2);
    load.advance(20).await;

    // Line 7 gets a misspelt field.
    let broken = good.replacen(
        "    direction: outbound\n",
        "    direction: outbound\n    servcie: echo\n",
        1,
    );
    assert_eq!(broken.lines().nth(6), Some("    servcie: echo"));
    let event = proxy.rewrite(&broken).await.unwrap();
    let err = event.result.unwrap_err();
    assert_eq!(err.line, 7, "{err}");
    assert_eq!(err.path, "listeners[0].servcie", "{err}");
    let shown = err.to_string();
    assert!(shown.contains("proxy.yaml:7:"), "{shown}");
    assert!(shown.contains("servcie"), "{shown}");
    assert_eq!(proxy.handle.config_version(), 1);

    // A semantically broken file (unknown service) is rejected too.
    let event = proxy
        .rewrite(&good.replace("service: echo", "service: nope"))
        .await
        .unwrap();
    let err = event.result.unwrap_err();
    assert_eq!(err.path, "listeners[0].service", "{err}");
    assert!(err.line > 0, "{err}");

    load.advance(20).await;
    let dump = curl(&format!("http://{}/config_dump", proxy.admin()), &[])
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    assert_eq!(v["version"], 1);

    // Fixing the file is picked up.
    let fixed = good.replace("echo\n    protocol: auto", "echo\n    protocol: http1");
    let event = proxy.rewrite(&fixed).await.unwrap();
    assert_eq!(event.result, Ok(2));
    load.advance(20).await;
    let (_, failed) = load.finish().await;
    assert_eq!(failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_style_reload_is_a_no_op_for_an_unchanged_file() {
    let a = HttpUpstream::start("a").await.unwrap();
    let yaml = config_yaml(
        &[ListenerSpec::outbound("out", "echo")],
        &[ServiceSpec::new("echo", &[a.addr])],
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let addr = proxy.addr("out");
    assert_eq!(proxy.handle.reload().await, Ok(1));
    // The listener kept its socket.
    assert_eq!(proxy.addr("out"), addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_an_in_flight_request_finish() {
    let up = StreamingUpstream::start().await.unwrap();
    let yaml = config_yaml(
        &[ListenerSpec::outbound("out", "s")],
        &[ServiceSpec::new("s", &[up.addr])],
    );
    let proxy = TestProxy::start(&yaml).await.unwrap();
    let client = client::http1_client();
    let rsp = client
        .get(format!("http://{}/", proxy.addr("out")).parse().unwrap())
        .await
        .unwrap();
    let mut body = rsp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), StreamingUpstream::FIRST);

    let handle = proxy.handle.clone();
    let drained = tokio::spawn(async move { handle.shutdown(HANG_GUARD).await });
    // Not ready once draining; wait for it without sleeping.
    let admin = proxy.admin();
    loop {
        let r = curl(&format!("http://{admin}/ready"), &[]).await.unwrap();
        if r.status == 503 {
            break;
        }
        tokio::task::yield_now().await;
    }
    // New connections are refused while the in-flight response still completes.
    assert!(
        tokio::net::TcpStream::connect(proxy.addr("out"))
            .await
            .is_err()
    );
    up.release().await;
    let rest = tokio::time::timeout(HANG_GUARD, body.collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.to_bytes(), StreamingUpstream::REST);
    tokio::time::timeout(HANG_GUARD, drained)
        .await
        .unwrap()
        .unwrap();
}
