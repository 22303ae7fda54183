//! The `jalin-proxy` binary: `jalin-proxy --config FILE [--workers N] [--drain-duration D]`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use jalin_proxy::limits::DRAIN_DEADLINE;
use jalin_proxy::{ConfigSource, Proxy, parse_drain_duration};

/// mimalloc, built with `no_thp`: a sidecar runs beside every workload, so idle memory matters
/// more than the last percent of allocator speed, and transparent huge pages would back its
/// arena with 2 MiB pages (~4 MiB more idle RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jalin's sidecar and gateway proxy.
#[derive(Debug, Parser)]
#[command(name = "jalin-proxy", version)]
struct Args {
    /// The configuration file (YAML); reloaded on SIGHUP and when it changes. With a
    /// `control_plane:` section it is the bootstrap of xDS mode (see ARCHITECTURE.md, "xDS mode").
    #[arg(long, env = "JALIN_PROXY_CONFIG")]
    config: PathBuf,
    /// Worker threads; 1 runs everything on one thread. Default: one per CPU.
    #[arg(long, env = "JALIN_PROXY_WORKERS")]
    workers: Option<usize>,
    /// How long SIGTERM (or SIGINT) lets in-flight requests and connections finish before the
    /// proxy exits anyway: 1s to 10m, such as `25s`. The drain ends as soon as they are done.
    /// Keep it under the pod's `terminationGracePeriodSeconds` (the injector does). Default: 25s.
    #[arg(long, env = "JALIN_PROXY_DRAIN_DURATION", value_name = "DURATION",
          value_parser = parse_drain_duration)]
    drain_duration: Option<Duration>,
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
        proxy
            .run_until_signal(args.drain_duration.unwrap_or(DRAIN_DEADLINE))
            .await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_duration_defaults_to_the_deadline_and_refuses_zero() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from(["jalin-proxy", "--config", "p.yaml"].iter().chain(extra))
        };
        assert_eq!(parse(&[]).unwrap().drain_duration, None);
        assert_eq!(
            parse(&["--drain-duration", "2s"]).unwrap().drain_duration,
            Some(Duration::from_secs(2))
        );
        let e = parse(&["--drain-duration", "0s"]).unwrap_err().to_string();
        assert!(
            e.contains("--drain-duration") && e.contains("from 1s to 10m"),
            "{e}"
        );
        assert!(
            DRAIN_DEADLINE < Duration::from_secs(30),
            "under Kubernetes' default grace"
        );
    }
}
