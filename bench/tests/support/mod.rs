//! Test support: a loopback TCP forwarder standing in for a proxy, a throw-away PKI, child
//! processes killed on drop, and common load settings.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use jalin_bench::client::{HttpVersion, RequestSpec};
use jalin_bench::scenario::LoadConfig;
use jalin_bench::tls::ClientTls;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::{TcpListener, TcpStream};

/// A TCP forwarder on 127.0.0.1:0 to `upstream`: the "proxy" of the overhead tests.
pub async fn forwarder(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    addr
}

/// Load settings for short test runs.
pub fn load(version: HttpVersion, connections: usize, body: usize) -> LoadConfig {
    LoadConfig {
        version,
        spec: RequestSpec::parse(None, &["x-test: 1".to_owned()], body).unwrap(),
        tls: ClientTls::default(),
        connections,
        h2_streams: 10,
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        precise: true,
    }
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PEM files of a CA, a server certificate for `localhost`/127.0.0.1 and a client certificate.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ca(dir.path(), "ca", "bench test CA");
        leaf(
            dir.path(),
            "server",
            &issuer,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        leaf(
            dir.path(),
            "client",
            &issuer,
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        // A second, unrelated CA for negative tests.
        ca(dir.path(), "other-ca", "unrelated CA");
        Self { dir }
    }
}

fn ca(dir: &Path, name: &str, cn: &str) -> Issuer<'static, KeyPair> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    Issuer::new(params, key)
}

fn leaf(dir: &Path, name: &str, ca: &Issuer<'static, KeyPair>, usage: ExtendedKeyUsagePurpose) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
}
