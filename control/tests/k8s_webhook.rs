//! The injection webhook over real HTTPS on loopback: a Pod review in a labelled namespace gets
//! the injection patch; wrong paths, methods, bodies and oversize reviews are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jalin_control::k8s::inject::InjectSettings;
use jalin_control::k8s::webhook_server::{INJECT_PATH, MAX_REVIEW_BYTES, WebhookState, serve};
use jalin_control::k8s::{KubeObject, Store, StoreReader};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

struct Webhook {
    addr: std::net::SocketAddr,
    roots: rustls::RootCertStore,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(namespace_label: &str) -> Webhook {
    let certified =
        rcgen::generate_simple_self_signed(vec!["jalin-webhook.jalin-system.svc".into()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut store = Store::new();
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "metadata": {"name": "child-services", "labels": {"istio-injection": namespace_label}}
    }))
    .unwrap();
    store.insert(Arc::new(KubeObject::Namespace(Box::new(ns))));
    let state = WebhookState {
        store: StoreReader::new(store),
        settings: Arc::new(InjectSettings::default()),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, Arc::new(tls), state));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    Webhook { addr, roots, task }
}

impl Webhook {
    async fn post(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("jalin-webhook.jalin-system.svc").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "jalin-webhook.jalin-system.svc")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }
}

fn review() -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "c0ffee00-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "child-services", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"generateName": "case-api-", "labels": {"app": "case-api"}},
                       "spec": {"containers": [{"name": "app", "image": "app"}]}}
        }
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn labelled_namespace_pod_is_patched_over_https() {
    let webhook = start("enabled").await;
    let (status, body) = webhook.post("POST", INJECT_PATH, review()).await;
    assert_eq!(status, 200, "{body}");
    let response = &body["response"];
    assert_eq!(response["uid"], "c0ffee00-0000-4000-8000-000000000001");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = BASE64_STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    assert!(ops.iter().any(|op| op["path"] == "/spec/initContainers"));
}

#[tokio::test]
async fn disabled_namespace_pod_is_allowed_unchanged() {
    let webhook = start("disabled").await;
    let (status, body) = webhook.post("POST", INJECT_PATH, review()).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason() {
    let webhook = start("enabled").await;
    let (status, _) = webhook.post("POST", "/mutate", review()).await;
    assert_eq!(status, 404);
    let (status, _) = webhook.post("GET", INJECT_PATH, Vec::new()).await;
    assert_eq!(status, 405);
    let (status, body) = webhook
        .post("POST", INJECT_PATH, b"{\"kind\": 1}".to_vec())
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("AdmissionReview"),
        "{body}"
    );
    let (status, _) = webhook
        .post("POST", INJECT_PATH, vec![b' '; MAX_REVIEW_BYTES + 1])
        .await;
    assert_eq!(status, 413);
}
