//! The `jalin-bench` binary.

use clap::{Parser, Subcommand};

/// jalin's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "jalin-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N simulated proxies on real delta ADS streams to one control plane: time from a config
    /// change to the last ACK, control-plane memory and CPU per push.
    XdsScale(jalin_bench::xds_scale::Args),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::XdsScale(args) => jalin_bench::xds_scale::main(&args)?,
    }
    Ok(())
}
