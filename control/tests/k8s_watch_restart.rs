//! Watches that restart: a closed stream resumes from its resourceVersion and replays what it
//! missed; an expired one (`410 Gone`) relists, and the relist reports objects deleted while the
//! watch was down, with no lost and no phantom objects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod k8s_support;

use jalin_control::k8s::fake::FakeApiServer;
use jalin_control::k8s::{KubeSourceConfig, ResourceKind, SourceEvent};
use k8s_support::*;

async fn seeded() -> Harness {
    let fake = FakeApiServer::start().await.unwrap();
    fake.apply(&namespace("child-services")).unwrap();
    for name in ["keep", "change", "gone"] {
        fake.apply(&service("child-services", name, &[("http", 80)]))
            .unwrap();
    }
    fake.apply(&slice(
        "child-services",
        "gone-1",
        "gone",
        &[("p", "10.0.0.9", true)],
    ))
    .unwrap();
    fake.apply(&authorization_policy(
        "child-services",
        "gone",
        &["cluster.local/ns/a/sa/b"],
    ))
    .unwrap();
    let (h, before) = Harness::start(fake, KubeSourceConfig::default()).await;
    assert_eq!(
        before.len(),
        6,
        "{:?}",
        before.iter().map(describe).collect::<Vec<_>>()
    );
    h
}

/// Changes made while the watches are down.
fn change_while_down(h: &Harness) {
    h.fake
        .delete(ResourceKind::Service, "child-services", "gone")
        .unwrap();
    h.fake
        .delete(ResourceKind::EndpointSlice, "child-services", "gone-1")
        .unwrap();
    h.fake
        .delete(ResourceKind::AuthorizationPolicy, "child-services", "gone")
        .unwrap();
    h.fake
        .apply(&service(
            "child-services",
            "change",
            &[("http", 80), ("grpc", 9090)],
        ))
        .unwrap();
    h.fake
        .apply(&service("child-services", "new", &[("http", 80)]))
        .unwrap();
}

const EXPECTED_CHANGES: [&str; 5] = [
    "+Service/child-services/change",
    "+Service/child-services/new",
    "-AuthorizationPolicy/child-services/gone",
    "-EndpointSlice/child-services/gone-1",
    "-Service/child-services/gone",
];

/// The store holds exactly what the API server holds, for every kind.
fn assert_no_lost_or_phantom(h: &Harness) {
    for kind in ResourceKind::ALL {
        assert_eq!(h.store_names(kind), h.fake.names(kind), "{kind}");
    }
    let change = h.handle.read(|s| {
        s.get_named(ResourceKind::Service, "child-services", "change")
            .map(|o| o.resource_version().to_string())
    });
    let served = h
        .fake
        .get(ResourceKind::Service, "child-services", "change")
        .unwrap();
    assert_eq!(
        change.as_deref(),
        served["metadata"]["resourceVersion"].as_str()
    );
}

#[tokio::test]
async fn closed_watch_resumes_and_replays_what_it_missed() {
    let mut h = seeded().await;
    let lists = h.fake.lists_served();
    let watches = h.fake.watches_served();
    {
        let _down = h.fake.pause_watches();
        h.fake.close_watches();
        change_while_down(&h);
    }
    let mut seen = Vec::new();
    while seen.len() < EXPECTED_CHANGES.len() {
        match h.next_change("replayed changes").await {
            event @ (SourceEvent::Upsert(_) | SourceEvent::Delete { .. }) => {
                seen.push(describe(&event));
            }
            other => panic!("a resumed watch must not relist: {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, EXPECTED_CHANGES);
    // Every kind re-watched from its resourceVersion, and nothing was listed again.
    h.fake
        .wait_watches_served(watches + ResourceKind::ALL.len() as u64)
        .await;
    assert_eq!(h.fake.lists_served(), lists);
    assert_no_lost_or_phantom(&h);

    // The resumed watches carry new changes.
    h.fake
        .delete(ResourceKind::Service, "child-services", "keep")
        .unwrap();
    assert_eq!(
        describe(&h.next_change("delete after resume").await),
        "-Service/child-services/keep"
    );
}

#[tokio::test]
async fn gone_watch_relists_and_reports_deletions_made_while_down() {
    let mut h = seeded().await;
    {
        let _down = h.fake.pause_watches();
        h.fake.close_watches();
        change_while_down(&h);
        // The history is compacted: resuming from the old resourceVersion gets 410 Gone.
        h.fake.compact();
    }
    let mut changes = Vec::new();
    let mut relisted = std::collections::BTreeSet::new();
    let mut gone_errors = 0;
    while relisted.len() < ResourceKind::ALL.len() {
        match h.next("relists of every kind").await {
            SourceEvent::Relisted { kind } => {
                relisted.insert(kind);
            }
            SourceEvent::WatchError { message, .. } => {
                assert!(message.contains("410"), "{message}");
                gone_errors += 1;
            }
            SourceEvent::Ready => panic!("Ready is emitted once"),
            event => changes.push(describe(&event)),
        }
    }
    changes.sort();
    assert_eq!(changes, EXPECTED_CHANGES);
    assert_eq!(gone_errors, ResourceKind::ALL.len());
    assert_no_lost_or_phantom(&h);

    h.fake
        .apply(&service("child-services", "after", &[("http", 80)]))
        .unwrap();
    assert_eq!(
        describe(&h.next_change("change after relist").await),
        "+Service/child-services/after"
    );
}

#[tokio::test]
async fn expired_live_watch_relists_without_phantoms() {
    let mut h = seeded().await;
    // Every watcher holds an open watch, so the 410 reaches all of them.
    h.fake
        .wait_watches_served(ResourceKind::ALL.len() as u64)
        .await;
    let lists = h.fake.lists_served();
    h.fake.expire_watches();
    let mut relisted = std::collections::BTreeSet::new();
    while relisted.len() < ResourceKind::ALL.len() {
        match h.next("relists after 410").await {
            SourceEvent::Relisted { kind } => {
                relisted.insert(kind);
            }
            SourceEvent::WatchError { message, .. } => {
                assert!(message.contains("410"), "{message}")
            }
            other => panic!("an unchanged cluster relists without changes: {other:?}"),
        }
    }
    assert!(h.fake.lists_served() >= lists + ResourceKind::ALL.len() as u64);
    assert_no_lost_or_phantom(&h);
    change_while_down(&h);
    let mut seen = Vec::new();
    while seen.len() < EXPECTED_CHANGES.len() {
        seen.push(describe(&h.next_change("changes after relist").await));
    }
    seen.sort();
    assert_eq!(seen, EXPECTED_CHANGES);
    assert_no_lost_or_phantom(&h);
}
