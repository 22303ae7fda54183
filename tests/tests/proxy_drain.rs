//! `jalin-proxy --drain-duration` end to end, with the real binary: after SIGTERM an in-flight
//! request still completes when its upstream answers within the drain, and the proxy exits when
//! the drain runs out while an upstream still holds a request. Everything is synchronised on
//! events (the upstream's arrival signal, the proxy's log lines, the process's exit), never on
//! time; the timeouts below only stop a hung test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use jalin_tests::client;
use jalin_tests::proxy::{ListenerSpec, ServiceSpec, config_yaml};
use jalin_tests::upstream::{ControlledUpstream, Mode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Only stops a hung test (a 2-core machine shared by several builds); nothing asserts on time.
const HANG: Duration = Duration::from_secs(120);

/// The proxy as a child process (SIGKILLed on drop) with its JSON log lines.
struct ProxyProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
    _dir: tempfile::TempDir,
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

impl ProxyProcess {
    /// Starts the proxy with one outbound HTTP/1.1 listener to `upstream` and `--drain-duration
    /// drain`; returns it with the listener's address, read from its `listening` log line.
    async fn start(binary: &PathBuf, upstream: SocketAddr, drain: &str) -> (Self, SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("proxy.yaml");
        let mut listener = ListenerSpec::outbound("out", "held");
        listener.protocol = "http1";
        let mut service = ServiceSpec::new("held", &[upstream]);
        service.protocol = "http1";
        std::fs::write(&config, config_yaml(&[listener], &[service])).unwrap();
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .args(["--drain-duration", drain, "--log-json", "--workers", "1"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                eprintln!("[jalin-proxy] {line}");
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"fields": {"message": line}}));
                if tx.send(value).is_err() {
                    return;
                }
            }
        });
        let mut proxy = ProxyProcess {
            child,
            lines,
            seen: Vec::new(),
            _dir: dir,
        };
        let listening = proxy
            .line(|l| message(l) == "listening" && l["fields"]["listener"] == "out")
            .await;
        let addr = listening["fields"]["address"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        (proxy, addr)
    }

    /// Waits for the first log line matching `want`.
    async fn line(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(l) = self.seen.iter().find(|l| want(l)) {
            return l.clone();
        }
        loop {
            let next = tokio::time::timeout(HANG, self.lines.recv())
                .await
                .expect("hung waiting for a proxy log line");
            let Some(l) = next else {
                panic!("the proxy's log ended before the awaited line");
            };
            self.seen.push(l.clone());
            if want(&l) {
                return l;
            }
        }
    }

    /// SIGTERM, as the kubelet sends it.
    fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its status and every log line.
    async fn exit(mut self) -> (ExitStatus, Vec<Value>) {
        let status = tokio::time::timeout(HANG, self.child.wait())
            .await
            .expect("hung waiting for the proxy to exit")
            .unwrap();
        // The log's end follows the exit: read it to the end.
        while let Some(l) = tokio::time::timeout(HANG, self.lines.recv())
            .await
            .expect("hung reading the proxy's last log lines")
        {
            self.seen.push(l);
        }
        (status, self.seen)
    }
}

/// Sends one request through the proxy, waits until the upstream holds it, SIGTERMs the proxy and
/// waits until the proxy says it is draining. Returns the request's task.
async fn hold_one_and_terminate(
    proxy: &mut ProxyProcess,
    addr: SocketAddr,
    upstream: &ControlledUpstream,
) -> tokio::task::JoinHandle<anyhow::Result<(u16, String, bytes::Bytes)>> {
    upstream.set(Mode::Hold);
    let request =
        tokio::spawn(async move { client::get(&client::http1_client(), addr, "/case").await });
    tokio::time::timeout(HANG, upstream.wait_requests(1))
        .await
        .expect("the request never reached the upstream");
    proxy.terminate();
    let draining = proxy.line(|l| message(l) == "draining").await;
    assert_eq!(
        draining["fields"]["deadline_ms"], 2000,
        "--drain-duration 2s is the drain used"
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_flight_request_completes_within_the_drain_and_the_drain_bounds_the_exit() {
    let binary = jalin_tests::proxy::binary();

    // 1. The upstream answers during the drain: the client gets the answer, the proxy exits
    //    cleanly without cutting anything.
    let upstream = ControlledUpstream::start("held").await.unwrap();
    let (mut proxy, addr) = ProxyProcess::start(&binary, upstream.addr, "2s").await;
    let request = hold_one_and_terminate(&mut proxy, addr, &upstream).await;
    upstream.release();
    let (status, from, body) = tokio::time::timeout(HANG, request)
        .await
        .expect("hung waiting for the in-flight request")
        .unwrap()
        .expect("the in-flight request completes during the drain");
    assert_eq!(
        (status, from.as_str(), &body[..]),
        (200, "held", &b"ok\n"[..])
    );
    let (exit, log) = proxy.exit().await;
    assert!(exit.success(), "a drained proxy exits 0: {exit}");
    assert!(
        !log.iter()
            .any(|l| message(l) == "drain deadline passed; closing the rest"),
        "nothing was left to cut"
    );

    // 2. The upstream holds past the drain: the proxy gives up at the deadline and exits, and the
    //    client's request fails instead of hanging on a proxy that is gone.
    let upstream = ControlledUpstream::start("held").await.unwrap();
    let (mut proxy, addr) = ProxyProcess::start(&binary, upstream.addr, "2s").await;
    let request = hold_one_and_terminate(&mut proxy, addr, &upstream).await;
    let (exit, log) = proxy.exit().await;
    assert!(exit.success(), "the drain's end is a clean exit: {exit}");
    let cut = log
        .iter()
        .find(|l| message(l) == "drain deadline passed; closing the rest")
        .expect("the proxy says it cut the held request at the deadline");
    assert_eq!(cut["fields"]["open"], 1, "the one held connection: {cut}");
    let outcome = tokio::time::timeout(HANG, request)
        .await
        .expect("hung waiting for the cut request")
        .unwrap();
    assert!(
        outcome.is_err(),
        "the held request is cut when the proxy exits, not answered: {outcome:?}"
    );
    assert_eq!(
        upstream.requests(),
        1,
        "the request was not retried elsewhere"
    );
    upstream.release();
}
