//! The bootstrap's `control_plane:` section: where the control plane is, who it must be, how this
//! proxy identifies itself to it (node), and the TLS material for the mTLS stream.
//!
//! Strict by default: a control plane is reached over mTLS; plaintext needs
//! `insecure_plaintext: true` written out (tests and the local demo), never by omission.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jalin_xds::transport::backoff::{DEFAULT_BASE, DEFAULT_MAX};
use jalin_xds::transport::client::ChannelFactory;
use jalin_xds::transport::client::DEFAULT_CONNECT_TIMEOUT;
use jalin_xds::transport::{ClientConfig, NodeInfo};
use serde::{Deserialize, Serialize};

use super::dial::{TlsMaterial, mtls_factory};

/// Largest PEM file read for the control-plane TLS material (a chain of a few certificates).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// `control_plane:` in the bootstrap file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneConfig {
    /// `host:port` of the control plane's ADS endpoint, for example
    /// `jalin-control.jalin-system.svc:15010` (a `https://` or `http://` prefix is accepted).
    pub address: String,
    /// The control plane's SPIFFE ID (`spiffe://<td>/ns/<ns>/sa/<sa>`): over mTLS its
    /// certificate must carry it (required with `tls:`); shown in `/config_dump`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// How this proxy announces itself; the control plane scopes resources by it.
    pub node: NodeConfig,
    /// mTLS material; required unless `insecure_plaintext` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ControlPlaneTls>,
    /// Speak plaintext HTTP/2 to the control plane. Only for tests and the local demo.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// Reconnect backoff: first delay (ms); doubles with jitter up to `backoff_max_ms`.
    #[serde(default = "default_backoff_base_ms")]
    pub backoff_base_ms: u64,
    /// Reconnect backoff: longest delay (ms).
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// TCP and TLS connect timeout (ms).
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// The proxy's node: id, namespace, service account and workload labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique per proxy, for example `sidecar~10.0.0.7~reviews-v1-7f9c.prod~prod.svc.cluster.local`.
    pub id: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account: String,
    /// The workload's labels (policy selectors and Sidecar scopes match on them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// PEM files for the mTLS stream to the control plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlPlaneTls {
    /// Roots that sign the control plane's certificate.
    pub ca: PathBuf,
    /// This proxy's certificate chain.
    pub certificate: PathBuf,
    /// This proxy's private key (PKCS#8 PEM). Never logged.
    pub key: PathBuf,
    /// The TLS server name sent (SNI only; the certificate is checked against `identity`);
    /// default: the host of `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn default_backoff_base_ms() -> u64 {
    DEFAULT_BASE.as_millis() as u64
}

fn default_backoff_max_ms() -> u64 {
    DEFAULT_MAX.as_millis() as u64
}

fn default_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT.as_millis() as u64
}

/// Node metadata keys the control plane reads (Istio's names where Istio has one).
pub const META_NAMESPACE: &str = "NAMESPACE";
/// Service account metadata key.
pub const META_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
/// Labels metadata key: a JSON object of strings (the control plane also reads `k=v,k2=v2`).
pub const META_LABELS: &str = "LABELS";

/// A problem in `control_plane:`: the field (below `control_plane.`) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapProblem {
    /// Field path below `control_plane`, for example `tls`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: String,
}

impl ControlPlaneConfig {
    /// Checks the section without touching files or the network.
    pub fn validate(&self) -> Result<(), BootstrapProblem> {
        let problem = |path: &str, message: String, hint: &str| BootstrapProblem {
            path: path.to_owned(),
            message,
            hint: hint.to_owned(),
        };
        let hostport = strip_scheme(&self.address);
        if hostport.is_empty() || !hostport.contains(':') {
            return Err(problem(
                "address",
                format!("`{}` is not host:port", self.address),
                "write the control plane's ADS address, for example jalin-control.jalin-system.svc:15010",
            ));
        }
        if self.address.starts_with("http://") && !self.insecure_plaintext {
            return Err(problem(
                "address",
                format!("`{}` is plaintext", self.address),
                "use host:port with `tls:`, or set `insecure_plaintext: true` for a test setup",
            ));
        }
        if self.node.id.is_empty() {
            return Err(problem(
                "node.id",
                "is empty".into(),
                "give every proxy a unique node id",
            ));
        }
        if self.node.namespace.is_empty() {
            return Err(problem(
                "node.namespace",
                "is empty".into(),
                "set the workload's namespace; policies and scopes are chosen by it",
            ));
        }
        if let Some(id) = &self.identity
            && jalin_ca::spiffe::SpiffeId::parse_workload(id).is_err()
        {
            return Err(problem(
                "identity",
                format!("`{id}` is not a SPIFFE ID"),
                "expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>",
            ));
        }
        match (&self.tls, self.insecure_plaintext) {
            (None, false) => Err(problem(
                "tls",
                "is missing; the control plane is reached over mTLS".into(),
                "give tls: { ca, certificate, key }, or set `insecure_plaintext: true` for a test setup",
            )),
            (Some(_), false) if self.identity.is_none() => Err(problem(
                "identity",
                "is missing; over mTLS the control plane is authenticated by its SPIFFE ID".into(),
                "set identity: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>",
            )),
            (Some(_), true) => Err(problem(
                "insecure_plaintext",
                "is true while `tls:` is given".into(),
                "choose one: remove `tls:` or remove `insecure_plaintext`",
            )),
            _ if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms => {
                Err(problem(
                    "backoff_max_ms",
                    format!(
                        "backoff {}..{} ms is not a range",
                        self.backoff_base_ms, self.backoff_max_ms
                    ),
                    "expected 0 < backoff_base_ms <= backoff_max_ms",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The URI the client dials: `http://` for plaintext, `https://` for mTLS.
    pub fn endpoint(&self) -> String {
        let hostport = strip_scheme(&self.address);
        if self.insecure_plaintext {
            format!("http://{hostport}")
        } else {
            format!("https://{hostport}")
        }
    }

    /// The node as announced on the stream: id, cluster (the namespace) and string metadata.
    pub fn node_info(&self) -> NodeInfo {
        let mut metadata = BTreeMap::new();
        metadata.insert(META_NAMESPACE.to_owned(), self.node.namespace.clone());
        if !self.node.service_account.is_empty() {
            metadata.insert(
                META_SERVICE_ACCOUNT.to_owned(),
                self.node.service_account.clone(),
            );
        }
        if !self.node.labels.is_empty() {
            // A JSON object, so label values may hold `,` and `=`.
            let labels = serde_json::to_string(&self.node.labels).unwrap_or_default();
            metadata.insert(META_LABELS.to_owned(), labels);
        }
        NodeInfo {
            id: self.node.id.clone(),
            cluster: self.node.namespace.clone(),
            metadata,
        }
    }

    /// The transport client's settings (every jalin kind, wildcard; this section's backoff).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new(self.node_info());
        c.backoff_base = Duration::from_millis(self.backoff_base_ms);
        c.backoff_max = Duration::from_millis(self.backoff_max_ms);
        c.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        c
    }

    /// The URI tonic dials: always `http://`, because TLS, when configured, is done by the
    /// connector of [`ControlPlaneConfig::channel_factory`] (SPIFFE-ID verification).
    pub fn dial_uri(&self) -> String {
        format!("http://{}", strip_scheme(&self.address))
    }

    /// Reads the TLS files and builds the mTLS dialer (`None` for plaintext).
    pub fn channel_factory(&self) -> Result<Option<ChannelFactory>, String> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let material = TlsMaterial {
            ca_pem: read_pem(&tls.ca, "control_plane.tls.ca")?,
            cert_pem: read_pem(&tls.certificate, "control_plane.tls.certificate")?,
            key_pem: read_pem(&tls.key, "control_plane.tls.key")?,
        };
        let hostport = strip_scheme(&self.address);
        let sni = match &tls.server_name {
            Some(n) => n.clone(),
            None => host_of(hostport).to_owned(),
        };
        let identity = self.identity.as_deref().unwrap_or_default();
        mtls_factory(hostport, &sni, identity, &material)
            .map(Some)
            .map_err(|e| format!("control_plane.{e}"))
    }
}

fn strip_scheme(address: &str) -> &str {
    address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or(address)
}

fn host_of(hostport: &str) -> &str {
    if let Some(rest) = hostport.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    hostport.rsplit_once(':').map_or(hostport, |(h, _)| h)
}

fn read_pem(path: &Path, field: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_PEM_BYTES {
        return Err(format!(
            "{field}: {} is {} bytes; the limit is {MAX_PEM_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{field}: cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> ControlPlaneConfig {
        ControlPlaneConfig {
            address: "127.0.0.1:15010".into(),
            identity: Some("spiffe://cluster.local/ns/jalin-system/sa/jalin-control".into()),
            node: NodeConfig {
                id: "n1".into(),
                namespace: "prod".into(),
                service_account: "reviews".into(),
                labels: [("app".to_owned(), "reviews".to_owned())].into(),
            },
            tls: None,
            insecure_plaintext: true,
            backoff_base_ms: 100,
            backoff_max_ms: 1000,
            connect_timeout_ms: 1000,
        }
    }

    #[test]
    fn plaintext_needs_the_explicit_flag() {
        let mut cp = plain();
        assert_eq!(cp.validate(), Ok(()));
        assert_eq!(cp.endpoint(), "http://127.0.0.1:15010");
        cp.insecure_plaintext = false;
        assert_eq!(cp.validate().unwrap_err().path, "tls");
        cp.address = "http://127.0.0.1:15010".into();
        assert_eq!(cp.validate().unwrap_err().path, "address");
    }

    #[test]
    fn bad_identity_and_node_are_named() {
        let mut cp = plain();
        cp.identity = Some("cluster.local/ns/x/sa/y".into());
        assert_eq!(cp.validate().unwrap_err().path, "identity");
        let mut cp = plain();
        cp.node.id.clear();
        assert_eq!(cp.validate().unwrap_err().path, "node.id");
    }

    #[test]
    fn node_metadata_carries_namespace_account_and_labels() {
        let node = plain().node_info();
        assert_eq!(node.cluster, "prod");
        assert_eq!(node.metadata["NAMESPACE"], "prod");
        assert_eq!(node.metadata["SERVICE_ACCOUNT"], "reviews");
        assert_eq!(node.metadata["LABELS"], r#"{"app":"reviews"}"#);
    }

    #[test]
    fn host_is_taken_from_the_address() {
        assert_eq!(host_of("cp.example:15010"), "cp.example");
        assert_eq!(host_of("[::1]:15010"), "::1");
    }
}
