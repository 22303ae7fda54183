//! Kubelet probe rewriting for injected pods. With the redirect in place and mTLS STRICT, the
//! kubelet's plain-text probes to application ports would be refused by the proxy; as Istio does,
//! each HTTP, TCP and gRPC probe of an application container is rewritten into an HTTP probe of
//! the proxy's health port at `/app-health/<container>/<livez|readyz|startupz>`, and the original
//! probes are handed to the proxy as JSON in `JALIN_APP_PROBERS`, for it to run locally.
//! No I/O.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::inject::annotation;

/// Pod annotation that turns the rewrite off (`"false"`), Istio's name.
pub const REWRITE_PROBES_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
/// Environment variable of the proxy container holding the original probes.
pub const APP_PROBERS_ENV: &str = "JALIN_APP_PROBERS";

/// One rewritten probe.
#[derive(Clone, Debug, PartialEq)]
pub struct RewrittenProbe {
    /// Index of the container in `spec.containers` (before injection).
    pub container: usize,
    /// The probe field: `livenessProbe`, `readinessProbe` or `startupProbe`.
    pub field: &'static str,
    /// The probe that replaces it.
    pub probe: Probe,
}

/// The probes to replace, and the `JALIN_APP_PROBERS` value (None when nothing was rewritten).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeRewrite {
    /// Probes to replace, in container order.
    pub probes: Vec<RewrittenProbe>,
    /// Path -> original probe action, as JSON.
    pub app_probers: Option<String>,
}

/// Whether the pod lets its probes be rewritten.
pub fn rewrite_enabled(pod: &Pod) -> bool {
    annotation(pod, REWRITE_PROBES_ANNOTATION)
        .is_none_or(|v| !v.trim().eq_ignore_ascii_case("false"))
}

/// Rewrites the probes of `containers` to the proxy's `health_port`.
pub fn rewrite(containers: &[Container], health_port: u16) -> ProbeRewrite {
    let mut probers: BTreeMap<String, Value> = BTreeMap::new();
    let mut probes = Vec::new();
    for (index, container) in containers.iter().enumerate() {
        let fields = [
            ("livenessProbe", "livez", &container.liveness_probe),
            ("readinessProbe", "readyz", &container.readiness_probe),
            ("startupProbe", "startupz", &container.startup_probe),
        ];
        for (field, kind, probe) in fields {
            let Some(probe) = probe else { continue };
            let path = format!("/app-health/{}/{kind}", container.name);
            let Some(original) = original_action(container, probe) else {
                continue;
            };
            probers.insert(path.clone(), original);
            let rewritten = Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(path),
                    port: IntOrString::Int(i32::from(health_port)),
                    scheme: Some("HTTP".into()),
                    ..HTTPGetAction::default()
                }),
                tcp_socket: None,
                grpc: None,
                ..probe.clone()
            };
            probes.push(RewrittenProbe {
                container: index,
                field,
                probe: rewritten,
            });
        }
    }
    ProbeRewrite {
        app_probers: (!probers.is_empty()).then(|| json!(probers).to_string()),
        probes,
    }
}

/// The original probe action with named ports resolved, or None when it is not rewritable
/// (an `exec` probe, or a port name the container does not declare).
fn original_action(container: &Container, probe: &Probe) -> Option<Value> {
    let timeout = probe.timeout_seconds.unwrap_or(1);
    if let Some(http) = &probe.http_get {
        let mut http = http.clone();
        http.port = IntOrString::Int(resolve(container, &http.port)?);
        return Some(json!({"httpGet": http, "timeoutSeconds": timeout}));
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve(container, &tcp.port)?;
        return Some(
            json!({"tcpSocket": {"port": port, "host": tcp.host}, "timeoutSeconds": timeout}),
        );
    }
    if let Some(grpc) = &probe.grpc {
        return Some(json!({"grpc": grpc, "timeoutSeconds": timeout}));
    }
    None
}

fn resolve(container: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn http_tcp_and_grpc_probes_move_to_the_health_port() {
        let containers = [container(json!({
            "name": "app",
            "ports": [{"name": "web", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "web"}, "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 3},
            "startupProbe": {"grpc": {"port": 9090}}
        }))];
        let r = rewrite(&containers, 15021);
        assert_eq!(r.probes.len(), 3);
        let ready = r
            .probes
            .iter()
            .find(|p| p.field == "readinessProbe")
            .unwrap();
        let http = ready.probe.http_get.as_ref().unwrap();
        assert_eq!(http.path.as_deref(), Some("/app-health/app/readyz"));
        assert_eq!(http.port, IntOrString::Int(15021));
        assert_eq!(ready.probe.period_seconds, Some(5), "timing kept");
        let live = r
            .probes
            .iter()
            .find(|p| p.field == "livenessProbe")
            .unwrap();
        assert!(live.probe.tcp_socket.is_none());
        let probers: Value = serde_json::from_str(r.app_probers.as_deref().unwrap()).unwrap();
        assert_eq!(
            probers["/app-health/app/readyz"]["httpGet"]["port"], 8080,
            "name resolved"
        );
        assert_eq!(
            probers["/app-health/app/readyz"]["httpGet"]["path"],
            "/ready"
        );
        assert_eq!(probers["/app-health/app/livez"]["tcpSocket"]["port"], 8080);
        assert_eq!(probers["/app-health/app/livez"]["timeoutSeconds"], 3);
        assert_eq!(probers["/app-health/app/startupz"]["grpc"]["port"], 9090);
    }

    #[test]
    fn exec_probes_and_unknown_port_names_are_left_alone() {
        let containers = [container(json!({
            "name": "app",
            "readinessProbe": {"exec": {"command": ["true"]}},
            "livenessProbe": {"httpGet": {"path": "/", "port": "missing"}}
        }))];
        let r = rewrite(&containers, 15021);
        assert!(r.probes.is_empty());
        assert_eq!(r.app_probers, None);
    }

    #[test]
    fn the_annotation_turns_it_off() {
        let mut pod = Pod::default();
        assert!(rewrite_enabled(&pod));
        pod.metadata.annotations = Some(
            [(REWRITE_PROBES_ANNOTATION.to_string(), "false".to_string())]
                .into_iter()
                .collect(),
        );
        assert!(!rewrite_enabled(&pod));
    }
}
