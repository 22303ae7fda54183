//! The `jalin control` binary as deployed: `--mesh-config` (the `jalin-mesh` ConfigMap's
//! format), xDS over mTLS with a certificate from the mesh CA, `/ready` and `/debug/config` on the
//! health port, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use control_support::*;
use jalin_xds::transport::Kind;

/// Kills the child when the test ends early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}

#[tokio::test]
async fn binary_serves_with_mesh_config_and_stops_on_sigterm() {
    let Sandbox {
        tmp,
        ca: ca_dir,
        dir,
    } = sandbox();
    write(
        &dir,
        "a.yaml",
        &authz("a", "allow-web", Some("web"), "cluster.local/ns/b/sa/c"),
    );
    let mesh = tmp.path().join("mesh.yaml");
    std::fs::write(
        &mesh,
        format!(
            "trustDomain: cluster.local\nrootNamespace: istio-system\ncontrolPlane:\n  address: {SERVER_NAME}:15012\n  dnsNames:\n    - {SERVER_NAME}\nca:\n  rootCertFile: {root}\n  certChainFile: {chain}\n  keyFile: {key}\n  workloadCertTTL: 24h\n  maxWorkloadCertTTL: 48h\n  tlsPolicy: default\ninjection:\n  proxyImage: ignored\n",
            root = ca_dir.join("root.pem").display(),
            chain = ca_dir.join("intermediate.pem").display(),
            key = ca_dir.join("intermediate-key.pem").display(),
        ),
    )
    .unwrap();
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_jalin"))
            .args(["control", "--config-dir"])
            .arg(&dir)
            .arg("--mesh-config")
            .arg(&mesh)
            .args([
                "--xds-listen",
                "127.0.0.1:0",
                "--ca-listen",
                "127.0.0.1:0",
                "--health-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Read the log on a thread; the test waits on the lines it needs.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Both lines, in either order: the listeners are up and the first configuration is pushed.
    let mut started = None;
    let mut pushed = false;
    while started.is_none() || !pushed {
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!("the control plane did not start (started: {started:?}, pushed: {pushed})")
        });
        eprintln!("[jalin] {line}");
        if line.contains("control plane started") {
            started = Some(line);
        } else if line.contains("configuration pushed") {
            pushed = true;
        }
    }
    let started = started.unwrap();
    let xds: SocketAddr = field(&started, "xds_addr").unwrap().parse().unwrap();
    let health: SocketAddr = field(&started, "health_addr").unwrap().parse().unwrap();
    let (code, _) = http_get(health, "/ready").await;
    assert_eq!(code, 200);
    let (code, _) = http_get(health, "/live").await;
    assert_eq!(code, 200);

    // A proxy with a workload certificate from the same CA gets the policy over mTLS.
    let ca = load_ca(&ca_dir);
    let mut p = proxy_at(&ca, xds, "web-1", "a", "app=web");
    p.until("the policy", |s| {
        version(s, Kind::AuthorizationPolicy, "a/allow-web").is_some()
    })
    .await;
    let (_, debug) = http_get(health, "/debug/config").await;
    let debug: serde_json::Value = serde_json::from_str(&debug).unwrap();
    assert_eq!(debug["proxies"]["web-1"]["streams"], 1, "{debug:#}");

    // SIGTERM: the process stops and exits 0.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let s = child.0.wait().unwrap();
        std::mem::forget(child);
        s
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    p.until("the disconnect", |s| !s.connected).await;
}
