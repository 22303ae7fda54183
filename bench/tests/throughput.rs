//! The closed-loop throughput scenario and the open-loop `run` subcommand against the built-in
//! upstream on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;
use std::time::Duration;

use jalin_bench::client::HttpVersion;
use jalin_bench::scenario::{self, ThroughputConfig};
use jalin_bench::upstream::{Upstream, UpstreamConfig};
use serde_json::Value;
use support::load;

fn upstream() -> Upstream {
    Upstream::start(UpstreamConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        response_size: 128,
        threads: 1,
        tls: None,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_accounts_for_every_request_over_both_versions() {
    let upstream = upstream();
    for version in [HttpVersion::Http1, HttpVersion::Http2] {
        let config = ThroughputConfig {
            url: format!("http://{}/", upstream.addr()),
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(200),
        };
        let report = scenario::throughput(&config, &load(version, 3, 0))
            .await
            .unwrap();
        let s = &report.target.stats;
        assert!(s.ok > 0, "{version}: {s:?}");
        assert_eq!(s.requests, s.ok, "{version}: {s:?}");
        assert_eq!(s.errors + s.non_2xx + s.unsent, 0, "{version}");
        assert_eq!(s.body_bytes, s.ok * 128, "{version}");
        assert_eq!(s.latency_us.count, s.ok, "{version}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], "throughput");
        assert!(json["target"]["stats"]["achieved_rps"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn the_run_subcommand_sends_exactly_the_scheduled_requests() {
    let upstream = upstream();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("run.json");
    let output = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args(["run", &format!("http://{}/r", upstream.addr())])
        .args([
            "--rate",
            "150",
            "--duration",
            "400ms",
            "--warmup",
            "100ms",
            "-c",
            "3",
        ])
        .args([
            "--http",
            "2",
            "-X",
            "PUT",
            "-H",
            "x-bench: yes",
            "--body-size",
            "2KiB",
        ])
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["scenario"], "open-loop");
    assert_eq!(json["settings"]["method"], "PUT");
    assert_eq!(json["settings"]["http"], "2");
    assert_eq!(json["settings"]["request_body_bytes"], 2048);
    // 150 req/s × 0.4 s measured = 60 (warm-up excluded).
    assert_eq!(json["target"]["stats"]["ok"], 60);
    assert_eq!(json["target"]["stats"]["requests"], 60);
}

#[test]
fn bad_arguments_fail_with_a_message_naming_the_problem() {
    let output = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args(["run", "ftp://127.0.0.1:1/", "--rate", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scheme must be http or https"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args(["run", "http://127.0.0.1:1/", "--rate", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rate 0 req/s is invalid"), "{stderr}");
}
