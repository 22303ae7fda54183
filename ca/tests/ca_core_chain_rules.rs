//! Chain-rule acceptance: every start-up rule, violated one at a time, is refused with the
//! certificate (subject and position) and the rule that failed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ca_core_support;

use ca_core_support::*;
use jalin_ca::chain::{CertRole, ChainError, ChainRule, validate_chain};
use jalin_ca::issue::{AuditLog, CaLoadError, TtlPolicy, WorkloadCa};
use jalin_ca::signer::{CaSigner, SignerError};
use rcgen::{IsCa, KeyUsagePurpose};

const TD: &str = "cluster.local";

fn check(
    chain: &[rustls_pki_types::CertificateDer<'static>],
    roots: &[rustls_pki_types::CertificateDer<'static>],
) -> Result<jalin_ca::chain::ChainReport, ChainError> {
    validate_chain(chain, roots, TD, now())
}

#[test]
fn valid_chain_and_root_rotation() {
    let old_root = root("Old Root", Some(1));
    let new_root = root("New Root", Some(1));
    let inter = intermediate(ca_params("Mesh CA", Some(0)), &new_root);
    // Bundle holds both roots during a rotation; the chain anchors on the second.
    let report = check(&[der(&inter)], &[der(&old_root), der(&new_root)]).unwrap();
    assert_eq!(report.root_index, 1);
    assert_eq!(report.certs.len(), 2);
    assert_eq!(report.certs[0].role, CertRole::IssuingIntermediate);
    assert!(report.certs[1].subject.contains("New Root"));
    // A chain file that ends with the root is accepted too.
    check(&[der(&inter), der(&new_root)], &[der(&new_root)]).unwrap();
}

struct Case {
    name: &'static str,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    roots: Vec<rustls_pki_types::CertificateDer<'static>>,
    position: usize,
    subject: &'static str,
    rule: fn(&ChainRule) -> bool,
}

#[test]
fn each_rule_violated_is_refused_precisely() {
    let r = root("Agency Root", Some(2));
    let mut cases = Vec::new();

    let mut p = ca_params("Not A CA", Some(0));
    p.is_ca = IsCa::ExplicitNoCa;
    cases.push(Case {
        name: "CA:false",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Not A CA",
        rule: |r| matches!(r, ChainRule::NotCa),
    });

    let mut p = ca_params("No BC", Some(0));
    p.is_ca = IsCa::NoCa;
    cases.push(Case {
        name: "no basicConstraints",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "No BC",
        rule: |r| matches!(r, ChainRule::MissingBasicConstraints),
    });

    let mut p = ca_params("No CertSign", Some(0));
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    cases.push(Case {
        name: "no keyCertSign",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "No CertSign",
        rule: |r| matches!(r, ChainRule::NoKeyCertSign),
    });

    let mut p = ca_params("Expired CA", Some(0));
    p.not_before = (now() - 30 * DAY).into();
    p.not_after = (now() - DAY).into();
    cases.push(Case {
        name: "expired",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Expired CA",
        rule: |r| matches!(r, ChainRule::Expired { .. }),
    });

    let mut p = ca_params("Future CA", Some(0));
    p.not_before = (now() + DAY).into();
    cases.push(Case {
        name: "not yet valid",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Future CA",
        rule: |r| matches!(r, ChainRule::NotYetValid { .. }),
    });

    // pathLen: an upper intermediate with pathLen 0 cannot have another CA below it.
    let upper = intermediate(ca_params("Upper CA pathLen0", Some(0)), &r);
    let lower = intermediate(ca_params("Lower CA", Some(0)), &upper);
    cases.push(Case {
        name: "pathLen of intermediate",
        chain: vec![der(&lower), der(&upper)],
        roots: vec![der(&r)],
        position: 1,
        subject: "Upper CA pathLen0",
        rule: |r| {
            matches!(
                r,
                ChainRule::PathLenExceeded {
                    path_len: 0,
                    below: 1
                }
            )
        },
    });

    // pathLen on the root: root pathLen 0 allows no intermediate at all.
    let strict_root = root("Strict Root", Some(0));
    let under_strict = intermediate(ca_params("Under Strict", Some(0)), &strict_root);
    cases.push(Case {
        name: "pathLen of root",
        chain: vec![der(&under_strict)],
        roots: vec![der(&strict_root)],
        position: 1,
        subject: "Strict Root",
        rule: |r| {
            matches!(
                r,
                ChainRule::PathLenExceeded {
                    path_len: 0,
                    below: 1
                }
            )
        },
    });

    // URI name constraints that do not permit the trust domain.
    let mut p = ca_params("Other Domain CA", Some(0));
    p.custom_extensions
        .push(uri_name_constraints(&["other.example"], &[]));
    cases.push(Case {
        name: "URI permitted subtree misses trust domain",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Other Domain CA",
        rule: |r| matches!(r, ChainRule::TrustDomainNotPermitted { .. }),
    });

    let mut p = ca_params("Excluding CA", Some(0));
    p.custom_extensions
        .push(uri_name_constraints(&[], &["cluster.local"]));
    cases.push(Case {
        name: "URI excluded subtree hits trust domain",
        chain: vec![der(&intermediate(p, &r))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Excluding CA",
        rule: |r| matches!(r, ChainRule::TrustDomainExcluded { .. }),
    });

    // Signed by another root that is not configured.
    let stranger = root("Stranger Root", Some(1));
    cases.push(Case {
        name: "other root",
        chain: vec![der(&intermediate(
            ca_params("Foreign CA", Some(0)),
            &stranger,
        ))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Foreign CA",
        rule: |r| matches!(r, ChainRule::NoMatchingRoot { .. }),
    });

    // Same root name, different key: the signature does not verify.
    let impostor = root("Agency Root", Some(2));
    cases.push(Case {
        name: "bad signature",
        chain: vec![der(&intermediate(
            ca_params("Impostor CA", Some(0)),
            &impostor,
        ))],
        roots: vec![der(&r)],
        position: 0,
        subject: "Impostor CA",
        rule: |r| matches!(r, ChainRule::BadSignature { .. }),
    });

    // Chain out of order.
    let a = intermediate(ca_params("Upper", Some(1)), &r);
    let b = intermediate(ca_params("Lower", Some(0)), &a);
    cases.push(Case {
        name: "out of order",
        chain: vec![der(&a), der(&b)],
        roots: vec![der(&r)],
        position: 0,
        subject: "Upper",
        rule: |r| matches!(r, ChainRule::OutOfOrder { .. }),
    });

    // Expired root.
    let mut rp = ca_params("Old Expired Root", Some(1));
    rp.use_authority_key_identifier_extension = false;
    rp.not_before = (now() - 30 * DAY).into();
    rp.not_after = (now() - DAY).into();
    let expired_root = rcgen::CertifiedIssuer::self_signed(rp, p256()).unwrap();
    let mut ip = ca_params("Under Expired Root", Some(0));
    ip.not_before = (now() - 20 * DAY).into();
    cases.push(Case {
        name: "expired root",
        chain: vec![der(&intermediate(ip, &expired_root))],
        roots: vec![der(&expired_root)],
        position: 1,
        subject: "Old Expired Root",
        rule: |r| matches!(r, ChainRule::Expired { .. }),
    });

    for c in &cases {
        let err = check(&c.chain, &c.roots).expect_err(c.name);
        assert_eq!(err.position, c.position, "{}: {err}", c.name);
        assert!(err.subject.contains(c.subject), "{}: {err}", c.name);
        assert!((c.rule)(&err.rule), "{}: wrong rule: {err}", c.name);
        let msg = err.to_string();
        assert!(
            msg.contains(c.subject)
                && msg.contains(&format!("#{}", c.position))
                && msg.contains("To fix:"),
            "{}: {msg}",
            c.name
        );
    }

    assert!(matches!(
        check(&[], &[der(&r)]).unwrap_err().rule,
        ChainRule::EmptyChain
    ));
    let i = intermediate(ca_params("Fine", Some(0)), &r);
    assert!(matches!(
        check(&[der(&i)], &[]).unwrap_err().rule,
        ChainRule::EmptyRootBundle
    ));
}

#[test]
fn uri_constraints_permitting_the_domain_pass_with_a_warning() {
    let r = root("Agency Root", Some(1));
    let mut p = ca_params("Constrained CA", Some(0));
    p.custom_extensions
        .push(uri_name_constraints(&["cluster.local"], &[".evil.example"]));
    let report = check(&[der(&intermediate(p, &r))], &[der(&r)]).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

#[test]
fn key_must_match_the_intermediate() {
    let r = root("Agency Root", Some(1));
    let inter = intermediate(ca_params("Mesh CA", Some(0)), &r);
    let other_key = CaSigner::from_pkcs8_pem(&p256().serialize_pem()).unwrap();
    let err = WorkloadCa::new(
        TD,
        vec![der(&inter)],
        vec![der(&r)],
        other_key,
        TtlPolicy::default(),
        AuditLog::in_memory().0,
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CaLoadError::Signer(SignerError::KeyMismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("Mesh CA"), "{err}");

    let good = CaSigner::from_pkcs8_pem(&inter.key().serialize_pem()).unwrap();
    WorkloadCa::new(
        TD,
        vec![der(&inter)],
        vec![der(&r)],
        good,
        TtlPolicy::default(),
        AuditLog::in_memory().0,
        now(),
    )
    .unwrap();
}
