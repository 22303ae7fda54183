//! The proxy reaches its control plane over mTLS with real certificates (rcgen-minted mesh CA,
//! SPIFFE IDs in URI SANs): it is configured by the control plane whose SPIFFE ID the bootstrap
//! names, and refuses one that presents another identity from the same CA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use jalin_proxy::xds::XdsState;
use jalin_proxy::{ConfigSource, Proxy, ProxyHandle};
use jalin_tests::client;
use jalin_tests::upstream::HttpUpstream;
use jalin_xds::model::cluster::{Cluster, Endpoint};
use jalin_xds::model::listener::{Direction, Listener, ListenerProtocol};
use jalin_xds::transport::server::ServerEvent;
use jalin_xds::transport::{Kind, Snapshot, XdsServer, encode, encode_with_deps};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

const WAIT: Duration = Duration::from_secs(20);
const CONTROL_ID: &str = "spiffe://cluster.local/ns/jalin-system/sa/jalin-control";
const SERVICE: &str = "outbound|80||echo.prod.svc.cluster.local";

struct Leaf {
    cert: String,
    key: String,
}

struct Pki {
    ca: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "jalin test mesh CA");
        let ca = params.self_signed(&key).unwrap().pem();
        Pki {
            ca,
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, spiffe: &str, dns: &str, eku: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns.to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI(spiffe.try_into().unwrap()));
        params.extended_key_usages = vec![eku];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

fn snapshot(upstream: SocketAddr) -> Snapshot {
    let cluster = Cluster {
        name: SERVICE.into(),
        addresses: Vec::new(),
        protocol: Default::default(),
        endpoints: Vec::new(),
        policy: Default::default(),
        tls: None,
        subsets: Vec::new(),
    };
    let listener = Listener {
        name: "out".into(),
        address: "127.0.0.1:0".parse().unwrap(),
        direction: Direction::Outbound,
        service: Some(SERVICE.into()),
        protocol: ListenerProtocol::Detect,
        mtls: None,
        gateway: None,
        tls: None,
        http3: false,
    };
    Snapshot::new([
        encode_with_deps(
            Kind::Listener,
            "out",
            &listener,
            &[(Kind::Cluster, SERVICE)],
        )
        .unwrap(),
        encode_with_deps(
            Kind::Cluster,
            SERVICE,
            &cluster,
            &[(Kind::Endpoints, SERVICE)],
        )
        .unwrap(),
        encode(Kind::Endpoints, SERVICE, &vec![Endpoint::new(upstream)]).unwrap(),
    ])
}

/// Serves `server` with `leaf` as its certificate, requiring client certificates from the CA.
async fn serve_mtls(server: &XdsServer, pki: &Pki, leaf: &Leaf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&leaf.cert, &leaf.key))
        .client_ca_root(Certificate::from_pem(&pki.ca));
    let server = server.clone();
    tokio::spawn(async move {
        let _ = server
            .serve(listener, Some(tls), std::future::pending())
            .await;
    });
    addr
}

fn bootstrap(dir: &Path, pki: &Pki, client: &Leaf, cp: SocketAddr, node: &str) -> String {
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca = write("ca.pem", &pki.ca);
    let cert = write("proxy.pem", &client.cert);
    let key = write("proxy.key", &client.key);
    format!(
        "admin:\n  address: 127.0.0.1:0\ncontrol_plane:\n  address: {cp}\n  identity: {CONTROL_ID}\n  \
         backoff_base_ms: 20\n  backoff_max_ms: 200\n  tls:\n    ca: {ca}\n    certificate: {cert}\n    \
         key: {key}\n    server_name: jalin-control.jalin-system.svc\n  node:\n    id: {node}\n    \
         namespace: prod\n    service_account: web\n"
    )
}

async fn wait_xds(proxy: &ProxyHandle, what: &str, cond: impl Fn(&XdsState) -> bool) {
    let state = proxy.xds().unwrap();
    let mut changes = state.changes();
    tokio::time::timeout(WAIT, async {
        while !cond(&state) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}: {}", state.dump()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_is_configured_over_mtls_by_the_named_control_plane_only() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let upstream = HttpUpstream::start("a").await.unwrap();
    let client_leaf = pki.leaf(
        "spiffe://cluster.local/ns/prod/sa/web",
        "web.prod.svc",
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    // The real control plane: its certificate carries the SPIFFE ID the bootstrap names.
    let server = XdsServer::default();
    server.push(snapshot(upstream.addr));
    let mut events = server.events();
    let good = pki.leaf(
        CONTROL_ID,
        "jalin-control.jalin-system.svc",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let addr = serve_mtls(&server, &pki, &good).await;
    let yaml = bootstrap(dir.path(), &pki, &client_leaf, addr, "web-mtls");
    let proxy = Proxy::start(ConfigSource::Inline(yaml)).await.unwrap();
    wait_xds(&proxy, "config over mTLS", |x| {
        x.in_force().is_some_and(|d| d.resources() == 3)
    })
    .await;
    let out = proxy.listener_addr("out").unwrap();
    let (status, who, _) = client::get(&client::http1_client(), out, "/headers")
        .await
        .unwrap();
    assert_eq!((status, who.as_str()), (200, "a"));
    let connected = tokio::time::timeout(WAIT, async {
        loop {
            if let ServerEvent::Connected { node_id } = events.recv().await.unwrap() {
                return node_id;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(connected, "web-mtls");
    proxy.shutdown(Duration::from_secs(5)).await;

    // An impostor: same CA, same DNS name, another SPIFFE ID. The proxy refuses it.
    let impostor_server = XdsServer::default();
    impostor_server.push(snapshot(upstream.addr));
    let mut impostor_events = impostor_server.events();
    let impostor = pki.leaf(
        "spiffe://cluster.local/ns/jalin-system/sa/impostor",
        "jalin-control.jalin-system.svc",
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let addr = serve_mtls(&impostor_server, &pki, &impostor).await;
    let yaml = bootstrap(dir.path(), &pki, &client_leaf, addr, "web-mtls-2");
    let proxy = Proxy::start(ConfigSource::Inline(yaml)).await.unwrap();
    wait_xds(&proxy, "the refused handshake", |x| {
        x.status()
            .is_some_and(|s| s.last_disconnect.is_some() && s.streams == 0)
    })
    .await;
    let status = proxy.xds().unwrap().status().unwrap();
    println!("impostor refused: {:?}", status.last_disconnect);
    assert!(!proxy.xds().unwrap().is_ready());
    assert!(proxy.xds().unwrap().in_force().is_none());
    assert!(
        impostor_events.try_recv().is_err(),
        "no stream reached the impostor"
    );
    proxy.shutdown(Duration::from_secs(5)).await;
}
