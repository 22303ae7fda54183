//! The `jalin` command line: one clap `Subcommand` enum; each command lives in its own module.
//!
//! Other commands (`control`, `demo`) are added as variants of [`Command`] with their argument
//! structs and a `run` function in a module of their own. `jalin ca ...` is the CA crate's own
//! command set ([`jalin_ca::cli::CaCommand`]).

pub mod authz;
pub mod gateway;
pub mod policy;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// jalin: a service mesh with Istio-compatible policy.
#[derive(Debug, Parser)]
#[command(name = "jalin", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of the policy commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// One finding per line: `file:line: Kind/namespace/name: path: message`.
    #[default]
    Text,
    /// One JSON document with every finding.
    Json,
}

/// Arguments shared by the policy commands.
#[derive(Debug, Clone, clap::Args)]
pub struct Inputs {
    /// Files or directories of Istio YAML (directories are read recursively, *.yaml and *.yml).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse and validate Istio resources; exit 0 only when every resource is valid.
    Validate(Inputs),
    /// Convert Istio resources to jalin's native configuration and write an import report.
    Import {
        #[command(flatten)]
        inputs: Inputs,
        /// Output directory (created if missing).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Write the valid resources even when others are invalid (those are listed in the
        /// report, and the exit code stays 1).
        #[arg(long)]
        keep_going: bool,
    },
    /// Flag policies that are valid but probably do not mean what their authors think.
    Lint {
        #[command(flatten)]
        inputs: Inputs,
        /// YAML list of known workloads (`- {namespace: ns, labels: {app: x}}`), for the
        /// "selector matches no workload" check.
        #[arg(long)]
        workloads: Option<PathBuf>,
    },
    /// Certificate authority: make a development CA, inspect and check chains, issue certificates.
    #[command(subcommand)]
    Ca(jalin_ca::cli::CaCommand),
    /// Authorization: explain how the policies decide a request.
    #[command(subcommand)]
    Authz(authz::AuthzCommand),
    /// Evaluate compliance rules (a `child-services-policy-rules`-style ConfigMap or bare rules YAML).
    Check {
        #[command(flatten)]
        inputs: Inputs,
        /// The rules file.
        #[arg(long)]
        rules: PathBuf,
    },
    /// Istio Gateways on bare metal: render the jalin-proxy configuration of a gateway.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// Start a whole demo mesh on this machine (dev CA, sidecars, apps, traffic) with a live summary.
    Demo(crate::demo::DemoArgs),
    /// Run the control plane: watch configuration, serve xDS and the CA.
    Control(Box<crate::server::ControlArgs>),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate(inputs) => policy::validate(&inputs),
        Command::Import {
            inputs,
            out,
            keep_going,
        } => policy::import(&inputs, &out, keep_going),
        Command::Lint { inputs, workloads } => policy::lint(&inputs, workloads.as_deref()),
        Command::Check { inputs, rules } => policy::check(&inputs, &rules),
        Command::Demo(args) => crate::demo::run(&args),
        Command::Control(args) => crate::server::run(*args),
        Command::Ca(cmd) => ca(cmd),
        Command::Authz(cmd) => authz::run(cmd),
        Command::Gateway(cmd) => gateway::run(cmd),
    }
}

/// `jalin ca ...`: the CA crate's command; its error is printed as `jalin ca: <message>` and its
/// exit code kept (2 for an unusable chain, 1 for other failures).
fn ca(cmd: jalin_ca::cli::CaCommand) -> ExitCode {
    match cmd.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jalin ca: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1).max(1))
        }
    }
}
