//! `jalin ca init-dev`: a development root and intermediate, labelled NOT FOR PRODUCTION in their
//! subjects, with a DNS name constraint on the trust domain. The trust domain itself is enforced
//! in code at issuance; URI name constraints are not written because rcgen cannot write URI
//! subtrees and rustls-webpki refuses every leaf under one.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::KeyPair;

use super::{CliError, files, say};
use crate::chain::certs_to_pem;
pub use crate::identity::dev_ca::DEV_LABEL;
use crate::identity::dev_ca::dev_ca_params;
use crate::spiffe::TrustDomain;

/// Arguments of `jalin ca init-dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitDevArgs {
    /// Directory for root.pem, root-key.pem, intermediate.pem, intermediate-key.pem.
    #[arg(long)]
    pub out_dir: PathBuf,
    /// SPIFFE trust domain the CA will issue for.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Root lifetime, e.g. 3650d.
    #[arg(long, default_value = "3650d", value_parser = files::parse_duration)]
    pub root_validity: Duration,
    /// Intermediate lifetime, e.g. 365d.
    #[arg(long, default_value = "365d", value_parser = files::parse_duration)]
    pub intermediate_validity: Duration,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Files written by `init-dev`.
#[derive(Debug, Clone)]
pub struct DevChainPem {
    pub root_pem: String,
    pub root_key_pem: String,
    pub intermediate_pem: String,
    pub intermediate_key_pem: String,
}

/// Makes the development root and intermediate in memory.
pub fn make_dev_ca(
    trust_domain: &str,
    root_validity: Duration,
    intermediate_validity: Duration,
    now: SystemTime,
) -> Result<DevChainPem, CliError> {
    let gen_err = |e: rcgen::Error| CliError::Generate(e.to_string());
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let mut root_params = dev_ca_params(
        &format!("jalin DEV root {trust_domain} - {DEV_LABEL}"),
        1,
        Some(trust_domain),
        now,
        now + root_validity,
    );
    root_params.use_authority_key_identifier_extension = false;
    let root = rcgen::CertifiedIssuer::self_signed(root_params, root_key).map_err(gen_err)?;
    let inter_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err)?;
    let inter_params = dev_ca_params(
        &format!("jalin DEV intermediate {trust_domain} - {DEV_LABEL}"),
        0,
        Some(trust_domain),
        now,
        now + intermediate_validity.min(root_validity),
    );
    let inter_cert = inter_params.signed_by(&inter_key, &root).map_err(gen_err)?;
    Ok(DevChainPem {
        root_pem: certs_to_pem([root.der()]),
        root_key_pem: root.key().serialize_pem(),
        intermediate_pem: certs_to_pem([inter_cert.der()]),
        intermediate_key_pem: inter_key.serialize_pem(),
    })
}

pub(super) fn run(a: &InitDevArgs, out: &mut dyn Write, now: SystemTime) -> Result<(), CliError> {
    TrustDomain::new(&a.trust_domain)?;
    std::fs::create_dir_all(&a.out_dir).map_err(CliError::io(&a.out_dir))?;
    let names = [
        "root.pem",
        "root-key.pem",
        "intermediate.pem",
        "intermediate-key.pem",
    ];
    if !a.force {
        for n in names {
            let p = a.out_dir.join(n);
            if p.exists() {
                return Err(CliError::Exists(p));
            }
        }
    }
    let dev = make_dev_ca(
        &a.trust_domain,
        a.root_validity,
        a.intermediate_validity,
        now,
    )?;
    for (name, body, private) in [
        ("root.pem", &dev.root_pem, false),
        ("root-key.pem", &dev.root_key_pem, true),
        ("intermediate.pem", &dev.intermediate_pem, false),
        ("intermediate-key.pem", &dev.intermediate_key_pem, true),
    ] {
        let p = a.out_dir.join(name);
        if private {
            files::write_private(&p, body.as_bytes()).map_err(CliError::io(&p))?;
        } else {
            std::fs::write(&p, body).map_err(CliError::io(&p))?;
        }
    }
    let warning = format!(
        "WARNING: development CA ({DEV_LABEL}). The root key sits on disk next to it. \
         Production meshes import an intermediate issued by the agency PKI."
    );
    eprintln!("{warning}");
    say(out, &warning)?;
    say(
        out,
        &format!(
            "wrote {dir}/root.pem, root-key.pem, intermediate.pem, intermediate-key.pem (trust domain {td}, DNS name constraint {td})",
            dir = a.out_dir.display(),
            td = a.trust_domain
        ),
    )
}
