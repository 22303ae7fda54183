//! Unit tests of the drain's rendering into the injected pod: the mesh default, the pod's
//! `proxy.istio.io/config` override, the grace period it needs, and invalid values.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;
use crate::k8s::inject::tests::apply;
use crate::k8s::inject::{InjectSettings, PROXY_CONTAINER, STATUS_ANNOTATION, inject};
use crate::server::mesh::MeshInjection;

fn pod(annotations: &Value, grace: Option<i64>) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "app"}]});
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    serde_json::from_value(json!({
        "metadata": {"name": "case-api-1", "namespace": "child-services",
                     "annotations": annotations},
        "spec": spec,
    }))
    .unwrap()
}

fn enabled() -> BTreeMap<String, String> {
    BTreeMap::from([("istio-injection".to_owned(), "enabled".to_owned())])
}

/// The mesh's injection settings from a `mesh.yaml` `injection:` section.
fn mesh(yaml: &str) -> InjectSettings {
    let injection: MeshInjection = serde_saphyr::from_str(yaml).unwrap();
    injection.settings("cluster.local", None).unwrap()
}

/// Injects `pod` and returns the proxy's args, the pod's grace period after the patch, and the
/// warnings.
fn render(pod: &Pod, settings: &InjectSettings) -> (Vec<String>, Option<i64>, Vec<String>) {
    let injection = inject(pod, &enabled(), settings).unwrap();
    let injected = apply(pod, &injection.patch);
    let spec = injected.spec.unwrap();
    let proxy = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
        .unwrap();
    let status: Value =
        serde_json::from_str(&injected.metadata.annotations.unwrap()[STATUS_ANNOTATION]).unwrap();
    let args = proxy.args.clone().unwrap();
    assert_eq!(
        status["drainDuration"],
        json!(args[3]),
        "status records the drain"
    );
    (
        args,
        spec.termination_grace_period_seconds,
        injection.warnings,
    )
}

#[test]
fn the_mesh_default_reaches_the_proxy_args_and_fits_the_default_grace() {
    let settings = mesh("drainDuration: 20s\n");
    assert_eq!(settings.drain_duration, Duration::from_secs(20));
    let (args, grace, warnings) = render(&pod(&json!({}), None), &settings);
    assert_eq!(
        args,
        ["--config", PROXY_CONFIG_PATH, "--drain-duration", "20s"]
    );
    assert_eq!(
        grace, None,
        "20s + 5s fits Kubernetes' default 30s: left alone"
    );
    assert!(warnings.is_empty(), "{warnings:?}");

    // No mesh value: the proxy's own default.
    let (args, _, warnings) = render(&pod(&json!({}), None), &mesh("{}\n"));
    assert_eq!(args[3], "25s");
    assert!(
        warnings.is_empty(),
        "25s + 5s is exactly the default 30s: {warnings:?}"
    );
}

#[test]
fn a_pods_proxy_config_overrides_the_mesh_and_raises_the_grace_period() {
    let settings = mesh("drainDuration: 20s\n");
    // Istio's block-YAML form; `terminationDrainDuration` is Istio's name for this drain.
    let p = pod(
        &json!({PROXY_CONFIG_ANNOTATION: "terminationDrainDuration: 1m\nholdApplicationUntilProxyStarts: true\n"}),
        None,
    );
    let (args, grace, warnings) = render(&p, &settings);
    assert_eq!(args[2..], ["--drain-duration", "60s"]);
    assert_eq!(grace, Some(65), "60s drain + 5s margin");
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("child-services/case-api-1")
            && warnings[0].contains("raised from 30 to 65"),
        "{}",
        warnings[0]
    );

    // The JSON form and the mesh's own name; a pod's longer grace is kept.
    let p = pod(
        &json!({PROXY_CONFIG_ANNOTATION: r#"{"drainDuration": "40s"}"#}),
        Some(120),
    );
    let (args, grace, warnings) = render(&p, &settings);
    assert_eq!(args[3], "40s");
    assert_eq!(grace, Some(120));
    assert!(warnings.is_empty());

    // A shorter grace than the drain needs is raised, not lowered to it.
    let p = pod(
        &json!({PROXY_CONFIG_ANNOTATION: r#"{"drainDuration": "40s"}"#}),
        Some(10),
    );
    assert_eq!(render(&p, &settings).1, Some(45));

    // Both names: `terminationDrainDuration` wins. Neither: the mesh's.
    let both = r#"{"drainDuration": "40s", "terminationDrainDuration": "3s"}"#;
    let p = pod(&json!({PROXY_CONFIG_ANNOTATION: both}), None);
    assert_eq!(render(&p, &settings).0[3], "3s");
    let p = pod(&json!({PROXY_CONFIG_ANNOTATION: "concurrency: 2\n"}), None);
    assert_eq!(render(&p, &settings).0[3], "20s");
}

#[test]
fn invalid_drains_name_the_field_and_what_was_expected() {
    // Mesh config: the field path and the reason.
    for (value, why) in [
        ("0s", "cut every in-flight request"),
        ("11m", "too long"),
        ("1.5s", "not whole seconds"),
        ("soon", "not a duration"),
    ] {
        let injection: MeshInjection =
            serde_saphyr::from_str(&format!("drainDuration: {value}\n")).unwrap();
        let (field, reason) = injection.settings("cluster.local", None).unwrap_err();
        assert_eq!(field, "drainDuration");
        assert!(
            reason.contains(why) && reason.contains(DRAIN_EXPECTED),
            "{reason}"
        );
    }

    // Pod annotation: the webhook denies with the pod, the annotation's field and the value.
    let settings = InjectSettings::default();
    let p = pod(
        &json!({PROXY_CONFIG_ANNOTATION: "drainDuration: 2h\n"}),
        None,
    );
    let e = inject(&p, &enabled(), &settings).unwrap_err();
    assert_eq!(e.annotation, "proxy.istio.io/config: drainDuration");
    assert_eq!(e.value, "2h");
    let shown = e.to_string();
    assert!(
        shown.starts_with("pod child-services/case-api-1: annotation proxy.istio.io/config: drainDuration: `2h` is not a whole number of seconds from 1s to 10m"),
        "{shown}"
    );
    let p = pod(
        &json!({PROXY_CONFIG_ANNOTATION: "{terminationDrainDuration: [oops"}),
        None,
    );
    let e = inject(&p, &enabled(), &settings).unwrap_err();
    assert_eq!(e.annotation, PROXY_CONFIG_ANNOTATION);
    assert!(e.expected.contains("ProxyConfig in YAML or JSON"));
    // A duration that is not a string is the same mistake as a malformed one.
    let p = pod(
        &json!({PROXY_CONFIG_ANNOTATION: "drainDuration: 0\n"}),
        None,
    );
    assert!(inject(&p, &enabled(), &settings).is_err());
}

#[test]
fn the_webhook_returns_the_grace_warning_to_kubectl() {
    let review: kube::core::admission::AdmissionReview<Pod> = serde_json::from_value(json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u1", "operation": "CREATE", "namespace": "child-services",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "userInfo": {}, "dryRun": false,
            "object": serde_json::to_value(pod(
                &json!({PROXY_CONFIG_ANNOTATION: "drainDuration: 90s\n"}), None)).unwrap(),
        }
    }))
    .unwrap();
    let request: kube::core::admission::AdmissionRequest<Pod> = review.try_into().unwrap();
    let response = crate::k8s::webhook::respond(&request, &enabled(), &InjectSettings::default());
    assert!(response.allowed);
    let warnings = response.warnings.unwrap();
    assert!(warnings[0].contains("raised from 30 to 95"), "{warnings:?}");
}
