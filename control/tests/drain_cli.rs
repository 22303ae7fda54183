//! The injected proxy's arguments against the real `jalin-proxy` command line: the args the
//! injector renders from `deploy/`'s mesh config (and from a pod's `proxy.istio.io/config`)
//! parse with the proxy's clap command (a renamed flag or a changed bound fails here), they
//! repeat the image's default command, and the shipped drain fits Kubernetes' default grace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[allow(dead_code)] // shared with deploy_manifests.rs, which uses the rest
#[path = "deploy_manifests/support.rs"]
mod support;
// Shared with xds_e2e (its own `allow(dead_code)`): this suite uses its proxy build only.
mod xds_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use jalin_control::k8s::drain::{
    KUBERNETES_DEFAULT_GRACE_SECS, PROXY_CONFIG_ANNOTATION, PROXY_CONFIG_PATH, parse_drain,
    required_grace_secs,
};
use jalin_control::k8s::inject::{InjectSettings, PROXY_CONTAINER, inject};
use jalin_control::server::mesh::MeshConfig;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use support::*;

/// The injection settings of `deploy/manifests/jalin.yaml`'s mesh config.
fn shipped_settings() -> InjectSettings {
    let cp = control_plane();
    let text = &cp.config_map.data.as_ref().unwrap()["mesh.yaml"];
    let mesh: MeshConfig = serde_saphyr::from_str(text).unwrap();
    mesh.injection
        .settings("cluster.local", mesh.control_plane.address.as_deref())
        .unwrap()
}

/// The proxy container's args after injecting a pod with `annotations`.
fn injected_args(settings: &InjectSettings, annotations: &serde_json::Value) -> Vec<String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "child-services", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }))
    .unwrap();
    let ns = BTreeMap::from([("istio-injection".to_owned(), "enabled".to_owned())]);
    let injection = inject(&pod, &ns, settings).unwrap();
    let mut doc = serde_json::to_value(&pod).unwrap();
    json_patch::patch(&mut doc, &injection.patch).unwrap();
    let pod: Pod = serde_json::from_value(doc).unwrap();
    let spec = pod.spec.unwrap();
    spec.init_containers
        .into_iter()
        .flatten()
        .chain(spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
        .unwrap()
        .args
        .unwrap()
}

/// Runs the real proxy with `args`, its `--config` pointed at a file that does not exist, so a
/// parse that succeeds ends in the runtime's "cannot read" error (exit 1) instead of serving.
/// Returns the exit code and stderr.
fn run_proxy(args: &[String], missing: &Path) -> (Option<i32>, String) {
    let mut args = args.to_vec();
    let at = args.iter().position(|a| a == "--config").unwrap();
    args[at + 1] = missing.display().to_string();
    let out = Command::new(xds_support::proxy_binary())
        .args(&args)
        .env_remove("JALIN_PROXY_DRAIN_DURATION")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_parses(args: &[String], missing: &Path) {
    let (code, stderr) = run_proxy(args, missing);
    assert_eq!(
        code,
        Some(1),
        "`jalin-proxy {}` must parse and fail only on the missing config: {stderr}",
        args.join(" ")
    );
    assert!(
        stderr.contains("jalin-proxy: ") && stderr.contains(&missing.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn injected_proxy_args_parse_with_the_real_proxy_command() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent/proxy.yaml");
    let shipped = shipped_settings();

    // The mesh default, a pod override, and the longest drain the injector accepts.
    let args = injected_args(&shipped, &json!({}));
    assert_eq!(args[..2], ["--config", PROXY_CONFIG_PATH]);
    assert_parses(&args, &missing);
    let args = injected_args(
        &shipped,
        &json!({PROXY_CONFIG_ANNOTATION: "terminationDrainDuration: 90s\n"}),
    );
    assert_eq!(args[2..], ["--drain-duration", "90s"]);
    assert_parses(&args, &missing);
    let longest = InjectSettings {
        drain_duration: parse_drain("10m").unwrap(),
        ..shipped.clone()
    };
    assert_parses(&injected_args(&longest, &json!({})), &missing);

    // The check can fail: a drain the proxy refuses is a clap usage error (exit 2) naming the
    // flag and the bound.
    let mut refused = injected_args(&shipped, &json!({}));
    let last = refused.len() - 1;
    refused[last] = "11m".into();
    let (code, stderr) = run_proxy(&refused, &missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--drain-duration") && stderr.contains("from 1s to 10m"),
        "{stderr}"
    );
}

#[test]
fn injected_args_repeat_the_images_default_command() {
    // The args replace the image's CMD, so they must keep its `--config`.
    let dockerfile = std::fs::read_to_string(deploy_dir().join("docker/Dockerfile.proxy")).unwrap();
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("Dockerfile.proxy has a CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let args = injected_args(&shipped_settings(), &json!({}));
    assert_eq!(args[..cmd.len()], cmd[..]);
}

#[test]
fn the_shipped_drain_fits_kubernetes_default_grace_in_manifest_and_chart() {
    let manifest = shipped_settings().drain_duration;
    assert!(
        required_grace_secs(manifest) <= KUBERNETES_DEFAULT_GRACE_SECS,
        "deploy/manifests drainDuration {manifest:?} would raise every pod's grace period"
    );
    let values = yaml_value(&chart_dir().join("values.yaml"));
    let chart = values["sidecar"]["drainDuration"].as_str().unwrap();
    assert_eq!(
        parse_drain(chart).unwrap(),
        manifest,
        "chart values.yaml sidecar.drainDuration vs deploy/manifests/jalin.yaml"
    );
}
