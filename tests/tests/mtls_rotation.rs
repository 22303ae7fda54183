//! Rotation under load: workload certificates of a few seconds, renewed at half life by both
//! proxies' identity managers and hot-swapped into their rustls configs, while traffic flows
//! without pause: through the client proxy (mTLS client proxy -> server proxy, authorized by
//! principal) and from a direct mTLS client that opens a new connection per request (so every
//! request makes a handshake against the server's current certificate). The test synchronises
//! on the managers' rotation notifications, never on sleeps, and requires zero failures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod mtls_common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use jalin_ca::identity::{CertStore, DevCa};
use jalin_ca::spiffe::{SpiffeId, TrustDomain};
use jalin_ca::tls::{TlsPolicy, TrustBundle, TrustStore, client_config};
use jalin_tests::upstream::HttpUpstream;
use mtls_common::{Mesh, TD, request};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const ROTATIONS: u64 = 3;

/// One request on a new mTLS connection straight to the server proxy's inbound, as `client_id`
/// with a certificate issued now. Returns the server leaf's fingerprint.
async fn direct(
    ca: &DevCa,
    addr: std::net::SocketAddr,
    server: &SpiffeId,
    client_id: &SpiffeId,
) -> anyhow::Result<String> {
    let (chain, key) = ca.issue(client_id, &[])?;
    let store = CertStore::new();
    store.install(Arc::new(CertifiedKey::from_der(
        chain,
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        &rustls::crypto::aws_lc_rs::default_provider(),
    )?));
    let trust = TrustStore::new(TrustBundle::new(
        vec![ca.root()],
        vec![TrustDomain::new(TD)?],
    )?);
    let config = client_config(
        &TlsPolicy::DEFAULT,
        trust,
        Arc::new(store),
        vec![server.clone()],
    )?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![jalin_ca::tls::ALPN_HTTP11.to_vec()];
    let config = Arc::new(config);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    let fingerprint = jalin_ca::tls::peer_identity(tls.get_ref().1)?.fingerprint_sha256;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let rsp = sender
        .send_request(
            http::Request::get("/api/v1/rotation")
                .header("host", "server")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    anyhow::ensure!(rsp.status() == 200, "status {}", rsp.status());
    rsp.into_body().collect().await?;
    Ok(fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotation_under_load_loses_no_request() {
    let mesh = Mesh::new(Duration::from_secs(3));
    let app = HttpUpstream::start("app").await.unwrap();
    let client_id = Mesh::id("child-services", "child-profile-client");
    let authz = format!(
        "  policies:\n    - meta: {{ name: clients-only, namespace: child-services }}\n      rules:\n        - from: [ {{ principals: [\"{}\"] }} ]\n",
        client_id.trim_start_matches("spiffe://")
    );
    let server = mesh
        .server(
            "child-services",
            "child-profile-service",
            &[],
            app.addr,
            Some("STRICT"),
            &authz,
        )
        .await;
    let server_id = Mesh::id("child-services", "child-profile-service");
    let client = mesh
        .client(
            "child-services",
            "child-profile-client",
            &[("s", server.addr("in"), &server_id)],
        )
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let fingerprints = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, addr) =
            (stop.clone(), ok.clone(), failures.clone(), client.addr("s"));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match request(addr, "GET", "/api/v1/rotation", &[]).await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("via proxies: {other:?}"));
                        0
                    }
                };
            }
        }));
    }
    for _ in 0..2 {
        let (stop, ok, failures, fps, ca) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            fingerprints.clone(),
            mesh.ca.clone(),
        );
        let (addr, server, me) = (
            server.addr("in"),
            SpiffeId::parse(&server_id).unwrap(),
            SpiffeId::parse(&client_id).unwrap(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match direct(&ca, addr, &server, &me).await {
                    Ok(fp) => {
                        fps.lock().unwrap().insert(fp);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.lock().unwrap().push(format!("direct: {e:#}")),
                }
            }
        }));
    }

    // Wait for three more rotations of both proxies, on their notifications.
    let wait = |running: &mtls_common::Running| {
        let mut rx = running
            .handle
            .identity()
            .unwrap()
            .manager()
            .unwrap()
            .subscribe();
        async move {
            let start = rx.borrow_and_update().as_ref().unwrap().generation;
            loop {
                rx.changed().await.unwrap();
                let g = rx.borrow_and_update().as_ref().unwrap().generation;
                if g >= start + ROTATIONS {
                    return g;
                }
            }
        }
    };
    let (s, c) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(wait(&server), wait(&client))
    })
    .await
    .expect("the managers renew 3-second certificates at half life");
    // One more request round after the last rotation, then stop.
    let after = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < after + 20 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed of {}: {:?}",
        failures.len(),
        ok.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)]
    );
    assert!(s > ROTATIONS && c > ROTATIONS);
    let seen = fingerprints.lock().unwrap().len();
    assert!(
        seen as u64 >= ROTATIONS,
        "new connections saw {seen} server certificates"
    );
    assert!(ok.load(Ordering::Relaxed) > 100);
}
