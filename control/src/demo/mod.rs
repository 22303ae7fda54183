//! `jalin demo`: one command starts a whole mesh on this machine on embedded defaults — a
//! development CA, the control-plane configuration from the bundled example directory,
//! `jalin-proxy` sidecars for a handful of workloads, small demo apps, and a mix of traffic —
//! and shows a live summary read from the running components.
//!
//! Order of start (and reverse order of stop): CA -> apps -> example directory with free ports
//! -> import -> proxy files -> proxies (ready) -> traffic -> summary loop. Everything listens on
//! 127.0.0.1; every child process is killed and reaped on exit, on Ctrl-C and on drop.

pub mod apps;
pub mod example;
pub mod logs;
pub mod mesh;
pub mod proxies;
pub mod scrape;
pub mod summary;
pub mod traffic;

mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `jalin demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. 30s, 2m) and exit 0 only if every kind of traffic
    /// was seen. Without it the demo runs until Ctrl-C.
    #[arg(long, value_parser = jalin_ca::cli::files::parse_duration)]
    pub duration: Option<Duration>,
    /// Print one summary line per second instead of redrawing the screen (the default when
    /// stdout is not a terminal).
    #[arg(long)]
    pub no_tui: bool,
    /// Keep the demo's directory (CA, configuration, proxy logs) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

/// Why the demo could not run. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "jalin-proxy not found ({looked}: {why}). Build it first: `cargo build --release` \
         (or `cargo build -p jalin-proxy` next to a debug jalin), or set JALIN_PROXY_BIN to the binary"
    )]
    ProxyMissing { looked: PathBuf, why: String },
    #[error("proxy {name} did not start: {why}; see its log {log}")]
    ProxyStart {
        name: String,
        why: String,
        log: PathBuf,
    },
    #[error("binding a demo listener on 127.0.0.1: {0}")]
    Bind(String),
    #[error("the bundled example directory does not import cleanly:\n{0}")]
    Import(String),
    #[error("planning the demo mesh: {0}")]
    Plan(String),
    #[error("development CA: {0}")]
    Ca(String),
    #[error("admin endpoint: {0}")]
    Admin(String),
    #[error("the control plane did not start: {0}")]
    Control(String),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl DemoError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Runs `jalin demo`: exit 0 when stopped by Ctrl-C, or when `--duration` ran out and every
/// kind of traffic whose stage is in this build was seen; 1 otherwise.
pub fn run(args: &DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jalin demo: {}", DemoError::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("jalin demo: {e}");
            ExitCode::FAILURE
        }
    }
}
