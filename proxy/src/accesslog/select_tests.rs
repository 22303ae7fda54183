use serde_json::json;

use super::*;
use crate::accesslog::document_from_resource;

fn workload(ns: &str, labels: &[(&str, &str)]) -> Workload {
    Workload {
        root_namespace: "istio-system".into(),
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
    }
}

fn telemetry(ns: &str, name: &str, spec: serde_json::Value) -> Telemetry {
    #![allow(clippy::needless_pass_by_value)] // json! literals read better by value
    parse(
        &json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                "metadata": {"name": name, "namespace": ns}, "spec": spec}),
    )
    .unwrap()
}

/// The seed's shape: providers in one entry, per-mode overrides in another.
fn seed_shape() -> serde_json::Value {
    json!({"accessLogging": [
        {"providers": [{"name": "child-services-audit-log"}]},
        {"overrides": [
            {"match": {"mode": "CLIENT"}, "disabled": false},
            {"match": {"mode": "SERVER"}, "disabled": false, "format": "{\"m\": \"%REQ(:METHOD)%\"}"}
        ]}
    ]})
}

#[test]
fn seed_overrides_are_entries_with_the_first_named_providers() {
    let t = telemetry("child-services", "child-services-telemetry", seed_shape());
    let s = select(&[t], &workload("child-services", &[]));
    let server = s.server.unwrap();
    assert_eq!(server.providers, vec!["child-services-audit-log"]);
    assert_eq!(
        server.format.as_deref(),
        Some("{\"m\": \"%REQ(:METHOD)%\"}")
    );
    assert_eq!(server.resource, "child-services/child-services-telemetry");
    let client = s.client.unwrap();
    assert_eq!(client.providers, vec!["child-services-audit-log"]);
    assert_eq!(
        client.format, None,
        "CLIENT has no format: the provider's or the default"
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn workload_selector_overrides_namespace_which_overrides_root() {
    let root = telemetry(
        "istio-system",
        "mesh",
        json!({"accessLogging": [{"providers": [{"name": "root-log"}]}]}),
    );
    let ns = telemetry(
        "app",
        "ns",
        json!({"accessLogging": [{"providers": [{"name": "ns-log"}]}]}),
    );
    let sel = telemetry(
        "app",
        "sel",
        json!({"selector": {"matchLabels": {"app": "web"}},
               "accessLogging": [{"match": {"mode": "SERVER"}, "providers": [{"name": "web-log"}]}]}),
    );
    let other_ns = telemetry(
        "other",
        "ns",
        json!({"accessLogging": [{"disabled": true}]}),
    );
    let all = [root, ns, sel, other_ns];

    let s = select(&all, &workload("elsewhere", &[]));
    assert_eq!(s.server.unwrap().providers, vec!["root-log"], "mesh-wide");

    let s = select(&all, &workload("app", &[("app", "db")]));
    assert_eq!(
        s.server.unwrap().providers,
        vec!["ns-log"],
        "namespace over root"
    );

    let s = select(&all, &workload("app", &[("app", "web"), ("v", "1")]));
    assert_eq!(
        s.server.unwrap().providers,
        vec!["web-log"],
        "selector over both"
    );
    assert_eq!(
        s.client.unwrap().providers,
        vec!["ns-log"],
        "the selector only set SERVER; CLIENT keeps the namespace's"
    );
}

#[test]
fn disabled_turns_one_mode_off_and_a_more_specific_level_can_turn_it_back_on() {
    let root = telemetry(
        "istio-system",
        "mesh",
        json!({"accessLogging": [{"providers": [{"name": "envoy"}]}]}),
    );
    let off = telemetry(
        "app",
        "quiet",
        json!({"accessLogging": [{"match": {"mode": "CLIENT"}, "disabled": true}]}),
    );
    let s = select(&[root.clone(), off.clone()], &workload("app", &[]));
    assert!(s.client.is_none(), "CLIENT disabled");
    assert!(s.server.is_some(), "SERVER untouched");

    let on = telemetry(
        "app",
        "loud",
        json!({"selector": {"matchLabels": {"app": "x"}},
               "accessLogging": [{"match": {"mode": "CLIENT"}, "disabled": false}]}),
    );
    let s = select(&[root, off, on], &workload("app", &[("app", "x")]));
    assert_eq!(s.client.unwrap().providers, vec!["envoy"]);
}

#[test]
fn no_telemetry_means_no_access_log() {
    let s = select(&[], &workload("app", &[]));
    assert_eq!((s.client, s.server), (None, None));
}

#[test]
fn two_telemetries_on_one_level_use_the_first_by_name_and_say_so() {
    let a = telemetry(
        "app",
        "a",
        json!({"accessLogging": [{"providers": [{"name": "a-log"}]}]}),
    );
    let b = telemetry(
        "app",
        "b",
        json!({"accessLogging": [{"providers": [{"name": "b-log"}]}]}),
    );
    let s = select(&[b, a], &workload("app", &[]));
    assert_eq!(s.server.unwrap().providers, vec!["a-log"]);
    assert!(
        s.warnings.iter().any(|w| w.contains("app/b")),
        "{:?}",
        s.warnings
    );
}

#[test]
fn bad_entries_name_their_path() {
    let doc = json!({"metadata": {"name": "t", "namespace": "n"},
                     "spec": {"accessLogging": [{"providers": []}, {"match": {"mode": "BOTH"}}]}});
    let e = parse(&doc).unwrap_err();
    assert_eq!(e.path, "spec.accessLogging[1]");
    assert!(e.message.contains("BOTH"), "{}", e.message);
    let doc = json!({"kind": "Sidecar", "metadata": {"name": "t"}});
    assert_eq!(parse(&doc).unwrap_err().path, "kind");
}

#[test]
fn a_spec_alone_is_named_by_its_resource() {
    let t = parse(&document_from_resource("child-services/cst", &seed_shape())).unwrap();
    assert_eq!(t.key(), "child-services/cst");
    assert!(
        select(&[t], &workload("child-services", &[]))
            .server
            .is_some()
    );
}

#[test]
fn the_control_planes_serialized_spec_selects_like_the_document() {
    // What `jalin control` sends: the imported spec, empty lists and nulls included.
    let spec = json!({"selector": null, "targetRef": null, "targetRefs": [], "tracing": [],
    "metrics": [], "accessLogging": [
        {"match": null, "providers": [{"name": "audit"}], "disabled": null, "filter": null, "format": null},
        {"match": {"mode": "CLIENT"}, "providers": [], "disabled": true, "filter": null, "format": null}
    ]});
    let t = parse(&document_from_resource("child-services/cst", &spec)).unwrap();
    let s = select(&[t], &workload("child-services", &[]));
    assert_eq!(s.server.unwrap().providers, vec!["audit"]);
    assert!(s.client.is_none());
}
