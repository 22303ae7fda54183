//! The injected proxy's shutdown drain: which drain a pod gets (the mesh's
//! `injection.drainDuration`, overridden per pod by Istio's `proxy.istio.io/config`), the proxy
//! arguments that carry it, and the pod's `terminationGracePeriodSeconds` it needs. No I/O.
//!
//! Invariant: an injected pod's grace period is at least the drain plus [`GRACE_MARGIN_SECS`], so
//! the kubelet's SIGKILL never lands while the proxy is still draining.
//!
//! Istio has two knobs here: `terminationDrainDuration` (what pilot-agent waits after SIGTERM,
//! default 5 s) and `drainDuration` (Envoy's hot-restart and listener drain, default 45 s). jalin
//! has no hot restart (it reloads in process), so both names mean the one drain jalin has, the
//! SIGTERM drain; when a pod sets both, `terminationDrainDuration` wins, being Istio's name for
//! exactly that. jalin's drain ends as soon as in-flight work is done, so a long bound costs
//! nothing to a pod that has nothing in flight.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use super::inject::{InjectError, annotation, pod_name};
use crate::istio::values::duration_ms;

/// Istio's per-pod ProxyConfig override (YAML or JSON).
pub const PROXY_CONFIG_ANNOTATION: &str = "proxy.istio.io/config";
/// The drain when neither the mesh nor the pod sets one (the proxy's own default), and the
/// longest drain (the proxy's `--drain-duration` bound).
pub use jalin_xds::model::drain::{DEFAULT_DRAIN, MAX_DRAIN};
/// Kubernetes' `terminationGracePeriodSeconds` when the pod does not set it.
pub const KUBERNETES_DEFAULT_GRACE_SECS: i64 = 30;
/// Grace beyond the drain: the proxy's exit, final log lines and the kubelet's own latency.
pub const GRACE_MARGIN_SECS: i64 = 5;
/// The proxy's configuration file, as the proxy image's default command names it (the injected
/// `args` replace that command, so they repeat it).
pub const PROXY_CONFIG_PATH: &str = "/etc/jalin/proxy.yaml";
/// What a drain value must look like, for messages.
pub const DRAIN_EXPECTED: &str = "a whole number of seconds from 1s to 10m, such as `25s`";

/// The part of Istio's ProxyConfig the injector reads; other fields are Istio's and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ProxyConfigOverride {
    termination_drain_duration: Option<String>,
    drain_duration: Option<String>,
}

/// Parses a drain as Istio writes durations (`25s`, `2m`, `1m30s`): whole seconds, 1 s to 10 min.
/// The error says why, and is to be prefixed with where the value came from.
pub fn parse_drain(value: &str) -> Result<Duration, String> {
    let ms = duration_ms(value)
        .ok_or_else(|| format!("`{value}` is not a duration; expected {DRAIN_EXPECTED}"))?;
    if ms == 0 {
        return Err(format!(
            "`{value}` would cut every in-flight request; expected {DRAIN_EXPECTED}"
        ));
    }
    if ms % 1000 != 0 {
        return Err(format!(
            "`{value}` is not whole seconds; expected {DRAIN_EXPECTED}"
        ));
    }
    if Duration::from_millis(ms) > MAX_DRAIN {
        return Err(format!("`{value}` is too long; expected {DRAIN_EXPECTED}"));
    }
    Ok(Duration::from_millis(ms))
}

/// The drain of `pod`: its `proxy.istio.io/config` override, else `mesh_default`.
pub fn pod_drain(pod: &Pod, mesh_default: Duration) -> Result<Duration, InjectError> {
    let Some(text) = annotation(pod, PROXY_CONFIG_ANNOTATION) else {
        return Ok(mesh_default);
    };
    let config: ProxyConfigOverride = serde_saphyr::from_str(text).map_err(|_| InjectError {
        pod: pod_name(pod),
        annotation: PROXY_CONFIG_ANNOTATION,
        value: text.clone(),
        expected: "a ProxyConfig in YAML or JSON, such as `{\"terminationDrainDuration\": \"20s\"}`",
    })?;
    let (field, value) = match (config.termination_drain_duration, config.drain_duration) {
        (Some(v), _) => ("proxy.istio.io/config: terminationDrainDuration", v),
        (None, Some(v)) => ("proxy.istio.io/config: drainDuration", v),
        (None, None) => return Ok(mesh_default),
    };
    parse_drain(&value).map_err(|_| InjectError {
        pod: pod_name(pod),
        annotation: field,
        value,
        expected: DRAIN_EXPECTED,
    })
}

/// `drain` as the proxy's `--drain-duration` takes it and the injection status records it.
pub fn drain_arg(drain: Duration) -> String {
    format!("{}s", drain.as_secs())
}

/// The injected proxy container's arguments.
pub fn proxy_args(drain: Duration) -> Vec<String> {
    vec![
        "--config".into(),
        PROXY_CONFIG_PATH.into(),
        "--drain-duration".into(),
        drain_arg(drain),
    ]
}

/// The grace period a pod needs for `drain`.
pub fn required_grace_secs(drain: Duration) -> i64 {
    i64::try_from(drain.as_secs())
        .unwrap_or(i64::MAX)
        .saturating_add(GRACE_MARGIN_SECS)
}

/// A grace period raised so the drain fits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraceRaise {
    /// The pod's grace period (its own, or Kubernetes' default).
    pub from: i64,
    /// The grace period injected.
    pub to: i64,
}

/// `Some` when the pod's grace period is too short for `drain`.
pub fn grace_raise(pod: &Pod, drain: Duration) -> Option<GraceRaise> {
    let from = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(KUBERNETES_DEFAULT_GRACE_SECS);
    let to = required_grace_secs(drain);
    (from < to).then_some(GraceRaise { from, to })
}

/// The warning returned to `kubectl` when the grace period was raised.
pub fn grace_warning(pod_name: &str, drain: Duration, raise: &GraceRaise) -> String {
    format!(
        "pod {pod_name}: terminationGracePeriodSeconds raised from {} to {} so the jalin proxy's \
         {}s drain fits; set terminationGracePeriodSeconds: {} or more in the pod template, or a \
         shorter drainDuration in {PROXY_CONFIG_ANNOTATION}",
        raise.from,
        raise.to,
        drain.as_secs(),
        raise.to
    )
}

#[cfg(test)]
#[path = "drain_tests.rs"]
mod tests;
