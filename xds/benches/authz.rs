//! Per-request cost of authorization against the compiled seed policy set (`policies-10`,
//! `-15`, `-16`, `-30`, plus a mesh-wide DENY), for an allowed request (matches the first rule of
//! the child-profile policy after checking the mesh DENY), a denied one (every rule tried),
//! and one whose path needs normalising. Target: <= 1 us median.

// A benchmark harness: a broken fixture must abort the run loudly.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use jalin_xds::authz::{Engine, EngineConfig, PeerIdentity, RequestAttrs};
use jalin_xds::model::authz::AuthorizationPolicy;
use serde_json::json;

fn seed_policies() -> Vec<AuthorizationPolicy> {
    let v = json!([
      {"meta": {"name": "child-profile-access-policy", "namespace": "child-services"},
       "selector": {"match_labels": {"app": "child-profile-service"}},
       "action": "ALLOW",
       "rules": [
         {"from": [{"principals": ["cluster.local/ns/child-services/sa/child-profile-client"],
                    "namespaces": ["child-services", "emergency"]}],
          "to": [{"methods": ["GET", "POST", "PUT"], "paths": ["/api/v1/child/*"]}],
          "when": [{"key": "source.certificate_fingerprint", "values": ["*"]},
                   {"key": "request.headers[x-child-access-reason]",
                    "values": ["emergency", "care-coordination", "medical-emergency"]}]},
         {"from": [{"principals": ["cluster.local/ns/emergency/sa/emergency-response"]}],
          "to": [{"methods": ["GET", "POST"], "paths": ["/api/v1/child/emergency/*"]}],
          "when": [{"key": "request.headers[x-emergency-authorization]", "values": ["verified"]}]}]},
      {"meta": {"name": "emergency-access-policy", "namespace": "emergency"},
       "selector": {"match_labels": {"app": "emergency-response-service"}},
       "rules": [{"from": [{"principals": ["cluster.local/ns/emergency/sa/emergency-responder"]}],
                  "to": [{"paths": ["/api/v1/emergency/*"]}]}]},
      {"meta": {"name": "emergency-override-policy", "namespace": "emergency"},
       "selector": {"match_labels": {"emergency-override": "true"}},
       "rules": [{"from": [{"principals": ["cluster.local/ns/emergency/sa/emergency-override"]}]}]},
      {"meta": {"name": "emergency-override-mesh-policy", "namespace": "istio-system"},
       "selector": {"match_labels": {"emergency-access": "enabled"}},
       "rules": [
         {"from": [{"principals": ["cluster.local/ns/emergency/sa/emergency-coordinator"]}],
          "to": [{"methods": ["GET", "POST", "PUT"], "paths": ["/*"]}],
          "when": [{"key": "request.headers[x-emergency-authorization]",
                    "values": ["court-order", "child-protection-emergency", "medical-emergency"]},
                   {"key": "request.headers[x-emergency-duration]",
                    "values": ["15-minutes", "30-minutes", "1-hour", "4-hours"]},
                   {"key": "request.headers[x-emergency-justification]",
                    "values": ["immediate-child-danger", "life-threatening", "court-mandated"]}]}]},
      {"meta": {"name": "deny-debug", "namespace": "istio-system"},
       "action": "DENY",
       "rules": [{"to": [{"paths": ["/debug/*", "/admin/*"]}]}]}
    ]);
    serde_json::from_value(v).expect("seed policies in the native model")
}

fn bench(c: &mut Criterion) {
    let engine = Engine::compile(&seed_policies(), &EngineConfig::default()).expect("compiles");
    let labels: BTreeMap<String, String> = [
        ("app".to_string(), "child-profile-service".to_string()),
        ("emergency-access".to_string(), "enabled".to_string()),
    ]
    .into_iter()
    .collect();
    let authz = engine.for_workload("child-services", &labels);
    let peer = PeerIdentity::from_certificate(
        Some("spiffe://cluster.local/ns/child-services/sa/child-profile-client"),
        b"leaf certificate DER",
    );
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("x-child-access-reason", "care-coordination"),
        ("user-agent", "agency-portal/2.3"),
        ("accept", "application/json"),
        ("x-request-id", "7d1f0c1e-8d0b-4a8e-9c55-2b8f6c1c2a10"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ] {
        headers.insert(k, v.parse().expect("header"));
    }
    let base = RequestAttrs {
        peer: &peer,
        source_ip: "10.1.2.3".parse().expect("ip"),
        remote_ip: "10.1.2.3".parse().expect("ip"),
        destination_ip: "10.1.9.9".parse().expect("ip"),
        destination_port: 8080,
        sni: Some("outbound_.8080_._.child-profile-service.child-services.svc.cluster.local"),
        method: "GET",
        host: "child-profile-service.child-services:8080",
        path: "/api/v1/child/12345/profile",
        headers: &headers,
        auth: None,
    };
    assert!(authz.evaluate(&base).is_allowed());
    let denied = RequestAttrs {
        method: "DELETE",
        ..base
    };
    assert!(!authz.evaluate(&denied).is_allowed());
    let dotted = RequestAttrs {
        path: "/api/v1/child//12345/./profile",
        ..base
    };
    assert!(authz.evaluate(&dotted).is_allowed());

    let mut g = c.benchmark_group("authz");
    g.bench_function("seed_allow", |b| {
        b.iter(|| authz.evaluate(black_box(&base)))
    });
    g.bench_function("seed_deny_all_rules_tried", |b| {
        b.iter(|| authz.evaluate(black_box(&denied)))
    });
    g.bench_function("seed_allow_path_normalised", |b| {
        b.iter(|| authz.evaluate(black_box(&dotted)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
