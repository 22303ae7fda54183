//! `jalin demo` end to end: the real binary starts the real `jalin-proxy` sidecars, runs for
//! 10 s, exits 0 with a final summary naming every kind of traffic, and leaves no sidecar
//! running. Also: a missing proxy binary is a clear error telling how to build it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

// Shared with xds_e2e (its own `allow(dead_code)`): this suite uses its proxy build only.
mod xds_support;

/// Generous bound for a 10 s demo on a loaded 2-core machine (start-up of 11 debug proxies
/// included); only reached when the demo hangs.
/// The demos of this file run one at a time: each starts 12 sidecars, and three at once on a
/// 2-core machine slow start-up for no benefit to what is tested.
static ONE_DEMO_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DEMO_BOUND: Duration = Duration::from_secs(180);

fn jalin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jalin"))
}

/// True when `path` is a working jalin-proxy (prints its name for `--version`).
fn works(path: &Path) -> bool {
    std::process::Command::new(path)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("jalin-proxy"))
        .unwrap_or(false)
}

/// The proxy next to the jalin binary, built with cargo into the same target directory (the demo
/// looks for it there). Always built, never trusted as found: a binary left over from an older
/// build would not understand the configuration the demo writes, and an up-to-date build is a
/// no-op.
fn proxy_next_to_jalin() -> PathBuf {
    let path = xds_support::proxy_binary();
    assert!(
        works(&path),
        "{} is not a working jalin-proxy",
        path.display()
    );
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn demo(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(jalin());
    cmd.arg("demo")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(DEMO_BOUND, cmd.output())
        .await
        .expect("jalin demo finished within its bound")
        .expect("jalin demo ran");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The pids the demo printed for its sidecars (`  sidecar   <name> pid <pid> ...`).
fn sidecar_pids(stdout: &str) -> Vec<u32> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("sidecar "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "pid")?;
            words.next()?.parse().ok()
        })
        .collect()
}

fn is_running_proxy(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("jalin-proxy"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_for_its_duration_shows_every_kind_and_leaves_no_sidecar() {
    let _one_at_a_time = ONE_DEMO_AT_A_TIME.lock().await;
    proxy_next_to_jalin();
    let run = demo(&["--duration", "10s", "--no-tui"], &[]).await;
    let all = format!("stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(0), "{all}");
    assert!(run.stdout.contains("NOT FOR PRODUCTION"), "{all}");
    assert!(run.stdout.contains("FINAL SUMMARY"), "{all}");
    let kinds = run
        .stdout
        .split("TRAFFIC KINDS")
        .nth(1)
        .unwrap_or_else(|| panic!("no TRAFFIC KINDS block: {all}"));
    for kind in ["allowed", "denied", "emergency", "failing-upstream"] {
        assert!(
            kinds
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == kind)),
            "kind {kind} missing: {all}"
        );
    }
    assert!(!kinds.contains("NOT SEEN"), "{all}");
    // One line per second in --no-tui mode, each with the latency of both classes.
    let lines = run
        .stdout
        .lines()
        .filter(|l| l.starts_with('[') && l.contains("p50/p99"))
        .count();
    assert!(lines >= 5, "expected a summary line per second: {all}");
    let pids = sidecar_pids(&run.stdout);
    assert_eq!(pids.len(), 12, "one pid per sidecar: {all}");
    for pid in pids {
        assert!(
            !is_running_proxy(pid),
            "sidecar pid {pid} survived the demo"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_the_demo_cleanly_with_a_final_summary() {
    let _one_at_a_time = ONE_DEMO_AT_A_TIME.lock().await;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    proxy_next_to_jalin();
    // stderr goes to a file so a failure below can say why the demo stopped.
    let stderr_dir = tempfile::tempdir().unwrap();
    let stderr_path = stderr_dir.path().join("demo.stderr");
    let mut child = Command::new(jalin())
        .args(["demo", "--no-tui"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    // Wait for the first summary line: everything is up and traffic flows.
    let first_line = async {
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).await.unwrap() == 0 {
                return false;
            }
            seen.push_str(&line);
            if line.starts_with('[') {
                return true;
            }
        }
    };
    let started = tokio::time::timeout(DEMO_BOUND, first_line).await.unwrap();
    assert!(
        started,
        "the demo ended before its first summary line:\n{seen}\nstderr:\n{}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    tokio::time::timeout(DEMO_BOUND, out.read_to_string(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let code = tokio::time::timeout(DEMO_BOUND, child.wait())
        .await
        .unwrap()
        .unwrap();
    let all = format!("{seen}{rest}");
    assert_eq!(code.code(), Some(0), "{all}");
    assert!(all.contains("FINAL SUMMARY"), "{all}");
    assert!(all.contains("stopped by signal"), "{all}");
    let pids = sidecar_pids(&all);
    assert_eq!(pids.len(), 12, "{all}");
    for pid in pids {
        assert!(!is_running_proxy(pid), "sidecar pid {pid} survived Ctrl-C");
    }
}

#[tokio::test]
async fn missing_proxy_binary_says_how_to_build_it() {
    let run = demo(
        &["--duration", "1s", "--no-tui"],
        &[("JALIN_PROXY_BIN", "/nonexistent/jalin-proxy")],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("cargo build --release"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/nonexistent/jalin-proxy"),
        "{}",
        run.stderr
    );
}
