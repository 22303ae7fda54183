//! The real `jalin-proxy` binary as a child process (killed on drop) with its JSON log lines,
//! for suites that need the process itself: signals, log lines, exit status. Synchronise on
//! [`ProxyProcess::line`], never on time; [`HANG`] only stops a hung test.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Only stops a hung test (a 2-core machine shared by several builds); nothing asserts on time.
pub const HANG: Duration = Duration::from_secs(120);

/// The `message` of a JSON log line.
pub fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// A running `jalin-proxy --config FILE --log-json --workers 1 ARGS…`.
#[derive(Debug)]
pub struct ProxyProcess {
    child: Child,
    lines: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl ProxyProcess {
    /// Starts `binary` on `config` with `args` after the common ones; its stderr (JSON lines,
    /// `RUST_LOG=info`) is echoed to the test's output and kept for [`ProxyProcess::line`].
    pub fn start(binary: &Path, config: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(config)
            .args(["--log-json", "--workers", "1"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
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
        Ok(Self {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// The first log line (seen so far or to come) matching `want`. Panics when the log ends
    /// first or nothing matches within [`HANG`].
    pub async fn line(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        if let Some(l) = self.seen.iter().find(|l| want(l)) {
            return l.clone();
        }
        self.next(want).await
    }

    /// The next log line not read yet that matches `want` (a second reload's line, say).
    #[allow(clippy::panic)] // Test support: a log line that never comes fails the test.
    pub async fn next(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        loop {
            let next = tokio::time::timeout(HANG, self.lines.recv()).await;
            let Ok(Some(l)) = next else {
                panic!("no such proxy log line: the log ended or nothing came within {HANG:?}");
            };
            self.seen.push(l.clone());
            if want(&l) {
                return l;
            }
        }
    }

    /// The address of listener `name`, from its `listening` line.
    pub async fn listening(&mut self, name: &str) -> SocketAddr {
        self.address_of(|l| message(l) == "listening" && l["fields"]["listener"] == name)
            .await
    }

    /// The `address` field of the first log line matching `want`.
    #[allow(clippy::panic)] // Test support: a line without an address fails the test.
    pub async fn address_of(&mut self, want: impl Fn(&Value) -> bool) -> SocketAddr {
        let line = self.line(want).await;
        let address = line["fields"]["address"].as_str().unwrap_or_default();
        address
            .parse()
            .unwrap_or_else(|e| panic!("address `{address}` in {line}: {e}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Sends `signal` (`-TERM`, `-HUP`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill {signal} {}",
            self.pid()
        );
    }

    /// Waits for the process to exit; returns its status and every log line.
    #[allow(clippy::panic)] // Test support: a proxy that does not exit fails the test.
    pub async fn exit(mut self) -> (ExitStatus, Vec<Value>) {
        let status = tokio::time::timeout(HANG, self.child.wait()).await;
        let Ok(Ok(status)) = status else {
            panic!("the proxy did not exit within {HANG:?}");
        };
        // The log's end follows the exit: read it to the end.
        while let Ok(Some(l)) = tokio::time::timeout(HANG, self.lines.recv()).await {
            self.seen.push(l);
        }
        (status, self.seen)
    }
}
