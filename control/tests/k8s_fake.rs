//! The fake API server speaks the Kubernetes REST API as kube's client expects: paginated lists
//! that survive deletions between pages, GET, watch replay from a resourceVersion, 410 Gone after
//! compaction, and 404 for groups it does not serve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod k8s_support;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jalin_control::k8s::fake::FakeApiServer;
use jalin_control::k8s::{ResourceKind, TELEMETRY_GROUP};
use k8s_openapi::api::core::v1::Service;
use k8s_support::*;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::discovery::ApiResource;

#[tokio::test]
async fn pages_do_not_skip_objects_when_one_is_deleted_between_pages() {
    let fake = FakeApiServer::start().await.unwrap();
    for name in ["a", "b", "c"] {
        fake.apply(&service("ns", name, &[("http", 80)])).unwrap();
    }
    let api: Api<Service> = Api::all(fake.client().unwrap());
    let first = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].metadata.name.as_deref(), Some("a"));
    let token = first.metadata.continue_.clone().unwrap();
    fake.delete(ResourceKind::Service, "ns", "a").unwrap();
    let rest = api
        .list(&ListParams::default().limit(5).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<_> = rest
        .items
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    assert_eq!(names, ["b", "c"]);
    assert_eq!(
        rest.metadata.resource_version,
        first.metadata.resource_version
    );
    assert!(rest.metadata.continue_.is_none());

    let got = Api::<Service>::namespaced(fake.client().unwrap(), "ns")
        .get("b")
        .await
        .unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some("b"));
}

#[tokio::test]
async fn watch_replays_from_a_resource_version_and_expires_after_compaction() {
    let fake = FakeApiServer::start().await.unwrap();
    let api: Api<Service> = Api::all(fake.client().unwrap());
    let rv = fake.apply(&service("ns", "a", &[("http", 80)])).unwrap();
    fake.apply(&service("ns", "a", &[("http", 81)])).unwrap();
    fake.delete(ResourceKind::Service, "ns", "a").unwrap();
    let stream = api.watch(&WatchParams::default(), &rv).await.unwrap();
    let events: Vec<_> = stream.take(2).try_collect().await.unwrap();
    assert!(
        matches!(&events[0], WatchEvent::Modified(s) if s.metadata.name.as_deref() == Some("a"))
    );
    assert!(matches!(&events[1], WatchEvent::Deleted(_)));

    fake.compact();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let event = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match event {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn unserved_groups_are_not_found() {
    let fake = FakeApiServer::builder()
        .without_group(TELEMETRY_GROUP)
        .start()
        .await
        .unwrap();
    let resource = ApiResource {
        group: TELEMETRY_GROUP.into(),
        version: "v1".into(),
        api_version: format!("{TELEMETRY_GROUP}/v1"),
        kind: "Telemetry".into(),
        plural: "telemetries".into(),
    };
    let api: Api<DynamicObject> = Api::all_with(fake.client().unwrap(), &resource);
    let error = api.list(&ListParams::default()).await.unwrap_err();
    assert!(
        matches!(error, kube::Error::Api(ref s) if s.code == 404),
        "{error:?}"
    );
    assert!(
        fake.apply(&serde_json::json!({
            "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
            "metadata": {"name": "t", "namespace": "ns"}
        }))
        .is_err()
    );
}
