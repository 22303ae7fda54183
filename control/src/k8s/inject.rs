//! The sidecar-injection webhook's core: decides whether a pod gets the jalin proxy (namespace
//! label and pod label/annotation semantics as Istio documents them) and renders the JSON patch
//! that adds the redirect init container, the proxy container and their volumes, and the grace
//! period the proxy's drain needs (see [`super::drain`]). No I/O.
//!
//! Decision order: a pod that already has the proxy is left alone (injection is idempotent);
//! host-network pods and system namespaces are never injected; then, as in Istio, if either the
//! namespace label (`istio-injection`, `jalin-injection`) or the pod's label/annotation
//! (`sidecar.jalin.io/inject`, `sidecar.istio.io/inject`) says "off" the pod is skipped, if either
//! says "on" it is injected, and otherwise `enabled_by_default` decides.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::drain;
use super::probes;
use super::redirect::{RedirectConfig, redirect_script};

/// Name of the injected proxy container.
pub const PROXY_CONTAINER: &str = "jalin-proxy";
/// Name of the injected init container that installs the traffic redirect.
pub const INIT_CONTAINER: &str = "jalin-init";
/// Annotation recording what was injected; its presence makes injection a no-op.
pub const STATUS_ANNOTATION: &str = "sidecar.jalin.io/status";
/// Pod label or annotation turning injection on (`"true"`) or off (`"false"`).
pub const POD_INJECT_KEYS: [&str; 2] = ["sidecar.jalin.io/inject", "sidecar.istio.io/inject"];
/// Namespace labels turning injection on (`enabled`) or off (`disabled`).
pub const NAMESPACE_INJECT_LABELS: [&str; 2] = ["jalin-injection", "istio-injection"];
/// Label telling peers that this workload speaks mesh mTLS (Istio's name, so tools agree).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Pod annotations that adjust the redirect (Istio's names).
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// See [`EXCLUDE_INBOUND_PORTS`].
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
/// See [`EXCLUDE_INBOUND_PORTS`].
pub const EXCLUDE_OUTBOUND_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";

/// The uid/gid the proxy runs as (Istio's 1337, so existing exclusions keep working).
pub const DEFAULT_PROXY_UID: i64 = 1337;
/// The proxy's outbound listener (Istio's 15001).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// The proxy's inbound listener (Istio's 15006).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// The proxy's readiness endpoint (Istio's 15021).
pub const DEFAULT_HEALTH_PORT: u16 = 15021;
/// The proxy's Prometheus endpoint (Istio's 15090).
pub const DEFAULT_METRICS_PORT: u16 = 15090;
/// Audience of the projected ServiceAccount token the proxy presents to the CA.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "jalin-ca";
/// Lifetime of that token: one hour, the kubelet rotates it at 80%.
pub const TOKEN_EXPIRATION_SECS: i64 = 3600;
/// Where the token is mounted in the proxy container.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/jalin/tokens";

const TOKEN_VOLUME: &str = "jalin-token";
const DATA_VOLUME: &str = "jalin-data";
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// How pods are injected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InjectSettings {
    /// Image of the proxy container.
    pub proxy_image: String,
    /// Image of the init container (needs `sh` and `iptables-restore`).
    pub init_image: String,
    /// Address of the control plane's xDS/CA endpoint, e.g. `jalin-control.jalin-system.svc:15012`.
    pub control_plane: String,
    /// The SPIFFE trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// Run the proxy as a Kubernetes native sidecar (an init container with
    /// `restartPolicy: Always`, Kubernetes 1.29+): it starts before the app's init containers and
    /// does not keep Jobs alive. Otherwise it is the pod's first container.
    pub native_sidecar: bool,
    /// Inject pods whose namespace and pod carry no injection label.
    pub enabled_by_default: bool,
    /// uid and gid of the proxy.
    pub proxy_uid: i64,
    /// The proxy's inbound listener port.
    pub inbound_port: u16,
    /// The proxy's outbound listener port.
    pub outbound_port: u16,
    /// The proxy's readiness port.
    pub health_port: u16,
    /// The proxy's metrics port.
    pub metrics_port: u16,
    /// Audience of the ServiceAccount token the proxy presents to the CA.
    pub token_audience: String,
    /// Rewrite the app's kubelet probes to the proxy's health port (see [`super::probes`]);
    /// a pod can opt out with `sidecar.istio.io/rewriteAppHTTPProbers: "false"`.
    pub rewrite_app_probes: bool,
    /// `imagePullPolicy` of the injected containers (`None`: the cluster's default).
    pub image_pull_policy: Option<String>,
    /// Requests and limits of the proxy container.
    pub resources: Option<ResourceRequirements>,
    /// Inbound ports that bypass the proxy in every injected pod (the pod annotation adds more).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound CIDRs that bypass the proxy in every injected pod (the pod annotation adds more).
    pub exclude_outbound_ranges: Vec<IpNet>,
    /// How long the proxy drains after SIGTERM (the pod's `proxy.istio.io/config` overrides it);
    /// see [`super::drain`].
    pub drain_duration: Duration,
}

impl Default for InjectSettings {
    fn default() -> Self {
        let image = format!("jalin/jalin-proxy:{}", env!("CARGO_PKG_VERSION"));
        Self {
            init_image: image.clone(),
            proxy_image: image,
            control_plane: "jalin-control.jalin-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            native_sidecar: true,
            enabled_by_default: false,
            proxy_uid: DEFAULT_PROXY_UID,
            inbound_port: DEFAULT_INBOUND_PORT,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            health_port: DEFAULT_HEALTH_PORT,
            metrics_port: DEFAULT_METRICS_PORT,
            token_audience: DEFAULT_TOKEN_AUDIENCE.into(),
            rewrite_app_probes: true,
            image_pull_policy: None,
            resources: None,
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ranges: Vec::new(),
            drain_duration: drain::DEFAULT_DRAIN,
        }
    }
}

/// Why a pod is not injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// It already has the proxy.
    AlreadyInjected,
    /// It uses the host's network namespace: a redirect would capture the node's traffic.
    HostNetwork,
    /// It runs in a Kubernetes system namespace.
    SystemNamespace,
    /// A label or annotation turned injection off.
    Disabled {
        /// Which key said so, e.g. `sidecar.istio.io/inject` or `namespace label istio-injection`.
        by: String,
    },
    /// Nothing turned it on and `enabled_by_default` is off.
    NotEnabled,
}

/// Whether a pod gets the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Decision {
    /// Inject it.
    Inject,
    /// Leave it as it is.
    Skip(SkipReason),
}

/// The webhook's answer for one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    /// What was decided.
    pub decision: Decision,
    /// The JSON patch to return (empty when skipped).
    pub patch: Patch,
    /// What `kubectl` shows the user about changes beyond the sidecar (a raised grace period).
    pub warnings: Vec<String>,
}

/// A pod annotation that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "pod {pod}: annotation {annotation}: `{value}` is not {expected}; fix the annotation or remove it"
)]
pub struct InjectError {
    /// `namespace/name` (or `generateName`) of the pod.
    pub pod: String,
    /// The annotation.
    pub annotation: &'static str,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub expected: &'static str,
}

fn empty() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "enabled" | "yes" | "y" => Some(true),
        "false" | "disabled" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// Decides whether `pod` in a namespace labelled `namespace_labels` is injected.
pub fn decide(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    settings: &InjectSettings,
) -> Decision {
    let labels = pod.metadata.labels.clone().unwrap_or_else(empty);
    let annotations = pod.metadata.annotations.clone().unwrap_or_else(empty);
    if is_injected(pod) {
        return Decision::Skip(SkipReason::AlreadyInjected);
    }
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    if pod
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|ns| SYSTEM_NAMESPACES.contains(&ns))
    {
        return Decision::Skip(SkipReason::SystemNamespace);
    }
    let mut votes: Vec<(String, bool)> = Vec::new();
    for key in NAMESPACE_INJECT_LABELS {
        if let Some(on) = namespace_labels.get(key).and_then(|v| switch(v)) {
            votes.push((format!("namespace label {key}"), on));
        }
    }
    for key in POD_INJECT_KEYS {
        if let Some(on) = labels.get(key).and_then(|v| switch(v)) {
            votes.push((format!("pod label {key}"), on));
        }
        if let Some(on) = annotations.get(key).and_then(|v| switch(v)) {
            votes.push((format!("pod annotation {key}"), on));
        }
    }
    if let Some((by, _)) = votes.iter().find(|(_, on)| !on) {
        return Decision::Skip(SkipReason::Disabled { by: by.clone() });
    }
    if votes.iter().any(|(_, on)| *on) || settings.enabled_by_default {
        Decision::Inject
    } else {
        Decision::Skip(SkipReason::NotEnabled)
    }
}

/// Whether the pod already carries the proxy.
pub fn is_injected(pod: &Pod) -> bool {
    let annotated = annotation(pod, STATUS_ANNOTATION).is_some();
    let has_container = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER || c.name == INIT_CONTAINER)
    });
    annotated || has_container
}

/// Decides and, when the pod is to be injected, renders the JSON patch that injects it.
pub fn inject(
    pod: &Pod,
    namespace_labels: &BTreeMap<String, String>,
    settings: &InjectSettings,
) -> Result<Injection, InjectError> {
    let decision = decide(pod, namespace_labels, settings);
    if decision != Decision::Inject {
        return Ok(Injection {
            decision,
            patch: Patch(Vec::new()),
            warnings: Vec::new(),
        });
    }
    let redirect = redirect_config(pod, settings)?;
    let drain = drain::pod_drain(pod, settings.drain_duration)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let rewrite = if settings.rewrite_app_probes && probes::rewrite_enabled(pod) {
        probes::rewrite(&spec.containers, settings.health_port)
    } else {
        probes::ProbeRewrite::default()
    };
    let init = init_container(settings, &redirect);
    let proxy = proxy_container(settings, rewrite.app_probers.as_deref(), drain);
    let volumes = volumes(settings);
    let mut ops = Vec::new();
    // Probe replacements first: they address the app's containers by their original index,
    // before the proxy may be inserted in front of them.
    for p in &rewrite.probes {
        let index = p.container.to_string();
        ops.push(PatchOperation::Replace(ReplaceOperation {
            path: PointerBuf::from_tokens(["spec", "containers", index.as_str(), p.field]),
            value: to_json(&p.probe),
        }));
    }
    let add = |ops: &mut Vec<PatchOperation>, path: &[&str], value: Value| {
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    };

    let mut status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "initContainers": [INIT_CONTAINER],
        "containers": [],
        "volumes": [TOKEN_VOLUME, DATA_VOLUME],
        "drainDuration": drain::drain_arg(drain),
    });
    // The kubelet's SIGKILL must not land mid-drain.
    let mut warnings = Vec::new();
    if let Some(raise) = drain::grace_raise(pod, drain) {
        add(
            &mut ops,
            &["spec", "terminationGracePeriodSeconds"],
            json!(raise.to),
        );
        status["terminationGracePeriodSeconds"] = json!({"from": raise.from, "to": raise.to});
        warnings.push(drain::grace_warning(&pod_name(pod), drain, &raise));
    }
    // Init containers: the redirect first, then (native sidecar) the proxy, then the app's.
    let mut front = vec![to_json(&init)];
    if settings.native_sidecar {
        front.push(to_json(&proxy));
        status["initContainers"] = json!([INIT_CONTAINER, PROXY_CONTAINER]);
    }
    if spec.init_containers.as_ref().is_none_or(Vec::is_empty) {
        add(&mut ops, &["spec", "initContainers"], Value::Array(front));
    } else {
        for value in front.into_iter().rev() {
            add(&mut ops, &["spec", "initContainers", "0"], value);
        }
    }
    if !settings.native_sidecar {
        add(&mut ops, &["spec", "containers", "0"], to_json(&proxy));
        status["containers"] = json!([PROXY_CONTAINER]);
    }
    let volumes: Vec<Value> = volumes.iter().map(to_json).collect();
    if spec.volumes.as_ref().is_none_or(Vec::is_empty) {
        add(&mut ops, &["spec", "volumes"], Value::Array(volumes));
    } else {
        for value in volumes {
            add(&mut ops, &["spec", "volumes", "-"], value);
        }
    }
    let status = status.to_string();
    if pod.metadata.annotations.is_none() {
        add(
            &mut ops,
            &["metadata", "annotations"],
            json!({STATUS_ANNOTATION: status}),
        );
    } else {
        add(
            &mut ops,
            &["metadata", "annotations", STATUS_ANNOTATION],
            json!(status),
        );
    }
    if pod.metadata.labels.is_none() {
        add(
            &mut ops,
            &["metadata", "labels"],
            json!({TLS_MODE_LABEL: "istio"}),
        );
    } else {
        add(
            &mut ops,
            &["metadata", "labels", TLS_MODE_LABEL],
            json!("istio"),
        );
    }
    Ok(Injection {
        decision,
        patch: Patch(ops),
        warnings,
    })
}

/// JSON of a k8s-openapi object.
#[allow(clippy::expect_used)]
fn to_json<T: Serialize>(object: &T) -> Value {
    // Invariant: k8s-openapi types hold only string-keyed maps and finite values, so encoding
    // them as JSON cannot fail.
    serde_json::to_value(object).expect("k8s-openapi objects encode as JSON")
}

/// `namespace/name` (or `generateName`) of `pod`, as errors and warnings name it.
pub(super) fn pod_name(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    format!("{ns}/{name}")
}

/// The value of `pod`'s annotation `key`, if it has one.
pub(super) fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a String> {
    pod.metadata.annotations.as_ref().and_then(|a| a.get(key))
}

fn parse_list<T: std::str::FromStr>(
    pod: &Pod,
    annotation: &'static str,
    expected: &'static str,
) -> Result<Vec<T>, InjectError> {
    let Some(value) = self::annotation(pod, annotation) else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<T>().map_err(|_| InjectError {
                pod: pod_name(pod),
                annotation,
                value: value.clone(),
                expected,
            })
        })
        .collect()
}

fn redirect_config(pod: &Pod, settings: &InjectSettings) -> Result<RedirectConfig, InjectError> {
    const PORTS: &str = "a comma-separated list of ports 1-65535";
    let mut exclude_inbound = vec![settings.health_port, settings.metrics_port];
    exclude_inbound.extend(&settings.exclude_inbound_ports);
    exclude_inbound.extend(parse_list::<u16>(pod, EXCLUDE_INBOUND_PORTS, PORTS)?);
    let exclude_outbound = parse_list::<u16>(pod, EXCLUDE_OUTBOUND_PORTS, PORTS)?;
    let mut ranges = settings.exclude_outbound_ranges.clone();
    ranges.extend(parse_list::<IpNet>(
        pod,
        EXCLUDE_OUTBOUND_RANGES,
        "a comma-separated list of CIDRs such as 10.0.0.0/8",
    )?);
    for (annotation, ports) in [
        (EXCLUDE_INBOUND_PORTS, &exclude_inbound),
        (EXCLUDE_OUTBOUND_PORTS, &exclude_outbound),
    ] {
        if ports.contains(&0) {
            return Err(InjectError {
                pod: pod_name(pod),
                annotation,
                value: "0".into(),
                expected: PORTS,
            });
        }
    }
    Ok(RedirectConfig {
        proxy_uid: settings.proxy_uid,
        inbound_port: settings.inbound_port,
        outbound_port: settings.outbound_port,
        exclude_inbound_ports: exclude_inbound,
        exclude_outbound_ports: exclude_outbound,
        exclude_outbound_ranges: ranges,
    })
}

fn init_container(settings: &InjectSettings, redirect: &RedirectConfig) -> Container {
    Container {
        name: INIT_CONTAINER.into(),
        image: Some(settings.init_image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        command: Some(vec!["sh".into(), "-c".into(), redirect_script(redirect)]),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The proxy container. Its environment is the sidecar's configuration contract; its arguments
/// carry the drain.
fn proxy_container(
    settings: &InjectSettings,
    app_probers: Option<&str>,
    drain: Duration,
) -> Container {
    let ready = Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".into()),
            port: IntOrString::Int(i32::from(settings.health_port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(30),
        ..Probe::default()
    };
    Container {
        name: PROXY_CONTAINER.into(),
        image: Some(settings.proxy_image.clone()),
        image_pull_policy: settings.image_pull_policy.clone(),
        resources: settings.resources.clone(),
        // A native sidecar: restarted on exit, started before the app's init containers.
        restart_policy: settings.native_sidecar.then(|| "Always".to_string()),
        args: Some(drain::proxy_args(drain)),
        env: Some(
            vec![
                env("JALIN_MODE", "sidecar"),
                env("JALIN_CONTROL_PLANE", settings.control_plane.clone()),
                env("JALIN_TRUST_DOMAIN", settings.trust_domain.clone()),
                env("JALIN_INBOUND_PORT", settings.inbound_port.to_string()),
                env("JALIN_OUTBOUND_PORT", settings.outbound_port.to_string()),
                env("JALIN_HEALTH_PORT", settings.health_port.to_string()),
                env("JALIN_METRICS_PORT", settings.metrics_port.to_string()),
                env("JALIN_TOKEN_PATH", format!("{TOKEN_MOUNT_PATH}/token")),
                field_env("POD_NAME", "metadata.name"),
                field_env("POD_NAMESPACE", "metadata.namespace"),
                field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
                field_env("INSTANCE_IP", "status.podIP"),
                field_env("NODE_NAME", "spec.nodeName"),
            ]
            .into_iter()
            .chain(app_probers.map(|p| env(probes::APP_PROBERS_ENV, p)))
            .collect(),
        ),
        ports: Some(vec![
            port("jalin-health", settings.health_port),
            port("http-jalin-prom", settings.metrics_port),
        ]),
        startup_probe: settings.native_sidecar.then(|| ready.clone()),
        readiness_probe: Some(ready),
        security_context: Some(SecurityContext {
            run_as_user: Some(settings.proxy_uid),
            run_as_group: Some(settings.proxy_uid),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: TOKEN_VOLUME.into(),
                mount_path: TOKEN_MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: "/var/lib/jalin".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

fn volumes(settings: &InjectSettings) -> Vec<Volume> {
    vec![
        Volume {
            name: TOKEN_VOLUME.into(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(settings.token_audience.clone()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECS),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: DATA_VOLUME.into(),
            // Keys and certificates live in memory only.
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    ]
}

#[cfg(test)]
#[path = "inject_tests.rs"]
pub(in crate::k8s) mod tests;
