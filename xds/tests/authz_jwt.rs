//! RequestAuthentication and JWT validation, with keys generated in the test by aws-lc-rs:
//! algorithms, issuer, audiences, expiry with the caller's clock, token locations, Istio's
//! outcomes (invalid token: 401; no token: no principal), and the hand-off to the engine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "authz_cases/support.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use http::HeaderMap;
use jalin_xds::authz::jwt::{Authn, JwtError, WorkloadAuthn};
use jalin_xds::authz::{EngineConfig, Reason};
use jalin_xds::model::authz::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication};
use jalin_xds::model::{ResourceMeta, WorkloadSelector};
use serde_json::{Value, json};
use support::*;

const ISS: &str = "https://idp.gov.example";
const NOW: u64 = 1_800_000_000;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
}

struct Signer {
    key: Key,
    kid: &'static str,
}

impl Signer {
    fn rsa(kid: &'static str) -> Self {
        Signer {
            key: Key::Rsa(RsaKeyPair::generate(KeySize::Rsa2048).unwrap()),
            kid,
        }
    }
    fn p256(kid: &'static str) -> Self {
        Signer {
            key: Key::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
                "P-256",
            ),
            kid,
        }
    }
    fn p384(kid: &'static str) -> Self {
        Signer {
            key: Key::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING).unwrap(),
                "P-384",
            ),
            kid,
        }
    }

    fn jwk(&self) -> Value {
        match &self.key {
            Key::Rsa(k) => {
                let pk = k.public_key();
                json!({
                    "kty": "RSA", "kid": self.kid, "use": "sig",
                    "n": B64.encode(pk.modulus().big_endian_without_leading_zero()),
                    "e": B64.encode(pk.exponent().big_endian_without_leading_zero()),
                })
            }
            Key::Ec(k, crv) => {
                let p = k.public_key().as_ref();
                let n = (p.len() - 1) / 2;
                json!({"kty": "EC", "kid": self.kid, "crv": crv, "x": B64.encode(&p[1..1 + n]), "y": B64.encode(&p[1 + n..])})
            }
        }
    }

    fn sign(&self, alg: &str, claims: &Value) -> String {
        let header = json!({"alg": alg, "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let rng = SystemRandom::new();
        let sig = match &self.key {
            Key::Rsa(k) => {
                let enc: &'static dyn signature::RsaEncoding = match alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    other => panic!("no RSA encoding for {other}"),
                };
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(enc, &rng, input.as_bytes(), &mut sig).unwrap();
                sig
            }
            Key::Ec(k, _) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
        };
        format!("{input}.{}", B64.encode(sig))
    }
}

fn jwks(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()}).to_string()
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "child-api", "exp": NOW + 300, "iat": NOW, "groups": ["caseworker"]})
}

fn ra(name: &str, rules: Vec<JwtRule>) -> RequestAuthentication {
    RequestAuthentication {
        meta: ResourceMeta {
            name: name.into(),
            namespace: "foo".into(),
            source: None,
        },
        selector: None,
        jwt_rules: rules,
    }
}

fn rule(jwks: String) -> JwtRule {
    JwtRule {
        issuer: ISS.into(),
        jwks: Some(jwks),
        ..Default::default()
    }
}

fn authn_for(ras: &[RequestAuthentication]) -> WorkloadAuthn {
    Authn::compile(ras, "istio-system", &BTreeMap::new())
        .unwrap()
        .for_workload("foo", &labels(&[("app", "httpbin")]))
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("authorization", format!("Bearer {token}").parse().unwrap());
    h
}

#[test]
fn every_supported_algorithm_validates() {
    let rsa = Signer::rsa("r1");
    let p256 = Signer::p256("e1");
    let p384 = Signer::p384("e2");
    let w = authn_for(&[ra("jwt", vec![rule(jwks(&[&rsa, &p256, &p384]))])]);
    for (signer, alg) in [
        (&rsa, "RS256"),
        (&rsa, "RS384"),
        (&rsa, "RS512"),
        (&rsa, "PS256"),
        (&p256, "ES256"),
        (&p384, "ES384"),
    ] {
        let out = w
            .authenticate(&bearer(&signer.sign(alg, &claims())), None, now())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        let auth = out.auth.unwrap_or_else(|| panic!("{alg}: no principal"));
        assert_eq!(auth.principal(), "https://idp.gov.example/alice", "{alg}");
        assert_eq!(auth.audiences(), ["child-api"], "{alg}");
        assert_eq!(
            out.strip_headers,
            vec![http::header::AUTHORIZATION],
            "token is not forwarded by default"
        );
    }
}

#[test]
fn rejected_tokens_give_the_reason() {
    let rsa = Signer::rsa("r1");
    let other = Signer::rsa("r1");
    let mut r = rule(jwks(&[&rsa]));
    r.audiences = vec!["child-api".into(), "other-api".into()];
    let w = authn_for(&[ra("jwt", vec![r])]);
    let check = |token: String| {
        w.authenticate(&bearer(&token), None, now())
            .map(|o| o.auth.is_some())
    };
    let mut c = claims();
    assert_eq!(check(rsa.sign("RS256", &c)), Ok(true));
    c["exp"] = json!(NOW - 30);
    assert_eq!(
        check(rsa.sign("RS256", &c)),
        Ok(true),
        "within the 60 s clock skew"
    );
    c["exp"] = json!(NOW - 61);
    assert_eq!(check(rsa.sign("RS256", &c)), Err(JwtError::Expired));
    let mut c = claims();
    c["nbf"] = json!(NOW + 120);
    assert_eq!(check(rsa.sign("RS256", &c)), Err(JwtError::NotYetValid));
    let mut c = claims();
    c["aud"] = json!(["unrelated"]);
    assert_eq!(
        check(rsa.sign("RS256", &c)),
        Err(JwtError::AudienceNotAllowed)
    );
    c["aud"] = json!(["unrelated", "other-api"]);
    assert_eq!(
        check(rsa.sign("RS256", &c)),
        Ok(true),
        "one allowed audience is enough"
    );
    // Signed by a key that is not in the JWKS (same kid).
    assert_eq!(
        check(other.sign("RS256", &claims())),
        Err(JwtError::BadSignature)
    );
    // Payload swapped after signing.
    let good = rsa.sign("RS256", &claims());
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut evil = claims();
    evil["sub"] = json!("mallory");
    let evil_payload = B64.encode(evil.to_string());
    parts[1] = &evil_payload;
    assert_eq!(check(parts.join(".")), Err(JwtError::BadSignature));
    // Unknown kid.
    let stranger = Signer::rsa("r9");
    assert_eq!(
        check(stranger.sign("RS256", &claims())),
        Err(JwtError::NoMatchingKey)
    );
    // alg none and HMAC are never accepted.
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none"}"#),
        B64.encode(claims().to_string())
    );
    assert_eq!(check(none), Err(JwtError::UnsupportedAlg));
    let hs = format!(
        "{}.{}.c2ln",
        B64.encode(r#"{"alg":"HS256"}"#),
        B64.encode(claims().to_string())
    );
    assert_eq!(check(hs), Err(JwtError::UnsupportedAlg));
    assert_eq!(check("not-a-jwt".into()), Err(JwtError::Malformed));
    assert_eq!(check("a.b.c.d".into()), Err(JwtError::Malformed));
    assert_eq!(
        check(format!("{}.x.y", "e".repeat(20_000))),
        Err(JwtError::TooLarge)
    );
}

#[test]
fn no_token_passes_without_principal_and_unknown_issuer_counts_as_no_token() {
    let rsa = Signer::rsa("r1");
    let w = authn_for(&[ra("jwt", vec![rule(jwks(&[&rsa]))])]);
    assert!(
        w.authenticate(&HeaderMap::new(), None, now())
            .unwrap()
            .auth
            .is_none()
    );
    let mut c = claims();
    c["iss"] = json!("https://elsewhere");
    assert!(
        w.authenticate(&bearer(&rsa.sign("RS256", &c)), None, now())
            .unwrap()
            .auth
            .is_none()
    );
    // A non-bearer Authorization header is not a token.
    let mut h = HeaderMap::new();
    h.insert("authorization", "Basic YTpi".parse().unwrap());
    assert!(w.authenticate(&h, None, now()).unwrap().auth.is_none());
}

#[test]
fn token_locations_headers_and_params() {
    let p256 = Signer::p256("e1");
    let mut r = rule(jwks(&[&p256]));
    r.from_headers = vec![JwtHeader {
        name: "x-jwt-assertion".into(),
        prefix: String::new(),
    }];
    r.from_params = vec!["token".into()];
    r.forward_original_token = true;
    r.output_claim_to_headers = vec![ClaimToHeader {
        header: "x-jwt-groups".into(),
        claim: "groups".into(),
    }];
    let w = authn_for(&[ra("jwt", vec![r])]);
    let tok = p256.sign("ES256", &claims());
    let mut h = HeaderMap::new();
    h.insert("x-jwt-assertion", tok.parse().unwrap());
    let out = w.authenticate(&h, None, now()).unwrap();
    assert!(out.auth.is_some());
    assert!(
        out.strip_headers.is_empty(),
        "forwardOriginalToken keeps the header"
    );
    assert_eq!(
        out.claim_headers,
        vec![(
            http::HeaderName::from_static("x-jwt-groups"),
            "caseworker".to_string()
        )]
    );
    let q = format!("a=1&token={tok}");
    assert!(
        w.authenticate(&HeaderMap::new(), Some(&q), now())
            .unwrap()
            .auth
            .is_some()
    );
    // The default Authorization header is not read when locations are configured.
    assert!(
        w.authenticate(&bearer(&tok), None, now())
            .unwrap()
            .auth
            .is_none()
    );
    // The default query parameter is access_token.
    let w = authn_for(&[ra("jwt", vec![rule(jwks(&[&p256]))])]);
    assert!(
        w.authenticate(
            &HeaderMap::new(),
            Some(&format!("access_token={tok}")),
            now()
        )
        .unwrap()
        .auth
        .is_some()
    );
}

#[test]
fn jwks_uri_documents_come_from_the_caller_and_missing_ones_fail_closed() {
    let rsa = Signer::rsa("r1");
    let mut r = rule(String::new());
    r.jwks = None;
    r.jwks_uri = Some("https://idp.gov.example/jwks".into());
    let ras = [ra("jwt", vec![r])];
    assert_eq!(
        jalin_xds::authz::jwt::jwks_uris(&ras)
            .into_iter()
            .collect::<Vec<_>>(),
        ["https://idp.gov.example/jwks"]
    );
    let fetched = BTreeMap::from([("https://idp.gov.example/jwks".to_string(), jwks(&[&rsa]))]);
    let lb = labels(&[]);
    let ok = Authn::compile(&ras, "istio-system", &fetched).unwrap();
    assert!(ok.warnings().is_empty());
    let tok = rsa.sign("RS256", &claims());
    assert!(
        ok.for_workload("foo", &lb)
            .authenticate(&bearer(&tok), None, now())
            .unwrap()
            .auth
            .is_some()
    );
    let missing = Authn::compile(&ras, "istio-system", &BTreeMap::new()).unwrap();
    assert_eq!(missing.warnings().len(), 1);
    assert_eq!(
        missing
            .for_workload("foo", &lb)
            .authenticate(&bearer(&tok), None, now())
            .unwrap_err(),
        JwtError::JwksUnavailable
    );
}

#[test]
fn malformed_inline_jwks_is_a_compile_error() {
    let errs = Authn::compile(
        &[ra("jwt", vec![rule("{\"keys\": 3}".into())])],
        "istio-system",
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].to_string().contains(
            "RequestAuthentication/foo/jwt: spec.jwtRules[0].jwks: JWKS is not valid JSON"
        ),
        "{}",
        errs[0]
    );
    let errs = Authn::compile(
        &[ra(
            "jwt",
            vec![rule(
                json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}).to_string(),
            )],
        )],
        "istio-system",
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(errs[0].message.contains("no RSA or EC"), "{}", errs[0]);
}

#[test]
fn request_authentication_selection_follows_namespace_root_and_selector() {
    let rsa = Signer::rsa("r1");
    let mut sel = ra("only-other", vec![rule(jwks(&[&rsa]))]);
    sel.selector = Some(WorkloadSelector {
        match_labels: labels(&[("app", "other")]),
    });
    let a = Authn::compile(&[sel], "istio-system", &BTreeMap::new()).unwrap();
    assert!(
        a.for_workload("foo", &labels(&[("app", "httpbin")]))
            .is_empty()
    );
    assert!(
        !a.for_workload("foo", &labels(&[("app", "other")]))
            .is_empty()
    );
    let mut mesh = ra("mesh", vec![rule(jwks(&[&rsa]))]);
    mesh.meta.namespace = "istio-system".into();
    let a = Authn::compile(&[mesh], "istio-system", &BTreeMap::new()).unwrap();
    assert!(!a.for_workload("any-ns", &labels(&[])).is_empty());
}

/// The whole inbound sequence: authenticate (401 on an invalid token), then authorize
/// (403 without a request principal when an ALLOW policy requires one).
#[test]
fn jwt_then_authorization_as_the_proxy_runs_them() {
    let rsa = Signer::rsa("r1");
    let w = authn_for(&[ra("jwt", vec![rule(jwks(&[&rsa]))])]);
    let policies = vec![allow(
        "need-caseworker",
        vec![r(
            vec![s(|s| {
                s.request_principals = v(&["https://idp.gov.example/*"])
            })],
            vec![],
            vec![when("request.auth.claims[groups]", &["caseworker"])],
        )],
    )];
    let authz = workload(&policies, &EngineConfig::default());
    let run = |headers: HeaderMap| -> u16 {
        let out = match w.authenticate(&headers, None, now()) {
            Ok(o) => o,
            Err(e) => {
                let resp = e.unauthorized_response();
                assert!(resp.headers().contains_key("www-authenticate"));
                return resp.status().as_u16();
            }
        };
        let mut rq = req();
        rq.headers = headers;
        rq.auth = out.auth;
        let d = authz.evaluate(&rq.attrs());
        if d.is_allowed() {
            200
        } else {
            d.deny_response().status().as_u16()
        }
    };
    assert_eq!(run(bearer(&rsa.sign("RS256", &claims()))), 200);
    assert_eq!(
        run(HeaderMap::new()),
        403,
        "no token: accepted by authn, refused by the ALLOW policy"
    );
    let mut c = claims();
    c["groups"] = json!(["viewer"]);
    assert_eq!(
        run(bearer(&rsa.sign("RS256", &c))),
        403,
        "valid token without the claim"
    );
    c["exp"] = json!(NOW - 3600);
    assert_eq!(
        run(bearer(&rsa.sign("RS256", &c))),
        401,
        "invalid token is rejected before authorization"
    );
    let d = eval(&policies, &req());
    assert_eq!(d.reason, Reason::NoAllowMatched);
}

/// Every single-character corruption of a valid token is refused or treated as absent, never
/// accepted and never a panic.
#[test]
fn corrupted_tokens_are_never_accepted() {
    let p256 = Signer::p256("e1");
    let w = authn_for(&[ra("jwt", vec![rule(jwks(&[&p256]))])]);
    let good = p256.sign("ES256", &claims());
    let bytes = good.as_bytes();
    for i in 0..bytes.len() {
        for replacement in [b'A', b'.', b'-', b'_', b'='] {
            if bytes[i] == replacement {
                continue;
            }
            let mut t = bytes.to_vec();
            t[i] = replacement;
            let t = String::from_utf8(t).unwrap();
            if let Ok(out) = w.authenticate(&bearer(&t), None, now()) {
                // A changed `iss` makes the token someone else's: absent, not accepted.
                assert!(out.auth.is_none(), "corruption at {i} accepted: {t}");
            }
        }
    }
}

/// Mesh-wide and namespace RequestAuthentications may name the same issuer with different
/// audiences: a token accepted by either is valid (Envoy's `requires_any`).
#[test]
fn any_rule_for_the_issuer_may_accept_the_token() {
    let rsa = Signer::rsa("r1");
    let mut mesh_rule = rule(jwks(&[&rsa]));
    mesh_rule.audiences = vec!["mesh-api".into()];
    let mut mesh = ra("mesh", vec![mesh_rule]);
    mesh.meta.namespace = "istio-system".into();
    let mut ns_rule = rule(jwks(&[&rsa]));
    ns_rule.audiences = vec!["child-api".into()];
    let w = authn_for(&[mesh, ra("ns", vec![ns_rule])]);
    assert!(
        w.authenticate(&bearer(&rsa.sign("RS256", &claims())), None, now())
            .unwrap()
            .auth
            .is_some()
    );
    let mut c = claims();
    c["aud"] = json!("nobody");
    assert_eq!(
        w.authenticate(&bearer(&rsa.sign("RS256", &c)), None, now())
            .unwrap_err(),
        JwtError::AudienceNotAllowed
    );
}
