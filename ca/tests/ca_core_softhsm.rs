//! HSM acceptance (SoftHSM2): the intermediate's key is generated inside a token and never
//! leaves it; the CA imports it by PKCS#11 URI, issues workload certificates, and real openssl
//! verifies them against the root. One test per process: PKCS#11 modules are process-global.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use ca_core_support::*;
use jalin_ca::chain::KeySource;
use jalin_ca::issue::{
    AuditContext, AuditLog, CaConfig, TtlPolicy, WorkloadCa, check_csr, new_workload_csr,
};
use jalin_ca::signer::SignerError;
use jalin_ca::spiffe::SpiffeId;

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "1234";

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found && Path::new(MODULE).exists(),
        "{tool} or {MODULE} is missing: this test needs SoftHSM2 and OpenSC; run scripts/test.sh, which installs them"
    );
}

fn run(conf: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .env("SOFTHSM2_CONF", conf)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `pkcs11-tool` against the SoftHSM module's `jalin` token.
fn pkcs11_tool(conf: &Path, args: &[&str]) -> String {
    let mut all = vec!["--module", MODULE, "--token-label", "jalin"];
    all.extend_from_slice(args);
    run(conf, "pkcs11-tool", &all)
}

/// Generates an EC key pair of `key_type` inside the token, as `label` with CKA_ID `id`.
fn keypairgen(conf: &Path, key_type: &str, label: &str, id: &str) {
    pkcs11_tool(
        conf,
        &[
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
            "--id",
            id,
        ],
    );
}

/// A read-only session on the token, through a module handle of this process's own.
fn token_ro_session() -> cryptoki::session::Session {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    let ctx = Pkcs11::new(MODULE).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx.get_slots_with_token().unwrap()[0];
    ctx.open_ro_session(slot).unwrap()
}

/// Issues a certificate for service account `sa` in `prod` and writes its leaf to `path`.
fn issue_leaf(ca: &WorkloadCa, ctx: &AuditContext, sa: &str, path: &Path) {
    let id = SpiffeId::new_workload("cluster.local", "prod", sa).unwrap();
    let (csr, _key) = new_workload_csr(&id).unwrap();
    let issued = ca
        .issue(ctx, &id, &check_csr(&csr).unwrap(), 3600, now())
        .unwrap();
    std::fs::write(path, split_leaf(&issued.chain_pem).0).unwrap();
}

/// Reads the public EC point of `label` and wraps it as a P-384 SubjectPublicKeyInfo (DER).
fn p384_spki_from_token(label: &str) -> Vec<u8> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let session = token_ro_session();
    let objs = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    let attrs = session
        .get_attributes(objs[0], &[AttributeType::EcPoint])
        .unwrap();
    let Some(Attribute::EcPoint(wrapped)) = attrs.into_iter().next() else {
        panic!("no CKA_EC_POINT");
    };
    // CKA_EC_POINT is a DER OCTET STRING (04 61 || point) around the 97-byte uncompressed point.
    assert_eq!(&wrapped[..2], &[0x04, 0x61]);
    let point = &wrapped[2..];
    let mut spki = vec![
        0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05,
        0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
    ];
    spki.extend_from_slice(point);
    spki
}

#[test]
fn intermediate_key_in_softhsm_issues_openssl_verified_certificates() {
    require("softhsm2-util");
    require("pkcs11-tool");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    // The in-process module reads SOFTHSM2_CONF at C_Initialize. This test is alone in its
    // process and sets the variable before any thread touches the environment.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
    }

    run(
        &conf,
        "softhsm2-util",
        &[
            "--init-token",
            "--free",
            "--label",
            "jalin",
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ],
    );
    keypairgen(&conf, "EC:prime256v1", "mesh-ca", "01");
    let pub_der = dir.path().join("pub.der");
    pkcs11_tool(
        &conf,
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            "mesh-ca",
            "-o",
            pub_der.to_str().unwrap(),
        ],
    );
    let listing = pkcs11_tool(
        &conf,
        &[
            "--login",
            "--pin",
            PIN,
            "--list-objects",
            "--type",
            "privkey",
        ],
    );
    assert!(listing.contains("never extractable"), "{listing}");

    // The test root signs an intermediate over the token's public key.
    let root_ca = root("Test Agency Root", Some(1));
    let spki = rcgen::SubjectPublicKeyInfo::from_der(&std::fs::read(&pub_der).unwrap()).unwrap();
    let inter = ca_params("Mesh HSM Intermediate", Some(0))
        .signed_by(&spki, &root_ca)
        .unwrap();
    let root_pem = dir.path().join("root.pem");
    let inter_pem = dir.path().join("intermediate.pem");
    write_pem(&root_pem, &[der(&root_ca)]);
    write_pem(&inter_pem, &[inter.der().clone()]);

    // The PIN comes from a file named in the URI.
    let pin_file = dir.path().join("pin");
    std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
    let uri = format!(
        "pkcs11:token=jalin;object=mesh-ca;type=private?module-path={MODULE}&pin-source=file:{}",
        pin_file.display()
    );

    // A wrong PIN is refused at start-up, saying so.
    let bad_uri = format!("pkcs11:token=jalin;object=mesh-ca?module-path={MODULE}&pin-value=0000");
    let config = |key: &str| CaConfig {
        trust_domain: "cluster.local".into(),
        chain_path: inter_pem.clone(),
        roots_path: root_pem.clone(),
        key: key.parse::<KeySource>().unwrap(),
        ttl: TtlPolicy::default(),
    };
    let err = WorkloadCa::load(&config(&bad_uri), AuditLog::in_memory().0, now()).unwrap_err();
    assert!(
        matches!(
            &err,
            jalin_ca::issue::CaLoadError::Signer(SignerError::Pkcs11 {
                what: "logging in",
                ..
            })
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("0000"), "PIN leaked: {err}");

    let (audit, audit_buf) = AuditLog::in_memory();
    let ca = WorkloadCa::load(&config(&uri), audit, now()).unwrap();
    let ctx = AuditContext {
        auth_method: Some("test"),
        ..Default::default()
    };
    for (i, sa) in ["web", "db", "batch"].iter().enumerate() {
        let leaf: PathBuf = dir.path().join(format!("leaf{i}.pem"));
        issue_leaf(&ca, &ctx, sa, &leaf);
        let (ok, text) = openssl_verify(&root_pem, &inter_pem, &leaf);
        assert!(ok, "openssl verify failed: {text}");
        let dump = openssl_text(&leaf);
        assert!(
            dump.contains(&format!("URI:spiffe://cluster.local/ns/prod/sa/{sa}")),
            "{dump}"
        );
        assert!(dump.contains("ecdsa-with-SHA256"), "{dump}");
    }
    // The HSM drops the login (as after an HSM restart): the signer logs in again and goes on.
    token_ro_session().logout().unwrap();
    let leaf = dir.path().join("leaf-after-logout.pem");
    issue_leaf(&ca, &ctx, "after-logout", &leaf);
    let (ok, text) = openssl_verify(&root_pem, &inter_pem, &leaf);
    assert!(ok, "openssl verify failed after re-login: {text}");

    let events = audit_buf.events();
    assert_eq!(events.len(), 4);

    // A P-384 intermediate key in the same token: SHA-384 hash, CKM_ECDSA, DER signature.
    keypairgen(&conf, "EC:secp384r1", "mesh-ca-384", "02");
    // pkcs11-tool cannot export P-384 public keys: read CKA_EC_POINT with cryptoki instead.
    let spki384 =
        rcgen::SubjectPublicKeyInfo::from_der(&p384_spki_from_token("mesh-ca-384")).unwrap();
    let inter384 = ca_params("Mesh HSM Intermediate P-384", Some(0))
        .signed_by(&spki384, &root_ca)
        .unwrap();
    let inter384_pem = dir.path().join("intermediate384.pem");
    write_pem(&inter384_pem, &[inter384.der().clone()]);
    let uri384 = format!(
        "pkcs11:token=jalin;id=%02?module-path={MODULE}&pin-source=file:{}",
        pin_file.display()
    );
    let mut cfg384 = config(&uri384);
    cfg384.chain_path = inter384_pem.clone();
    let ca384 = WorkloadCa::load(&cfg384, AuditLog::in_memory().0, now()).unwrap();
    let leaf = dir.path().join("leaf384.pem");
    issue_leaf(&ca384, &ctx, "p384", &leaf);
    let (ok, text) = openssl_verify(&root_pem, &inter384_pem, &leaf);
    assert!(
        ok,
        "openssl verify failed for the P-384 intermediate: {text}"
    );
    assert!(openssl_text(&leaf).contains("ecdsa-with-SHA384"));
    assert!(events.iter().all(|e| e["event"] == "certificate_issued"));
}
