//! The Kubernetes source against the fake API server: the initial snapshot and `Ready`, and
//! adding, changing and deleting a Service, an EndpointSlice and an AuthorizationPolicy.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod k8s_support;

use jalin_control::k8s::fake::FakeApiServer;
use jalin_control::k8s::registry::RegistrySettings;
use jalin_control::k8s::{
    KubeObject, KubeSourceConfig, NETWORKING_GROUP, ResourceKind, SourceEvent, TELEMETRY_GROUP,
};
use k8s_support::*;

const HOST: &str = "case-api.child-services.svc.cluster.local";

#[tokio::test]
async fn initial_list_is_emitted_before_ready() {
    let fake = FakeApiServer::start().await.unwrap();
    fake.apply(&namespace("child-services")).unwrap();
    fake.apply(&service("child-services", "case-api", &[("http", 80)]))
        .unwrap();
    fake.apply(&pod(
        "child-services",
        "case-api-1",
        "case-api",
        "case-api",
        "10.0.0.5",
    ))
    .unwrap();
    fake.apply(&slice(
        "child-services",
        "case-api-1",
        "case-api",
        &[("case-api-1", "10.0.0.5", true)],
    ))
    .unwrap();
    fake.apply(&authorization_policy(
        "child-services",
        "allow-intake",
        &["cluster.local/ns/intake/sa/web"],
    ))
    .unwrap();

    let (h, before) = Harness::start(fake, KubeSourceConfig::default()).await;
    let mut seen: Vec<String> = before.iter().map(describe).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "+AuthorizationPolicy/child-services/allow-intake",
            "+EndpointSlice/child-services/case-api-1",
            "+Namespace/child-services",
            "+Pod/child-services/case-api-1",
            "+Service/child-services/case-api",
        ]
    );
    assert_eq!(h.handle.watched().len(), ResourceKind::ALL.len());
    assert!(h.handle.skipped().is_empty());
    let ap = h.handle.read(|s| {
        s.get_named(
            ResourceKind::AuthorizationPolicy,
            "child-services",
            "allow-intake",
        )
        .cloned()
    });
    let ap = ap.unwrap();
    let istio = ap.as_istio().unwrap();
    // LIST items carry no apiVersion/kind: the source fills them in for the parser.
    assert_eq!(istio.value["apiVersion"], "security.istio.io/v1");
    assert_eq!(istio.value["kind"], "AuthorizationPolicy");
    assert_eq!(istio.value["spec"]["action"], "ALLOW");
    assert_eq!(
        istio.origin,
        format!(
            "k8s://AuthorizationPolicy/child-services/allow-intake@{}",
            istio.resource_version
        )
    );
    let registry = h.handle.registry(&RegistrySettings::default());
    let svc = registry.service(HOST).unwrap();
    assert_eq!(svc.endpoints.len(), 1);
    assert_eq!(
        svc.endpoints[0].service_account.as_deref(),
        Some("case-api")
    );
}

#[tokio::test]
async fn service_added_changed_deleted() {
    let fake = FakeApiServer::start().await.unwrap();
    let (mut h, before) = Harness::start(fake, KubeSourceConfig::default()).await;
    assert!(before.is_empty());

    let rv = h
        .fake
        .apply(&service("child-services", "case-api", &[("http", 80)]))
        .unwrap();
    match h.next_change("service added").await {
        SourceEvent::Upsert(o) => {
            assert_eq!(
                o.key(),
                key(ResourceKind::Service, "child-services", "case-api")
            );
            assert_eq!(o.resource_version(), rv);
            let KubeObject::Service(s) = &*o else {
                panic!("not a Service: {o:?}")
            };
            assert_eq!(s.spec.as_ref().unwrap().ports.as_ref().unwrap().len(), 1);
        }
        other => panic!("expected the Service upsert, got {other:?}"),
    }
    let registry = h.handle.registry(&RegistrySettings::default());
    assert_eq!(registry.service(HOST).unwrap().ports.len(), 1);

    let rv = h
        .fake
        .apply(&service(
            "child-services",
            "case-api",
            &[("http", 80), ("grpc-api", 9090)],
        ))
        .unwrap();
    match h.next_change("service changed").await {
        SourceEvent::Upsert(o) => assert_eq!(o.resource_version(), rv),
        other => panic!("expected the changed Service, got {other:?}"),
    }
    let registry = h.handle.registry(&RegistrySettings::default());
    let ports: Vec<u16> = registry
        .service(HOST)
        .unwrap()
        .ports
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [80, 9090]);

    h.fake
        .delete(ResourceKind::Service, "child-services", "case-api")
        .unwrap();
    match h.next_change("service deleted").await {
        SourceEvent::Delete { key: k, last } => {
            assert_eq!(k, key(ResourceKind::Service, "child-services", "case-api"));
            assert_eq!(last.kind(), ResourceKind::Service);
        }
        other => panic!("expected the Service delete, got {other:?}"),
    }
    assert!(h.store_names(ResourceKind::Service).is_empty());
    assert!(
        h.handle
            .registry(&RegistrySettings::default())
            .service(HOST)
            .is_none()
    );
}

#[tokio::test]
async fn endpoint_slice_added_changed_deleted() {
    let fake = FakeApiServer::start().await.unwrap();
    fake.apply(&service("child-services", "case-api", &[("http", 80)]))
        .unwrap();
    fake.apply(&pod(
        "child-services",
        "case-api-1",
        "case-api",
        "case-api",
        "10.0.0.5",
    ))
    .unwrap();
    fake.apply(&pod(
        "child-services",
        "case-api-2",
        "case-api",
        "case-api",
        "10.0.0.6",
    ))
    .unwrap();
    let (mut h, _) = Harness::start(fake, KubeSourceConfig::default()).await;
    assert!(
        h.handle
            .registry(&RegistrySettings::default())
            .service(HOST)
            .unwrap()
            .endpoints
            .is_empty()
    );

    h.fake
        .apply(&slice(
            "child-services",
            "case-api-x",
            "case-api",
            &[("case-api-1", "10.0.0.5", true)],
        ))
        .unwrap();
    let event = h.next_change("slice added").await;
    assert_eq!(describe(&event), "+EndpointSlice/child-services/case-api-x");
    let registry = h.handle.registry(&RegistrySettings::default());
    let eps = &registry.service(HOST).unwrap().endpoints;
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].address.to_string(), "10.0.0.5");
    assert_eq!(
        (eps[0].port, eps[0].service_port, eps[0].ready),
        (8080, 80, true)
    );
    assert_eq!(eps[0].labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(eps[0].service_account.as_deref(), Some("case-api"));
    assert_eq!(eps[0].zone.as_deref(), Some("zone-a"));

    h.fake
        .apply(&slice(
            "child-services",
            "case-api-x",
            "case-api",
            &[
                ("case-api-1", "10.0.0.5", false),
                ("case-api-2", "10.0.0.6", true),
            ],
        ))
        .unwrap();
    let event = h.next_change("slice changed").await;
    assert_eq!(describe(&event), "+EndpointSlice/child-services/case-api-x");
    let registry = h.handle.registry(&RegistrySettings::default());
    let eps: Vec<(String, bool)> = registry
        .service(HOST)
        .unwrap()
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.ready))
        .collect();
    assert_eq!(eps, [("10.0.0.5".into(), false), ("10.0.0.6".into(), true)]);

    h.fake
        .delete(ResourceKind::EndpointSlice, "child-services", "case-api-x")
        .unwrap();
    let event = h.next_change("slice deleted").await;
    assert_eq!(describe(&event), "-EndpointSlice/child-services/case-api-x");
    assert!(
        h.handle
            .registry(&RegistrySettings::default())
            .service(HOST)
            .unwrap()
            .endpoints
            .is_empty()
    );
}

#[tokio::test]
async fn authorization_policy_added_changed_deleted() {
    let fake = FakeApiServer::start().await.unwrap();
    let (mut h, _) = Harness::start(fake, KubeSourceConfig::default()).await;

    let rv = h
        .fake
        .apply(&authorization_policy(
            "child-services",
            "allow",
            &["cluster.local/ns/a/sa/x"],
        ))
        .unwrap();
    let SourceEvent::Upsert(o) = h.next_change("policy added").await else {
        panic!("expected an upsert")
    };
    let istio = o.as_istio().unwrap();
    assert_eq!(istio.kind, ResourceKind::AuthorizationPolicy);
    assert_eq!(istio.api_version, "security.istio.io/v1");
    assert_eq!(
        istio.origin,
        format!("k8s://AuthorizationPolicy/child-services/allow@{rv}")
    );
    assert_eq!(
        istio.value["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
        "cluster.local/ns/a/sa/x"
    );

    let rv = h
        .fake
        .apply(&authorization_policy(
            "child-services",
            "allow",
            &["cluster.local/ns/b/sa/y"],
        ))
        .unwrap();
    let SourceEvent::Upsert(o) = h.next_change("policy changed").await else {
        panic!("expected an upsert")
    };
    let istio = o.as_istio().unwrap();
    assert_eq!(istio.resource_version, rv);
    assert_eq!(
        istio.value["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
        "cluster.local/ns/b/sa/y"
    );
    let stored = h.handle.read(|s| {
        s.get_named(ResourceKind::AuthorizationPolicy, "child-services", "allow")
            .map(|o| o.resource_version().to_string())
    });
    assert_eq!(stored.as_deref(), Some(rv.as_str()));

    h.fake
        .delete(ResourceKind::AuthorizationPolicy, "child-services", "allow")
        .unwrap();
    let event = h.next_change("policy deleted").await;
    assert_eq!(
        describe(&event),
        "-AuthorizationPolicy/child-services/allow"
    );
    assert!(h.store_names(ResourceKind::AuthorizationPolicy).is_empty());
}

#[tokio::test]
async fn a_missing_istio_group_is_skipped_or_refused() {
    let fake = FakeApiServer::builder()
        .without_group(TELEMETRY_GROUP)
        .start()
        .await
        .unwrap();
    let (h, _) = Harness::start(fake, KubeSourceConfig::default()).await;
    assert_eq!(h.handle.skipped(), [ResourceKind::Telemetry]);

    let config = KubeSourceConfig {
        require_istio_crds: true,
        ..KubeSourceConfig::default()
    };
    let source = jalin_control::k8s::KubeSource::new(h.fake.client().unwrap(), config);
    let error = source.start().await.expect_err("must refuse to start");
    let message = error.to_string();
    assert!(
        message.contains("Telemetry") && message.contains("not installed"),
        "{message}"
    );
}

#[tokio::test]
async fn older_istio_versions_are_discovered_and_lists_paginate() {
    let fake = FakeApiServer::builder()
        .group_versions(NETWORKING_GROUP, &["v1alpha3"])
        .start()
        .await
        .unwrap();
    for name in ["a", "b", "c"] {
        fake.apply(&serde_json::json!({
            "apiVersion": "networking.istio.io/v1alpha3", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "emergency"},
            "spec": {"hosts": [name], "http": [{"route": [{"destination": {"host": name}}]}]}
        }))
        .unwrap();
    }
    let config = KubeSourceConfig {
        page_size: 1,
        ..KubeSourceConfig::default()
    };
    let lists_before = fake.lists_served();
    let (h, _) = Harness::start(fake, config).await;
    let vs = h
        .handle
        .watched()
        .iter()
        .find(|w| w.kind == ResourceKind::VirtualService)
        .unwrap();
    assert_eq!(vs.resource.api_version, "networking.istio.io/v1alpha3");
    assert_eq!(
        h.store_names(ResourceKind::VirtualService),
        ["emergency/a", "emergency/b", "emergency/c"]
    );
    let value = h.handle.read(|s| {
        s.get_named(ResourceKind::VirtualService, "emergency", "b")
            .and_then(|o| o.as_istio().map(|i| i.value.clone()))
    });
    assert_eq!(value.unwrap()["apiVersion"], "networking.istio.io/v1alpha3");
    // Three one-item pages (plus an empty last) for VirtualService alone.
    assert!(h.fake.lists_served() - lists_before >= ResourceKind::ALL.len() as u64 + 2);
}

#[tokio::test]
async fn watching_nothing_is_ready_at_once() {
    let fake = FakeApiServer::start().await.unwrap();
    fake.apply(&service("child-services", "case-api", &[("http", 80)]))
        .unwrap();
    let config = KubeSourceConfig {
        kinds: vec![],
        ..KubeSourceConfig::default()
    };
    let (mut h, before) = Harness::start(fake, config).await;
    assert!(before.is_empty());
    assert!(h.handle.watched().is_empty());
    // The channel stays open while the handle lives.
    assert!(
        h.events
            .try_recv()
            .is_err_and(|e| e == tokio::sync::mpsc::error::TryRecvError::Empty)
    );
}
