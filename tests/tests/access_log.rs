//! Access logs from the seed's child-services Telemetry, end to end: a real `jalin-proxy`
//! process with the Telemetry in its file, its stdout read line by line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use jalin_tests::client::http1_client;
use jalin_tests::proxy::{ListenerSpec, ServiceSpec, config_yaml};
use jalin_tests::upstream::HttpUpstream;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

const SEED: &str =
    include_str!("../../control/examples/demo/policies-24-telemetry-child-services-telemetry.yaml");
const TOKEN: &str = "Bearer eyJhbGciOiJSUzI1NiJ9.child-secret-token";
/// Longest wait for a line or a listener; only reached when the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

struct RunningProxy {
    child: Child,
    _dir: tempfile::TempDir,
    file: PathBuf,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The proxy's JSON log (a few lines per test: the pipe never fills).
    stderr: Lines<BufReader<ChildStderr>>,
    inbound: SocketAddr,
    outbound: SocketAddr,
}

/// Starts the binary with the seed Telemetry (after `edit`), finds its listeners' addresses in
/// its JSON log on stderr, and returns once it is started.
async fn start(upstream: SocketAddr, edit: impl Fn(&str) -> String) -> RunningProxy {
    start_yaml(&config(upstream, edit)).await
}

/// Starts the binary on `yaml`; see [`start`].
async fn start_yaml(yaml: &str) -> RunningProxy {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut child = Command::new(jalin_tests::proxy::binary())
        .arg("--config")
        .arg(&file)
        .arg("--log-json")
        .arg("--workers")
        .arg("1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut inbound, mut outbound, mut started) = (None, None, false);
    let mut log = String::new();
    // "started" comes once the file is watched: a rewrite after it is seen.
    while inbound.is_none() || outbound.is_none() || !started {
        let line = tokio::time::timeout(PATIENCE, stderr.next_line())
            .await
            .expect("the proxy logs its listeners")
            .unwrap()
            .unwrap_or_else(|| panic!("the proxy exited:\n{log}"));
        log.push_str(&line);
        log.push('\n');
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let f = &v["fields"];
        if f["message"] == "jalin-proxy started" {
            started = true;
        }
        if f["message"] != "listening" {
            continue;
        }
        let addr: SocketAddr = f["address"].as_str().unwrap().parse().unwrap();
        match f["listener"].as_str() {
            Some("in") => inbound = Some(addr),
            Some("out") => outbound = Some(addr),
            _ => {}
        }
    }
    RunningProxy {
        child,
        _dir: dir,
        file,
        stdout,
        stderr,
        inbound: inbound.unwrap(),
        outbound: outbound.unwrap(),
    }
}

/// The proxy's file: one inbound and one outbound listener to the app, the seed Telemetry.
fn config(upstream: SocketAddr, edit: impl Fn(&str) -> String) -> String {
    config_with(upstream, edit, "")
}

/// [`config`] with `providers` (YAML lines) in the `access_log` section.
fn config_with(upstream: SocketAddr, edit: impl Fn(&str) -> String, providers: &str) -> String {
    let seed: String = edit(SEED)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("    {l}\n"))
        .collect();
    let seed = seed.replacen("    apiVersion", "  - apiVersion", 1);
    let base = config_yaml(
        &[
            ListenerSpec::inbound("in", "app"),
            ListenerSpec::outbound("out", "app"),
        ],
        &[ServiceSpec::new("app", &[upstream])],
    );
    format!("{base}access_log:\n  namespace: child-services\n{providers}telemetry:\n{seed}")
}

async fn request(addr: SocketAddr, path: &str) -> u16 {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .header("authorization", TOKEN)
        .header("x-child-access-reason", "case-review \"urgent\"")
        .header("x-request-id", "req-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let rsp = http1_client().request(req).await.unwrap();
    let status = rsp.status().as_u16();
    rsp.into_body().collect().await.unwrap();
    status
}

async fn next_line(p: &mut RunningProxy) -> String {
    tokio::time::timeout(PATIENCE, p.stdout.next_line())
        .await
        .expect("an access-log line")
        .unwrap()
        .expect("stdout open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_request_writes_one_json_line_in_the_seed_format() {
    let app = HttpUpstream::start("app").await.unwrap();
    // The format also asks for the credential: it must be redacted, never written.
    let with_auth = |s: &str| {
        s.replacen(
            "\"method\": \"%REQ(:METHOD)%\",",
            "\"method\": \"%REQ(:METHOD)%\",\n          \"auth\": \"%REQ(AUTHORIZATION)%\",",
            1,
        )
    };
    assert_ne!(with_auth(SEED), SEED);
    let mut p = start(app.addr, with_auth).await;

    assert_eq!(request(p.inbound, "/status/201?case=7").await, 201);
    let line = next_line(&mut p).await;
    assert!(!line.contains("child-secret-token"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(v["method"], "GET", "{line}");
    assert_eq!(v["auth"], "[REDACTED]", "{line}");
    assert_eq!(v["path"], "/status/201?case=7", "{line}");
    assert_eq!(v["response_code"], 201, "{line}");
    assert_eq!(v["protocol"], "HTTP/1.1", "{line}");
    assert_eq!(v["child_access_reason"], "case-review \"urgent\"", "{line}");
    assert_eq!(v["request_id"], "req-1", "{line}");
    assert_eq!(v["upstream_service"], "app", "{line}");
    assert_eq!(v["guardian_consent"], "-", "absent header: {line}");
    assert_eq!(v["source_workload"], "-", "wasm filter state: {line}");
    assert!(v["duration"].is_u64(), "{line}");
    assert!(
        v["timestamp"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC: {line}"
    );

    // CLIENT mode has no format in the seed: Istio's default text line.
    assert_eq!(request(p.outbound, "/status/200").await, 200);
    let line = next_line(&mut p).await;
    assert!(
        line.contains("\"GET /status/200 HTTP/1.1\" 200 -"),
        "{line}"
    );
    assert!(line.contains(" app "), "upstream cluster: {line}");
    assert!(!line.contains("child-secret-token"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_are_the_bodies_forwarded_even_when_chunked() {
    let app = HttpUpstream::start("app").await.unwrap();
    let mut p = start(app.addr, str::to_owned).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    // Chunked, so no content-length says the size: the proxy streams it and counts the bytes.
    std::fs::write(&file, vec![b'x'; 100_000]).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://{}/echo", p.outbound);
    let args = [
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
    ];
    let r = jalin_tests::client::curl(&url, &args).await.unwrap();
    assert_eq!((r.status, r.body.len()), (200, 100_000));
    let line = next_line(&mut p).await;
    assert!(line.contains("\"POST /echo HTTP/1.1\" 200 "), "{line}");
    // Istio's text format: ... "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT%
    assert!(line.contains("\"-\" 100000 100000 "), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_mode_logs_nothing() {
    let app = HttpUpstream::start("app").await.unwrap();
    let server_off = |s: &str| {
        let i = s.find("mode: SERVER").unwrap();
        let mut out = s.to_owned();
        let at = i + s[i..].find("disabled: false").unwrap();
        out.replace_range(at..at + "disabled: false".len(), "disabled: true");
        out
    };
    let mut p = start(app.addr, server_off).await;
    // The inbound (SERVER) request finishes before the outbound (CLIENT) one starts, and one
    // writer keeps the order: were the first logged, its line would come first.
    assert_eq!(request(p.inbound, "/status/200?server").await, 200);
    assert_eq!(request(p.outbound, "/status/200?client").await, 200);
    let line = next_line(&mut p).await;
    assert!(line.contains("/status/200?client"), "{line}");
    assert!(!line.contains("?server"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_telemetry_is_refused_with_its_field_path_and_the_last_good_one_stays() {
    let app = HttpUpstream::start("app").await.unwrap();
    let mut p = start(app.addr, str::to_owned).await;
    let broken = config(app.addr, |s| {
        s.replacen("%REQ(:METHOD)%", "%REQ(:METHOD)", 1)
    });
    let tmp = p.file.with_extension("yaml.tmp");
    std::fs::write(&tmp, broken).unwrap();
    std::fs::rename(&tmp, &p.file).unwrap();
    let error = loop {
        let line = tokio::time::timeout(PATIENCE, p.stderr.next_line())
            .await
            .expect("the reload outcome")
            .unwrap()
            .expect("stderr open");
        if line.contains("configuration rejected") {
            break line;
        }
    };
    assert!(
        error.contains("telemetry[0].spec.accessLogging[1].overrides[1].format"),
        "{error}"
    );
    assert!(
        error.contains("child-services/child-services-telemetry"),
        "{error}"
    );
    assert!(error.contains("proxy.yaml"), "{error}");

    assert_eq!(request(p.inbound, "/status/200?after").await, 200);
    let line = next_line(&mut p).await;
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert_eq!(
        v["path"], "/status/200?after",
        "the seed format is still in force: {line}"
    );
}

/// Waits until `path` holds `n` lines and returns them. The timeout guards against a hang only.
async fn lines_in(path: &std::path::Path, n: usize) -> Vec<String> {
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return text.lines().map(str::to_owned).collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("{} never held {n} lines", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_a_rotated_access_log_file() {
    let app = HttpUpstream::start("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let providers = format!(
        "  providers:\n    - name: child-services-audit-log\n      envoyFileAccessLog:\n        path: {}\n",
        log.display()
    );
    let mut p = start_yaml(&config_with(app.addr, str::to_owned, &providers)).await;
    assert_eq!(request(p.outbound, "/status/200?first").await, 200);
    assert!(lines_in(&log, 1).await[0].contains("?first"));

    // logrotate: move the file, then SIGUSR1; the proxy says when it has been told.
    let rotated = dir.path().join("audit.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = p.child.id().unwrap().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    loop {
        let line = tokio::time::timeout(PATIENCE, p.stderr.next_line())
            .await
            .expect("the proxy logs the signal")
            .unwrap()
            .expect("stderr open");
        if line.contains("SIGUSR1") {
            break;
        }
    }
    assert_eq!(request(p.outbound, "/status/200?second").await, 200);
    let fresh = lines_in(&log, 1).await;
    assert!(fresh[0].contains("?second"), "{fresh:?}");
    // The moved file kept its line and got no new one.
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("?first"), "{old}");
}
