//! Request authentication and the other authorization paths end to end: JWTs (ES256, JWKS from
//! a file, or fetched over HTTPS from an IdP with a private CA, and fetched again so the IdP's key
//! rotation takes effect without a reload) validated by the server proxy with 401 on an invalid token, `requestPrincipals`
//! matched, claims copied to headers and the token stripped; a CUSTOM policy asking an external
//! HTTP authorizer (allow, deny, and a provider that never answers: fail closed within the
//! timeout); and opaque TCP connections authorized with `evaluate_tcp` and closed on deny.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod mtls_common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jalin_tests::AbortOnDrop;
use jalin_tests::upstream::{HttpUpstream, TcpEchoUpstream};
use mtls_common::{Mesh, request};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISS: &str = "https://idp.gov.example";

struct Signer(EcdsaKeyPair);

impl Signer {
    fn new() -> Self {
        Self(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap())
    }
    fn jwks(&self) -> String {
        let p = self.0.public_key().as_ref();
        json!({"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "alg": "ES256",
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..])}]})
        .to_string()
    }
    fn token(&self, sub: &str) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": "k1"});
        let claims = json!({"iss": ISS, "sub": sub, "exp": exp});
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self.0.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(sig.as_ref()))
    }
}

/// An external authorizer: `x-ext: allow` -> 200, `hang` -> never answers, else 403.
async fn ext_authz() -> (SocketAddr, AbortOnDrop) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let verdict = req.headers().get("x-ext").map(|v| v.as_bytes().to_vec());
                    match verdict.as_deref() {
                        Some(b"allow") => {}
                        Some(b"hang") => std::future::pending::<()>().await,
                        _ => {
                            let mut rsp = http::Response::new(Full::new(Bytes::from_static(b"no")));
                            *rsp.status_mut() = http::StatusCode::FORBIDDEN;
                            return Ok::<_, Infallible>(rsp);
                        }
                    }
                    Ok(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, AbortOnDrop(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_and_custom_decide_requests() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let signer = Signer::new();
    let other = Signer::new();
    let jwks = mesh.dir.path().join("jwks.json");
    std::fs::write(&jwks, signer.jwks()).unwrap();
    let (ext, _ext_task) = ext_authz().await;
    let authz = format!(
        r#"  jwks_files: {{ "http://idp.gov.example/keys": {jwks} }}
  providers:
    ext-authz: {{ url: "http://{ext}/check", timeout_ms: 300 }}
  request_authentications:
    - meta: {{ name: idp, namespace: child-services }}
      jwt_rules:
        - issuer: "{ISS}"
          jwks_uri: "http://idp.gov.example/keys"
          output_claim_to_headers: [ {{ header: x-jwt-sub, claim: sub }} ]
  policies:
    - meta: {{ name: callers, namespace: child-services }}
      rules:
        - from: [ {{ request_principals: ["{ISS}/alice"] }} ]
          to: [ {{ paths: ["/jwt/*"] }} ]
        - to: [ {{ paths: ["/custom/*"] }} ]
    - meta: {{ name: ext, namespace: child-services }}
      action: CUSTOM
      provider: ext-authz
      rules:
        - to: [ {{ paths: ["/custom/*"] }} ]
"#,
        jwks = jwks.display()
    );
    let server = mesh
        .server(
            "child-services",
            "records",
            &[],
            app.addr,
            Some("PERMISSIVE"),
            &authz,
        )
        .await;
    let addr = server.addr("in");
    let bearer = |t: String| format!("Bearer {t}");

    let alice = bearer(signer.token("alice"));
    let (status, body) = request(addr, "GET", "/jwt/headers", &[("authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(status, 200, "valid token of an allowed principal: {body}");
    let (status, body) = request(addr, "GET", "/headers", &[("authorization", &alice)])
        .await
        .unwrap();
    assert_eq!(status, 403, "path not allowed: {body}");
    // What the app sees on an allowed request: the claim header, not the token.
    let app_view = request(
        addr,
        "POST",
        "/jwt/echo",
        &[("authorization", &alice), ("x-jwt-sub", "mallory")],
    )
    .await
    .unwrap();
    assert_eq!(app_view.0, 200);

    let (status, _) = request(addr, "GET", "/jwt/x", &[]).await.unwrap();
    assert_eq!(status, 403, "no token: no request principal");
    let (status, _) = request(
        addr,
        "GET",
        "/jwt/x",
        &[("authorization", &bearer(signer.token("bob")))],
    )
    .await
    .unwrap();
    assert_eq!(status, 403, "valid token, principal not listed");
    let (status, body) = request(
        addr,
        "GET",
        "/jwt/x",
        &[("authorization", &bearer(other.token("alice")))],
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "token signed by an unknown key: {body}");
    let (status, _) = request(
        addr,
        "GET",
        "/jwt/x",
        &[("authorization", "Bearer not.a.jwt")],
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "malformed token");

    let (status, _) = request(addr, "GET", "/custom/a", &[("x-ext", "allow")])
        .await
        .unwrap();
    assert_eq!(status, 200, "external authorizer allows");
    let (status, body) = request(addr, "GET", "/custom/a", &[("x-ext", "deny")])
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, "RBAC: access denied"),
        "external authorizer denies"
    );
    let (status, _) = request(addr, "GET", "/custom/a", &[("x-ext", "hang")])
        .await
        .unwrap();
    assert_eq!(
        status, 403,
        "an authorizer that does not answer in time: fail closed"
    );
}

/// An IdP's JWKS endpoint over HTTPS, with a certificate for 127.0.0.1 from the IdP's own CA.
/// Returns its address, the CA (PEM) and the server task.
async fn https_jwks(document: String) -> (SocketAddr, String, AbortOnDrop) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let document = Bytes::from(document);
    let task = tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let (acceptor, document) = (acceptor.clone(), document.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let document = document.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/keys");
                        Ok::<_, Infallible>(http::Response::new(Full::new(document)))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, ca_pem, AbortOnDrop(task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwks_is_fetched_over_https_from_an_idp_with_a_private_ca() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let signer = Signer::new();
    let (idp, ca_pem, _idp_task) = https_jwks(signer.jwks()).await;
    let ca = mesh.dir.path().join("idp-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let authz = |trust: &str| {
        format!(
            "{trust}  request_authentications:\n    - meta: {{ name: idp, namespace: ns }}\n      jwt_rules:\n        - issuer: \"{ISS}\"\n          jwks_uri: \"https://{idp}/keys\"\n  policies:\n    - meta: {{ name: callers, namespace: ns }}\n      rules:\n        - from: [ {{ request_principals: [\"{ISS}/alice\"] }} ]\n"
        )
    };
    let token = format!("Bearer {}", signer.token("alice"));

    // The IdP's CA is trusted: the keys are fetched and alice's token is accepted.
    let trusted = authz(&format!("  jwks_trust: [{}]\n", ca.display()));
    let server = mesh
        .server("ns", "records", &[], app.addr, Some("PERMISSIVE"), &trusted)
        .await;
    let (status, body) = request(server.addr("in"), "GET", "/x", &[("authorization", &token)])
        .await
        .unwrap();
    assert_eq!(status, 200, "JWKS over HTTPS from a trusted CA: {body}");

    // Without that CA the server's certificate is refused, no keys are had, and the token is
    // rejected: fail closed.
    let untrusted = mesh
        .server(
            "ns",
            "records-2",
            &[],
            app.addr,
            Some("PERMISSIVE"),
            &authz(""),
        )
        .await;
    let (status, body) = request(
        untrusted.addr("in"),
        "GET",
        "/x",
        &[("authorization", &token)],
    )
    .await
    .unwrap();
    assert_eq!(status, 401, "JWKS server not trusted: {body}");
}

/// An IdP's JWKS endpoint over HTTP whose document the test swaps (`None`: 500, an IdP outage).
struct RotatingIdp {
    addr: SocketAddr,
    document: std::sync::Arc<std::sync::Mutex<Option<Bytes>>>,
    _task: AbortOnDrop,
}

impl RotatingIdp {
    async fn start(document: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let document = std::sync::Arc::new(std::sync::Mutex::new(Some(Bytes::from(document))));
        let served = document.clone();
        let task = tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let served = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        let doc = served.lock().unwrap().clone();
                        async move {
                            let mut rsp =
                                http::Response::new(Full::new(doc.clone().unwrap_or_default()));
                            if doc.is_none() {
                                *rsp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, Infallible>(rsp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            document,
            _task: AbortOnDrop(task),
        }
    }

    fn serve(&self, document: Option<String>) {
        *self.document.lock().unwrap() = document.map(Bytes::from);
    }
}

/// The value of `jalin_jwks_refreshes_total{outcome="..."}` in a Prometheus text page.
fn refreshes(page: &str, outcome: &str) -> u64 {
    let prefix = format!("jalin_jwks_refreshes_total{{outcome=\"{outcome}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idp_key_rotation_takes_effect_without_a_reload() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let (old_key, new_key) = (Signer::new(), Signer::new());
    let idp = RotatingIdp::start(old_key.jwks()).await;
    let server = mesh
        .server(
            "ns",
            "records",
            &[],
            app.addr,
            Some("PERMISSIVE"),
            &format!(
                "  jwks_refresh_ms: 1000\n  request_authentications:\n    - meta: {{ name: idp, namespace: ns }}\n      jwt_rules:\n        - issuer: \"{ISS}\"\n          jwks_uri: \"http://{}/keys\"\n  policies:\n    - meta: {{ name: callers, namespace: ns }}\n      rules:\n        - from: [ {{ request_principals: [\"{ISS}/alice\"] }} ]\n",
                idp.addr
            ),
        )
        .await;
    let call = |signer: &Signer| {
        let token = format!("Bearer {}", signer.token("alice"));
        let addr = server.addr("in");
        async move {
            request(addr, "GET", "/x", &[("authorization", &token)])
                .await
                .unwrap()
        }
    };
    // Waits, on the proxy's own counter, until a refresh round with `outcome` has completed
    // after `since` of them.
    let rounds_after = |outcome: &'static str, since: u64| {
        let server = &server;
        async move {
            tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    let n = refreshes(&server.metrics().await, outcome);
                    if n > since {
                        return n;
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("no JWKS refresh round within 30 s")
        }
    };

    assert_eq!(call(&old_key).await.0, 200, "the IdP's current key");
    assert_eq!(
        call(&new_key).await.0,
        401,
        "a key the IdP has not published"
    );

    // The IdP rotates: only the new key is published. Without any reload the proxy takes it.
    let updated = refreshes(&server.metrics().await, "updated");
    idp.serve(Some(new_key.jwks()));
    rounds_after("updated", updated).await;
    assert_eq!(
        call(&new_key).await.0,
        200,
        "the rotated-in key is accepted"
    );
    assert_eq!(
        call(&old_key).await.0,
        401,
        "the rotated-out key is refused"
    );

    // The IdP fails: the last good keys stay in force.
    let failed = refreshes(&server.metrics().await, "failed");
    idp.serve(None);
    rounds_after("failed", failed).await;
    assert_eq!(
        call(&new_key).await.0,
        200,
        "the last good keys survive an IdP outage"
    );
    assert_eq!(call(&old_key).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_claims_reach_the_app_and_the_token_does_not() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let signer = Signer::new();
    let jwks = mesh.dir.path().join("jwks.json");
    std::fs::write(&jwks, signer.jwks()).unwrap();
    let authz = format!(
        "  jwks_files: {{ \"http://idp/keys\": {} }}\n  request_authentications:\n    - meta: {{ name: idp, namespace: ns }}\n      jwt_rules:\n        - issuer: \"{ISS}\"\n          jwks_uri: \"http://idp/keys\"\n          output_claim_to_headers: [ {{ header: x-jwt-sub, claim: sub }} ]\n",
        jwks.display()
    );
    let server = mesh
        .server("ns", "records", &[], app.addr, Some("PERMISSIVE"), &authz)
        .await;
    let token = format!("Bearer {}", signer.token("alice"));
    let (status, body) = request(
        server.addr("in"),
        "GET",
        "/headers",
        &[("authorization", &token), ("x-jwt-sub", "mallory")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-jwt-sub"], "alice", "{body}");
    assert!(
        v["headers"].get("authorization").is_none(),
        "token stripped: {body}"
    );
    // No token and no policy: allowed, with no principal.
    let (status, _) = request(server.addr("in"), "GET", "/headers", &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
}

async fn echo_once(addr: SocketAddr) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01opaque").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opaque_tcp_is_authorized_per_connection() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let echo = TcpEchoUpstream::start().await.unwrap();
    let tcp_server = |blocks: &'static str| {
        let yaml = format!(
            "admin:\n  address: 127.0.0.1:0\n{}listeners:\n  - name: in\n    address: 127.0.0.1:0\n    direction: inbound\n    service: app\n    protocol: tcp\n    mtls: PERMISSIVE\nservices:\n  - name: app\n    endpoints:\n      - address: {}\nauthorization:\n  policies:\n    - meta: {{ name: lan, namespace: ns }}\n      rules:\n        - from: [ {{ ip_blocks: [\"{blocks}\"] }} ]\n",
            mesh.identity_yaml("ns", "db", &[]),
            echo.addr
        );
        let mesh = &mesh;
        async move { mesh.start(&yaml).await }
    };
    let allowed = tcp_server("127.0.0.1/32").await;
    let denied = tcp_server("10.0.0.0/8").await;
    assert_eq!(echo_once(allowed.addr("in")).await, b"\x00\x01opaque");
    assert!(
        echo_once(denied.addr("in")).await.is_empty(),
        "denied: closed without a byte"
    );
    let m = denied.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("jalin_authz_decisions_total") && l.contains("result=\"deny\"")),
        "{m}"
    );
}
