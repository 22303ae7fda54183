//! Importing a chain made by openssl, as an agency PKI would hand it over (PKCS#8 key, DER
//! string types chosen by openssl, critical DNS name constraints), then issuing under it and
//! verifying with openssl. A subject with a multi-valued RDN, which rcgen cannot reproduce as
//! an issuer name, is refused at start-up rather than producing leaves that do not chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;

use std::path::Path;
use std::process::Command;

use ca_core_support::*;
use jalin_ca::chain::KeySource;
use jalin_ca::issue::{
    AuditContext, AuditLog, CaConfig, CaLoadError, TtlPolicy, WorkloadCa, check_csr,
    new_workload_csr,
};
use jalin_ca::spiffe::SpiffeId;

const EXT: &str = "[root]
basicConstraints = critical, CA:TRUE, pathlen:1
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
nameConstraints = critical, permitted;DNS:cluster.local
";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed: run scripts/test.sh");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes root.pem/root.key and inter.pem/inter.key in `dir` with the given subjects.
fn openssl_pki(dir: &Path, root_subject: &str, inter_subject: &str) {
    std::fs::write(dir.join("ext.cnf"), EXT).unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "root.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root.key",
            "-subj",
            root_subject,
            "-multivalue-rdn",
            "-days",
            "30",
            "-out",
            "root.pem",
            "-config",
            "ext.cnf",
            "-extensions",
            "root",
        ],
    );
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "inter.key",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "inter.key",
            "-subj",
            inter_subject,
            "-multivalue-rdn",
            "-out",
            "inter.csr",
            "-config",
            "ext.cnf",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "inter.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            "ext.cnf",
            "-extensions",
            "inter",
            "-out",
            "inter.pem",
        ],
    );
}

fn load(dir: &Path) -> Result<WorkloadCa, CaLoadError> {
    let config = CaConfig {
        trust_domain: "cluster.local".into(),
        chain_path: dir.join("inter.pem"),
        roots_path: dir.join("root.pem"),
        key: KeySource::Pkcs8File(dir.join("inter.key")),
        ttl: TtlPolicy::default(),
    };
    WorkloadCa::load(&config, AuditLog::in_memory().0, now())
}

#[test]
fn openssl_made_agency_chain_issues_verifiable_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_pki(
        d,
        "/C=NL/O=Government Agency/OU=PKI/CN=Agency Test Root",
        "/C=NL/O=Government Agency/OU=Mesh/CN=Mesh Intermediate",
    );
    let ca = load(d).unwrap();
    assert!(ca.report().certs[1].subject.contains("Agency Test Root"));
    let id = SpiffeId::new_workload("cluster.local", "welfare", "case-api").unwrap();
    let csr = check_csr(&new_workload_csr(&id).unwrap().0).unwrap();
    let issued = ca
        .issue(&AuditContext::default(), &id, &csr, 600, now())
        .unwrap();
    let leaf = d.join("leaf.pem");
    std::fs::write(&leaf, split_leaf(&issued.chain_pem).0).unwrap();
    let (ok, text) = openssl_verify(&d.join("root.pem"), &d.join("inter.pem"), &leaf);
    assert!(ok, "{text}");
}

#[test]
fn multi_valued_rdn_subject_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl_pki(
        d,
        "/C=NL/O=Government Agency/OU=PKI+CN=Agency Test Root",
        "/C=NL/O=Government Agency/OU=Mesh+CN=Mesh Intermediate",
    );
    let err = load(d).unwrap_err();
    assert!(
        matches!(err, CaLoadError::UnsupportedIssuerName { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("Mesh Intermediate") && msg.contains("multi-valued"),
        "{msg}"
    );
}
