//! The overhead scenario end to end on loopback: the built-in upstream, a TCP forwarder as the
//! proxy, the library API and the `jalin-bench` binary; checks the report's shape and counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use jalin_bench::client::HttpVersion;
use jalin_bench::scenario::{self, OverheadConfig};
use jalin_bench::schedule::Rate;
use jalin_bench::upstream::{Upstream, UpstreamConfig};
use serde_json::Value;
use support::{ChildGuard, forwarder, load};

const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p999", "max"];

fn upstream(response_size: usize) -> Upstream {
    Upstream::start(UpstreamConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        response_size,
        threads: 1,
        tls: None,
    })
    .unwrap()
}

/// Checks the JSON of an overhead report: both targets, every percentile, the added latency,
/// the phases in ABBA order, and request counts equal to the schedule's.
fn check_overhead_json(json: &Value, rate: f64, duration_s: f64, phases: u64, body: u64) {
    assert_eq!(json["scenario"], "overhead");
    assert_eq!(json["phases"], phases);
    let phase_s = duration_s / phases as f64;
    // Each phase schedules ceil(rate × phase) requests.
    let per_target = phases * (rate * phase_s).ceil() as u64;
    assert!((per_target as f64 - rate * duration_s).abs() <= phases as f64);
    for target in ["direct", "via"] {
        let stats = &json[target]["stats"];
        assert_eq!(stats["requests"], per_target, "{target}: {stats}");
        assert_eq!(stats["ok"], per_target, "{target}: {stats}");
        assert_eq!(stats["errors"], 0, "{target}");
        assert_eq!(stats["non_2xx"], 0, "{target}");
        assert_eq!(stats["unsent"], 0, "{target}");
        assert_eq!(stats["statuses"]["200"], per_target, "{target}");
        assert_eq!(stats["body_bytes"], per_target * body, "{target}");
        for histogram in ["latency_us", "service_time_us", "send_delay_us"] {
            let h = &stats[histogram];
            assert_eq!(h["count"], per_target, "{target} {histogram}");
            let mut last = 0.0;
            for p in ["min", "p50", "p90", "p99", "p999", "max"] {
                let v = h[p]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{target}.{histogram}.{p}"));
                assert!(
                    v >= last,
                    "{target}.{histogram}: {p} below the previous percentile"
                );
                last = v;
            }
        }
    }
    for p in PERCENTILES {
        let added = json["added_us"][p].as_f64().unwrap();
        let expected = json["via"]["stats"]["latency_us"][p].as_f64().unwrap()
            - json["direct"]["stats"]["latency_us"][p].as_f64().unwrap();
        assert!((added - expected).abs() < 1e-6, "added {p}");
        assert!(json["added_service_us"][p].is_f64(), "added service {p}");
    }
    let order: Vec<&str> = json["phase_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["target"].as_str().unwrap())
        .collect();
    let abba = ["direct", "via", "via", "direct", "direct", "via"];
    assert_eq!(order, abba[..2 * phases as usize]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_through_a_forwarder_reports_both_targets_and_the_difference() {
    let upstream = upstream(512);
    let proxy = forwarder(upstream.addr()).await;
    let config = OverheadConfig {
        direct: format!("http://{}/direct", upstream.addr()),
        via: format!("http://{proxy}/via"),
        via_name: "via".to_owned(),
        others: Vec::new(),
        rate: Rate::per_second(400.0).unwrap(),
        warmup: Duration::from_millis(100),
        duration: Duration::from_millis(500),
        phases: 2,
    };
    let load = load(HttpVersion::Http1, 4, 1024);
    let report = scenario::overhead(&config, &load).await.unwrap();
    let json = serde_json::to_value(&report).unwrap();
    check_overhead_json(&json, 400.0, 0.5, 2, 512);
    assert_eq!(json["settings"]["http"], "1.1");
    assert_eq!(json["settings"]["method"], "POST");
    assert_eq!(json["settings"]["request_body_bytes"], 1024);
    let text = report.text();
    assert!(text.contains("added"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overhead_over_h2c_counts_every_request() {
    let upstream = upstream(100);
    let proxy = forwarder(upstream.addr()).await;
    let config = OverheadConfig {
        direct: format!("http://{}/", upstream.addr()),
        via: format!("http://{proxy}/"),
        via_name: "via".to_owned(),
        others: Vec::new(),
        rate: Rate::per_second(300.0).unwrap(),
        warmup: Duration::ZERO,
        duration: Duration::from_millis(300),
        phases: 3,
    };
    let report = scenario::overhead(&config, &load(HttpVersion::Http2, 2, 0))
        .await
        .unwrap();
    let json = serde_json::to_value(&report).unwrap();
    check_overhead_json(&json, 300.0, 0.3, 3, 100);
    assert_eq!(json["settings"]["method"], "GET");
}

/// Starts `jalin-bench upstream` on port 0 and reads the address it prints.
fn upstream_process() -> (ChildGuard, SocketAddr) {
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
            .args([
                "upstream",
                "--listen",
                "127.0.0.1:0",
                "--response-size",
                "1KiB",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    (child, addr)
}

/// Runs the `jalin-bench` binary with `args` off the async runtime; it must succeed. Returns
/// its standard output.
async fn run_bench(args: Vec<String>) -> String {
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `jalin-bench compare run=<report>`: the side-by-side table of one saved report.
fn compare_table(report: &std::path::Path) -> String {
    let table = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args(["compare", &format!("run={}", report.display())])
        .output()
        .unwrap();
    assert!(table.status.success());
    String::from_utf8_lossy(&table.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_overhead_and_writes_the_json_report() {
    let (_upstream, addr) = upstream_process();
    let proxy = forwarder(addr).await;
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("overhead.json");
    let args = [
        "overhead",
        "--direct",
        &format!("http://{addr}/"),
        "--via",
        &format!("http://{proxy}/"),
        "--rate",
        "250",
        "--duration",
        "400ms",
        "--warmup",
        "0",
        "--phases",
        "2",
        "-c",
        "4",
        "--body-size",
        "1KiB",
        "--json",
        json_path.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let stdout = run_bench(args.to_vec()).await;
    assert!(stdout.contains("direct") && stdout.contains("via") && stdout.contains("added"));
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    check_overhead_json(&json, 250.0, 0.4, 2, 1024);

    // `compare` reads the saved report back.
    let table = compare_table(&json_path);
    assert!(
        table.contains("run/direct") && table.contains("run/via"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chains_side_by_side_share_the_rounds_and_each_gets_its_difference() {
    let (_upstream, addr) = upstream_process();
    let (a, b) = (forwarder(addr).await, forwarder(addr).await);
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("side-by-side.json");
    let args = [
        "overhead",
        "--direct",
        &format!("http://{addr}/"),
        "--via",
        &format!("http://{a}/"),
        "--via-name",
        "first",
        "--compare",
        &format!("second=http://{b}/"),
        "--rate",
        "200",
        "--duration",
        "400ms",
        "--warmup",
        "0",
        "--phases",
        "2",
        "-c",
        "2",
        "--json",
        json_path.to_str().unwrap(),
    ]
    .map(str::to_owned);
    let stdout = run_bench(args.to_vec()).await;
    assert!(
        stdout.contains("+first") && stdout.contains("+second"),
        "{stdout}"
    );
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(json["via_name"], "first");
    let second = &json["others"][0];
    assert_eq!(second["name"], "second");
    assert_eq!(second["target"]["url"], format!("http://{b}/"));
    assert_eq!(second["target"]["stats"]["ok"], 80);
    assert_eq!(json["via"]["stats"]["ok"], 80);
    for p in PERCENTILES {
        let expected = second["target"]["stats"]["latency_us"][p].as_f64().unwrap()
            - json["direct"]["stats"]["latency_us"][p].as_f64().unwrap();
        assert!(
            (second["added_us"][p].as_f64().unwrap() - expected).abs() < 1e-6,
            "{p}"
        );
    }
    let order: Vec<&str> = json["phase_results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["direct", "first", "second", "second", "first", "direct"]
    );

    let table = compare_table(&json_path);
    assert!(
        table.contains("run/first") && table.contains("run/second"),
        "{table}"
    );
}

#[test]
fn a_compare_target_without_a_name_is_refused_with_the_expected_form() {
    let output = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args([
            "overhead",
            "--direct",
            "http://127.0.0.1:1/",
            "--via",
            "http://127.0.0.1:2/",
        ])
        .args(["--compare", "http://127.0.0.1:3/"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected NAME=URL"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_fails_before_any_load_with_a_clear_message() {
    // Bind then drop a listener to get a port with nothing behind it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = OverheadConfig {
        direct: format!("http://{addr}/"),
        via: format!("http://{addr}/"),
        via_name: "via".to_owned(),
        others: Vec::new(),
        rate: Rate::per_second(10.0).unwrap(),
        warmup: Duration::ZERO,
        duration: Duration::from_millis(100),
        phases: 1,
    };
    let err = scenario::overhead(&config, &load(HttpVersion::Http1, 1, 0))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect") && err.contains(&addr.to_string()),
        "{err}"
    );
}
