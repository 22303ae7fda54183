//! Test support for the CA core tests: build roots and intermediates with chosen defects, run
//! real openssl, and make CSRs.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use jalin_ca::chain::certs_to_pem;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
    DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::CertificateDer;

pub const DAY: Duration = Duration::from_secs(86_400);

pub fn now() -> SystemTime {
    SystemTime::now()
}

/// CA parameters: CA:true pathLen, keyCertSign, valid from yesterday for a year.
pub fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Test Agency");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = (now() - DAY).into();
    p.not_after = (now() + 365 * DAY).into();
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = true;
    p
}

pub fn p256() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
}

pub fn root(cn: &str, path_len: Option<u8>) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = ca_params(cn, path_len);
    p.use_authority_key_identifier_extension = false;
    CertifiedIssuer::self_signed(p, p256()).unwrap()
}

pub fn intermediate(
    params: CertificateParams,
    issuer: &rcgen::Issuer<'_, KeyPair>,
) -> CertifiedIssuer<'static, KeyPair> {
    CertifiedIssuer::signed_by(params, p256(), issuer).unwrap()
}

/// A NameConstraints extension with URI subtrees (rcgen cannot write them), DER by hand:
/// NameConstraints ::= SEQUENCE { permittedSubtrees [0] GeneralSubtrees OPTIONAL,
///                                excludedSubtrees  [1] GeneralSubtrees OPTIONAL }
pub fn uri_name_constraints(permitted: &[&str], excluded: &[&str]) -> CustomExtension {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        let mut v = vec![tag, body.len() as u8];
        v.extend_from_slice(body);
        v
    }
    let subtrees = |names: &[&str]| -> Vec<u8> {
        names
            .iter()
            .flat_map(|n| tlv(0x30, &tlv(0x86, n.as_bytes())))
            .collect()
    };
    let mut body = Vec::new();
    if !permitted.is_empty() {
        body.extend(tlv(0xa0, &subtrees(permitted)));
    }
    if !excluded.is_empty() {
        body.extend(tlv(0xa1, &subtrees(excluded)));
    }
    let mut ext = CustomExtension::from_oid_content(&[2, 5, 29, 30], tlv(0x30, &body));
    ext.set_criticality(true);
    ext
}

pub fn der(c: &CertifiedIssuer<'_, KeyPair>) -> CertificateDer<'static> {
    c.der().clone()
}

pub fn write_pem(path: &Path, certs: &[CertificateDer<'static>]) {
    std::fs::write(path, certs_to_pem(certs)).unwrap();
}

/// `openssl verify -CAfile root -untrusted intermediate leaf` (plus purpose and x509_strict).
pub fn openssl_verify(root: &Path, untrusted: &Path, leaf: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(untrusted)
        .arg(leaf)
        .output()
        .expect("openssl must be installed: run scripts/test.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `openssl x509 -noout -text` of a PEM file.
pub fn openssl_text(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .expect("openssl must be installed: run scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Splits a PEM chain into (first cert PEM, rest PEM).
pub fn split_leaf(chain_pem: &str) -> (String, String) {
    let end = "-----END CERTIFICATE-----\n";
    let i = chain_pem.find(end).unwrap() + end.len();
    (chain_pem[..i].to_owned(), chain_pem[i..].to_owned())
}
