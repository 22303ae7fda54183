//! `deploy/` against the `jalin` command line itself: the control plane's container args and the
//! bare-metal unit's `ExecStart` parse with the real clap command (a renamed or removed flag fails
//! here), and every declared port — container, Service, NetworkPolicy, Dockerfile, probes — is the
//! port the parsed `jalin control` listens on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failures should panic

#[allow(dead_code)] // shared with deploy_manifests.rs, which uses the rest
#[path = "deploy_manifests/support.rs"]
mod support;

use support::*;

use std::collections::{BTreeMap, BTreeSet};

use clap::Parser;
use jalin_control::cli::{Cli, Command};
use jalin_control::server::ControlArgs;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Parses `jalin <args>` as `jalin control` and returns its arguments.
fn control_args(args: &[String], origin: &str) -> ControlArgs {
    let cli = Cli::try_parse_from(std::iter::once("jalin".to_owned()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| panic!("{origin}: `jalin {}` does not parse: {e}", args.join(" ")));
    match cli.command {
        Command::Control(a) => *a,
        other => panic!("{origin}: expected `jalin control`, got {other:?}"),
    }
}

/// The port each named container/Service port must be, from the parsed flags.
fn ports_by_name(a: &ControlArgs) -> BTreeMap<&'static str, i32> {
    BTreeMap::from([
        ("grpc-xds", i32::from(a.xds_listen.port())),
        ("https-xds-ca", i32::from(a.ca_listen.port())),
        ("http-monitoring", i32::from(a.health_listen.port())),
        ("https-webhook", i32::from(a.webhook_listen.port())),
    ])
}

#[test]
fn the_cli_defaults_are_the_agreed_ports() {
    let a = control_args(&["control".to_owned()], "defaults");
    let ports: BTreeSet<i32> = ports_by_name(&a).into_values().collect();
    assert_eq!(ports, BTreeSet::from(CONTROL_PORTS));
    assert_eq!(i32::from(a.health_listen.port()), MONITORING_PORT);
    assert_eq!(i32::from(a.webhook_listen.port()), WEBHOOK_PORT);
}

#[test]
fn control_plane_container_args_and_ports_match_the_cli() {
    let cp = control_plane();
    let pod = pod_spec(&cp.deployment);
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    let a = control_args(&args, "deploy/manifests/jalin.yaml");
    assert!(
        a.kubernetes,
        "the deployment reads the Kubernetes API (and so serves the webhook)"
    );
    assert!(a.mesh_config.is_some());
    assert!(!a.insecure_xds, "never --insecure-xds in a deployment");
    let expected = ports_by_name(&a);

    // Every container port is named for what the binary serves there, on the parsed port.
    let declared: BTreeMap<String, i32> = c
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    let expected_owned: BTreeMap<String, i32> = expected
        .iter()
        .map(|(k, v)| ((*k).to_owned(), *v))
        .collect();
    assert_eq!(
        declared, expected_owned,
        "container ports vs `jalin control`"
    );

    // Probes hit the health listener.
    for probe in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe] {
        let (port, _) = probe_port(probe.as_ref().unwrap(), c);
        assert_eq!(port, i32::from(a.health_listen.port()));
    }

    // Service ports target the same ports under the same names.
    for p in cp.service.spec.as_ref().unwrap().ports.iter().flatten() {
        let name = p.name.clone().unwrap();
        let target = match p.target_port.clone().unwrap() {
            IntOrString::Int(n) => n,
            IntOrString::String(s) => panic!("service port {name}: targetPort {s} is not a number"),
        };
        assert_eq!(
            Some(&target),
            expected.get(name.as_str()),
            "service port {name}"
        );
    }

    // The NetworkPolicy admits exactly the ports the binary serves.
    let np_ports: BTreeSet<i32> = cp
        .network_policy
        .spec
        .as_ref()
        .unwrap()
        .ingress
        .iter()
        .flatten()
        .flat_map(|rule| rule.ports.iter().flatten())
        .map(|p| match p.port.clone().unwrap() {
            IntOrString::Int(n) => n,
            IntOrString::String(s) => expected[s.as_str()],
        })
        .collect();
    assert_eq!(np_ports, expected.values().copied().collect());

    // The mesh config the deployment mounts is what `jalin control` reads, injection included.
    let text = &cp.config_map.data.as_ref().unwrap()["mesh.yaml"];
    let parsed: jalin_control::server::mesh::MeshConfig = serde_saphyr::from_str(text).unwrap();
    let injection = parsed
        .injection
        .settings("cluster.local", parsed.control_plane.address.as_deref())
        .unwrap();
    assert!(
        injection
            .resources
            .as_ref()
            .is_some_and(|r| r.limits.is_some()),
        "sidecar limits reach the injector"
    );
    assert_eq!(
        Some(injection.control_plane.as_str()),
        parsed.control_plane.address.as_deref()
    );

    // The mesh config's control-plane address is the CA port (where proxies bootstrap).
    let mesh = mesh_config(&cp);
    let address = mesh["controlPlane"]["address"].as_str().unwrap();
    assert!(
        address.ends_with(&format!(":{}", a.ca_listen.port())),
        "{address}"
    );
}

#[test]
fn helm_deployment_args_parse_with_the_cli() {
    let template = std::fs::read_to_string(chart_dir().join("templates/deployment.yaml")).unwrap();
    // The args block: `- ` items after `args:` up to the next key.
    let mut args = Vec::new();
    let mut lines = template.lines().skip_while(|l| l.trim() != "args:");
    lines.next();
    for line in lines {
        match line.trim().strip_prefix("- ") {
            Some(item) => {
                assert!(
                    !item.contains("{{"),
                    "chart args are literal so they can be checked: {item}"
                );
                args.push(item.to_owned());
            }
            None => break,
        }
    }
    assert!(!args.is_empty(), "the chart's container has args");
    let a = control_args(&args, "deploy/helm/jalin/templates/deployment.yaml");
    assert!(a.kubernetes);
    let ports: BTreeSet<i32> = ports_by_name(&a).into_values().collect();
    assert_eq!(template_ports("deployment.yaml", "containerPort:"), ports);
}

#[test]
fn bare_metal_unit_runs_a_valid_control_command() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/jalin-control.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace().map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some("/usr/local/bin/jalin"));
    let args: Vec<String> = words.collect();
    let a = control_args(&args, "deploy/systemd/jalin-control.service");
    assert!(!a.insecure_xds);
    assert!(a.config_dir.is_some(), "bare metal reads a directory");
    assert_eq!(
        [
            a.xds_listen.port(),
            a.ca_listen.port(),
            a.health_listen.port()
        ],
        [15010, 15012, 15014]
    );
    assert!(
        a.health_listen.ip().is_loopback(),
        "the health port stays local on a host"
    );

    let docker = std::fs::read_to_string(deploy_dir().join("docker/Dockerfile.control")).unwrap();
    let exposed: BTreeSet<i32> = docker
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<i32>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from(CONTROL_PORTS));
}
