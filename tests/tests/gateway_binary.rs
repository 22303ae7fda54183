//! The agency-ops story with the real binary, as jalin-proxy.service runs it:
//! `jalin-proxy --config gateway.yaml`, curl over HTTPS to it, `systemctl reload` (SIGHUP to
//! the process) after the certificate files were replaced, and SIGTERM for a clean stop.
//! Synchronised on the proxy's JSON log lines, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod gateway_common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use gateway_common::{GovPki, curl_https, records_gateway_yaml, served_leaf, tls_yaml};
use jalin_tests::upstream::HttpUpstream;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// Only stops a hung test; nothing asserts on time.
const HANG: Duration = Duration::from_secs(120);

/// Waits for the first log line `want` accepts.
async fn line(lines: &mut mpsc::UnboundedReceiver<Value>, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let l = tokio::time::timeout(HANG, lines.recv())
            .await
            .expect("hung waiting for a proxy log line")
            .expect("the proxy's log ended before the awaited line");
        if want(&l) {
            return l;
        }
    }
}

fn message(l: &Value) -> &str {
    l["fields"]["message"].as_str().unwrap_or_default()
}

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jalin_proxy_config_gateway_yaml_serves_https_and_rotates_on_sighup() {
    let binary = jalin_tests::proxy::binary();
    let pki = GovPki::new("Binary");
    let (cert, key, first) = pki.server_files("gw");
    let app = HttpUpstream::start("records").await.unwrap();
    let config = pki.dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        records_gateway_yaml("", &tls_yaml(&cert, &key, ""), app.addr, ""),
    )
    .unwrap();
    let mut child = Command::new(&binary)
        .arg("--config")
        .arg(&config)
        .args(["--log-json", "--workers", "1"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
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
    let listening = line(&mut lines, |l| {
        message(l) == "listening" && l["fields"]["listener"] == "gw"
    })
    .await;
    let gw: SocketAddr = listening["fields"]["address"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let host = "records.example.gov";
    let r = curl_https(host, gw, "/", &pki.root, &["--http2"]).await;
    assert_eq!(
        (r.status, r.http_version.as_str(), r.upstream.as_str()),
        (200, "2", "records"),
        "{r:?}"
    );
    assert_eq!(served_leaf(gw, host, &pki.root).await.unwrap(), first);

    // Rotation: new files in place (written aside, renamed over), then `systemctl reload`.
    let (next_cert, next_key, second) = pki.server_files("gw-next");
    std::fs::rename(&next_cert, &cert).unwrap();
    std::fs::rename(&next_key, &key).unwrap();
    signal(pid, "-HUP");
    // The watcher may reload first (and see the certificate before its key): wait until the
    // new certificate serves, each reload announced by a log line.
    loop {
        line(&mut lines, |l| message(l) == "configuration reloaded").await;
        if served_leaf(gw, host, &pki.root).await.unwrap() == second {
            break;
        }
    }
    let r = curl_https(host, gw, "/", &pki.root, &["--http1.1"]).await;
    assert_eq!((r.status, r.upstream.as_str()), (200, "records"), "{r:?}");

    signal(pid, "-TERM");
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
