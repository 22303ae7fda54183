//! Real processes for the end-to-end xDS tests: `jalin control` and `jalin-proxy` children
//! (killed on drop) whose logs are read on a thread and waited on line by line, a small HTTP/1.1
//! upstream on 127.0.0.1:0, and plain HTTP/1.1 requests through a proxy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Safety net for one awaited condition (the machine is shared; nothing is asserted on time).
pub const WAIT: Duration = Duration::from_secs(30);
/// Between two probes of a polled condition.
pub const POLL: Duration = Duration::from_millis(20);

/// A child process killed (SIGKILL) and reaped on drop, with its log lines.
pub struct Process {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `cmd` with its stderr and stdout read into the line log.
    pub fn spawn(name: &str, mut cmd: Command) -> Process {
        cmd.env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stdout.take().unwrap()),
        ] {
            let lines = lines.clone();
            let tag = name.to_owned();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("[{tag}] {line}");
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Process {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// Waits for a log line containing `needle` (from the start of the log); returns it.
    pub async fn line(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child_status() {
                panic!("{} exited ({status}) before logging {needle:?}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no log line {needle:?} within {WAIT:?}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // `try_wait` needs `&mut`; a clone of the pid check through /proc is enough here.
        let alive = Path::new(&format!("/proc/{}", self.child.id())).exists();
        Ok((!alive).then(std::process::ExitStatus::default))
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name=value` in a log line (quotes trimmed).
pub fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}

/// `jalin-proxy`, built into the same target directory as `jalin` (an up-to-date build is a
/// no-op), as the demo's test does.
pub fn proxy_binary() -> PathBuf {
    let jalin = PathBuf::from(env!("CARGO_BIN_EXE_jalin"));
    let path = jalin.parent().unwrap().join("jalin-proxy");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "-p",
            "jalin-proxy",
            "--bin",
            "jalin-proxy",
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .expect("run cargo build -p jalin-proxy");
    assert!(status.success(), "cargo build -p jalin-proxy failed");
    path
}

/// Runs `jalin <args>` to completion; panics with its output on failure.
pub fn jalin(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "jalin {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A workload certificate and key from the CA of `ca`, made with `jalin ca issue`.
pub fn issue(ca: &Path, dir: &Path, ns: &str, sa: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{ns}-{sa}.pem"));
    let key = dir.join(format!("{ns}-{sa}-key.pem"));
    let s = |p: &Path| p.display().to_string();
    jalin(&[
        "ca",
        "issue",
        "--chain",
        &s(&ca.join("intermediate.pem")),
        "--roots",
        &s(&ca.join("root.pem")),
        "--key",
        &s(&ca.join("intermediate-key.pem")),
        "--namespace",
        ns,
        "--service-account",
        sa,
        "--out-cert",
        &s(&cert),
        "--out-key",
        &s(&key),
    ]);
    (cert, key)
}

/// A tiny HTTP/1.1 upstream answering `200 ok` to every request (keep-alive), until dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let rsp = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                            if s.write_all(rsp).await.is_err() {
                                return;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) if buf.len() + n <= 64 * 1024 => {
                                buf.extend_from_slice(&chunk[..n])
                            }
                            Ok(_) => return,
                        }
                    }
                });
            }
        });
        Upstream { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// `GET path` to `addr` with `Host: host`; `None` when the connection fails.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Option<Answer> {
    let io = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_owned(),
        })
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .ok()?
}

/// Polls `probe` until it returns `Some`, within [`WAIT`].
pub async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {WAIT:?}: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// GET on an admin or health port, JSON decoded.
pub async fn json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let a = get(addr, "localhost", path).await?;
    (a.status == 200).then(|| serde_json::from_str(&a.body).ok())?
}
