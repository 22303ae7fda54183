//! The xDS scale simulator end to end, small: the real `jalin-bench xds-scale` binary starts its
//! control-plane child, 50 proxies sync over real gRPC streams, and every proxy ACKs every change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

#[test]
fn fifty_lean_proxies_ack_every_change() {
    fifty_proxies_ack_every_change("lean");
}

#[test]
fn fifty_full_client_state_proxies_ack_every_change() {
    fifty_proxies_ack_every_change("full");
}

fn fifty_proxies_ack_every_change(client: &str) {
    let dir = std::env::temp_dir().join(format!("jalin-xds-scale-{}-{client}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args([
            "xds-scale",
            "--proxies",
            "50",
            "--resources",
            "60",
            "--changes",
            "3",
            "--proxies-per-connection",
            "4",
            "--timeout-secs",
            "120",
            "--client",
            client,
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "xds-scale failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("change -> last ACK"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report["params"]["proxies"], 50);
    assert_eq!(report["params"]["client"], client);
    // 50 proxies, 4 per connection.
    assert_eq!(report["params"]["connections"], 13);
    assert_eq!(report["params"]["resources"], 60);
    assert!(report["params"]["snapshot_bytes"].as_u64().unwrap() > 60 * 100);
    let changes = report["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3);
    let mut resources = Vec::new();
    for (k, change) in changes.iter().enumerate() {
        assert_eq!(change["change"], k as u64);
        // Every proxy ACKed every change.
        assert_eq!(change["acked"], 50, "{change}");
        assert!(
            change["resource"]
                .as_str()
                .unwrap()
                .starts_with("AuthorizationPolicy svc-"),
            "{change}"
        );
        assert_eq!(change["version"].as_str().unwrap().len(), 16);
        for field in [
            "last_ack_ms",
            "p50_ack_ms",
            "p99_ack_ms",
            "push_ms",
            "server_cpu_ms",
        ] {
            assert!(change[field].as_f64().unwrap() >= 0.0, "{field}: {change}");
        }
        assert!(change["last_ack_ms"].as_f64() >= change["p99_ack_ms"].as_f64());
        resources.push(change["version"].as_str().unwrap().to_owned());
    }
    resources.dedup();
    assert_eq!(resources.len(), 3, "each change is a new version");
    assert_eq!(report["proxy_ack_ms"]["count"], 150);
    for section in ["change_to_last_ack_ms", "control_plane"] {
        assert!(report[section].is_object(), "{section}");
    }
    let cp = &report["control_plane"];
    assert!(cp["memory_after_sync"]["rss_kib"].as_u64().unwrap() > 0);
    assert!(cp["memory_end"]["hwm_kib"].as_u64() >= cp["memory_end"]["rss_kib"].as_u64());
    assert_ne!(cp["pid"].as_u64().unwrap(), u64::from(std::process::id()));
    assert_eq!(report["host"]["loadavg_start"].as_array().unwrap().len(), 3);
}

#[test]
fn refuses_more_proxies_than_file_descriptors() {
    let out = Command::new(env!("CARGO_BIN_EXE_jalin-bench"))
        .args(["xds-scale", "--proxies", "4000000"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--proxies-per-connection"), "{stderr}");
}
