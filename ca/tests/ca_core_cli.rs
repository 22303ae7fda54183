//! `jalin ca` round trip: init-dev -> inspect -> check -> issue, verified with real openssl;
//! token create; precise failures from check; the 30-day expiry warning.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::SystemTime;

use ca_core_support::*;
use clap::{Parser, Subcommand};
use jalin_ca::cli::{CaCommand, CliError};

/// The shape the `jalin` binary gives it: `jalin ca <sub>`.
#[derive(Parser)]
struct Jalin {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    #[command(subcommand)]
    Ca(CaCommand),
}

fn jalin(args: &[&str]) -> Result<String, CliError> {
    let parsed = Jalin::try_parse_from(std::iter::once("jalin").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let Top::Ca(cmd) = parsed.cmd;
    let mut out = Vec::new();
    cmd.run_to(&mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn init_dev_check_issue_round_trip_verified_by_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = jalin(&[
        "ca",
        "init-dev",
        "--out-dir",
        p(d),
        "--trust-domain",
        "mesh.agency.example",
    ])
    .unwrap();
    assert!(out.contains("NOT FOR PRODUCTION"), "{out}");
    for key in ["root-key.pem", "intermediate-key.pem"] {
        let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let inter_text = openssl_text(&d.join("intermediate.pem"));
    assert!(inter_text.contains("NOT FOR PRODUCTION"), "{inter_text}");
    assert!(
        inter_text.contains("Permitted:") && inter_text.contains("DNS:mesh.agency.example"),
        "{inter_text}"
    );
    assert!(inter_text.contains("CA:TRUE, pathlen:0"), "{inter_text}");
    // Refuses to overwrite without --force.
    assert!(matches!(
        jalin(&[
            "ca",
            "init-dev",
            "--out-dir",
            p(d),
            "--trust-domain",
            "mesh.agency.example"
        ]),
        Err(CliError::Exists(_))
    ));

    let chain = d.join("intermediate.pem");
    let roots = d.join("root.pem");
    let key = d.join("intermediate-key.pem");
    let out = jalin(&[
        "ca",
        "inspect",
        "--chain",
        p(&chain),
        "--roots",
        p(&roots),
        "--trust-domain",
        "mesh.agency.example",
    ])
    .unwrap();
    assert!(
        out.contains("#0 issuing intermediate") && out.contains("#1 root"),
        "{out}"
    );
    assert!(
        out.contains("days left") && out.contains("permitted DNS:mesh.agency.example"),
        "{out}"
    );
    assert!(
        out.contains("364 days left") || out.contains("365 days left"),
        "{out}"
    );

    let out = jalin(&[
        "ca",
        "check",
        "--chain",
        p(&chain),
        "--roots",
        p(&roots),
        "--trust-domain",
        "mesh.agency.example",
        "--key",
        p(&key),
    ])
    .unwrap();
    assert!(
        out.starts_with("key: PKCS#8 file") && out.contains("OK: chain valid"),
        "{out}"
    );

    let cert = d.join("host.pem");
    let host_key = d.join("host-key.pem");
    let audit = d.join("audit.jsonl");
    let out = jalin(&[
        "ca",
        "issue",
        "--chain",
        p(&chain),
        "--roots",
        p(&roots),
        "--key",
        p(&key),
        "--trust-domain",
        "mesh.agency.example",
        "--namespace",
        "baremetal",
        "--service-account",
        "db-01",
        "--ttl",
        "12h",
        "--out-cert",
        p(&cert),
        "--out-key",
        p(&host_key),
        "--audit-log",
        p(&audit),
    ])
    .unwrap();
    assert!(
        out.contains("issued spiffe://mesh.agency.example/ns/baremetal/sa/db-01"),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&host_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (leaf, _) = split_leaf(&std::fs::read_to_string(&cert).unwrap());
    let leaf_path = d.join("leaf.pem");
    std::fs::write(&leaf_path, leaf).unwrap();
    let (ok, text) = openssl_verify(&roots, &chain, &leaf_path);
    assert!(ok, "{text}");
    let leaf_text = openssl_text(&leaf_path);
    for want in [
        "URI:spiffe://mesh.agency.example/ns/baremetal/sa/db-01",
        "CA:FALSE",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "Digital Signature",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        "ASN1 OID: prime256v1",
    ] {
        assert!(leaf_text.contains(want), "missing {want}: {leaf_text}");
    }
    assert!(!leaf_text.contains("Key Encipherment"), "{leaf_text}");
    // The key file matches the certificate.
    let pubkey = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", p(&leaf_path)]),
        pubkey(&["pkey", "-pubout", "-in", p(&host_key)])
    );
    let line = std::fs::read_to_string(&audit).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(event["event"], "certificate_issued");
    assert_eq!(event["auth_method"], "cli");
    assert_eq!(event["ttl_seconds"], 12 * 3600);

    // Above the maximum lifetime: refused.
    let err = jalin(&[
        "ca",
        "issue",
        "--chain",
        p(&chain),
        "--roots",
        p(&roots),
        "--key",
        p(&key),
        "--trust-domain",
        "mesh.agency.example",
        "--namespace",
        "a",
        "--service-account",
        "b",
        "--ttl",
        "2d",
        "--max-ttl",
        "1d",
        "--out-cert",
        p(&d.join("x.pem")),
        "--out-key",
        p(&d.join("x.key")),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("above the maximum"), "{err}");

    // A bundle that lacks the root: refused, naming the certificate and what to do.
    let err = jalin(&[
        "ca",
        "check",
        "--chain",
        p(&chain),
        "--roots",
        p(&chain),
        "--trust-domain",
        "mesh.agency.example",
    ])
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("certificate #0 (issuing intermediate)") && msg.contains("To fix:"),
        "{msg}"
    );
}

#[test]
fn check_refuses_a_chain_from_another_root_and_a_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    jalin(&["ca", "init-dev", "--out-dir", p(&a)]).unwrap();
    jalin(&["ca", "init-dev", "--out-dir", p(&b)]).unwrap();
    let err = jalin(&[
        "ca",
        "check",
        "--chain",
        p(&a.join("intermediate.pem")),
        "--roots",
        p(&b.join("root.pem")),
    ])
    .unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let msg = err.to_string();
    assert!(
        msg.contains("jalin DEV intermediate cluster.local - NOT FOR PRODUCTION"),
        "{msg}"
    );

    // Root rotation: a bundle with both roots accepts either chain.
    let bundle = dir.path().join("bundle.pem");
    let both = format!(
        "{}{}",
        std::fs::read_to_string(a.join("root.pem")).unwrap(),
        std::fs::read_to_string(b.join("root.pem")).unwrap()
    );
    std::fs::write(&bundle, both).unwrap();
    for side in [&a, &b] {
        jalin(&[
            "ca",
            "check",
            "--chain",
            p(&side.join("intermediate.pem")),
            "--roots",
            p(&bundle),
        ])
        .unwrap();
    }

    let err = jalin(&[
        "ca",
        "check",
        "--chain",
        p(&a.join("intermediate.pem")),
        "--roots",
        p(&a.join("root.pem")),
        "--key",
        p(&b.join("intermediate-key.pem")),
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("does not match the intermediate"),
        "{err}"
    );

    let err = jalin(&[
        "ca",
        "check",
        "--chain",
        p(&dir.path().join("missing.pem")),
        "--roots",
        p(&bundle),
    ])
    .unwrap_err();
    assert!(err.to_string().contains("missing.pem"), "{err}");
}

#[test]
fn token_create_prints_a_one_time_token_stored_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokens.json");
    let out = jalin(&[
        "ca",
        "token",
        "create",
        "--store",
        p(&store),
        "--namespace",
        "baremetal",
        "--service-account",
        "db-01",
        "--ttl",
        "15m",
    ])
    .unwrap();
    let token = out.trim();
    assert!(token.starts_with("jlt_") && token.len() == 68, "{out}");
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(!stored.contains(token));
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let s = jalin_ca::auth::JoinTokenStore::at_path(&store);
    let id = s.redeem(token, None, SystemTime::now()).unwrap();
    assert_eq!(
        id.to_string(),
        "spiffe://cluster.local/ns/baremetal/sa/db-01"
    );
}

#[test]
fn expiry_metrics_warn_thirty_days_ahead() {
    let now = SystemTime::now();
    let dev = jalin_ca::cli::make_dev_ca("cluster.local", 400 * DAY, 20 * DAY, now).unwrap();
    let chain =
        jalin_ca::chain::certs_from_pem(dev.intermediate_pem.as_bytes(), "i".as_ref()).unwrap();
    let roots = jalin_ca::chain::certs_from_pem(dev.root_pem.as_bytes(), "r".as_ref()).unwrap();
    let report = jalin_ca::chain::validate_chain(&chain, &roots, "cluster.local", now).unwrap();
    let warnings = jalin_ca::metrics::record_chain_expiry(&report, now);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("intermediate") && warnings[0].contains("20 day"),
        "{warnings:?}"
    );
    // 380 days on, the root warns too (the intermediate has long expired).
    let later = now + 380 * DAY;
    let warnings = jalin_ca::metrics::record_chain_expiry(&report, later);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[1].contains("root"), "{warnings:?}");
}
