//! The control-plane side of the scale run: a real [`XdsServer`] in a child process (a re-exec of
//! `jalin-bench xds-scale --serve`), so its memory and CPU are measured apart from the simulated
//! proxies and the two sides do not share one file-descriptor limit.
//!
//! The parent drives the child over a line protocol: the child prints `listening <addr>` once,
//! then reads `push <k>` lines and answers each with `pushed <k> <version>` after the new
//! snapshot is in force. End of input stops the child; the parent's handle kills it on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use jalin_xds::transport::{Snapshot, XdsServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::ScaleError;
use super::procstat::{self, Memory};
use super::workload::Workload;

/// Time the child may take to build its snapshot and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time the child may take to apply one change.
const PUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the control plane until standard input ends (the `--serve` child).
pub async fn serve(resources: usize) -> Result<(), ScaleError> {
    let workload = Workload::new(resources);
    let mut snapshot = Snapshot::new(workload.initial()?);
    let server = XdsServer::default();
    server.push(snapshot.clone());
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| ScaleError::io("bind the control plane on 127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ScaleError::io("read the control plane's address", e))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve(listener, None, async {
                    let _ = stop_rx.await;
                })
                .await
        })
    };
    let mut out = tokio::io::stdout();
    say(&mut out, &format!("listening {addr}\n")).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| ScaleError::io("read a command from the parent", e))?
    {
        let k: u64 = line
            .strip_prefix("push ")
            .and_then(|k| k.trim().parse().ok())
            .ok_or_else(|| {
                ScaleError::Protocol(format!(
                    "control-plane child: expected `push <k>` on stdin, got {line:?}"
                ))
            })?;
        let change = workload.change(k)?;
        let version = change.resource.version.clone();
        snapshot = snapshot.with([change.resource]);
        server.push(snapshot.clone());
        say(&mut out, &format!("pushed {k} {version}\n")).await?;
    }
    let _ = stop_tx.send(());
    match serving.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ScaleError::Protocol(format!("control plane: {e}"))),
        Err(e) => Err(ScaleError::Protocol(format!("control-plane task: {e}"))),
    }
}

async fn say(out: &mut tokio::io::Stdout, line: &str) -> Result<(), ScaleError> {
    out.write_all(line.as_bytes())
        .await
        .map_err(|e| ScaleError::io("write to the parent", e))?;
    out.flush()
        .await
        .map_err(|e| ScaleError::io("write to the parent", e))
}

/// The parent's handle on the control-plane child. Dropping it kills the child.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Where the child serves ADS (plaintext gRPC).
    pub addr: SocketAddr,
}

impl ControlPlane {
    /// Starts `exe xds-scale --serve --resources <resources>` and waits until it listens.
    pub async fn spawn(exe: &Path, resources: usize) -> Result<Self, ScaleError> {
        let mut child = Command::new(exe)
            .args([
                "xds-scale",
                "--serve",
                "--resources",
                &resources.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ScaleError::io(&format!("start {}", exe.display()), e))?;
        let pid = child.id().ok_or_else(|| {
            ScaleError::Protocol("the control-plane child exited at once".to_owned())
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(ScaleError::Protocol(
                "the control-plane child has no stdin/stdout pipe".to_owned(),
            ));
        };
        let mut stdout = BufReader::new(stdout).lines();
        // A wrapper (a profiler, say) may print its own lines first; skip them.
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let line = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let line = next_line(&mut stdout, left, "listening").await?;
            if line.starts_with("listening ") {
                break line;
            }
        };
        let addr = line
            .strip_prefix("listening ")
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| {
                ScaleError::Protocol(format!(
                    "control-plane child: expected `listening <addr>`, got {line:?}"
                ))
            })?;
        Ok(ControlPlane {
            child,
            pid,
            stdin,
            stdout,
            addr,
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Asks the child to push change `k`; returns the changed resource's version once the new
    /// snapshot is in force.
    pub async fn push(&mut self, k: u64) -> Result<String, ScaleError> {
        self.stdin
            .write_all(format!("push {k}\n").as_bytes())
            .await
            .map_err(|e| ScaleError::io("send a push to the control-plane child", e))?;
        self.stdin
            .flush()
            .await
            .map_err(|e| ScaleError::io("send a push to the control-plane child", e))?;
        let line = next_line(&mut self.stdout, PUSH_TIMEOUT, "pushed").await?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some("pushed"), Some(n), Some(version)) if n == k.to_string() => {
                Ok(version.to_owned())
            }
            _ => Err(ScaleError::Protocol(format!(
                "control-plane child: expected `pushed {k} <version>`, got {line:?}"
            ))),
        }
    }

    /// CPU time the child has used so far.
    pub fn cpu(&self) -> Result<Duration, ScaleError> {
        procstat::cpu_time(self.pid).map_err(|e| ScaleError::io("read the child's CPU time", e))
    }

    /// The child's resident memory.
    pub fn memory(&self) -> Result<Memory, ScaleError> {
        procstat::memory(self.pid).map_err(|e| ScaleError::io("read the child's memory", e))
    }

    /// Ends the child: closes its input and waits for it, killing it if it lingers.
    pub async fn stop(mut self) {
        drop(self.stdin);
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn next_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    timeout: Duration,
    what: &str,
) -> Result<String, ScaleError> {
    match tokio::time::timeout(timeout, lines.next_line()).await {
        Ok(Ok(Some(line))) => Ok(line),
        Ok(Ok(None)) => Err(ScaleError::Protocol(format!(
            "the control-plane child exited before saying `{what}`; see its error above"
        ))),
        Ok(Err(e)) => Err(ScaleError::io("read from the control-plane child", e)),
        Err(_) => Err(ScaleError::Protocol(format!(
            "the control-plane child did not say `{what}` within {}s",
            timeout.as_secs()
        ))),
    }
}
