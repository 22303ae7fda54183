use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::config::parse;
use crate::xds::convert::{DynamicConfig, merge};

const BASE: &str = "admin:\n  address: 127.0.0.1:0\n";

const SEED_DOC: &str = "\
telemetry:
  - apiVersion: telemetry.istio.io/v1alpha1
    kind: Telemetry
    metadata: { name: cst, namespace: child-services }
    spec:
      accessLogging:
      - providers:
        - name: audit
      - overrides:
        - match: { mode: SERVER }
          disabled: false
          format: '{\"m\": \"%REQ(:METHOD)%\", \"w\": \"%{FILTER_STATE(wasm.x)}%\"}'
";

fn plan_of(text: &str) -> Plan {
    let (config, _) = parse("f.yaml", text).unwrap();
    compile(
        &config.telemetry,
        &config.access_log,
        &config.telemetry_workload(),
    )
    .unwrap()
}

#[test]
fn unknown_operators_and_providers_are_warned_with_the_resource_name() {
    let plan = plan_of(&format!(
        "{BASE}access_log:\n  namespace: child-services\n{SEED_DOC}"
    ));
    assert!(plan.server.is_some() && plan.client.is_some());
    let w = plan.warnings.join("\n");
    assert!(
        w.contains("child-services/cst") && w.contains("%{FILTER_STATE(wasm.x)}%"),
        "{w}"
    );
    assert!(w.contains("provider `audit`"), "{w}");
    assert_eq!(
        plan.warnings
            .iter()
            .filter(|w| w.contains("FILTER_STATE"))
            .count(),
        1,
        "listed once: {w}"
    );
}

#[test]
fn another_namespace_or_no_telemetry_compiles_to_nothing() {
    let plan = plan_of(&format!(
        "{BASE}access_log:\n  namespace: other\n{SEED_DOC}"
    ));
    assert_eq!((plan.client, plan.server), (None, None));
    let plan = plan_of(BASE);
    assert_eq!((plan.client, plan.server), (None, None));
}

#[test]
fn a_file_provider_with_labels_sets_destination_and_json_format() {
    let text = format!(
        "{BASE}access_log:\n  namespace: child-services\n  providers:\n    - name: audit\n      \
         envoyFileAccessLog:\n        path: /var/log/audit.log\n        logFormat:\n          \
         labels: {{ code: '%RESPONSE_CODE%' }}\n{}",
        SEED_DOC.replace("mode: SERVER", "mode: CLIENT")
    );
    let plan = plan_of(&text);
    let server = plan.server.unwrap();
    assert_eq!(
        server.targets[0].1,
        Destination::File("/var/log/audit.log".into())
    );
    assert!(matches!(server.targets[0].0, Format::Json(_)));
}

#[test]
fn a_bad_format_in_the_file_names_file_line_and_path() {
    let text = format!(
        "{BASE}access_log:\n  namespace: child-services\n{}",
        SEED_DOC.replace("%REQ(:METHOD)%", "%REQ(:METHOD)")
    );
    let e = parse("f.yaml", &text).unwrap_err();
    assert_eq!(e.file, "f.yaml");
    assert_eq!(e.line, 6, "the document's line: {e}");
    assert_eq!(
        e.path, "telemetry[0].spec.accessLogging[1].overrides[0].format",
        "{e}"
    );
    assert!(e.message.contains("Telemetry child-services/cst"), "{e}");
    assert!(e.message.contains("key `m`"), "{e}");

    let text = format!(
        "{BASE}{}",
        SEED_DOC.replace("mode: SERVER", "mode: INBOUND")
    );
    let e = parse("f.yaml", &text).unwrap_err();
    assert_eq!(e.path, "telemetry[0].spec.accessLogging[1]", "{e}");
    assert!(e.message.contains("INBOUND"), "{e}");
}

#[test]
fn control_plane_telemetry_is_merged_and_a_bad_one_is_refused() {
    let boot = "admin:\n  address: 127.0.0.1:0\naccess_log:\n  namespace: child-services\n";
    let (config, origin) = parse("boot.yaml", boot).unwrap();
    let spec =
        json!({"accessLogging": [{"match": {"mode": "SERVER"}, "providers": [{"name": "envoy"}]}]});
    let dynamic = DynamicConfig {
        telemetry: BTreeMap::from([("child-services/cst".to_owned(), spec)]),
        ..DynamicConfig::default()
    };
    let (merged, _) = merge(config.clone(), &origin, &dynamic).unwrap();
    assert_eq!(document_key(&merged.telemetry[0]), "child-services/cst");
    let plan = compile(
        &merged.telemetry,
        &merged.access_log,
        &merged.telemetry_workload(),
    )
    .unwrap();
    assert!(plan.server.is_some() && plan.client.is_none());

    let bad = json!({"accessLogging": [{"format": "100% sure"}]});
    let dynamic = DynamicConfig {
        telemetry: BTreeMap::from([("child-services/bad".to_owned(), bad)]),
        ..DynamicConfig::default()
    };
    let e = merge(config, &origin, &dynamic).unwrap_err();
    assert_eq!(e.path, "telemetry[0].spec.accessLogging[0].format", "{e}");
    assert!(e.message.contains("child-services/bad"), "{e}");
}

#[test]
fn a_full_or_closed_queue_drops_and_counts() {
    let recorder = crate::telemetry::metrics_handle();
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let sink = Sink {
        tx,
        label: "test-full".into(),
    };
    sink.send("kept\n".into());
    sink.send("dropped\n".into());
    drop(rx);
    sink.send("dropped too\n".into());
    let dropped: u64 = recorder
        .render()
        .lines()
        .filter(|l| l.starts_with(writer::DROPPED_TOTAL) && l.contains("sink=\"test-full\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(dropped, 2);
}
