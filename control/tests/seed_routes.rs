//! VirtualService → native routes: the seed VirtualServices convert field by field with their
//! priority classes; unmodelled fields are reported with reasons; `jalin import` writes routes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use jalin_control::istio::{Finding, Loaded, Severity, convert, load_paths, load_str};
use jalin_xds::model::route::{
    Destination, FaultDelay, PriorityClass, RetryPolicy, RouteTable, StringMatch,
};

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed-policies")
}

fn table<'a>(
    native: &'a convert::NativeConfig,
    name: &str,
) -> &'a jalin_control::istio::routes::BoundRoutes {
    native
        .routes
        .iter()
        .find(|r| r.table.meta.name == name)
        .unwrap_or_else(|| panic!("no route table {name}"))
}

#[test]
fn seed_virtual_services_convert_with_priority_classes() {
    let loaded = load_paths(&[seeds()]);
    let mut findings = Vec::new();
    let native = convert::convert(&loaded.resources, &mut findings);
    assert_eq!(native.routes.len(), 5, "policies-17, 19, 20, 21, 32");
    // One cross-resource warning: policies-32 names `emergency-gateway`, which no seed defines.
    let (gateway, other): (Vec<_>, Vec<_>) =
        findings.iter().partition(|f| f.path == "spec.gateways[0]");
    assert!(
        other.is_empty(),
        "the seed VirtualServices use only modelled fields: {other:#?}"
    );
    assert_eq!(gateway.len(), 1, "{gateway:#?}");
    assert!(
        gateway[0]
            .message
            .contains("Gateway `emergency/emergency-gateway` not found")
    );
    for b in &native.routes {
        b.table.validate().unwrap();
    }

    // policies-17: the emergency header route goes to the emergency subset, emergency class.
    let t = &table(&native, "child-profile-service-routing").table;
    assert_eq!(t.meta.namespace, "child-services");
    assert_eq!(t.hosts, ["child-profile-service"]);
    assert_eq!(t.http.len(), 3);
    let r = &t.http[0];
    assert_eq!(
        r.matches[0].headers.get("x-child-access-reason"),
        Some(&StringMatch::Exact("emergency".into()))
    );
    assert_eq!(
        r.destinations[0].destination,
        Destination {
            host: "child-profile-service".into(),
            subset: Some("emergency".into()),
            port: None
        }
    );
    assert_eq!(r.destinations[0].weight, 100);
    assert_eq!(r.priority, PriorityClass::Emergency);
    assert_eq!(
        r.retries,
        RetryPolicy::istio(
            3,
            Some(10_000),
            Some("5xx,reset,connect-failure,refused-stream")
        )
    );
    assert_eq!(
        r.fault.as_ref().unwrap().delay,
        Some(FaultDelay {
            fixed_delay_ms: 0,
            percentage: 0.0
        })
    );
    assert_eq!(r.timeout_ms, None);
    let r = &t.http[1];
    assert_eq!(r.priority, PriorityClass::Standard);
    assert_eq!(r.timeout_ms, Some(30_000));
    assert_eq!(r.retries, RetryPolicy::istio(2, Some(15_000), None));
    let r = &t.http[2];
    assert!(r.matches.is_empty(), "the default route matches everything");
    assert_eq!(r.timeout_ms, Some(60_000));
    assert_eq!(r.retries, RetryPolicy::default(), "Istio's default retries");
    assert_eq!(r.priority, PriorityClass::Standard);

    // policies-32: bound to the emergency gateway; critical and emergency classes.
    let b = table(&native, "emergency-priority-routing");
    assert_eq!(b.gateways, ["emergency/emergency-gateway"]);
    assert_eq!(b.table.hosts, ["*"]);
    assert_eq!(
        b.table.http[0].matches[0]
            .headers
            .get("x-emergency-priority"),
        Some(&StringMatch::Exact("critical".into()))
    );
    assert_eq!(b.table.http[0].priority, PriorityClass::Critical);
    assert_eq!(b.table.http[0].retries.attempts, 10);
    assert_eq!(b.table.http[0].retries.per_try_timeout_ms, Some(1_000));
    assert_eq!(
        b.table.http[1].matches[0]
            .headers
            .get("x-child-safety-emergency"),
        Some(&StringMatch::Exact("true".into()))
    );
    assert_eq!(b.table.http[1].priority, PriorityClass::Emergency);
    assert_eq!(b.table.http[1].retries.per_try_timeout_ms, Some(500));

    // policies-19: emergency subset → emergency; compliance → standard.
    let g = table(&native, "government-services-routing");
    assert_eq!(g.gateways, ["mesh"]);
    assert_eq!(g.table.http[0].priority, PriorityClass::Emergency);
    assert_eq!(g.table.http[0].timeout_ms, Some(10_000));
    assert_eq!(g.table.http[1].priority, PriorityClass::Standard);
    assert_eq!(g.table.http[1].timeout_ms, Some(120_000));

    // policies-20, 21: standard traffic with their timeouts and retries.
    let b = table(&native, "business-services-routing");
    assert_eq!(
        b.table.http[0].retries.retry_on,
        "5xx,reset,connect-failure"
    );
    assert_eq!(b.table.http[0].timeout_ms, Some(45_000));
    let a = table(&native, "academic-services-routing");
    assert_eq!(a.table.http[0].timeout_ms, Some(300_000));
    assert_eq!(a.table.http[0].retries.per_try_timeout_ms, Some(150_000));
    assert!(
        native
            .routes
            .iter()
            .filter(
                |b| ["business-services-routing", "academic-services-routing"]
                    .contains(&b.table.meta.name.as_str())
            )
            .flat_map(|b| &b.table.http)
            .all(|r| r.priority == PriorityClass::Standard)
    );
}

#[test]
fn import_writes_routes_that_read_back_into_the_model() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_jalin"))
        .args([
            "import",
            seeds().to_str().unwrap(),
            "-o",
            out.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let native: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("native.json")).unwrap()).unwrap();
    let routes = native["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 5);
    for r in routes {
        let t: RouteTable = serde_json::from_value(r["table"].clone()).unwrap();
        t.validate().unwrap();
        assert!(t.meta.source.is_some(), "tables carry file and line");
    }
    let yaml = std::fs::read_to_string(out.path().join("native.yaml")).unwrap();
    assert!(yaml.contains("priority: critical"), "{yaml}");
}

fn load(text: &str) -> (Loaded, Vec<Finding>, convert::NativeConfig) {
    let mut loaded = Loaded::default();
    load_str("vs.yaml", text, &mut loaded);
    let mut findings = Vec::new();
    let native = convert::convert(&loaded.resources, &mut findings);
    (loaded, findings, native)
}

const CRAFTED: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: crafted
  namespace: ns
  annotations:
    jalin.io/priority: "audit=critical, http[0]=standard"
spec:
  hosts: [svc]
  exportTo: ["."]
  http:
  - route:
    - destination: {host: svc, subset: emergency}
  - name: audit
    match:
    - uri: {prefix: /audit}
      scheme: {exact: https}
      headers:
        X-Trace: {}
    route:
    - destination: {host: svc, subset: a, port: {number: 8080}}
      weight: 90
      headers: {request: {set: {x-a: "1"}}}
    - destination: {host: svc, subset: b}
      weight: 10
    mirrors:
    - destination: {host: shadow}
      percentage: {value: 5}
    - destination: {host: shadow2}
    mirrorPercent: 7
    corsPolicy:
      allowOrigins: [{exact: "https://a"}]
    retries:
      attempts: 0
      retryRemoteLocalities: true
    fault:
      abort:
        grpcStatus: UNAVAILABLE
        percentage: {value: 1}
  - delegate: {name: other}
  tcp:
  - route:
    - destination: {host: db}
"#;

#[test]
fn unmodelled_fields_are_reported_with_reasons() {
    let (loaded, findings, native) = load(CRAFTED);
    assert!(!loaded.has_errors(), "{:#?}", loaded.findings);
    let t = &native.routes[0].table;
    // The annotation overrides the derived class, by index and by name.
    assert_eq!(
        t.http[0].priority,
        PriorityClass::Standard,
        "http[0]=standard"
    );
    assert_eq!(
        t.http[1].priority,
        PriorityClass::Critical,
        "audit=critical"
    );
    assert_eq!(t.http[2].priority, PriorityClass::Standard);
    // Honoured fields.
    let r = &t.http[1];
    assert_eq!(r.destinations[0].weight, 90);
    assert_eq!(r.destinations[0].destination.port, Some(8080));
    assert_eq!(
        r.matches[0].headers.get("x-trace"),
        Some(&StringMatch::Present),
        "names lower-cased; `{{}}` is a presence match"
    );
    assert_eq!(r.retries, RetryPolicy::disabled());
    let m = r.mirror.as_ref().unwrap();
    assert_eq!((m.destination.host.as_str(), m.percentage), ("shadow", 5.0));
    assert_eq!(
        r.fault.as_ref().unwrap().abort.as_ref().unwrap().error,
        jalin_xds::model::route::AbortError::GrpcStatus(14)
    );
    // The delegate route fails closed.
    assert_eq!(t.http[2].direct_response.as_ref().unwrap().status, 503);

    let text: Vec<String> = findings
        .iter()
        .map(|f| format!("{}: {f}", f.severity.as_str()))
        .collect();
    let has = |needle: &str| {
        assert!(
            text.iter().any(|l| l.contains(needle)),
            "missing {needle:?} in {text:#?}"
        )
    };
    has("unsupported: vs.yaml:10: VirtualService/ns/crafted: spec.exportTo:");
    has("spec.http[1].match[0].scheme: jalin matches sidecar traffic");
    has(
        "spec.http[1].route[0].headers: header operations per weighted destination are not applied",
    );
    has("spec.http[1].mirrors[1]: jalin mirrors each route to one destination");
    has(
        "unsupported: vs.yaml:30: VirtualService/ns/crafted: spec.http[1].mirrorPercent: applies to `mirror`, which this route does not set",
    );
    has("spec.http[1].corsPolicy: jalin does not answer CORS preflights");
    has(
        "spec.http[1].retries.retryRemoteLocalities: jalin does not partition endpoints by locality",
    );
    has(
        "spec.http[2].delegate: jalin does not merge delegate VirtualServices; requests matching this route are answered 503 (fail closed) instead of being routed by `ns/other`",
    );
    has("spec.tcp[0]: jalin's native route table carries HTTP routes");
    assert!(
        findings
            .iter()
            .all(|f| f.severity != Severity::Unsupported || f.message.len() > 40),
        "every unsupported finding says why"
    );
}

#[test]
fn a_bad_priority_annotation_is_an_error_naming_the_choices() {
    let bad = CRAFTED.replace(
        "audit=critical, http[0]=standard",
        "nosuch=critical, http[0]=urgent, plain",
    );
    let (_, findings, _) = load(&bad);
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].contains("vs.yaml:7: VirtualService/ns/crafted: metadata.annotations[\"jalin.io/priority\"]: `nosuch` names no HTTP route of this VirtualService; use a route's `name` or `http[i]` (0 to 2)"), "{}", errors[0]);
    assert!(
        errors[1]
            .contains("`urgent` is not a priority class; expected critical, emergency or standard")
    );
    assert!(errors[2].contains("`plain` is not `<route>=<class>`"));
}

#[test]
fn deprecated_mirror_percent_is_mapped_with_a_warning() {
    let (_, findings, native) = load(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: m, namespace: ns}\nspec:\n  hosts: [svc]\n  http:\n  - route:\n    - destination: {host: svc}\n    mirror: {host: shadow}\n    mirrorPercent: 7\n    timeout: 0s\n",
    );
    let r = &native.routes[0].table.http[0];
    assert_eq!(r.mirror.as_ref().unwrap().percentage, 7.0);
    assert_eq!(r.timeout_ms, None, "`0s` disables the timeout, as in Istio");
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(
        findings[0].to_string(),
        "vs.yaml:10: VirtualService/ns/m: spec.http[0].mirrorPercent: `mirrorPercent` is deprecated; mapped to `mirrorPercentage.value`"
    );
}
