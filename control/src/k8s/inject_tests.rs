//! Unit tests of the sidecar injection decision and patch.

use super::*;

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn app_pod() -> Pod {
    pod(json!({
        "metadata": {"name": "case-api-1", "namespace": "child-services",
                     "labels": {"app": "case-api"}, "annotations": {"team": "intake"}},
        "spec": {
            "serviceAccountName": "case-api",
            "initContainers": [{"name": "migrate", "image": "migrate"}],
            "containers": [{"name": "app", "image": "app", "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}}],
            "volumes": [{"name": "config", "emptyDir": {}}]
        }
    }))
}

/// `pod` after the injection `patch`, as the API server stores it.
pub(in crate::k8s) fn apply(pod: &Pod, patch: &Patch) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut doc, patch).unwrap();
    serde_json::from_value(doc).unwrap()
}

fn names(containers: &[Container]) -> Vec<&str> {
    containers.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn decision_follows_namespace_and_pod_switches() {
    let s = InjectSettings::default();
    let on = labels(&[("istio-injection", "enabled")]);
    let off = labels(&[("istio-injection", "disabled")]);
    let none = labels(&[]);
    let with = |key: &str, value: &str, as_label: bool| {
        let mut p = app_pod();
        let map = if as_label {
            p.metadata.labels.get_or_insert_with(BTreeMap::new)
        } else {
            p.metadata.annotations.get_or_insert_with(BTreeMap::new)
        };
        map.insert(key.into(), value.into());
        p
    };
    assert_eq!(decide(&app_pod(), &on, &s), Decision::Inject);
    assert_eq!(
        decide(&app_pod(), &none, &s),
        Decision::Skip(SkipReason::NotEnabled)
    );
    assert_eq!(
        decide(&app_pod(), &labels(&[("jalin-injection", "enabled")]), &s),
        Decision::Inject
    );
    // The pod turns it on in an unlabelled namespace, by label or annotation, either prefix.
    assert_eq!(
        decide(&with("sidecar.jalin.io/inject", "true", true), &none, &s),
        Decision::Inject
    );
    assert_eq!(
        decide(&with("sidecar.istio.io/inject", "true", false), &none, &s),
        Decision::Inject
    );
    // Any "off" wins.
    assert_eq!(
        decide(&with("sidecar.istio.io/inject", "false", true), &on, &s),
        Decision::Skip(SkipReason::Disabled {
            by: "pod label sidecar.istio.io/inject".into()
        })
    );
    assert_eq!(
        decide(&with("sidecar.jalin.io/inject", "true", true), &off, &s),
        Decision::Skip(SkipReason::Disabled {
            by: "namespace label istio-injection".into()
        })
    );
    let by_default = InjectSettings {
        enabled_by_default: true,
        ..InjectSettings::default()
    };
    assert_eq!(decide(&app_pod(), &none, &by_default), Decision::Inject);
    let mut host = app_pod();
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert_eq!(
        decide(&host, &on, &s),
        Decision::Skip(SkipReason::HostNetwork)
    );
    let mut system = app_pod();
    system.metadata.namespace = Some("kube-system".into());
    assert_eq!(
        decide(&system, &on, &s),
        Decision::Skip(SkipReason::SystemNamespace)
    );
}

#[test]
fn native_sidecar_patch_applies_and_is_idempotent() {
    let s = InjectSettings::default();
    let ns = labels(&[("istio-injection", "enabled")]);
    let original = app_pod();
    let injection = inject(&original, &ns, &s).unwrap();
    assert_eq!(injection.decision, Decision::Inject);
    let injected = apply(&original, &injection.patch);
    let spec = injected.spec.as_ref().unwrap();
    assert_eq!(
        names(spec.init_containers.as_ref().unwrap()),
        [INIT_CONTAINER, PROXY_CONTAINER, "migrate"],
        "redirect first, then the proxy, then the app's init containers"
    );
    assert_eq!(names(&spec.containers), ["app"]);
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.startup_probe.is_some());
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_non_root),
        (Some(1337), Some(true))
    );
    let env: BTreeMap<&str, Option<&str>> = proxy
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env["JALIN_CONTROL_PLANE"],
        Some("jalin-control.jalin-system.svc:15012")
    );
    assert_eq!(env["JALIN_INBOUND_PORT"], Some("15006"));
    assert!(env.contains_key("SERVICE_ACCOUNT"));

    let init = &spec.init_containers.as_ref().unwrap()[0];
    let script = &init.command.as_ref().unwrap()[2];
    assert!(script.contains("-A JALIN_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"));
    assert!(script.contains("-A JALIN_REDIRECT -p tcp -j REDIRECT --to-ports 15001"));
    assert!(script.contains("-A JALIN_OUTPUT -m owner --uid-owner 1337 -j RETURN"));
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(caps.add.as_deref().unwrap(), ["NET_ADMIN", "NET_RAW"]);

    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["config", "jalin-token", "jalin-data"]);
    let token = spec.volumes.as_ref().unwrap()[1]
        .projected
        .as_ref()
        .unwrap();
    let projection = token.sources.as_ref().unwrap()[0]
        .service_account_token
        .as_ref()
        .unwrap();
    assert_eq!(projection.audience.as_deref(), Some("jalin-ca"));

    let annotations = injected.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations["team"], "intake", "existing annotations kept");
    let status: Value = serde_json::from_str(&annotations[STATUS_ANNOTATION]).unwrap();
    assert_eq!(
        status["initContainers"],
        json!([INIT_CONTAINER, PROXY_CONTAINER])
    );
    let labels = injected.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app"], "case-api");
    assert_eq!(labels[TLS_MODE_LABEL], "istio");

    // Injecting again changes nothing.
    let again = inject(&injected, &ns, &s).unwrap();
    assert_eq!(again.decision, Decision::Skip(SkipReason::AlreadyInjected));
    assert!(again.patch.0.is_empty());
}

#[test]
fn bare_pod_gets_the_lists_and_maps_created() {
    let bare = pod(json!({
        "metadata": {"generateName": "job-", "namespace": "emergency"},
        "spec": {"containers": [{"name": "job", "image": "job"}]}
    }));
    let s = InjectSettings {
        native_sidecar: false,
        enabled_by_default: true,
        ..InjectSettings::default()
    };
    let injection = inject(&bare, &BTreeMap::new(), &s).unwrap();
    let injected = apply(&bare, &injection.patch);
    let spec = injected.spec.as_ref().unwrap();
    assert_eq!(
        names(spec.init_containers.as_ref().unwrap()),
        [INIT_CONTAINER]
    );
    assert_eq!(
        names(&spec.containers),
        [PROXY_CONTAINER, "job"],
        "proxy first"
    );
    assert_eq!(spec.containers[0].restart_policy, None);
    assert_eq!(spec.volumes.as_ref().unwrap().len(), 2);
    assert!(
        injected
            .metadata
            .annotations
            .unwrap()
            .contains_key(STATUS_ANNOTATION)
    );
}

#[test]
fn redirect_annotations_are_honoured_and_validated() {
    let mut p = app_pod();
    let annotations = p.metadata.annotations.as_mut().unwrap();
    annotations.insert(EXCLUDE_INBOUND_PORTS.into(), "9000, 9001".into());
    annotations.insert(EXCLUDE_OUTBOUND_PORTS.into(), "5432".into());
    annotations.insert(EXCLUDE_OUTBOUND_RANGES.into(), "169.254.169.254/32".into());
    let ns = labels(&[("istio-injection", "enabled")]);
    let injection = inject(&p, &ns, &InjectSettings::default()).unwrap();
    let injected = apply(&p, &injection.patch);
    let script = injected.spec.unwrap().init_containers.unwrap()[0]
        .command
        .clone()
        .unwrap()
        .remove(2);
    for want in [
        "-A JALIN_INBOUND -p tcp --dport 9000 -j RETURN",
        "-A JALIN_INBOUND -p tcp --dport 9001 -j RETURN",
        "-A JALIN_INBOUND -p tcp --dport 15021 -j RETURN",
        "-A JALIN_OUTPUT -p tcp --dport 5432 -j RETURN",
        "-A JALIN_OUTPUT -d 169.254.169.254/32 -j RETURN",
    ] {
        assert!(script.contains(want), "missing `{want}`");
    }

    let mut bad = app_pod();
    bad.metadata.annotations.as_mut().unwrap().insert(
        EXCLUDE_OUTBOUND_RANGES.into(),
        "10.0.0.0/8,not-a-cidr".into(),
    );
    let error = inject(&bad, &ns, &InjectSettings::default()).unwrap_err();
    assert_eq!(error.pod, "child-services/case-api-1");
    assert_eq!(error.annotation, EXCLUDE_OUTBOUND_RANGES);
    let message = error.to_string();
    assert!(
        message.contains("not-a-cidr") && message.contains("CIDR"),
        "{message}"
    );

    let mut zero = app_pod();
    zero.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(EXCLUDE_INBOUND_PORTS.into(), "0".into());
    assert!(inject(&zero, &ns, &InjectSettings::default()).is_err());
}

#[test]
fn skipped_pods_get_an_empty_patch() {
    let injection = inject(&app_pod(), &BTreeMap::new(), &InjectSettings::default()).unwrap();
    assert_eq!(injection.decision, Decision::Skip(SkipReason::NotEnabled));
    assert!(injection.patch.0.is_empty());
}

#[test]
fn app_probes_are_rewritten_to_the_proxy_in_both_modes() {
    let ns = labels(&[("istio-injection", "enabled")]);
    for native_sidecar in [true, false] {
        let s = InjectSettings {
            native_sidecar,
            ..InjectSettings::default()
        };
        let original = app_pod();
        let injected = apply(&original, &inject(&original, &ns, &s).unwrap().patch);
        let spec = injected.spec.unwrap();
        let app = spec.containers.iter().find(|c| c.name == "app").unwrap();
        let http = app
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(http.path.as_deref(), Some("/app-health/app/readyz"));
        assert_eq!(http.port, IntOrString::Int(15021));
        let proxy = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == PROXY_CONTAINER)
            .unwrap();
        let probers = proxy
            .env
            .iter()
            .flatten()
            .find(|e| e.name == probes::APP_PROBERS_ENV)
            .and_then(|e| e.value.clone())
            .unwrap();
        let probers: Value = serde_json::from_str(&probers).unwrap();
        assert_eq!(
            probers["/app-health/app/readyz"]["httpGet"]["path"],
            "/ready"
        );
    }
    let mut opted_out = app_pod();
    opted_out
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(probes::REWRITE_PROBES_ANNOTATION.into(), "false".into());
    let injected = apply(
        &opted_out,
        &inject(&opted_out, &ns, &InjectSettings::default())
            .unwrap()
            .patch,
    );
    let app = &injected.spec.unwrap().containers[0];
    let http = app
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(http.port, IntOrString::Int(8080));
}
