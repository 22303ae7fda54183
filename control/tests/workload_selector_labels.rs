//! ServiceEntry and Sidecar `workloadSelector` are Istio's `networking.v1alpha3.WorkloadSelector`,
//! read from `labels`: a ServiceEntry selecting WorkloadEntries by `labels` gets exactly their
//! endpoints at a proxy, and `matchLabels` (the other selector type's field) is an error that says
//! to use `labels`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod control_support;

use control_support::*;
use jalin_control::istio::{Loaded, Severity, load_str};
use jalin_xds::model::cluster::Endpoint;
use jalin_xds::transport::Kind;

fn findings(body: &str) -> Vec<(Severity, String)> {
    let mut out = Loaded::default();
    load_str("t.yaml", body, &mut out);
    out.findings
        .iter()
        .map(|f| (f.severity, f.to_string()))
        .collect()
}

fn errors(body: &str) -> Vec<String> {
    findings(body)
        .into_iter()
        .filter(|(s, _)| *s == Severity::Error)
        .map(|(_, m)| m)
        .collect()
}

fn selected_service_entry(selector: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: records\n  namespace: ns\nspec:\n  hosts: [records.ns.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - number: 80\n    name: http\n    protocol: HTTP\n  workloadSelector:\n    {selector}:\n      app: records\n"
    )
}

fn workload_entry(name: &str, app: &str, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: ns\nspec:\n  address: {address}\n  labels:\n    app: {app}\n"
    )
}

#[test]
fn service_entry_selector_labels_is_valid_and_match_labels_says_to_use_labels() {
    assert_eq!(
        errors(&selected_service_entry("labels")),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&selected_service_entry("matchLabels")),
        [
            "t.yaml:15: ServiceEntry/ns/records: spec.workloadSelector.matchLabels: a ServiceEntry's `workloadSelector` has no `matchLabels`: Istio's ServiceEntry selects workloads with `workloadSelector.labels`; rename `matchLabels` to `labels`"
        ]
    );
}

#[test]
fn sidecar_selector_is_labels_too() {
    let sidecar = |selector: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: s\n  namespace: ns\nspec:\n  workloadSelector:\n{selector}  egress:\n  - hosts: [\"./*\"]\n"
        )
    };
    assert_eq!(
        errors(&sidecar("    labels:\n      app: web\n")),
        Vec::<String>::new()
    );
    let e = errors(&sidecar("    matchLabels:\n      app: web\n"));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].contains("rename `matchLabels` to `labels`"), "{e:#?}");
    let e = errors(&sidecar("    labels: {}\n"));
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(e[0].contains("needs `labels`"), "{e:#?}");
}

#[tokio::test]
async fn a_service_entry_selecting_by_labels_gets_the_matching_workload_entries() {
    let Sandbox { tmp: _tmp, ca, dir } = sandbox();
    write(&dir, "se.yaml", &selected_service_entry("labels"));
    write(
        &dir,
        "we.yaml",
        &[
            workload_entry("records-1", "records", "10.0.3.1"),
            workload_entry("records-2", "records", "10.0.3.2"),
            workload_entry("other", "other", "10.0.3.9"),
        ]
        .join("---\n"),
    );
    let control = start(config(Some(&dir), &ca)).await;
    let mut p = proxy(&control, "client", "ns", "app=client");
    let cluster = "outbound|80||records.ns.svc.cluster.local";
    let s = p
        .until("the selected endpoints", |s| {
            body::<Vec<Endpoint>>(s, Kind::Endpoints, cluster).is_some_and(|e| !e.is_empty())
        })
        .await;
    let eps: Vec<Endpoint> = body(&s, Kind::Endpoints, cluster).unwrap();
    let mut addrs: Vec<String> = eps.iter().map(|e| e.address.ip().to_string()).collect();
    addrs.sort();
    assert_eq!(addrs, ["10.0.3.1", "10.0.3.2"]);
    control.shutdown().await;
}
