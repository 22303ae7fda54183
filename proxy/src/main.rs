//! The `jalin-proxy` binary: `jalin-proxy --config FILE [--workers N]`.

use std::path::PathBuf;

use clap::Parser;
use jalin_proxy::limits::DRAIN_DEADLINE;
use jalin_proxy::{ConfigSource, Proxy};

/// mimalloc, built with `no_thp`: a sidecar runs beside every workload, so idle memory matters
/// more than the last percent of allocator speed, and transparent huge pages would back its
/// arena with 2 MiB pages (~4 MiB more idle RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jalin's sidecar and gateway proxy.
#[derive(Debug, Parser)]
#[command(name = "jalin-proxy", version)]
struct Args {
    /// The configuration file (YAML); reloaded on SIGHUP and when it changes.
    #[arg(long, env = "JALIN_PROXY_CONFIG")]
    config: PathBuf,
    /// Worker threads; 1 runs everything on one thread. Default: one per CPU.
    #[arg(long, env = "JALIN_PROXY_WORKERS")]
    workers: Option<usize>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The error already says what to do; a backtrace would bury it.
            eprintln!("jalin-proxy: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    jalin_proxy::telemetry::init_logging(args.log_json);
    let runtime = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        Some(0) => anyhow::bail!("--workers must be at least 1"),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        let proxy = Proxy::start(ConfigSource::File(args.config)).await?;
        proxy.run_until_signal(DRAIN_DEADLINE).await?;
        anyhow::Ok(())
    })
}
