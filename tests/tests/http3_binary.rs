//! HTTP/3 against the real `jalin-proxy` binary: a `tls` + `http3: true` listener serves a GET
//! and a 1 MiB POST over QUIC, and on SIGTERM an in-flight HTTP/3 request finishes within the
//! drain (the client got GOAWAY) and the process exits 0. Synchronised on the proxy's log lines,
//! the upstream's arrival signal and the process's exit, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod http3_common;

use std::net::SocketAddr;
use std::process::Stdio;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use http3_common::{
    H3Client, HANG, Pki, Upstream, await_goaway, hold, proxy_yaml, release_and_finish,
};

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// Waits for the first log line matching `want`.
async fn line(lines: &mut mpsc::UnboundedReceiver<Value>, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let next = tokio::time::timeout(HANG, lines.recv())
            .await
            .expect("hung waiting for a proxy log line")
            .expect("the proxy's log ended before the awaited line");
        if want(&next) {
            return next;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_http3_and_drains_it_on_sigterm() {
    let binary = jalin_tests::proxy::binary();
    let pki = Pki::new();
    let mut upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.yaml");
    std::fs::write(&config, proxy_yaml(&pki, upstream.addr)).unwrap();
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .args(["--drain-duration", "30s", "--log-json", "--workers", "1"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(l)) = reader.next_line().await {
            eprintln!("[jalin-proxy] {l}");
            let v = serde_json::from_str(&l)
                .unwrap_or_else(|_| serde_json::json!({"fields": {"message": l}}));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    let quic = line(&mut lines, |l| message(l) == "listening for HTTP/3 (QUIC)").await;
    let addr: SocketAddr = quic["fields"]["address"].as_str().unwrap().parse().unwrap();
    let tcp = line(&mut lines, |l| {
        message(l) == "listening" && l["fields"]["listener"] == "gw"
    })
    .await;
    assert_eq!(
        tcp["fields"]["address"].as_str().unwrap(),
        addr.to_string(),
        "HTTP/3 shares the TCP listener's port"
    );

    let client = H3Client::connect(&pki, addr).await;
    let (rsp, body, _) = client.request("GET", "/echo", None).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(body.is_empty());
    let big: Bytes = (0..1024 * 1024)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<_>>()
        .into();
    let (rsp, body, _) = client.request("POST", "/echo", Some(big.clone())).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(body == big, "the 1 MiB body came back altered");

    // One request held by the upstream, then SIGTERM.
    let held = hold(&client, &mut upstream).await;
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    line(&mut lines, |l| message(l) == "draining").await;

    // GOAWAY reaches the client; the held request completes, then the process exits cleanly.
    await_goaway(&client).await;
    release_and_finish(&upstream, held).await;
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .expect("hung waiting for the proxy to exit")
        .unwrap();
    assert!(status.success(), "a drained proxy exits 0: {status}");
}
