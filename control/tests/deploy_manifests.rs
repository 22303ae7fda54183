//! Checks `deploy/`: every manifest document parses into its Kubernetes type with no unknown or
//! misspelled field, the security properties of the control plane and workloads hold, the
//! injection webhook and RBAC are exactly as intended, and the Helm chart's defaults match the
//! rendered manifest in `deploy/manifests/jalin.yaml`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[path = "deploy_manifests/support.rs"]
mod support;

use support::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

#[test]
fn every_manifest_document_matches_its_kubernetes_schema() {
    let all = manifests().unwrap();
    let names: BTreeSet<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["istio-crds.yaml", "jalin.yaml", "namespace-example.yaml"])
    );
    let kinds: BTreeSet<&str> = all["jalin.yaml"].iter().map(|d| d.kind.as_str()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "Namespace",
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRoleBinding",
            "PriorityClass",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
            "NetworkPolicy",
            "MutatingWebhookConfiguration",
        ])
    );
    // Namespaced objects all live in the control plane's namespace.
    let cp = control_plane();
    let ns = cp.deployment.metadata.namespace.clone().unwrap();
    for meta in [
        &cp.service.metadata,
        &cp.service_account.metadata,
        &cp.config_map.metadata,
        &cp.pdb.metadata,
        &cp.network_policy.metadata,
    ] {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(ns.as_str()),
            "{:?}",
            meta.name
        );
    }
}

#[test]
fn a_misspelled_or_misplaced_field_is_rejected() {
    let cases = [
        (
            "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n    spec:\n      containers:\n        - name: c\n          securityContext:\n            readOnlyRootFilesytem: true\n",
            ".spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem",
        ),
        (
            "spec:\n  selector: {matchLabels: {a: b}}\n  replica: 2\n  template:\n    spec:\n      containers: [{name: c}]\n",
            ".spec.replica",
        ),
        (
            "spec:\n  selector: {matchLabels: {a: b}}\n  template:\n    spec:\n      runAsNonRoot: true\n      containers: [{name: c}]\n",
            ".spec.template.spec.runAsNonRoot",
        ),
    ];
    for (body, field) in cases {
        let text = format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: x}}\n{body}");
        let raw: Value = serde_saphyr::from_str(&text).unwrap();
        let err = typed::<Deployment>(&raw, "case").unwrap_err().to_string();
        assert!(err.contains(field), "expected {field} in: {err}");
    }
    // The same document without the mistake passes.
    let good = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    spec:\n      containers:\n        - name: c\n          securityContext:\n            readOnlyRootFilesystem: true\n";
    let raw: Value = serde_saphyr::from_str(good).unwrap();
    typed::<Deployment>(&raw, "good").unwrap();
}

#[test]
fn workloads_run_unprivileged_with_limits_and_probes() {
    let all = manifests().unwrap();
    let deployments: Vec<(&str, &Deployment)> = all
        .values()
        .flatten()
        .filter_map(|d| match &d.object {
            Object::Deployment(x) => Some((d.origin.as_str(), &**x)),
            _ => None,
        })
        .collect();
    assert_eq!(
        deployments.len(),
        2,
        "control plane and the example workload"
    );
    for (origin, d) in deployments {
        let pod = pod_spec(d);
        let pod_sc = pod.security_context.as_ref().unwrap();
        assert_eq!(
            pod_sc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{origin}: seccomp"
        );
        assert!(
            pod.init_containers.is_none(),
            "{origin}: no init containers"
        );
        for c in &pod.containers {
            let at = format!("{origin} container {}", c.name);
            let sc = c.security_context.as_ref().unwrap();
            let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
            assert_eq!(non_root, Some(true), "{at}: runAsNonRoot");
            let uid = sc.run_as_user.or(pod_sc.run_as_user);
            assert!(uid.is_some_and(|u| u != 0), "{at}: runAsUser set and not 0");
            assert_eq!(
                sc.allow_privilege_escalation,
                Some(false),
                "{at}: allowPrivilegeEscalation"
            );
            assert_ne!(sc.privileged, Some(true), "{at}: privileged");
            assert_eq!(
                sc.read_only_root_filesystem,
                Some(true),
                "{at}: read-only root"
            );
            let caps = sc.capabilities.as_ref().unwrap();
            assert_eq!(
                caps.drop.as_deref(),
                Some(&["ALL".to_owned()][..]),
                "{at}: drop"
            );
            assert!(caps.add.is_none(), "{at}: no added capabilities");
            let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
            for resource in ["cpu", "memory"] {
                assert!(
                    limits.is_some_and(|l| l.contains_key(resource)),
                    "{at}: {resource} limit"
                );
                assert!(
                    requests.is_some_and(|r| r.contains_key(resource)),
                    "{at}: {resource} request"
                );
            }
            let declared = container_ports(c);
            for (what, probe) in [
                ("readiness", &c.readiness_probe),
                ("liveness", &c.liveness_probe),
            ] {
                let probe = probe
                    .as_ref()
                    .unwrap_or_else(|| panic!("{at}: {what} probe"));
                let (port, _) = probe_port(probe, c);
                assert!(
                    declared.contains(&port),
                    "{at}: {what} probe on undeclared port {port}"
                );
            }
        }
    }
}

#[test]
fn control_plane_serves_the_agreed_ports_and_probes() {
    let cp = control_plane();
    let pod = pod_spec(&cp.deployment);
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(container_ports(c), BTreeSet::from(CONTROL_PORTS));
    let args = c.args.clone().unwrap();
    assert_eq!(args[0], "control");
    assert!(args.contains(&"--kubernetes".to_owned()));
    let mesh_flag = args.iter().position(|a| a == "--mesh-config").unwrap();
    let mesh_path = Path::new(&args[mesh_flag + 1]);
    // The mesh config file comes from the ConfigMap's volume.
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| mesh_path.starts_with(&m.mount_path))
        .expect("mesh config is mounted");
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    assert_eq!(
        volume.config_map.as_ref().unwrap().name,
        cp.config_map.metadata.name.clone().unwrap()
    );
    assert!(
        cp.config_map
            .data
            .as_ref()
            .unwrap()
            .contains_key(mesh_path.file_name().unwrap().to_str().unwrap())
    );

    for (probe, path) in [
        (&c.readiness_probe, "/ready"),
        (&c.liveness_probe, "/live"),
        (&c.startup_probe, "/ready"),
    ] {
        let (port, got) = probe_port(probe.as_ref().unwrap(), c);
        assert_eq!((port, got.as_str()), (MONITORING_PORT, path));
    }
    // The service reaches every port the container serves, and nothing else.
    let svc = cp.service.spec.as_ref().unwrap();
    assert!(selects(
        &LabelSelector {
            match_labels: svc.selector.clone(),
            match_expressions: None
        },
        &pod_labels(&cp.deployment)
    ));
    let targets: BTreeSet<i32> = svc
        .ports
        .iter()
        .flatten()
        .map(|p| match p.target_port.clone().unwrap() {
            IntOrString::Int(n) => n,
            IntOrString::String(s) => panic!("service targetPort {s} must be a number"),
        })
        .collect();
    assert_eq!(targets, BTreeSet::from(CONTROL_PORTS));
    // Secrets are mounted read-only and never world-readable.
    for v in pod.volumes.iter().flatten() {
        if let Some(secret) = &v.secret {
            let mode = secret.default_mode.unwrap();
            assert_eq!(mode & 0o007, 0, "volume {}: mode {mode:o}", v.name);
        }
    }
    assert!(
        c.volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.mount_path != "/tmp")
            .all(|m| m.read_only == Some(true))
    );
    assert_eq!(
        pod.service_account_name,
        cp.service_account.metadata.name.clone()
    );
    assert_eq!(
        pod.priority_class_name,
        cp.priority_class.metadata.name.clone()
    );
    assert_ne!(cp.priority_class.global_default, Some(true));
}

#[test]
fn webhook_fails_closed_and_injects_only_labelled_namespaces() {
    let cp = control_plane();
    let webhooks = cp.webhook.webhooks.clone().unwrap();
    assert_eq!(webhooks.len(), 3);
    let svc_name = cp.service.metadata.name.clone().unwrap();
    let svc_ns = cp.service.metadata.namespace.clone().unwrap();
    let svc_ports = cp.service.spec.as_ref().unwrap().ports.clone().unwrap();
    for w in &webhooks {
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"), "{}", w.name);
        assert_eq!(w.side_effects, "None", "{}", w.name);
        assert_eq!(w.admission_review_versions, ["v1"], "{}", w.name);
        assert!(w.timeout_seconds.is_some_and(|t| (1..=30).contains(&t)));
        let rules = w.rules.clone().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            rules[0].operations.as_deref(),
            Some(&["CREATE".to_owned()][..])
        );
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["pods".to_owned()][..])
        );
        let svc = w.client_config.service.as_ref().unwrap();
        assert_eq!((&svc.name, &svc.namespace), (&svc_name, &svc_ns));
        assert_eq!(svc.path.as_deref(), Some("/inject"));
        let port = svc_ports
            .iter()
            .find(|p| Some(p.port) == svc.port)
            .expect("webhook port is a Service port");
        assert_eq!(port.target_port, Some(IntOrString::Int(WEBHOOK_PORT)));
        // Pods opt out with either label.
        let object = w.object_selector.as_ref().unwrap();
        assert!(selects(object, &labels(&[("app", "x")])));
        assert!(!selects(
            object,
            &labels(&[("sidecar.istio.io/inject", "false")])
        ));
        assert!(!selects(
            object,
            &labels(&[("sidecar.jalin.io/inject", "false")])
        ));
    }
    // Each namespace is injected by exactly one webhook when it carries any combination of the
    // injection labels set to `enabled`, and by none otherwise or when it is excluded.
    let name = "kubernetes.io/metadata.name";
    let keys = ["istio-injection", "jalin.io/inject", "jalin-injection"];
    let count = |ns_labels: &BTreeMap<String, String>| {
        webhooks
            .iter()
            .filter(|w| selects(w.namespace_selector.as_ref().unwrap(), ns_labels))
            .count()
    };
    for mask in 0..8u8 {
        for (namespace, value, want) in [
            ("a", "enabled", usize::from(mask != 0)),
            ("a", "disabled", 0),
            ("kube-system", "enabled", 0),
            (svc_ns.as_str(), "enabled", 0),
        ] {
            let mut ns_labels = labels(&[(name, namespace)]);
            for (bit, key) in keys.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    ns_labels.insert((*key).to_owned(), value.to_owned());
                }
            }
            assert_eq!(count(&ns_labels), want, "namespace labels {ns_labels:?}");
        }
    }
    // The example namespace is injected once.
    let example = parse_file(&deploy_dir().join("manifests/namespace-example.yaml")).unwrap();
    for doc in &example {
        if let Object::Namespace(ns) = &doc.object {
            let mut l = ns.metadata.labels.clone().unwrap_or_default();
            l.insert(name.to_owned(), ns.metadata.name.clone().unwrap());
            assert_eq!(count(&l), 1, "{}", doc.origin);
        }
    }
}

#[test]
fn rbac_grants_exactly_what_the_control_plane_reads() {
    let cp = control_plane();
    let read = BTreeSet::from(["get", "list", "watch"]);
    let expected: BTreeMap<(&str, &str), BTreeSet<&str>> = [
        ("", "services"),
        ("", "pods"),
        ("", "namespaces"),
        ("discovery.k8s.io", "endpointslices"),
        ("security.istio.io", "authorizationpolicies"),
        ("security.istio.io", "peerauthentications"),
        ("security.istio.io", "requestauthentications"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("networking.istio.io", "serviceentries"),
        ("networking.istio.io", "sidecars"),
        ("networking.istio.io", "gateways"),
        ("networking.istio.io", "workloadentries"),
        ("telemetry.istio.io", "telemetries"),
    ]
    .into_iter()
    .map(|k| (k, read.clone()))
    .chain([(
        ("authentication.k8s.io", "tokenreviews"),
        BTreeSet::from(["create"]),
    )])
    .collect();
    let mut granted: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for rule in cp.cluster_role.rules.iter().flatten() {
        assert!(rule.non_resource_urls.is_none() && rule.resource_names.is_none());
        for field in [&rule.api_groups, &rule.resources] {
            assert!(field.iter().flatten().all(|s| !s.contains('*')), "{rule:?}");
        }
        assert!(rule.verbs.iter().all(|v| v != "*"), "{rule:?}");
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                let verbs = granted.entry((group, resource)).or_default();
                verbs.extend(rule.verbs.iter().map(String::as_str));
            }
        }
    }
    assert_eq!(granted, expected);
    assert!(cp.cluster_role.aggregation_rule.is_none());

    assert_eq!(cp.binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(&cp.binding.role_ref.name),
        cp.cluster_role.metadata.name.as_ref()
    );
    let subjects = cp.binding.subjects.clone().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(
        Some(&subjects[0].name),
        cp.service_account.metadata.name.as_ref()
    );
    assert_eq!(subjects[0].namespace, cp.deployment.metadata.namespace);
}

#[test]
fn pdb_and_network_policy_cover_the_control_plane() {
    let cp = control_plane();
    let pods = pod_labels(&cp.deployment);
    let replicas = cp.deployment.spec.as_ref().unwrap().replicas.unwrap();
    let pdb = cp.pdb.spec.as_ref().unwrap();
    assert!(selects(pdb.selector.as_ref().unwrap(), &pods));
    match pdb.min_available.clone().unwrap() {
        IntOrString::Int(n) => assert!(
            n >= 1 && n < replicas,
            "minAvailable {n}, replicas {replicas}"
        ),
        IntOrString::String(s) => panic!("minAvailable {s}: use a count"),
    }

    let np = cp.network_policy.spec.as_ref().unwrap();
    assert!(selects(np.pod_selector.as_ref().unwrap(), &pods));
    assert_eq!(
        np.policy_types.clone().unwrap(),
        ["Ingress".to_owned(), "Egress".to_owned()]
    );
    let port_numbers =
        |ports: &Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>| {
            ports
                .iter()
                .flatten()
                .map(|p| match p.port.clone().unwrap() {
                    IntOrString::Int(n) => n,
                    IntOrString::String(s) => panic!("NetworkPolicy port {s} must be a number"),
                })
                .collect::<BTreeSet<i32>>()
        };
    let ingress: BTreeSet<i32> = np
        .ingress
        .iter()
        .flatten()
        .flat_map(|r| port_numbers(&r.ports))
        .collect();
    assert_eq!(ingress, BTreeSet::from(CONTROL_PORTS));
    // Every egress rule names its ports: no open egress.
    let egress = np.egress.clone().unwrap();
    assert!(egress.iter().all(|r| !port_numbers(&r.ports).is_empty()));
    let egress_ports: BTreeSet<i32> = egress.iter().flat_map(|r| port_numbers(&r.ports)).collect();
    assert_eq!(egress_ports, BTreeSet::from([53, 443, 6443]));
}

#[test]
fn crds_cover_the_istio_kinds_the_control_plane_reads() {
    let cp = control_plane();
    let manifest = deploy_dir().join("manifests/istio-crds.yaml");
    let chart = chart_dir().join("files/crds/istio-crds.yaml");
    assert_eq!(
        fs::read_to_string(&manifest).unwrap(),
        fs::read_to_string(&chart).unwrap(),
        "deploy/manifests/istio-crds.yaml and the chart's files/crds/istio-crds.yaml differ"
    );
    let mut served = BTreeSet::new();
    for doc in parse_file(&manifest).unwrap() {
        let Object::CustomResourceDefinition(crd) = doc.object else {
            panic!("{}: only CRDs belong in istio-crds.yaml", doc.origin);
        };
        let spec = &crd.spec;
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{}.{}", spec.names.plural, spec.group).as_str())
        );
        assert_eq!(spec.scope, "Namespaced");
        let storage = spec.versions.iter().filter(|v| v.storage).count();
        assert_eq!(storage, 1, "{}: exactly one storage version", doc.origin);
        assert!(spec.versions.iter().all(|v| v.served && v.schema.is_some()));
        served.insert((spec.group.clone(), spec.names.plural.clone()));
    }
    let read_istio: BTreeSet<(String, String)> = cp
        .cluster_role
        .rules
        .iter()
        .flatten()
        .flat_map(|r| {
            let groups = r.api_groups.clone().unwrap_or_default();
            let resources = r.resources.clone().unwrap_or_default();
            groups
                .into_iter()
                .filter(|g| g.ends_with(".istio.io"))
                .flat_map(move |g| {
                    resources
                        .clone()
                        .into_iter()
                        .map(move |res| (g.clone(), res))
                })
        })
        .collect();
    assert_eq!(served, read_istio);
}

#[test]
fn chart_plain_yaml_files_parse_and_templates_cover_the_manifest() {
    let chart = chart_dir();
    let mut files = Vec::new();
    plain_chart_files(&chart, &mut files);
    let names: BTreeSet<String> = files
        .iter()
        .map(|p| p.strip_prefix(&chart).unwrap().display().to_string())
        .collect();
    for required in ["Chart.yaml", "values.yaml", "files/crds/istio-crds.yaml"] {
        assert!(
            names.contains(required),
            "{required} is plain YAML: {names:?}"
        );
    }
    for path in &files {
        let text = fs::read_to_string(path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!docs.is_empty(), "{}", path.display());
    }
    let meta = yaml_value(&chart.join("Chart.yaml"));
    assert_eq!(meta["apiVersion"], "v2");
    assert_eq!(meta["name"], "jalin");

    // Every kind a template emits is in the rendered manifest (CRDs are off by default and live
    // in istio-crds.yaml; the Namespace is the manifest's own, Helm uses --create-namespace).
    let mut template_kinds = BTreeSet::new();
    for entry in fs::read_dir(chart.join("templates")).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(kind) = line.strip_prefix("kind: ") {
                template_kinds.insert(kind.trim().to_owned());
            }
        }
    }
    let manifest_kinds: BTreeSet<String> = parse_file(&deploy_dir().join("manifests/jalin.yaml"))
        .unwrap()
        .into_iter()
        .map(|d| d.kind)
        .filter(|k| k != "Namespace")
        .collect();
    assert_eq!(template_kinds, manifest_kinds);
}

#[test]
fn chart_defaults_match_the_rendered_manifest() {
    let cp = control_plane();
    let values = yaml_value(&chart_dir().join("values.yaml"));
    let chart = yaml_value(&chart_dir().join("Chart.yaml"));
    let mesh = mesh_config(&cp);
    let pod = pod_spec(&cp.deployment);
    let c = &pod.containers[0];

    let tag = match values["image"]["tag"].as_str().unwrap() {
        "" => chart["appVersion"].as_str().unwrap().to_owned(),
        t => t.to_owned(),
    };
    let hub = values["image"]["hub"].as_str().unwrap();
    let image = |name: &str| format!("{hub}/{}:{tag}", values["image"][name].as_str().unwrap());
    assert_eq!(c.image.as_deref(), Some(image("control").as_str()));
    assert_eq!(mesh["injection"]["proxyImage"], image("proxy").as_str());
    assert_eq!(mesh["injection"]["initImage"], image("proxy").as_str());
    assert_eq!(
        mesh["injection"]["nativeSidecar"],
        values["sidecar"]["nativeSidecar"]
    );
    assert_eq!(mesh["injection"]["enabledByDefault"], false);
    assert_eq!(mesh["injection"]["proxyUid"], 1337);
    assert_eq!(
        mesh["injection"]["controlPlane"],
        mesh["controlPlane"]["address"]
    );
    assert_eq!(
        c.image_pull_policy.as_ref().unwrap(),
        &values["image"]["pullPolicy"]
    );

    let spec = cp.deployment.spec.as_ref().unwrap();
    assert_eq!(
        Some(values["replicas"].as_i64().unwrap()),
        spec.replicas.map(i64::from)
    );
    assert_eq!(
        serde_json::to_value(c.resources.as_ref().unwrap()).unwrap(),
        values["resources"]
    );
    assert_eq!(
        mesh["injection"]["resources"],
        values["sidecar"]["resources"]
    );
    let rust_log = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "RUST_LOG")
        .unwrap();
    assert_eq!(rust_log.value.as_ref().unwrap(), &values["logLevel"]);

    let ns = cp.deployment.metadata.namespace.clone().unwrap();
    assert_eq!(values["rootNamespace"], ns.as_str());
    assert_eq!(mesh["rootNamespace"], values["rootNamespace"]);
    assert_eq!(mesh["trustDomain"], values["trustDomain"]);
    let cluster_domain = values["clusterDomain"].as_str().unwrap();
    assert_eq!(
        mesh["controlPlane"]["dnsNames"],
        serde_json::json!([
            format!("jalin.{ns}.svc"),
            format!("jalin.{ns}.svc.{cluster_domain}")
        ])
    );
    assert_eq!(
        mesh["controlPlane"]["address"],
        format!("jalin.{ns}.svc:15012").as_str()
    );
    assert_eq!(mesh["priority"], values["priority"]);
    for key in ["workloadCertTTL", "maxWorkloadCertTTL", "tlsPolicy"] {
        assert_eq!(mesh["ca"][key], values["ca"][key], "ca.{key}");
    }
    // ca.source `secret`: the key file comes from the Secret and is mounted.
    assert_eq!(values["ca"]["source"], "secret");
    let ca_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "ca")
        .unwrap();
    let secret = ca_volume.secret.as_ref().unwrap();
    assert_eq!(
        secret.secret_name.as_ref().unwrap(),
        &values["ca"]["secretName"]
    );
    let keys: BTreeSet<&str> = secret
        .items
        .iter()
        .flatten()
        .map(|i| i.key.as_str())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["root-cert.pem", "ca-cert.pem", "ca-key.pem"])
    );
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "ca")
        .unwrap();
    for (field, file) in [
        ("rootCertFile", "root-cert.pem"),
        ("certChainFile", "ca-cert.pem"),
        ("keyFile", "ca-key.pem"),
    ] {
        assert_eq!(
            mesh["ca"][field],
            format!("{}/{file}", mount.mount_path).as_str()
        );
    }

    assert_eq!(
        cp.priority_class.metadata.name.as_ref().unwrap(),
        &values["priorityClass"]["name"]
    );
    assert_eq!(
        i64::from(cp.priority_class.value),
        values["priorityClass"]["value"]
    );
    assert_eq!(
        serde_json::to_value(cp.pdb.spec.as_ref().unwrap().min_available.clone()).unwrap(),
        values["podDisruptionBudget"]["minAvailable"]
    );
    for w in cp.webhook.webhooks.iter().flatten() {
        assert_eq!(
            w.timeout_seconds.map(i64::from),
            values["webhook"]["timeoutSeconds"].as_i64()
        );
        let excluded = w
            .namespace_selector
            .iter()
            .flat_map(|s| s.match_expressions.iter().flatten())
            .find(|e| e.key == "kubernetes.io/metadata.name")
            .unwrap();
        assert_eq!(excluded.operator, "NotIn");
        assert_eq!(
            serde_json::to_value(&excluded.values).unwrap(),
            values["webhook"]["excludedNamespaces"]
        );
    }
    assert_eq!(values["installCRDs"], false);

    // Ports: the templates and the manifest agree.
    assert_eq!(
        template_ports("deployment.yaml", "containerPort:"),
        container_ports(c)
    );
    assert_eq!(
        template_ports("deployment.yaml", "port:"),
        BTreeSet::from([MONITORING_PORT])
    );
    let svc_ports = cp.service.spec.clone().unwrap().ports.unwrap();
    assert_eq!(
        template_ports("service.yaml", "port:"),
        svc_ports.iter().map(|p| p.port).collect()
    );
    assert_eq!(
        template_ports("service.yaml", "targetPort:"),
        BTreeSet::from(CONTROL_PORTS)
    );
    let api_ports: BTreeSet<i32> = values["networkPolicy"]["apiServerPorts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| i32::try_from(p.as_i64().unwrap()).unwrap())
        .collect();
    let egress = cp.network_policy.spec.clone().unwrap().egress.unwrap();
    assert!(egress.iter().any(|r| {
        r.ports
            .iter()
            .flatten()
            .filter_map(|p| match p.port {
                Some(IntOrString::Int(n)) => Some(n),
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            == api_ports
    }));
}

#[test]
fn chart_templates_are_balanced() {
    let dir = chart_dir().join("templates");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut depth = 0i32;
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            let end = rest[start..]
                .find("}}")
                .unwrap_or_else(|| panic!("{name}: unclosed {{{{"));
            let action = rest[start + 2..start + end]
                .trim_start_matches('-')
                .trim_end_matches('-')
                .trim();
            match action.split_whitespace().next().unwrap_or("") {
                "if" | "with" | "range" | "define" | "block" => depth += 1,
                "end" => depth -= 1,
                _ => {}
            }
            assert!(depth >= 0, "{name}: `end` without an opening action");
            rest = &rest[start + end + 2..];
        }
        assert_eq!(depth, 0, "{name}: unclosed if/with/range/define");
        checked += 1;
    }
    assert!(checked >= 10, "{checked} templates");
}

#[test]
fn every_value_is_read_by_a_template() {
    let values = yaml_value(&chart_dir().join("values.yaml"));
    let mut templates = String::new();
    for entry in fs::read_dir(chart_dir().join("templates")).unwrap() {
        templates.push_str(&fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    // `.Values.<path>` used whole (not as the start of a longer path).
    let used_whole = |path: &str| {
        let needle = format!(".Values.{path}");
        templates.match_indices(&needle).any(|(at, _)| {
            templates[at + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'))
        })
    };
    let mut leaves = Vec::new();
    leaf_paths(&values, "", &mut leaves);
    assert!(leaves.len() > 30, "{leaves:?}");
    for leaf in leaves {
        let segments: Vec<&str> = leaf.split('.').collect();
        let used = (1..=segments.len()).any(|n| used_whole(&segments[..n].join(".")));
        assert!(used, "values.yaml `{leaf}` is read by no template");
    }
}
