//! ADS over a real tonic server on 127.0.0.1:0: pushes reach every client, NACKs reach the
//! server with their text, clients survive a control-plane restart, SotW works for Envoy-style
//! clients, and per-proxy scoping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transport_support;

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use jalin_xds::transport::server::ServerEvent;
use jalin_xds::transport::{
    Kind, NodeInfo, Snapshot, StreamEvent, XdsClient, XdsServer, decode, encode, encode_with_deps,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use transport_support::*;

fn snapshot(port: u16) -> Snapshot {
    Snapshot::new([
        encode(
            Kind::Endpoints,
            "payments",
            &json!({"addrs": ["10.0.0.1:8080"]}),
        )
        .unwrap(),
        encode_with_deps(
            Kind::Cluster,
            "payments",
            &json!({"port": port}),
            &[(Kind::Endpoints, "payments")],
        )
        .unwrap(),
        encode_with_deps(
            Kind::Route,
            "inbound",
            &json!({"to": "payments"}),
            &[(Kind::Cluster, "payments")],
        )
        .unwrap(),
        encode_with_deps(
            Kind::Listener,
            "inbound",
            &json!({"port": 15006}),
            &[(Kind::Route, "inbound")],
        )
        .unwrap(),
        encode(
            Kind::AuthorizationPolicy,
            "child-services/deny-all",
            &json!({"action": "DENY"}),
        )
        .unwrap(),
    ])
}

#[tokio::test]
async fn a_push_reaches_every_client() {
    let server = XdsServer::default();
    server.push(snapshot(8080));
    let running = serve_local(&server).await;
    let url = format!("http://{}", running.addr);

    let clients: Vec<XdsClient> = (0..5)
        .map(|i| {
            XdsClient::connect(
                &url,
                None,
                config(&format!("proxy-{i}")),
                TestApplier::default(),
            )
            .unwrap()
        })
        .collect();
    let v1 = server
        .snapshot()
        .get(Kind::Cluster.type_url(), "payments")
        .unwrap()
        .version
        .to_string();
    let mut listener_versions = Vec::new();
    for c in &clients {
        let st = wait_status(&mut c.status(), "first config", |s| s.applied.len() == 5).await;
        assert_eq!(
            version_of(&st, Kind::Cluster, "payments").as_deref(),
            Some(&*v1)
        );
        listener_versions.push(version_of(&st, Kind::Listener, "inbound").unwrap());
    }

    server.push(snapshot(9090));
    let v2 = server
        .snapshot()
        .get(Kind::Cluster.type_url(), "payments")
        .unwrap()
        .version
        .to_string();
    assert_ne!(v1, v2);
    for (c, listener_version) in clients.iter().zip(&listener_versions) {
        let st = wait_status(&mut c.status(), "second config", |s| {
            version_of(s, Kind::Cluster, "payments").as_deref() == Some(&*v2)
        })
        .await;
        let decoded = decode::<serde_json::Value>(
            Kind::Cluster.type_url(),
            &st.applied
                .get(Kind::Cluster.type_url(), "payments")
                .unwrap()
                .value,
        )
        .unwrap();
        assert_eq!(decoded.body["port"], 9090);
        assert_eq!(
            version_of(&st, Kind::Listener, "inbound").as_ref(),
            Some(listener_version)
        );
    }
    drop(clients);
    running.stop().await;
}

#[tokio::test]
async fn a_nack_reaches_the_server_which_keeps_the_last_acked_version() {
    let server = XdsServer::default();
    server.push(snapshot(8080));
    let running = serve_local(&server).await;
    let url = format!("http://{}", running.addr);
    let mut events = server.events();
    let client =
        XdsClient::connect(&url, None, config("proxy-nack"), TestApplier::default()).unwrap();
    let good = wait_status(&mut client.status(), "first config", |s| {
        s.applied.len() == 5
    })
    .await;
    let cluster_url = Kind::Cluster.type_url();
    let acked_set = server
        .snapshot()
        .type_set(cluster_url)
        .unwrap()
        .version
        .to_string();
    wait_event(&mut events, "cluster ACK", |e| {
        matches!(e, ServerEvent::Stream { node_id, event: StreamEvent::Ack { type_url, version } }
            if node_id == "proxy-nack" && &**type_url == cluster_url && *version == acked_set)
    })
    .await;

    server.push(snapshot(0));
    let rejected_set = server
        .snapshot()
        .type_set(cluster_url)
        .unwrap()
        .version
        .to_string();
    let ev = wait_event(&mut events, "cluster NACK", |e| {
        matches!(e, ServerEvent::Stream { node_id, event: StreamEvent::Nack { .. } } if node_id == "proxy-nack")
    })
    .await;
    let ServerEvent::Stream {
        event:
            StreamEvent::Nack {
                type_url,
                rejected_version,
                error,
                ..
            },
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(&*type_url, cluster_url);
    assert_eq!(rejected_version, rejected_set);
    assert!(
        error.contains("field port: expected 1-65535, got 0"),
        "{error}"
    );

    let status = server.status("proxy-nack").unwrap();
    let t = &status.types[cluster_url];
    assert_eq!(
        t.acked_version.as_deref(),
        Some(&*acked_set),
        "the server keeps the last ACKed version"
    );
    assert_eq!(t.last_nack.as_ref().unwrap().0, rejected_set);

    let st = wait_status(&mut client.status(), "NACK counted", |s| s.nacks >= 1).await;
    assert_eq!(
        version_of(&st, Kind::Cluster, "payments"),
        version_of(&good, Kind::Cluster, "payments"),
        "the client keeps serving its last good config"
    );
    assert!(st.last_error.as_deref().unwrap().contains("port"));
    drop(client);
    running.stop().await;
}

#[tokio::test]
async fn a_client_keeps_its_config_while_the_server_is_away_and_resyncs_after_restart() {
    let server = XdsServer::default();
    server.push(snapshot(8080));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let running = serve(&server, listener, None);
    let client = XdsClient::connect(
        &format!("http://{addr}"),
        None,
        config("proxy-restart"),
        TestApplier::default(),
    )
    .unwrap();
    let mut status = client.status();
    let before = wait_status(&mut status, "first config", |s| {
        s.applied.len() == 5 && s.connected
    })
    .await;
    assert_eq!(before.streams, 1);

    running.stop().await;
    let away = wait_status(&mut status, "disconnect noticed", |s| !s.connected).await;
    assert_eq!(
        away.applied, before.applied,
        "the last good config stays in force"
    );
    assert_eq!(away.applies, before.applies);

    // A new control plane process with a newer config, on the same address.
    let restarted = XdsServer::default();
    restarted.push(snapshot(9090));
    let mut events = restarted.events();
    let running = serve(&restarted, TcpListener::bind(addr).await.unwrap(), None);
    let v2 = restarted
        .snapshot()
        .get(Kind::Cluster.type_url(), "payments")
        .unwrap()
        .version
        .to_string();
    let after = wait_status(&mut status, "resync", |s| {
        s.connected && version_of(s, Kind::Cluster, "payments").as_deref() == Some(&*v2)
    })
    .await;
    assert!(after.streams >= 2);
    assert_eq!(after.applied.len(), 5);
    assert_eq!(
        version_of(&after, Kind::Listener, "inbound"),
        version_of(&before, Kind::Listener, "inbound")
    );
    // The client announced the versions it runs, so the new server sent only the changed cluster.
    let mut pushed = Vec::new();
    wait_event(&mut events, "ACK after resync", |e| match e {
        ServerEvent::Pushed {
            node_id,
            type_url,
            resources,
            removed,
            ..
        } if node_id == "proxy-restart" => {
            pushed.push((type_url.to_string(), *resources, *removed));
            false
        }
        ServerEvent::Stream {
            node_id,
            event: StreamEvent::Ack { type_url, .. },
        } => node_id == "proxy-restart" && &**type_url == Kind::Cluster.type_url(),
        _ => false,
    })
    .await;
    // Every other type's first subscription on the new stream is answered, empty (the
    // client's initial fetch needs the answer); only the changed cluster carries anything.
    let (changed, empty): (Vec<_>, Vec<_>) = pushed.into_iter().partition(|p| p.1 + p.2 > 0);
    assert_eq!(changed, vec![(Kind::Cluster.type_url().to_string(), 1, 0)]);
    assert!(
        empty.iter().all(|p| p.0 != Kind::Cluster.type_url()),
        "{empty:?}"
    );
    drop(client);
    running.stop().await;
}

#[tokio::test]
async fn state_of_the_world_stream_over_grpc() {
    let server = XdsServer::default();
    server.push(snapshot(8080));
    let running = serve_local(&server).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let node = NodeInfo {
        id: "envoy-1".into(),
        ..Default::default()
    }
    .to_node();
    tx.send(DiscoveryRequest {
        node: Some(node),
        type_url: Kind::Cluster.type_url().into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut inbound = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, inbound.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.type_url, Kind::Cluster.type_url());
    assert_eq!(first.resources.len(), 1);
    let body = decode::<serde_json::Value>(&first.resources[0].type_url, &first.resources[0].value)
        .unwrap();
    assert_eq!(body.body["port"], 8080);

    let mut events = server.events();
    tx.send(DiscoveryRequest {
        type_url: Kind::Cluster.type_url().into(),
        version_info: first.version_info.clone(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_event(&mut events, "SotW ACK", |e| {
        matches!(
            e,
            ServerEvent::Stream {
                event: StreamEvent::Ack { .. },
                ..
            }
        )
    })
    .await;
    assert_eq!(
        server.status("envoy-1").unwrap().types[Kind::Cluster.type_url()].acked_version,
        Some(first.version_info.clone())
    );

    server.push(snapshot(9090));
    let second = tokio::time::timeout(WAIT, inbound.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_ne!(second.version_info, first.version_info);
    assert_ne!(second.nonce, first.nonce);
    let body =
        decode::<serde_json::Value>(&second.resources[0].type_url, &second.resources[0].value)
            .unwrap();
    assert_eq!(body.body["port"], 9090);
    drop(tx);
    running.stop().await;
}

#[tokio::test]
async fn each_proxy_sees_only_its_scope() {
    // Scope: a proxy sees authorization policies of its own namespace (node metadata) only.
    let server = XdsServer::new(|node: &NodeInfo, snap: &Arc<Snapshot>| {
        let ns = node.metadata.get("namespace").cloned().unwrap_or_default();
        Arc::new(snap.filter(|e| {
            &*e.type_url != Kind::AuthorizationPolicy.type_url()
                || e.name.starts_with(&format!("{ns}/"))
        }))
    });
    server.push(Snapshot::new([
        encode(
            Kind::AuthorizationPolicy,
            "child-services/allow",
            &json!({}),
        )
        .unwrap(),
        encode(Kind::AuthorizationPolicy, "emergency/allow", &json!({})).unwrap(),
    ]));
    let running = serve_local(&server).await;
    let url = format!("http://{}", running.addr);
    let client_for = |id: &str, ns: &str| {
        let mut c = config(id);
        c.node.metadata.insert("namespace".into(), ns.into());
        XdsClient::connect(&url, None, c, TestApplier::default()).unwrap()
    };
    let a = client_for("a", "child-services");
    let b = client_for("b", "emergency");
    let sa = wait_status(&mut a.status(), "a config", |s| s.applied.len() == 1).await;
    let sb = wait_status(&mut b.status(), "b config", |s| s.applied.len() == 1).await;
    assert!(
        sa.applied
            .get(Kind::AuthorizationPolicy.type_url(), "child-services/allow")
            .is_some()
    );
    assert!(
        sb.applied
            .get(Kind::AuthorizationPolicy.type_url(), "emergency/allow")
            .is_some()
    );

    // A per-node snapshot overrides the shared one for that proxy only.
    server.push_node(
        "b",
        Snapshot::new([encode(Kind::AuthorizationPolicy, "emergency/deny", &json!({})).unwrap()]),
    );
    let sb = wait_status(&mut b.status(), "b override", |s| {
        s.applied
            .get(Kind::AuthorizationPolicy.type_url(), "emergency/deny")
            .is_some()
    })
    .await;
    assert_eq!(
        sb.applied.len(),
        1,
        "emergency/allow was removed by the delta"
    );
    drop((a, b));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_a_hundred_delta_clients_and_every_one_acks() {
    const CLIENTS: usize = 100;
    let server = XdsServer::default();
    server.push(snapshot(8080));
    let running = serve_local(&server).await;
    let url = format!("http://{}", running.addr);
    let clients: Vec<XdsClient> = (0..CLIENTS)
        .map(|i| {
            XdsClient::connect(
                &url,
                None,
                config(&format!("bulk-{i}")),
                TestApplier::default(),
            )
            .unwrap()
        })
        .collect();
    for c in &clients {
        wait_status(&mut c.status(), "first config", |s| s.applied.len() == 5).await;
    }

    let mut events = server.events();
    server.push(snapshot(9090));
    let v2 = server
        .snapshot()
        .type_set(Kind::Cluster.type_url())
        .unwrap()
        .version
        .to_string();
    let mut acked = std::collections::BTreeSet::new();
    wait_event(&mut events, "every proxy ACKs the new clusters", |e| {
        if let ServerEvent::Stream {
            node_id,
            event: StreamEvent::Ack { type_url, version },
        } = e
            && &**type_url == Kind::Cluster.type_url()
            && *version == v2
        {
            acked.insert(node_id.clone());
        }
        acked.len() == CLIENTS
    })
    .await;
    assert_eq!(server.statuses().len(), CLIENTS);
    drop(clients);
    running.stop().await;
}

#[tokio::test]
async fn on_demand_types_fetch_only_what_the_listeners_reference() {
    let server = XdsServer::default();
    let mut resources = vec![
        encode_with_deps(
            Kind::Listener,
            "inbound",
            &json!({}),
            &[(Kind::Route, "inbound")],
        )
        .unwrap(),
        encode_with_deps(
            Kind::Route,
            "inbound",
            &json!({}),
            &[(Kind::Cluster, "payments")],
        )
        .unwrap(),
    ];
    for name in ["payments", "orders", "audit"] {
        resources.push(
            encode_with_deps(
                Kind::Cluster,
                name,
                &json!({"port": 80}),
                &[(Kind::Endpoints, name)],
            )
            .unwrap(),
        );
        resources.push(encode(Kind::Endpoints, name, &json!({})).unwrap());
    }
    server.push(Snapshot::new(resources));
    let running = serve_local(&server).await;
    let mut c = config("on-demand");
    c.on_demand = vec![
        Kind::Cluster.type_url().into(),
        Kind::Endpoints.type_url().into(),
    ];
    let client = XdsClient::connect(
        &format!("http://{}", running.addr),
        None,
        c,
        TestApplier::default(),
    )
    .unwrap();
    let st = wait_status(&mut client.status(), "warm config", |s| s.applies >= 1).await;
    let clusters: Vec<&str> = st
        .applied
        .of_type(Kind::Cluster.type_url())
        .map(|r| r.name.as_str())
        .collect();
    let endpoints: Vec<&str> = st
        .applied
        .of_type(Kind::Endpoints.type_url())
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        clusters,
        ["payments"],
        "only the referenced cluster is fetched"
    );
    assert_eq!(endpoints, ["payments"]);
    assert_eq!(st.applied.len(), 4);

    client
        .subscribe(Kind::Cluster.type_url(), vec!["audit".into()])
        .await;
    let st = wait_status(
        &mut client.status(),
        "audit cluster and its endpoints",
        |s| s.applied.get(Kind::Endpoints.type_url(), "audit").is_some(),
    )
    .await;
    assert!(st.applied.get(Kind::Cluster.type_url(), "audit").is_some());
    drop(client);
    running.stop().await;
}
