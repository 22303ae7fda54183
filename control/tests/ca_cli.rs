//! `jalin ca ...` through the real `jalin` binary: a development CA made by `init-dev` checks
//! clean; a chain under the wrong root, and a corrupted chain file, fail with precise messages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn jalin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args(args)
        .output()
        .expect("run jalin")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn check(chain: &Path, roots: &Path) -> Output {
    jalin(&["ca", "check", "--chain", p(chain), "--roots", p(roots)])
}

#[test]
fn init_dev_then_check_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let o = jalin(&["ca", "init-dev", "--out-dir", p(&ca)]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    for f in [
        "root.pem",
        "root-key.pem",
        "intermediate.pem",
        "intermediate-key.pem",
    ] {
        assert!(ca.join(f).exists(), "{f} written");
    }
    let o = jalin(&[
        "ca",
        "check",
        "--chain",
        p(&ca.join("intermediate.pem")),
        "--roots",
        p(&ca.join("root.pem")),
        "--key",
        p(&ca.join("intermediate-key.pem")),
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("matches the intermediate"), "{out}");
    assert!(
        out.contains("OK: chain valid for trust domain cluster.local"),
        "{out}"
    );

    // init-dev refuses to overwrite without --force.
    let o = jalin(&["ca", "init-dev", "--out-dir", p(&ca)]);
    assert_eq!(o.status.code(), Some(1));
    let (_, err) = text(&o);
    assert!(err.starts_with("jalin ca: "), "{err}");
    assert!(err.contains("exists; pass --force to overwrite"), "{err}");
}

#[test]
fn a_broken_chain_fails_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for d in [&a, &b] {
        let o = jalin(&["ca", "init-dev", "--out-dir", p(d)]);
        assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    }
    // The intermediate of one CA under the root of another.
    let o = check(&a.join("intermediate.pem"), &b.join("root.pem"));
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unusable chain exits 2: {out}{err}"
    );
    assert!(!out.contains("OK"), "{out}");
    assert!(err.starts_with("jalin ca: "), "{err}");
    assert!(
        err.contains("CA chain refused: certificate #0 (issuing intermediate) subject \"O=jalin development (NOT FOR PRODUCTION), CN=jalin DEV intermediate cluster.local - NOT FOR PRODUCTION\" signature does not verify with the key of \"O=jalin development (NOT FOR PRODUCTION), CN=jalin DEV root cluster.local - NOT FOR PRODUCTION\""),
        "the message names the certificate and the rule: {err}"
    );
    assert!(err.contains("To fix: "), "and says what to do: {err}");

    // A corrupted chain file.
    let bad = dir.path().join("bad.pem");
    let pem = std::fs::read_to_string(a.join("intermediate.pem")).unwrap();
    let mid = pem.len() / 2;
    std::fs::write(&bad, format!("{}!!{}", &pem[..mid], &pem[mid + 2..])).unwrap();
    let o = check(&bad, &a.join("root.pem"));
    let (out, err) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}{err}");
    assert!(
        err.contains(&format!("jalin ca: {}: PEM block 0 is malformed", p(&bad))),
        "the message names the file: {err}"
    );
}
