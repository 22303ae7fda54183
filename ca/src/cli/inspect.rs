//! `jalin ca inspect` (print a chain) and `jalin ca check` (validate it against a root bundle).

use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use super::{CliError, say};
use crate::chain::{self, CertRole, CertSummary, KeySource, parse_cert, validate_chain};
use crate::signer::CaSigner;

/// Arguments of `jalin ca inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// PEM chain: the issuing intermediate first.
    #[arg(long)]
    pub chain: PathBuf,
    /// PEM root bundle; when given the chain is also validated.
    #[arg(long)]
    pub roots: Option<PathBuf>,
    /// Trust domain, for the name-constraint check.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
}

/// Arguments of `jalin ca check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// PEM chain: the issuing intermediate first.
    #[arg(long)]
    pub chain: PathBuf,
    /// PEM root bundle (several roots during a rotation).
    #[arg(long)]
    pub roots: PathBuf,
    /// Trust domain the CA will issue for.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// The intermediate's key (file path or pkcs11: URI); when given, it must match.
    #[arg(long)]
    pub key: Option<String>,
}

fn print_summary(out: &mut dyn Write, c: &CertSummary, now: SystemTime) -> Result<(), CliError> {
    say(
        out,
        &format!(
            "#{pos} {role}\n  subject:     {subject}\n  issuer:      {issuer}\n  serial:      {serial}\n  not before:  {nb}\n  not after:   {na} ({days} days left)\n  pathLen:     {pl}\n  constraints: {nc}",
            pos = c.position,
            role = c.role,
            subject = c.subject,
            issuer = c.issuer,
            serial = c.serial_hex,
            nb = crate::issue::rfc3339(to_time(c.not_before_unix)),
            na = crate::issue::rfc3339(to_time(c.not_after_unix)),
            days = c.days_left(now),
            pl = c.path_len.map_or("none".to_owned(), |p| p.to_string()),
            nc = if c.name_constraints.is_empty() {
                "none".to_owned()
            } else {
                c.name_constraints.join(", ")
            },
        ),
    )
}

fn to_time(unix: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(unix).unwrap_or(0))
}

pub(super) fn run_inspect(
    a: &InspectArgs,
    out: &mut dyn Write,
    now: SystemTime,
) -> Result<(), CliError> {
    let certs = chain::read_certs(&a.chain)?;
    if let Some(roots) = &a.roots {
        let bundle = chain::read_certs(roots)?;
        let report = validate_chain(&certs, &bundle, &a.trust_domain, now)?;
        for c in &report.certs {
            print_summary(out, c, now)?;
        }
        for w in &report.warnings {
            say(out, &format!("warning: {w}"))?;
        }
        return say(out, "chain: valid");
    }
    for (i, der) in certs.iter().enumerate() {
        let cert = parse_cert(der).map_err(|rule| chain::ChainError {
            position: i,
            role: if i == 0 {
                CertRole::IssuingIntermediate
            } else {
                CertRole::Intermediate
            },
            subject: String::new(),
            rule,
        })?;
        let role = if i == 0 {
            CertRole::IssuingIntermediate
        } else {
            CertRole::Intermediate
        };
        let summary = chain::summarize(i, role, &cert);
        print_summary(out, &summary, now)?;
    }
    say(out, "chain: not validated (pass --roots to validate)")
}

pub(super) fn run_check(
    a: &CheckArgs,
    out: &mut dyn Write,
    now: SystemTime,
) -> Result<(), CliError> {
    let certs = chain::read_certs(&a.chain)?;
    let bundle = chain::read_certs(&a.roots)?;
    crate::spiffe::TrustDomain::new(&a.trust_domain)?;
    let report = validate_chain(&certs, &bundle, &a.trust_domain, now)?;
    if let Some(key) = &a.key {
        let source: KeySource = key.parse().map_err(crate::signer::SignerError::from)?;
        let first = certs.first().ok_or(CliError::Arg {
            arg: "--chain",
            reason: "empty".into(),
        })?;
        let cert = parse_cert(first).map_err(|rule| chain::ChainError {
            position: 0,
            role: CertRole::IssuingIntermediate,
            subject: String::new(),
            rule,
        })?;
        CaSigner::open(&source, &cert)?;
        say(
            out,
            &format!("key: {} matches the intermediate", source.describe()),
        )?;
    }
    for w in &report.warnings {
        say(out, &format!("warning: {w}"))?;
    }
    let inter = report
        .intermediate()
        .map(|c| (c.subject.clone(), c.days_left(now)));
    let root = report.root().map(|c| (c.subject.clone(), c.days_left(now)));
    say(
        out,
        &format!(
            "OK: chain valid for trust domain {}: intermediate {:?} ({} days left), root {:?} ({} days left)",
            a.trust_domain,
            inter.as_ref().map(|c| c.0.as_str()).unwrap_or_default(),
            inter.as_ref().map(|c| c.1).unwrap_or_default(),
            root.as_ref().map(|c| c.0.as_str()).unwrap_or_default(),
            root.as_ref().map(|c| c.1).unwrap_or_default(),
        ),
    )
}
