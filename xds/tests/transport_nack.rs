//! A NACK over a real delta ADS stream on 127.0.0.1:0: the server does not resend the refused
//! resource on the NACK itself, and resends it with the next change of its type, or after a
//! change of another type, so a refusal that depended on something else is retried instead of
//! leaving the proxy on old state forever.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod transport_support;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use jalin_xds::transport::server::ServerEvent;
use jalin_xds::transport::{
    AppliedConfig, Applier, Kind, NodeInfo, Snapshot, StreamEvent, XdsClient, XdsServer, decode,
    encode,
};
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

fn is_ack(e: &ServerEvent) -> bool {
    matches!(
        e,
        ServerEvent::Stream {
            event: StreamEvent::Ack { .. },
            ..
        }
    )
}

fn is_nack(e: &ServerEvent) -> bool {
    matches!(
        e,
        ServerEvent::Stream {
            event: StreamEvent::Nack { .. },
            ..
        }
    )
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
    wait_event(&mut events, "ACK of A", is_ack).await;

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
    wait_event(&mut events, "NACK of B", is_nack).await;

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
    wait_event(&mut events, "ACK of C", is_ack).await;
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

/// Refuses a route whose destination no cluster (or more than one) serves: a refusal that depends
/// on resources of another type, not on the route alone.
struct DestinationCheck;

impl Applier for DestinationCheck {
    fn apply(&mut self, config: &AppliedConfig) -> Result<(), String> {
        let clusters = config
            .decode_kind::<serde_json::Value>(Kind::Cluster)
            .map_err(|e| e.to_string())?;
        for route in config
            .decode_kind::<serde_json::Value>(Kind::Route)
            .map_err(|e| e.to_string())?
        {
            let to = &route.body["to"];
            let serving = clusters.iter().filter(|c| c.body["service"] == *to).count();
            if serving != 1 {
                return Err(format!(
                    "route {:?}: field to: expected exactly one cluster serving {to}, found {serving}",
                    route.name
                ));
            }
        }
        Ok(())
    }
}

fn mesh(route_to: &str, clusters: &[(&str, &str)]) -> Snapshot {
    Snapshot::new(
        clusters
            .iter()
            .map(|(name, service)| encode(Kind::Cluster, name, &json!({ "service": service })))
            .chain([encode(Kind::Route, "inbound", &json!({ "to": route_to }))])
            .map(Result::unwrap),
    )
}

#[tokio::test]
async fn a_route_refused_for_want_of_a_cluster_is_applied_once_the_cluster_arrives() {
    let server = XdsServer::default();
    server.push(mesh("payments", &[("p1", "payments")]));
    let running = serve_local(&server).await;
    let client = XdsClient::connect(
        &format!("http://{}", running.addr),
        None,
        config("proxy-route"),
        DestinationCheck,
    )
    .unwrap();
    let mut status = client.status();
    wait_status(&mut status, "first config", |s| s.applied.len() == 2).await;

    // The route moves to a service no cluster serves yet: the proxy refuses it, keeps the old.
    server.push(mesh("payments-v2", &[("p1", "payments")]));
    let refused = wait_status(&mut status, "route NACK", |s| s.nacks >= 1).await;
    assert!(
        refused
            .last_error
            .as_deref()
            .unwrap()
            .contains("payments-v2"),
        "{:?}",
        refused.last_error
    );
    let route_url = Kind::Route.type_url();
    let wanted = server
        .snapshot()
        .get(route_url, "inbound")
        .unwrap()
        .version
        .to_string();
    assert_ne!(
        version_of(&refused, Kind::Route, "inbound"),
        Some(wanted.clone())
    );

    // Only the cluster changes; the route is resent after it and is applied now.
    server.push(mesh(
        "payments-v2",
        &[("p1", "payments"), ("p2", "payments-v2")],
    ));
    let st = wait_status(&mut status, "the refused route applied", |s| {
        version_of(s, Kind::Route, "inbound").as_deref() == Some(&*wanted)
    })
    .await;
    assert!(st.applied.get(Kind::Cluster.type_url(), "p2").is_some());
    assert_eq!(st.nacks, 1, "no resend loop: one refusal, one NACK");
    drop(client);
    running.stop().await;
}
