//! The mesh configuration file (`--mesh-config`, the `jalin-mesh` ConfigMap's `mesh.yaml`) and
//! the resolution of `jalin control`'s flags into a [`ControlConfig`]. Only the fields the control
//! plane reads are typed here (the injection webhook's among them); other sections (priority)
//! belong to other components.

use std::path::{Path, PathBuf};

use jalin_ca::chain::KeySource;
use jalin_ca::issue::{CaConfig, TtlPolicy};
use serde::Deserialize;

use super::webhook::WebhookConfig;
use super::{ControlArgs, ControlConfig};
use crate::k8s::inject::InjectSettings;
use k8s_openapi::api::core::v1::ResourceRequirements;

/// Istio's default root namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// `mesh.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshConfig {
    pub trust_domain: Option<String>,
    pub root_namespace: Option<String>,
    pub control_plane: ControlPlane,
    pub ca: Option<MeshCa>,
    pub injection: MeshInjection,
}

/// `injection`: what the webhook injects (each field unset keeps [`InjectSettings`]' default).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshInjection {
    pub proxy_image: Option<String>,
    pub init_image: Option<String>,
    /// Address proxies dial for xDS and certificates (default: `controlPlane.address`).
    pub control_plane: Option<String>,
    pub native_sidecar: Option<bool>,
    pub enabled_by_default: Option<bool>,
    pub proxy_uid: Option<i64>,
    pub token_audience: Option<String>,
    pub rewrite_app_probes: Option<bool>,
    pub image_pull_policy: Option<String>,
    /// Requests and limits of the proxy container (Kubernetes `ResourceRequirements`).
    pub resources: Option<ResourceRequirements>,
    /// Comma-separated inbound ports that bypass the proxy in every injected pod.
    pub exclude_inbound_ports: Option<String>,
    /// Comma-separated outbound CIDRs that bypass the proxy in every injected pod.
    #[serde(rename = "excludeOutboundIPRanges")]
    pub exclude_outbound_ip_ranges: Option<String>,
    /// How long injected proxies drain after SIGTERM (`25s`; whole seconds, 1s to 10m); a pod's
    /// `proxy.istio.io/config` `drainDuration` or `terminationDrainDuration` overrides it.
    pub drain_duration: Option<String>,
}

/// Splits a comma-separated list and parses each item.
fn comma_list<T: std::str::FromStr>(value: Option<&str>) -> Result<Vec<T>, String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<T>().map_err(|_| format!("`{s}`")))
        .collect()
}

impl MeshInjection {
    /// The injection settings for a mesh of `trust_domain` whose control plane proxies reach at
    /// `control_plane_address`; an error names the field and the item that does not parse.
    pub fn settings(
        &self,
        trust_domain: &str,
        control_plane_address: Option<&str>,
    ) -> Result<InjectSettings, (&'static str, String)> {
        let exclude_inbound_ports: Vec<u16> = comma_list(self.exclude_inbound_ports.as_deref())
            .map_err(|item| {
                (
                    "excludeInboundPorts",
                    format!(
                        "{item} is not a port; expected a comma-separated list of ports 1-65535"
                    ),
                )
            })?;
        if exclude_inbound_ports.contains(&0) {
            return Err((
                "excludeInboundPorts",
                "`0` is not a port; expected a comma-separated list of ports 1-65535".into(),
            ));
        }
        let exclude_outbound_ranges: Vec<ipnet::IpNet> =
            comma_list(self.exclude_outbound_ip_ranges.as_deref()).map_err(|item| {
                (
                    "excludeOutboundIPRanges",
                    format!("{item} is not a CIDR; expected a comma-separated list such as 169.254.169.254/32"),
                )
            })?;
        let d = InjectSettings::default();
        let drain_duration = match self.drain_duration.as_deref() {
            Some(value) => {
                crate::k8s::drain::parse_drain(value).map_err(|reason| ("drainDuration", reason))?
            }
            None => d.drain_duration,
        };
        Ok(InjectSettings {
            proxy_image: self.proxy_image.clone().unwrap_or(d.proxy_image),
            init_image: self.init_image.clone().unwrap_or(d.init_image),
            control_plane: self
                .control_plane
                .clone()
                .or_else(|| control_plane_address.map(str::to_owned))
                .unwrap_or(d.control_plane),
            trust_domain: trust_domain.to_owned(),
            native_sidecar: self.native_sidecar.unwrap_or(d.native_sidecar),
            enabled_by_default: self.enabled_by_default.unwrap_or(d.enabled_by_default),
            proxy_uid: self.proxy_uid.unwrap_or(d.proxy_uid),
            token_audience: self.token_audience.clone().unwrap_or(d.token_audience),
            rewrite_app_probes: self.rewrite_app_probes.unwrap_or(d.rewrite_app_probes),
            image_pull_policy: self.image_pull_policy.clone(),
            resources: self.resources.clone(),
            exclude_inbound_ports,
            exclude_outbound_ranges,
            drain_duration,
            ..d
        })
    }
}

/// `controlPlane`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ControlPlane {
    pub address: Option<String>,
    pub dns_names: Vec<String>,
}

/// `ca`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshCa {
    pub root_cert_file: Option<PathBuf>,
    pub cert_chain_file: Option<PathBuf>,
    /// A PKCS#8 PEM file, or a `pkcs11:` URI.
    pub key_file: Option<String>,
    pub key_uri: Option<String>,
    /// The chart's HSM form: the key's RFC 7512 URI and the module path (added to the URI as
    /// `module-path` when the URI does not name one).
    pub pkcs11: Option<MeshPkcs11>,
    pub workload_cert_ttl: Option<String>,
    pub max_workload_cert_ttl: Option<String>,
}

/// `ca.pkcs11`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MeshPkcs11 {
    pub uri: String,
    pub module: Option<String>,
}

impl MeshPkcs11 {
    /// The URI with the module path in it.
    fn key_uri(&self) -> String {
        match self.module.as_deref().filter(|m| !m.is_empty()) {
            Some(module) if !self.uri.contains("module-path=") => {
                let sep = if self.uri.contains('?') { '&' } else { '?' };
                format!("{}{sep}module-path={module}", self.uri)
            }
            _ => self.uri.clone(),
        }
    }
}

/// Why the configuration could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path}: ca.{field}: {reason}")]
    Field {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
    #[error("{path}: injection.{field}: {reason}")]
    Injection {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
    #[error("Kubernetes client: {0}; run inside a pod, or set KUBECONFIG")]
    Kube(String),
}

/// Reads a mesh config file.
pub fn load(path: &Path) -> Result<MeshConfig, MeshError> {
    let text = std::fs::read_to_string(path).map_err(|e| MeshError::File {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })?;
    serde_saphyr::from_str(&text).map_err(|e| MeshError::File {
        path: path.to_owned(),
        reason: format!("invalid mesh config: {e}"),
    })
}

fn ca_from_mesh(path: &Path, ca: &MeshCa, trust_domain: &str) -> Result<CaConfig, MeshError> {
    let field = |field: &'static str, reason: String| MeshError::Field {
        path: path.to_owned(),
        field,
        reason,
    };
    let required = |v: &Option<PathBuf>, name: &'static str| {
        v.clone()
            .ok_or_else(|| field(name, "missing; give the PEM file's path".into()))
    };
    let key = ca
        .key_uri
        .clone()
        .or_else(|| ca.pkcs11.as_ref().map(MeshPkcs11::key_uri))
        .or_else(|| ca.key_file.clone())
        .ok_or_else(|| {
            field(
                "keyFile",
                "missing; give the intermediate key file, a pkcs11: URI (keyUri), or pkcs11.uri and pkcs11.module".into(),
            )
        })?;
    let key: KeySource = key.parse().map_err(|e| field("keyFile", format!("{e}")))?;
    let mut ttl = TtlPolicy::default();
    if let Some(t) = &ca.workload_cert_ttl {
        ttl.default_ttl =
            jalin_ca::cli::files::parse_duration(t).map_err(|e| field("workloadCertTTL", e))?;
    }
    if let Some(t) = &ca.max_workload_cert_ttl {
        ttl.max_ttl =
            jalin_ca::cli::files::parse_duration(t).map_err(|e| field("maxWorkloadCertTTL", e))?;
    }
    Ok(CaConfig {
        trust_domain: trust_domain.to_owned(),
        chain_path: required(&ca.cert_chain_file, "certChainFile")?,
        roots_path: required(&ca.root_cert_file, "rootCertFile")?,
        key,
        ttl,
    })
}

/// The CA of a `jalin ca init-dev` directory.
pub fn ca_from_dir(dir: &Path, trust_domain: &str) -> CaConfig {
    CaConfig {
        trust_domain: trust_domain.to_owned(),
        chain_path: dir.join("intermediate.pem"),
        roots_path: dir.join("root.pem"),
        key: KeySource::Pkcs8File(dir.join("intermediate-key.pem")),
        ttl: TtlPolicy::default(),
    }
}

/// Resolves flags (which win) and the mesh config into a [`ControlConfig`].
pub async fn resolve(args: &ControlArgs) -> Result<ControlConfig, MeshError> {
    let mesh = match &args.mesh_config {
        Some(p) => load(p)?,
        None => MeshConfig::default(),
    };
    let trust_domain = args
        .trust_domain
        .clone()
        .or(mesh.trust_domain.clone())
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned());
    let root_namespace = args
        .root_namespace
        .clone()
        .or(mesh.root_namespace.clone())
        .unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.to_owned());
    let ca = match (&args.ca_dir, &args.mesh_config, &mesh.ca) {
        (Some(dir), _, _) => Some(ca_from_dir(dir, &trust_domain)),
        (None, Some(path), Some(ca)) => Some(ca_from_mesh(path, ca, &trust_domain)?),
        _ => None,
    };
    let kube_client = if args.kubernetes {
        Some(
            kube::Client::try_default()
                .await
                .map_err(|e| MeshError::Kube(e.to_string()))?,
        )
    } else {
        None
    };
    let mut dns_names = mesh.control_plane.dns_names.clone();
    if dns_names.is_empty() {
        // The Service name under the cluster domain: inside the trust domain's name constraints
        // for a development CA made by `jalin ca init-dev`.
        dns_names = vec![format!(
            "jalin.{root_namespace}.svc.{}",
            args.cluster_domain
        )];
    }
    let webhook = if args.kubernetes {
        let injection = mesh
            .injection
            .settings(&trust_domain, mesh.control_plane.address.as_deref())
            .map_err(|(field, reason)| MeshError::Injection {
                path: args.mesh_config.clone().unwrap_or_default(),
                field,
                reason,
            })?;
        Some(WebhookConfig {
            listen: args.webhook_listen,
            injection,
        })
    } else {
        None
    };
    Ok(ControlConfig {
        config_dir: args.config_dir.clone(),
        kube_client,
        xds_listen: args.xds_listen,
        ca_listen: Some(args.ca_listen),
        health_listen: args.health_listen,
        ca,
        insecure_xds: args.insecure_xds,
        root_namespace,
        cluster_domain: args.cluster_domain.clone(),
        dns_names,
        join_tokens: args.join_tokens.clone(),
        webhook,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_pkcs11_section_names_the_key_and_its_module() {
        let mesh: MeshConfig = serde_saphyr::from_str(
            "ca:\n  rootCertFile: /etc/jalin/ca/root-cert.pem\n  certChainFile: /etc/jalin/ca/ca-cert.pem\n  pkcs11:\n    uri: \"pkcs11:token=jalin;object=mesh-ca?pin-source=file:/etc/jalin/hsm-pin/pin\"\n    module: \"/usr/lib/softhsm/libsofthsm2.so\"\n",
        )
        .unwrap();
        let ca = ca_from_mesh(
            Path::new("mesh.yaml"),
            mesh.ca.as_ref().unwrap(),
            "cluster.local",
        )
        .unwrap();
        match ca.key {
            KeySource::Pkcs11(uri) => assert_eq!(
                uri.module_path,
                PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
            ),
            other => panic!("expected a PKCS#11 key, got {}", other.describe()),
        }
    }

    #[test]
    fn injection_section_sets_the_webhook_settings() {
        let mesh: MeshConfig = serde_saphyr::from_str(
            "trustDomain: gov.example\ncontrolPlane:\n  address: jalin.istio-system.svc:15012\ninjection:\n  proxyImage: registry.example/jalin-proxy:1\n  nativeSidecar: false\n  enabledByDefault: false\n  proxyUid: 1337\n  tokenAudience: jalin-ca\n  imagePullPolicy: IfNotPresent\n  resources:\n    requests: {cpu: 100m, memory: 128Mi}\n    limits: {cpu: \"2\", memory: 1Gi}\n  excludeInboundPorts: \"9100, 9101\"\n  excludeOutboundIPRanges: \"169.254.169.254/32\"\n  drainDuration: 30s\n",
        )
        .unwrap();
        let s = mesh
            .injection
            .settings("gov.example", mesh.control_plane.address.as_deref())
            .unwrap();
        assert_eq!(s.proxy_image, "registry.example/jalin-proxy:1");
        assert_eq!(s.control_plane, "jalin.istio-system.svc:15012");
        assert_eq!(s.trust_domain, "gov.example");
        assert!(!s.native_sidecar);
        assert_eq!(s.init_image, InjectSettings::default().init_image);
        assert_eq!(s.image_pull_policy.as_deref(), Some("IfNotPresent"));
        let limits = s.resources.unwrap().limits.unwrap();
        assert_eq!(limits["memory"].0, "1Gi");
        assert_eq!(s.exclude_inbound_ports, [9100, 9101]);
        assert_eq!(
            s.exclude_outbound_ranges[0].to_string(),
            "169.254.169.254/32"
        );

        let bad: MeshInjection =
            serde_saphyr::from_str("excludeInboundPorts: \"80, http\"\n").unwrap();
        let (field, reason) = bad.settings("cluster.local", None).unwrap_err();
        assert_eq!(field, "excludeInboundPorts");
        assert!(reason.contains("`http` is not a port"), "{reason}");
    }
}
