//! Inbound peer authentication per port and outbound mTLS origination, over real TLS between
//! in-process proxies and with real clients (curl, openssl): STRICT refuses plaintext with a
//! log line and a metric, PERMISSIVE accepts both and tells them apart, DISABLE passes
//! plaintext, PeerAuthentication policies set the mode when the listener does not, the client
//! refuses a server with the wrong SPIFFE ID, and the application sees the verified peer in
//! `x-forwarded-client-cert` (never one a client wrote).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod mtls_common;

use std::net::SocketAddr;
use std::time::Duration;

use jalin_tests::upstream::HttpUpstream;
use mtls_common::{Mesh, Running, log_text, logs, request};

const SERVER_NS: &str = "child-services";
const SERVER_SA: &str = "child-profile-service";

fn server_id() -> String {
    Mesh::id(SERVER_NS, SERVER_SA)
}

fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|n| l.contains(n)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// The child-profile server (no labels, empty authorization) in front of `app`, with inbound
/// mode `mtls` (from policies when `None`).
async fn profile_server(mesh: &Mesh, app: SocketAddr, mtls: Option<&str>) -> Running {
    mesh.server(SERVER_NS, SERVER_SA, &[], app, mtls, "  {}\n")
        .await
}

/// The child-profile client: one outbound listener per `(name, server inbound, expected id)`.
async fn profile_client(mesh: &Mesh, targets: &[(&str, SocketAddr, &str)]) -> Running {
    mesh.client("child-services", "child-profile-client", targets)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_refuses_plaintext_and_serves_mtls() {
    logs();
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let server = profile_server(&mesh, app.addr, Some("STRICT")).await;
    let client = profile_client(&mesh, &[("srv", server.addr("in"), &server_id())]).await;

    // mTLS through the client's outbound: admitted, and the app sees the verified peer.
    let (status, body) = request(
        client.addr("srv"),
        "GET",
        "/headers",
        &[("x-forwarded-client-cert", "URI=spiffe://evil")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let want = format!("URI={}", Mesh::id("child-services", "child-profile-client"));
    assert!(
        body.contains(&want),
        "the app sees the verified peer: {body}"
    );
    assert!(body.contains("Hash="), "{body}");
    assert!(
        !body.contains("evil"),
        "a client-written XFCC never reaches the app: {body}"
    );
    assert_eq!(app.requests(), 1);

    // Plaintext straight to the STRICT port: the connection is closed before any HTTP.
    let before = counter(
        &server.metrics().await,
        "jalin_tls_handshake_failures_total",
        &[
            "reason=\"plaintext_on_strict_port\"",
            "direction=\"inbound\"",
        ],
    );
    let err = request(server.addr("in"), "GET", "/headers", &[]).await;
    assert!(
        err.is_err(),
        "plaintext must be refused on a STRICT port: {err:?}"
    );
    assert_eq!(app.requests(), 1, "nothing reached the app");
    let after = counter(
        &server.metrics().await,
        "jalin_tls_handshake_failures_total",
        &[
            "reason=\"plaintext_on_strict_port\"",
            "direction=\"inbound\"",
        ],
    );
    assert!(
        after >= before + 1.0,
        "refusal counted: {before} -> {after}"
    );
    assert!(
        log_text().contains("plaintext_on_strict_port"),
        "refusal logged"
    );

    // /ready waited for the certificate; /config_dump reports the TLS policy and FIPS state.
    let dump = jalin_tests::client::curl(
        &format!("http://{}/config_dump", server.handle.admin_addr()),
        &[],
    )
    .await
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&dump.body).unwrap();
    assert_eq!(json["tls"]["policy"], "default", "{}", dump.body);
    assert_eq!(
        json["tls"]["fips_active"],
        jalin_ca::tls::fips_active(),
        "{}",
        dump.body
    );
    assert_eq!(json["tls"]["spiffe_id"], server_id());
    let ready =
        jalin_tests::client::curl(&format!("http://{}/ready", server.handle.admin_addr()), &[])
            .await
            .unwrap();
    assert_eq!(ready.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissive_accepts_both_and_disable_passes_plaintext() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let permissive = profile_server(&mesh, app.addr, Some("PERMISSIVE")).await;
    let disabled = profile_server(&mesh, app.addr, Some("DISABLE")).await;
    let client = profile_client(
        &mesh,
        &[
            ("perm", permissive.addr("in"), &server_id()),
            ("dis", disabled.addr("in"), &server_id()),
        ],
    )
    .await;

    let (status, body) = request(client.addr("perm"), "GET", "/headers", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "mTLS on PERMISSIVE: {body}");
    assert!(body.contains("URI=spiffe://"), "{body}");
    let (status, body) = request(permissive.addr("in"), "GET", "/headers", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "plaintext on PERMISSIVE: {body}");
    assert!(
        !body.contains("x-forwarded-client-cert"),
        "a plaintext peer has no identity: {body}"
    );

    let (status, _) = request(disabled.addr("in"), "GET", "/headers", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "plaintext on DISABLE");
    // DISABLE does not terminate TLS: the client's handshake fails and it answers 503.
    let (status, body) = request(client.addr("dis"), "GET", "/headers", &[])
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peer_authentication_policies_set_the_mode() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    // Namespace-wide STRICT (as the seed `policies-05` does for child-services), no listener mode.
    let pa = "  peer_authentications:\n    - meta: { name: child-data-mtls-strict, namespace: child-services }\n      mode: STRICT\n";
    let strict = mesh
        .server(SERVER_NS, SERVER_SA, &[], app.addr, None, pa)
        .await;
    // The mesh default with no policy is PERMISSIVE.
    let default = profile_server(&mesh, app.addr, None).await;
    assert!(
        request(strict.addr("in"), "GET", "/", &[]).await.is_err(),
        "namespace STRICT refuses plaintext"
    );
    let (status, _) = request(default.addr("in"), "GET", "/", &[]).await.unwrap();
    assert_eq!(status, 200, "mesh default PERMISSIVE accepts plaintext");
    let client = profile_client(&mesh, &[("s", strict.addr("in"), &server_id())]).await;
    let (status, _) = request(client.addr("s"), "GET", "/", &[]).await.unwrap();
    assert_eq!(status, 200, "mTLS accepted under namespace STRICT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_refuses_a_server_with_another_identity() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let server = profile_server(&mesh, app.addr, Some("STRICT")).await;
    let wrong = Mesh::id("child-services", "someone-else");
    let client = profile_client(&mesh, &[("s", server.addr("in"), &wrong)]).await;
    let (status, _) = request(client.addr("s"), "GET", "/", &[]).await.unwrap();
    assert_eq!(
        status, 503,
        "the server's SPIFFE ID is not the expected one"
    );
    assert_eq!(app.requests(), 0);
    let m = client.metrics().await;
    assert!(
        counter(
            &m,
            "jalin_tls_handshake_failures_total",
            &["direction=\"outbound\""]
        ) >= 1.0,
        "{m}"
    );
}

/// A bare-metal server (certificate files, as `jalin ca issue` writes them) reached by curl and
/// openssl with a jalin-issued client certificate, and refused without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_and_openssl_reach_the_inbound_with_a_jalin_certificate() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let (cert, key) = mesh.issue_files("server", &server_id(), &["localhost"]);
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\nidentity:\n  trust_domain: cluster.local\n  namespace: {SERVER_NS}\n  service_account: {SERVER_SA}\n  trust_bundles: [{}]\n  certificate:\n    files: {{ cert: {}, key: {} }}\nlisteners:\n  - name: in\n    address: 127.0.0.1:0\n    direction: inbound\n    service: app\n    mtls: STRICT\nservices:\n  - name: app\n    endpoints:\n      - address: {}\n",
        mesh.root.display(),
        cert.display(),
        key.display(),
        app.addr
    );
    let server = mesh.start(&yaml).await;
    let port = server.addr("in").port();
    let client_id = Mesh::id("child-services", "child-profile-client");
    let (ccert, ckey) = mesh.issue_files("client", &client_id, &[]);
    let root = mesh.root.display().to_string();
    let url = format!("https://localhost:{port}/headers");

    let ok = jalin_tests::client::curl(
        &url,
        &[
            "--cacert",
            &root,
            "--cert",
            &ccert.display().to_string(),
            "--key",
            &ckey.display().to_string(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains(&format!("URI={client_id}")), "{}", ok.body);
    let refused = jalin_tests::client::curl(&url, &["--cacert", &root]).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");

    let connect = format!("127.0.0.1:{port}");
    let (cert, key) = (ccert.display().to_string(), ckey.display().to_string());
    let request = b"GET /headers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let without = [
        "-connect",
        &connect,
        "-verify_return_error",
        "-CAfile",
        &root,
    ];
    let with = [
        &without[..],
        &["-cert", &cert, "-cert_chain", &cert, "-key", &key],
    ]
    .concat();
    let text = jalin_tests::client::s_client(&with, request).await.unwrap();
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains(&client_id), "{text}");
    let text = jalin_tests::client::s_client(&without, request)
        .await
        .unwrap();
    assert!(
        !text.contains("HTTP/1.1 200"),
        "refused without a client certificate: {text}"
    );
    assert!(text.contains("alert") || text.contains("error"), "{text}");
}

/// A CA that signs only once the test lets it.
struct GatedCa {
    ca: std::sync::Arc<jalin_ca::identity::DevCa>,
    open: tokio::sync::watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl jalin_ca::identity::CertificateSource for GatedCa {
    async fn sign(
        &self,
        csr: rustls_pki_types::CertificateSigningRequestDer<'static>,
    ) -> Result<jalin_ca::identity::IssuedChain, jalin_ca::identity::SourceError> {
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        self.ca.sign(csr).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ready_waits_for_the_first_certificate() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let (gate, open) = tokio::sync::watch::channel(false);
    let source = std::sync::Arc::new(GatedCa {
        ca: mesh.ca.clone(),
        open,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.yaml");
    std::fs::write(
        &path,
        format!(
            "admin:\n  address: 127.0.0.1:0\n{}",
            mesh.identity_yaml("ns", "sa", &[])
        ),
    )
    .unwrap();
    let handle = jalin_proxy::Proxy::start_with(
        jalin_proxy::ConfigSource::File(path),
        jalin_proxy::StartOptions {
            certificate_source: Some(source),
        },
    )
    .await
    .unwrap();
    let ready = format!("http://{}/ready", handle.admin_addr());
    let before = jalin_tests::client::curl(&ready, &[]).await.unwrap();
    assert_eq!(before.status, 503, "no certificate yet");
    gate.send_replace(true);
    handle.identity().unwrap().manager().unwrap().ready().await;
    let after = jalin_tests::client::curl(&ready, &[]).await.unwrap();
    assert_eq!(after.status, 200);
}

/// An endpoint's own `tls` overrides its cluster's: one cluster, one mTLS endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoint_level_tls_originates_mtls() {
    let mesh = Mesh::new(Duration::from_secs(3600));
    let app = HttpUpstream::start("app").await.unwrap();
    let server = profile_server(&mesh, app.addr, Some("STRICT")).await;
    let yaml = format!(
        "admin:\n  address: 127.0.0.1:0\n{}listeners:\n  - name: out\n    address: 127.0.0.1:0\n    direction: outbound\n    service: s\nservices:\n  - name: s\n    endpoints:\n      - address: {}\n        tls: {{ mode: istio_mutual, identity: \"{}\" }}\n",
        mesh.identity_yaml("child-services", "child-profile-client", &[]),
        server.addr("in"),
        server_id()
    );
    let client = mesh.start(&yaml).await;
    let (status, body) = request(client.addr("out"), "GET", "/headers", &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("URI=spiffe://cluster.local/ns/child-services/sa/child-profile-client"),
        "{body}"
    );
}
