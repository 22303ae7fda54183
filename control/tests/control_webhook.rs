//! The injection webhook as `jalin control --kubernetes` serves it: HTTPS with a certificate the
//! control plane's CA issued for its DNS name, verified here against the mesh root (the
//! MutatingWebhookConfiguration's `caBundle`), answering from the namespaces the Kubernetes
//! source read from the (fake) API server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use control_support::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jalin_control::k8s::fake::FakeApiServer;
use jalin_control::k8s::inject::{InjectSettings, PROXY_CONTAINER};
use jalin_control::server::ControlError;
use jalin_control::server::webhook::WebhookConfig;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::{Value, json};
use tokio::net::TcpStream;

fn namespace(name: &str, injection: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"istio-injection": injection}}
    })
}

fn review(namespace: &str) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "c0ffee00-0000-4000-8000-000000000002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"generateName": "case-api-", "labels": {"app": "case-api"}},
                       "spec": {"serviceAccountName": "case-api",
                                "containers": [{"name": "app", "image": "app"}]}}
        }
    })
    .to_string()
    .into_bytes()
}

/// POSTs `body` to `/inject` over TLS that trusts only the mesh root of `ca_dir` and expects the
/// server name `name`.
async fn post(addr: SocketAddr, ca_dir: &Path, name: &str, body: Vec<u8>) -> (u16, Value) {
    let mut roots = rustls::RootCertStore::empty();
    let root = CertificateDer::from_pem_file(ca_dir.join("root.pem")).unwrap();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .method("POST")
        .uri("/inject")
        .header("host", name)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn webhook() -> WebhookConfig {
    WebhookConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        injection: InjectSettings {
            control_plane: format!("{SERVER_NAME}:15012"),
            image_pull_policy: Some("IfNotPresent".into()),
            exclude_outbound_ranges: vec!["169.254.169.254/32".parse().unwrap()],
            ..InjectSettings::default()
        },
    }
}

#[tokio::test]
async fn control_plane_serves_the_injection_webhook_with_a_certificate_from_its_ca() {
    let Sandbox {
        tmp: _tmp,
        ca: ca_dir,
        ..
    } = sandbox();
    let fake = FakeApiServer::start().await.unwrap();
    fake.apply(&namespace("child-services", "enabled")).unwrap();
    fake.apply(&namespace("government", "disabled")).unwrap();
    let mut cfg = config(None, &ca_dir);
    cfg.kube_client = Some(fake.client().unwrap());
    cfg.webhook = Some(webhook());
    let control = start(cfg).await;
    let addr = control.webhook_addr.expect("the webhook is served");

    // A pod in a labelled namespace: the patch adds the proxy.
    let (status, body) = post(addr, &ca_dir, SERVER_NAME, review("child-services")).await;
    assert_eq!(status, 200, "{body}");
    let response = &body["response"];
    assert_eq!(response["uid"], "c0ffee00-0000-4000-8000-000000000002");
    assert_eq!(response["allowed"], true, "{body}");
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = BASE64_STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    let text = serde_json::to_string(&ops).unwrap();
    assert!(
        text.contains(&format!("\"name\":\"{PROXY_CONTAINER}\"")),
        "the proxy container is added: {text}"
    );
    assert!(
        text.contains(&format!("{SERVER_NAME}:15012")),
        "the proxy is told the control plane's address: {text}"
    );

    assert!(
        text.contains("\"imagePullPolicy\":\"IfNotPresent\""),
        "{text}"
    );
    assert!(
        text.contains("169.254.169.254/32"),
        "mesh-wide outbound exclusions reach the redirect: {text}"
    );

    // A pod in a namespace labelled off is admitted unchanged.
    let (status, body) = post(addr, &ca_dir, SERVER_NAME, review("government")).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none(), "{body}");

    // The certificate names only the control plane's DNS names.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca_dir.join("root.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let wrong = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("other.istio-system.svc.cluster.local").unwrap(),
            tcp,
        )
        .await;
    assert!(wrong.is_err(), "a name not on the certificate is refused");
    control.shutdown().await;
}

#[tokio::test]
async fn the_webhook_needs_kubernetes_and_the_ca() {
    let Sandbox {
        tmp: _tmp,
        ca: ca_dir,
        dir,
    } = sandbox();
    let mut cfg = config(Some(&dir), &ca_dir);
    cfg.webhook = Some(webhook());
    let err = jalin_control::server::Control::start(cfg)
        .await
        .expect_err("no Kubernetes source");
    assert!(
        matches!(err, ControlError::WebhookNeeds(_)),
        "{err}: {err:?}"
    );
    assert!(err.to_string().contains("--kubernetes"), "{err}");
}
