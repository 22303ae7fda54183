//! `jalin ca ...`: the CA's command line, as a library the `jalin` binary calls.
//! `init-dev` makes a development root and intermediate (NOT FOR PRODUCTION), `inspect` prints a
//! chain, `check` validates a chain against a root bundle, `issue` signs one certificate by hand
//! for a bare-metal host, `token create` makes a one-time join token.

pub mod files;
mod init_dev;
mod inspect;
mod issue_cmd;

use std::io::Write;
use std::path::PathBuf;

use crate::auth::TokenError;
use crate::chain::{ChainError, PemFileError};
use crate::issue::{CaLoadError, IssueError};
use crate::signer::SignerError;
use crate::spiffe::SpiffeIdError;
pub use init_dev::{DEV_LABEL, DevChainPem, InitDevArgs, make_dev_ca};
pub use inspect::{CheckArgs, InspectArgs};
pub use issue_cmd::{IssueArgs, TokenCommand, TokenCreateArgs};

/// `jalin ca <subcommand>`.
#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Make a development root and intermediate. NOT FOR PRODUCTION.
    InitDev(InitDevArgs),
    /// Print a chain: subjects, expiries in days, path lengths and name constraints.
    Inspect(InspectArgs),
    /// Validate a chain (and optionally its key) against a root bundle; non-zero exit if unusable.
    Check(CheckArgs),
    /// Sign one workload certificate by hand (bare-metal hosts). The key is made here.
    Issue(IssueArgs),
    /// Manage one-time bare-metal join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// Why a `jalin ca` command failed. The message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} exists; pass --force to overwrite")]
    Exists(PathBuf),
    #[error(transparent)]
    Pem(#[from] PemFileError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Load(#[from] CaLoadError),
    #[error(transparent)]
    Signer(#[from] SignerError),
    #[error("certificate not issued: {0}")]
    Issue(#[from] IssueError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("invalid identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("invalid argument {arg}: {reason}")]
    Arg { arg: &'static str, reason: String },
    #[error("generating certificates: {0}")]
    Generate(String),
}

impl CliError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// Process exit code: 2 for an unusable chain (`check`), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Chain(_) | Self::Load(CaLoadError::Chain(_)) => 2,
            _ => 1,
        }
    }
}

impl CaCommand {
    /// Runs the command, printing to stdout.
    pub fn run(self) -> Result<(), CliError> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        self.run_to(&mut out)
    }

    /// Runs the command, printing to `out`.
    pub fn run_to(self, out: &mut dyn Write) -> Result<(), CliError> {
        let now = std::time::SystemTime::now();
        match self {
            Self::InitDev(a) => init_dev::run(&a, out, now),
            Self::Inspect(a) => inspect::run_inspect(&a, out, now),
            Self::Check(a) => inspect::run_check(&a, out, now),
            Self::Issue(a) => issue_cmd::run_issue(&a, out, now),
            Self::Token(TokenCommand::Create(a)) => issue_cmd::run_token_create(&a, out, now),
        }
    }
}

pub(crate) fn say(out: &mut dyn Write, text: &str) -> Result<(), CliError> {
    writeln!(out, "{text}").map_err(CliError::io(std::path::Path::new("<stdout>")))
}
