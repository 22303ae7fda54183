//! Shared by the mTLS and authorization end-to-end suites: a development CA, server-side and
//! client-side proxies with their own SPIFFE identities (certificates issued by the CA through
//! the proxy's identity manager), the seed Istio policies imported to the native model, log
//! capture and metric scraping.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jalin_ca::identity::{CertificateSource, DevCa};
use jalin_ca::spiffe::TrustDomain;
use jalin_proxy::{ConfigSource, Proxy, ProxyHandle, StartOptions};

pub const TD: &str = "cluster.local";

/// A CA and the directory its root is written to.
pub struct Mesh {
    pub ca: Arc<DevCa>,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Mesh {
    pub fn new(ttl: Duration) -> Self {
        let ca = Arc::new(DevCa::new(TrustDomain::new(TD).unwrap(), ttl).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.pem");
        std::fs::write(&root, ca.root_pem()).unwrap();
        Self { ca, dir, root }
    }

    pub fn id(ns: &str, sa: &str) -> String {
        format!("spiffe://{TD}/ns/{ns}/sa/{sa}")
    }

    /// The `identity` section of a workload whose certificate comes from this CA.
    pub fn identity_yaml(&self, ns: &str, sa: &str, labels: &[(&str, &str)]) -> String {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!(
            "identity:\n  trust_domain: {TD}\n  namespace: {ns}\n  service_account: {sa}\n  labels: {{ {} }}\n  trust_bundles: [{}]\n  certificate: external\n",
            labels.join(", "),
            self.root.display()
        )
    }

    /// Starts a proxy whose certificates this CA issues; returns once it holds one.
    pub async fn start(&self, yaml: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.yaml");
        std::fs::write(&path, yaml).unwrap();
        let source: Arc<dyn CertificateSource> = self.ca.clone();
        let handle = Proxy::start_with(
            ConfigSource::File(path.clone()),
            StartOptions {
                certificate_source: Some(source),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("proxy did not start: {e}\n{yaml}"));
        if let Some(m) = handle.identity().and_then(|i| i.manager()) {
            m.ready().await;
        }
        Running {
            handle,
            _dir: dir,
            path,
        }
    }

    /// A server-side proxy: inbound listener `in` (mode `mtls`, or from policies when `None`)
    /// to `upstream`, with `authorization` (YAML, indented under `authorization:`).
    pub async fn server(
        &self,
        ns: &str,
        sa: &str,
        labels: &[(&str, &str)],
        upstream: SocketAddr,
        mtls: Option<&str>,
        authorization: &str,
    ) -> Running {
        let mtls = mtls.map(|m| format!("    mtls: {m}\n")).unwrap_or_default();
        let yaml = format!(
            "admin:\n  address: 127.0.0.1:0\n{}listeners:\n  - name: in\n    address: 127.0.0.1:0\n    direction: inbound\n    service: app\n{mtls}services:\n  - name: app\n    endpoints:\n      - address: {upstream}\nauthorization:\n{authorization}",
            self.identity_yaml(ns, sa, labels)
        );
        self.start(&yaml).await
    }

    /// A client-side proxy: one outbound listener per `(name, server inbound, server id)`,
    /// each to a service originating mTLS that expects that server identity.
    pub async fn client(
        &self,
        ns: &str,
        sa: &str,
        targets: &[(&str, SocketAddr, &str)],
    ) -> Running {
        let mut listeners = String::new();
        let mut services = String::new();
        for (name, addr, id) in targets {
            listeners.push_str(&format!(
                "  - name: {name}\n    address: 127.0.0.1:0\n    direction: outbound\n    service: {name}\n"
            ));
            services.push_str(&format!(
                "  - name: {name}\n    endpoints:\n      - address: {addr}\n    tls:\n      mode: istio_mutual\n      identity: {id}\n"
            ));
        }
        let yaml = format!(
            "admin:\n  address: 127.0.0.1:0\n{}listeners:\n{listeners}services:\n{services}",
            self.identity_yaml(ns, sa, &[])
        );
        self.start(&yaml).await
    }

    /// Writes a leaf + intermediate chain and key for `id` (with `dns` names), as
    /// `jalin ca issue` does for bare-metal hosts and non-mesh clients.
    pub fn issue_files(&self, name: &str, id: &str, dns: &[&str]) -> (PathBuf, PathBuf) {
        let id = jalin_ca::spiffe::SpiffeId::parse(id).unwrap();
        let (leaf, key) = self.ca.issue_pem(&id, dns).unwrap();
        let cert = self.dir.path().join(format!("{name}.pem"));
        let keyf = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, format!("{leaf}{}", self.ca.intermediate_pem())).unwrap();
        std::fs::write(&keyf, key).unwrap();
        (cert, keyf)
    }
}

/// A running in-process proxy.
pub struct Running {
    pub handle: ProxyHandle,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.handle.listener_addr(name).unwrap()
    }

    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.handle.admin_addr());
        let out = jalin_tests::client::curl(&url, &[]).await.unwrap();
        out.body
    }
}

/// The seed Istio files, imported to native AuthorizationPolicies and rendered as the YAML
/// (JSON flow style) of `authorization.policies`.
pub fn seed_policies(files: &[&str]) -> String {
    // The repository's copy of the user's seed files (control/tests/fixtures/seed-policies).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../control/tests/fixtures/seed-policies");
    assert!(dir.is_dir(), "seed policies not found at {}", dir.display());
    let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
    let loaded = jalin_control::istio::load_paths(&paths);
    assert!(loaded.errors().next().is_none(), "{:?}", loaded.findings);
    let mut findings = Vec::new();
    let native = jalin_control::istio::convert::convert(&loaded.resources, &mut findings);
    assert!(!native.authorization_policies.is_empty());
    native
        .authorization_policies
        .iter()
        .map(|p| format!("    - {}\n", serde_json::to_string(p).unwrap()))
        .collect()
}

/// Captured log lines (JSON), from a global subscriber installed once per test binary.
pub fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter("info")
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A plain HTTP/1.1 request with extra headers; returns the status and body.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    let client = jalin_tests::client::http1_client();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = client
        .request(req.body(Full::new(bytes::Bytes::new()))?)
        .await?;
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
