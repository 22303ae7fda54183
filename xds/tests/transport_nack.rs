//! A NACK over a real delta ADS stream on 127.0.0.1:0: the server does not resend the refused
//! resource on the NACK itself, and resends it with the next change of its type, so a refusal
//! that depended on something else is retried instead of leaving the proxy on old state forever.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transport_support;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use jalin_xds::transport::server::ServerEvent;
use jalin_xds::transport::{Kind, NodeInfo, Snapshot, StreamEvent, XdsServer, decode, encode};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::Streaming;
use transport_support::*;

fn clusters(a_port: u16, b_port: u16) -> Snapshot {
    Snapshot::new([
        encode(Kind::Cluster, "a", &json!({ "port": a_port })).unwrap(),
        encode(Kind::Cluster, "b", &json!({ "port": b_port })).unwrap(),
    ])
}

async fn next(inbound: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    tokio::time::timeout(WAIT, inbound.next())
        .await
        .expect("a response within the wait")
        .expect("stream open")
        .expect("response")
}

/// (name, port) of every resource in a response, in order.
fn ports(resp: &DeltaDiscoveryResponse) -> Vec<(String, u64)> {
    resp.resources
        .iter()
        .map(|r| {
            let any = r.resource.as_ref().unwrap();
            let body = decode::<serde_json::Value>(&any.type_url, &any.value).unwrap();
            (r.name.clone(), body.body["port"].as_u64().unwrap())
        })
        .collect()
}

fn answer(resp: &DeltaDiscoveryResponse, error: Option<&str>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail: error.map(|message| Status {
            code: 3,
            message: message.into(),
            details: vec![],
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_nacked_resource_is_resent_with_the_next_change_of_its_type() {
    let server = XdsServer::default();
    server.push(clusters(8080, 8081));
    let running = serve_local(&server).await;
    let mut events = server.events();
    let mut ads = AggregatedDiscoveryServiceClient::connect(format!("http://{}", running.addr))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(8);
    tx.send(DeltaDiscoveryRequest {
        node: Some(
            NodeInfo {
                id: "proxy-nack".into(),
                ..Default::default()
            }
            .to_node(),
        ),
        type_url: Kind::Cluster.type_url().into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut inbound = ads
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    // A: the first configuration, ACKed.
    let a = next(&mut inbound).await;
    assert_eq!(ports(&a), [("a".into(), 8080), ("b".into(), 8081)]);
    tx.send(answer(&a, None)).await.unwrap();
    wait_event(&mut events, "ACK of A", |e| {
        matches!(
            e,
            ServerEvent::Stream {
                event: StreamEvent::Ack { .. },
                ..
            }
        )
    })
    .await;

    // B: b becomes invalid; the client refuses it and keeps A.
    server.push(clusters(8080, 0));
    let b = next(&mut inbound).await;
    assert_eq!(ports(&b), [("b".into(), 0)]);
    tx.send(answer(
        &b,
        Some("cluster \"b\": field port: expected 1-65535, got 0"),
    ))
    .await
    .unwrap();
    wait_event(&mut events, "NACK of B", |e| {
        matches!(
            e,
            ServerEvent::Stream {
                event: StreamEvent::Nack { .. },
                ..
            }
        )
    })
    .await;

    // C: an unrelated change of the same type. The next response (nothing was sent on the NACK
    // itself, or it would come first and carry b alone) carries a's change and b again.
    server.push(clusters(9090, 0));
    let c = next(&mut inbound).await;
    assert_ne!(c.nonce, b.nonce);
    assert_eq!(
        ports(&c),
        [("a".into(), 9090), ("b".into(), 0)],
        "the refused b is resent along with the change of a"
    );
    assert_eq!(c.resources[1].version, b.resources[0].version);
    assert!(c.removed_resources.is_empty());

    // Accepted this time (b's refusal depended on something that changed): nothing more owed.
    tx.send(answer(&c, None)).await.unwrap();
    wait_event(&mut events, "ACK of C", |e| {
        matches!(
            e,
            ServerEvent::Stream {
                event: StreamEvent::Ack { .. },
                ..
            }
        )
    })
    .await;
    server.push(clusters(9091, 0));
    let d = next(&mut inbound).await;
    assert_eq!(
        ports(&d),
        [("a".into(), 9091)],
        "only the change after an ACK"
    );

    drop(tx);
    running.stop().await;
}
