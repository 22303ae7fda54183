//! Shared harness of the control-plane tests: a development CA in a temporary directory, a
//! control plane on 127.0.0.1:0 ports serving xDS over mTLS, simulated proxies (`XdsClient`s with
//! workload certificates from that CA), bounded waits on their status, and a `/debug/config`
//! reader.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jalin_ca::cli::make_dev_ca;
use jalin_ca::issue::{AuditLog, WorkloadCa, new_workload_csr};
use jalin_ca::spiffe::SpiffeId;
use jalin_control::server::{Control, ControlConfig, mesh};
use jalin_xds::transport::{
    AppliedConfig, ClientConfig, ClientStatus, Kind, NodeInfo, XdsClient, decode,
};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// Safety net for one awaited condition (the machine is shared; nothing is asserted on time).
pub const WAIT: Duration = Duration::from_secs(20);

/// The control plane's DNS name (the development CA is name-constrained to the trust domain).
pub const SERVER_NAME: &str = "jalin.istio-system.svc.cluster.local";

/// A temporary CA directory in the `jalin ca init-dev` layout.
pub fn dev_ca_dir(root: &Path) -> PathBuf {
    let dir = root.join("ca");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = make_dev_ca(
        "cluster.local",
        Duration::from_secs(3650 * 86400),
        Duration::from_secs(365 * 86400),
        SystemTime::now(),
    )
    .unwrap();
    std::fs::write(dir.join("root.pem"), ca.root_pem).unwrap();
    std::fs::write(dir.join("intermediate.pem"), ca.intermediate_pem).unwrap();
    std::fs::write(dir.join("intermediate-key.pem"), ca.intermediate_key_pem).unwrap();
    dir
}

/// One test's temporary tree: a development CA ([`dev_ca_dir`]) and an empty configuration
/// directory for the control plane to watch, both inside `tmp` and removed with it.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub ca: PathBuf,
    pub dir: PathBuf,
}

/// A new [`Sandbox`].
pub fn sandbox() -> Sandbox {
    let tmp = tempfile::tempdir().unwrap();
    let ca = dev_ca_dir(tmp.path());
    let dir = tmp.path().join("config");
    std::fs::create_dir_all(&dir).unwrap();
    Sandbox { tmp, ca, dir }
}

/// Loads the CA of `ca_dir` (as the control plane does).
pub fn load_ca(ca_dir: &Path) -> WorkloadCa {
    let (audit, _) = AuditLog::in_memory();
    WorkloadCa::load(
        &mesh::ca_from_dir(ca_dir, "cluster.local"),
        audit,
        SystemTime::now(),
    )
    .unwrap()
}

/// Settings for a control plane on ephemeral ports reading `config_dir`.
pub fn config(config_dir: Option<&Path>, ca_dir: &Path) -> ControlConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ControlConfig {
        config_dir: config_dir.map(Path::to_owned),
        kube_client: None,
        xds_listen: any,
        ca_listen: Some(any),
        health_listen: any,
        ca: Some(mesh::ca_from_dir(ca_dir, "cluster.local")),
        insecure_xds: false,
        root_namespace: "istio-system".into(),
        cluster_domain: "cluster.local".into(),
        dns_names: vec![SERVER_NAME.into()],
        join_tokens: None,
        webhook: None,
    }
}

/// Starts a control plane and waits until it has pushed its first configuration.
pub async fn start(config: ControlConfig) -> Control {
    let control = Control::start(config).await.unwrap();
    tokio::time::timeout(WAIT, control.ready())
        .await
        .expect("control plane not ready");
    control
}

/// A simulated proxy.
pub struct Proxy {
    pub client: XdsClient,
    pub status: watch::Receiver<ClientStatus>,
    pub id: String,
}

/// Connects a proxy `id` in `namespace` with `labels` (`k=v,...`), over mTLS with a workload
/// certificate for `spiffe://cluster.local/ns/<namespace>/sa/default`.
pub fn proxy(control: &Control, id: &str, namespace: &str, labels: &str) -> Proxy {
    proxy_at(
        control.ca.as_ref().unwrap(),
        control.xds_addr,
        id,
        namespace,
        labels,
    )
}

/// As [`proxy`], with a certificate from `ca`, toward `addr`.
pub fn proxy_at(
    ca: &WorkloadCa,
    addr: SocketAddr,
    id: &str,
    namespace: &str,
    labels: &str,
) -> Proxy {
    let mut metadata = BTreeMap::new();
    metadata.insert("NAMESPACE".to_owned(), namespace.to_owned());
    metadata.insert("SERVICE_ACCOUNT".to_owned(), "default".to_owned());
    metadata.insert("LABELS".to_owned(), labels.to_owned());
    proxy_with(
        Some(workload_tls(ca, namespace, "default")),
        addr,
        id,
        metadata,
    )
}

/// A client TLS configuration toward the control plane with a workload certificate from `ca`
/// for `spiffe://cluster.local/ns/<namespace>/sa/<service_account>`.
pub fn workload_tls(ca: &WorkloadCa, namespace: &str, service_account: &str) -> ClientTlsConfig {
    let wid = SpiffeId::new_workload("cluster.local", namespace, service_account).unwrap();
    let (_, key) = new_workload_csr(&wid).unwrap();
    let issued = ca
        .sign(
            &wid,
            &key,
            Duration::from_secs(3600),
            &[],
            SystemTime::now(),
        )
        .unwrap();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.roots_pem()))
        .identity(Identity::from_pem(issued.chain_pem, key.serialize_pem()))
        .domain_name(SERVER_NAME)
}

/// A proxy `id` toward `addr` (over TLS with `tls`, plaintext without) announcing `metadata`.
pub fn proxy_with(
    tls: Option<ClientTlsConfig>,
    addr: SocketAddr,
    id: &str,
    metadata: BTreeMap<String, String>,
) -> Proxy {
    let node = NodeInfo {
        id: id.to_owned(),
        cluster: "test".into(),
        metadata,
    };
    let mut cfg = ClientConfig::new(node);
    cfg.backoff_base = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let client = XdsClient::connect(
        &format!("{scheme}://{addr}"),
        tls,
        cfg,
        |_: &AppliedConfig| Ok::<(), String>(()),
    )
    .unwrap();
    let status = client.status();
    Proxy {
        client,
        status,
        id: id.to_owned(),
    }
}

impl Proxy {
    /// Waits until the applied configuration satisfies `done`; returns the status then.
    pub async fn until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&ClientStatus) -> bool,
    ) -> ClientStatus {
        let got = tokio::time::timeout(WAIT, self.status.wait_for(|s| done(s)))
            .await
            .map(|r| r.map(|s| s.clone()));
        match got {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => panic!("{}: client stopped while waiting for {what}", self.id),
            Err(_) => panic!(
                "{}: not within {WAIT:?}: {what}; applied: {:?}; last disconnect: {:?}; last error: {:?}",
                self.id,
                self.status.borrow().applied.versions(),
                self.status.borrow().last_disconnect,
                self.status.borrow().last_error
            ),
        }
    }

    /// Names of the applied resources of `kind`.
    pub fn names(&self, kind: Kind) -> Vec<String> {
        names(&self.status.borrow().applied, kind)
    }
}

/// Names of the resources of `kind` in `applied`.
pub fn names(applied: &AppliedConfig, kind: Kind) -> Vec<String> {
    applied
        .of_type(kind.type_url())
        .map(|r| r.name.clone())
        .collect()
}

/// The version of one resource, if present.
pub fn version(s: &ClientStatus, kind: Kind, name: &str) -> Option<String> {
    s.applied
        .get(kind.type_url(), name)
        .map(|r| r.version.clone())
}

/// Decodes one resource's body.
pub fn body<T: DeserializeOwned>(s: &ClientStatus, kind: Kind, name: &str) -> Option<T> {
    let r = s.applied.get(kind.type_url(), name)?;
    Some(decode::<T>(&r.type_url, &r.value).unwrap().body)
}

/// GETs `path` on the health port; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split(' ').nth(1).unwrap().parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Writes a file atomically (write to a temporary name, rename), as editors and config
/// management tools do.
pub fn write(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// An AuthorizationPolicy selecting `app` in `ns`, allowing `principal`.
pub fn authz(ns: &str, name: &str, app: Option<&str>, principal: &str) -> String {
    let selector = app
        .map(|a| format!("  selector:\n    matchLabels:\n      app: {a}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{selector}  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"{principal}\"]\n"
    )
}

/// A ServiceEntry `host` in `ns` on port 80 with one static endpoint per address.
pub fn service_entry(ns: &str, name: &str, host: &str, addresses: &[&str]) -> String {
    let eps: String = addresses
        .iter()
        .map(|a| format!("  - address: {a}\n    labels:\n      version: v1\n"))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [\"{host}\"]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  endpoints:\n{eps}"
    )
}

/// A Sidecar in `ns` whose egress admits only `hosts`.
pub fn sidecar(ns: &str, hosts: &[&str]) -> String {
    let hosts: String = hosts.iter().map(|h| format!("    - \"{h}\"\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: {ns}\nspec:\n  egress:\n  - hosts:\n{hosts}"
    )
}
