//! `jalin ca issue` (one certificate by hand, for a bare-metal host; the key is made here and
//! written 0600) and `jalin ca token create` (a one-time join token).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::{CliError, files, say};
use crate::auth::JoinTokenStore;
use crate::chain::KeySource;
use crate::issue::{
    AuditContext, AuditLog, CaConfig, DEFAULT_MAX_TTL, TtlPolicy, WorkloadCa, check_csr,
    new_workload_csr,
};
use crate::spiffe::SpiffeId;

/// Arguments of `jalin ca issue`.
#[derive(Debug, Clone, clap::Args)]
pub struct IssueArgs {
    /// PEM chain: the issuing intermediate first.
    #[arg(long)]
    pub chain: PathBuf,
    /// PEM root bundle.
    #[arg(long)]
    pub roots: PathBuf,
    /// The intermediate's key: a PKCS#8 PEM file or a pkcs11: URI.
    #[arg(long)]
    pub key: String,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub service_account: String,
    /// Lifetime, e.g. 24h.
    #[arg(long, default_value = "24h", value_parser = files::parse_duration)]
    pub ttl: Duration,
    /// Ceiling on --ttl.
    #[arg(long, default_value = "90d", value_parser = files::parse_duration)]
    pub max_ttl: Duration,
    /// Where to write the certificate chain (PEM).
    #[arg(long)]
    pub out_cert: PathBuf,
    /// Where to write the private key (PEM, mode 0600).
    #[arg(long)]
    pub out_key: PathBuf,
    /// Append the audit line here (JSON lines).
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
}

/// `jalin ca token ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a one-time join token bound to one identity.
    Create(TokenCreateArgs),
}

/// Arguments of `jalin ca token create`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenCreateArgs {
    /// The token store file the CA reads (JSON, 0600; holds hashes only).
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub service_account: String,
    /// How long the token may wait for its first use.
    #[arg(long, default_value = "1h", value_parser = files::parse_duration)]
    pub ttl: Duration,
}

pub(super) fn run_issue(
    a: &IssueArgs,
    out: &mut dyn Write,
    now: SystemTime,
) -> Result<(), CliError> {
    let id = SpiffeId::new_workload(&a.trust_domain, &a.namespace, &a.service_account)?;
    let key: KeySource = a.key.parse().map_err(crate::signer::SignerError::from)?;
    let audit = match &a.audit_log {
        Some(p) => AuditLog::to_file(p).map_err(CliError::io(p))?,
        None => AuditLog::to_writer(std::io::sink()),
    };
    let max_ttl = if a.max_ttl.is_zero() {
        DEFAULT_MAX_TTL
    } else {
        a.max_ttl
    };
    let config = CaConfig {
        trust_domain: a.trust_domain.clone(),
        chain_path: a.chain.clone(),
        roots_path: a.roots.clone(),
        key,
        ttl: TtlPolicy {
            default_ttl: a.ttl.min(max_ttl),
            max_ttl,
        },
    };
    let ca = WorkloadCa::load(&config, audit, now)?;
    let (csr_der, key_pair) =
        new_workload_csr(&id).map_err(|e| CliError::Generate(e.to_string()))?;
    let csr = check_csr(&csr_der).map_err(crate::issue::IssueError::from)?;
    let ctx = AuditContext {
        auth_method: Some("cli"),
        caller: std::env::var("USER")
            .ok()
            .map(|u| format!("local user {u}")),
        peer: None,
    };
    let issued = ca.issue(&ctx, &id, &csr, a.ttl.as_secs(), now)?;
    files::write_private(&a.out_key, key_pair.serialize_pem().as_bytes())
        .map_err(CliError::io(&a.out_key))?;
    std::fs::write(&a.out_cert, &issued.chain_pem).map_err(CliError::io(&a.out_cert))?;
    say(
        out,
        &format!(
            "issued {} serial {} valid until {}\n  certificate chain: {}\n  key (0600):        {}",
            issued.id,
            issued.serial_hex,
            crate::issue::rfc3339(issued.not_after),
            a.out_cert.display(),
            a.out_key.display()
        ),
    )
}

pub(super) fn run_token_create(
    a: &TokenCreateArgs,
    out: &mut dyn Write,
    now: SystemTime,
) -> Result<(), CliError> {
    let id = SpiffeId::new_workload(&a.trust_domain, &a.namespace, &a.service_account)?;
    if a.ttl.is_zero() {
        return Err(CliError::Arg {
            arg: "--ttl",
            reason: "must be positive".into(),
        });
    }
    let store = JoinTokenStore::at_path(&a.store);
    let token = store.create(&id, a.ttl, now)?;
    // Only the token goes to stdout, so it can be captured; the rest to stderr.
    eprintln!(
        "join token for {id}, single use, expires {}; it is shown once and stored only as a hash",
        crate::issue::rfc3339(now + a.ttl)
    );
    say(out, &token)
}
