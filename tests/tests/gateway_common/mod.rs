//! Shared by the gateway end-to-end suites: a test "government" PKI (a root that is not the
//! mesh root) writing server and client certificates as PEM files, the gateway configuration,
//! curl over HTTPS as an agency's client would run it, and a rustls client that reports the
//! certificate the gateway served.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Hosts the gateway certificate covers.
pub const HOSTS: &[&str] = &[
    "records.example.gov",
    "api.example.gov",
    "unknown.example.org",
];

/// A government root CA and the directory its files go to.
pub struct GovPki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    pub root: PathBuf,
}

impl GovPki {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} Government Root CA"));
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Test Agency");
        let key = KeyPair::generate().unwrap();
        let root = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gov-root.pem");
        std::fs::write(&path, root.pem()).unwrap();
        Self {
            dir,
            issuer: Issuer::new(params, key),
            root: path,
        }
    }

    fn leaf(&self, cn: &str, sans: Vec<SanType>, eku: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Test Agency");
        params.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate for [`HOSTS`] to `name.pem` / `name.key`; returns the leaf DER.
    pub fn server_files(&self, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let sans = HOSTS
            .iter()
            .map(|h| SanType::DnsName((*h).try_into().unwrap()))
            .collect();
        let (cert, key) = self.leaf(
            "gateway.example.gov",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let der = CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .to_vec();
        let (c, k) = self.write(name, &cert, &key);
        (c, k, der)
    }

    /// Writes a client certificate with `sans` (URI when it has `://`, else DNS).
    pub fn client_files(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let sans = sans
            .iter()
            .map(|s| {
                if s.contains("://") {
                    SanType::URI((*s).try_into().unwrap())
                } else {
                    SanType::DnsName((*s).try_into().unwrap())
                }
            })
            .collect();
        let (cert, key) = self.leaf(name, sans, ExtendedKeyUsagePurpose::ClientAuth);
        self.write(name, &cert, &key)
    }

    fn write(&self, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
        let c = self.dir.path().join(format!("{name}.pem"));
        let k = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }
}

/// The `tls:` block of a gateway listener (indented for a listener item).
pub fn tls_yaml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "    tls:\n      certificate_chain: {}\n      private_key: {}\n{extra}",
        cert.display(),
        key.display()
    )
}

/// A gateway listener `gw` for `istio-system/ingress` with the given `tls` block.
pub fn gateway_listener(tls: &str) -> String {
    format!(
        "  - name: gw\n    address: 127.0.0.1:0\n    direction: outbound\n    gateway: istio-system/ingress\n{tls}"
    )
}

/// A route table `name` for `hosts` bound to `gateways`, sending everything to `service`.
pub fn route_yaml(name: &str, hosts: &str, gateways: &str, service: &str) -> String {
    format!(
        "  - meta: {{ name: {name}, namespace: prod }}\n    hosts: {hosts}\n    gateways: {gateways}\n    http:\n      - destinations:\n          - destination: {{ host: {service} }}\n            weight: 100\n"
    )
}

/// What one curl run gave.
#[derive(Debug)]
pub struct Curl {
    pub ok: bool,
    pub status: u16,
    pub http_version: String,
    pub upstream: String,
    pub body: String,
    pub stderr: String,
}

/// `curl -sS https://host:port/path --resolve host:port:127.0.0.1 --cacert root` plus `args`.
pub async fn curl_https(
    host: &str,
    gw: SocketAddr,
    path: &str,
    root: &Path,
    args: &[&str],
) -> Curl {
    let port = gw.port();
    let out = tokio::process::Command::new("curl")
        .arg("-sS")
        .args(["--max-time", "30"])
        .arg("--resolve")
        .arg(format!("{host}:{port}:{}", gw.ip()))
        .arg("--cacert")
        .arg(root)
        .arg("-w")
        .arg("\n%{http_code} %{http_version} %header{x-upstream}")
        .args(args)
        .arg(format!("https://{host}:{port}{path}"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = tail.splitn(3, ' ');
    Curl {
        ok: out.status.success(),
        status: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        http_version: parts.next().unwrap_or_default().to_owned(),
        upstream: parts.next().unwrap_or_default().to_owned(),
        body: body.to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The leaf certificate (DER) the gateway serves for `host`, read by a rustls client trusting
/// `root`.
pub async fn served_leaf(gw: SocketAddr, host: &str, root: &Path) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(root)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gw).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned())?, tcp)
        .await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no server certificate"))?;
    Ok(leaf.to_vec())
}

/// A gateway configuration: `preamble` (an `identity` section or nothing), listener `gw` with
/// `tls` (a [`tls_yaml`] block), one service `records` at `upstream` with the extra
/// `service_extra` lines, and the table for `records.example.gov` bound to the gateway.
pub fn records_gateway_yaml(
    preamble: &str,
    tls: &str,
    upstream: SocketAddr,
    service_extra: &str,
) -> String {
    format!(
        "admin:\n  address: 127.0.0.1:0\n{preamble}listeners:\n{}services:\n  - name: records\n    endpoints:\n      - address: {upstream}\n{service_extra}routes:\n{}",
        gateway_listener(tls),
        route_yaml(
            "records",
            "[records.example.gov]",
            "[istio-system/ingress]",
            "records"
        ),
    )
}

/// curl arguments presenting the client certificate `cert` with its key `key`.
pub fn client_cert_args((cert, key): &(PathBuf, PathBuf)) -> Vec<String> {
    vec![
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

/// Replaces `to` with the contents of `from` the way cert-manager and editors do (write a
/// sibling, rename over).
pub fn replace(from: &Path, to: &Path) {
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}
