//! The `jalin` binary: parses the command line and runs the command.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    jalin_control::cli::run(jalin_control::cli::Cli::parse())
}
