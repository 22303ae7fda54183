//! A simulated proxy: one real delta ADS stream over tonic that subscribes to every kind with a
//! wildcard, checks each resource's jalin envelope, and answers every response with an ACK (or a
//! NACK carrying the error) echoing its nonce, as a sidecar does. It keeps only the set versions
//! it ACKed, not the resources, so ten thousand of them fit in one process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use jalin_xds::transport::resource::decode_envelope;
use jalin_xds::transport::{NodeInfo, WILDCARD};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// gRPC `INVALID_ARGUMENT`, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;
/// Requests queued toward the server per stream (one per type at start, then one per response).
const REQUEST_QUEUE: usize = 16;
/// Largest response accepted (the first response of a large mesh is big).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// The change the coordinator is waiting for: a resource at a version.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Change number.
    pub change: u32,
    /// Type URL of the changed resource.
    pub type_url: String,
    /// Its name.
    pub name: String,
    /// Its new version.
    pub version: String,
}

/// What a simulated proxy tells the coordinator.
#[derive(Debug)]
pub enum Event {
    /// The proxy ACKed the initial set version of every type.
    Synced {
        /// Proxy index.
        proxy: u32,
    },
    /// The proxy ACKed a response carrying the expected change.
    Acked {
        /// Proxy index.
        proxy: u32,
        /// Change number.
        change: u32,
        /// When the ACK was handed to the stream.
        at: Instant,
    },
    /// The proxy NACKed a response.
    Nacked {
        /// Proxy index.
        proxy: u32,
        /// Why.
        error: String,
    },
    /// The proxy's stream failed.
    Failed {
        /// Proxy index.
        proxy: u32,
        /// Why.
        reason: String,
    },
}

/// Shared by every simulated proxy.
#[derive(Debug)]
pub struct Shared {
    /// Set version of each type once the initial snapshot is in force.
    pub synced_versions: BTreeMap<String, String>,
    /// Where proxies report.
    pub events: mpsc::UnboundedSender<Event>,
}

/// Runs simulated proxy `proxy` on `channel` until its stream ends.
pub async fn run(
    proxy: u32,
    channel: Channel,
    shared: Arc<Shared>,
    mut expect: watch::Receiver<Option<Arc<Expect>>>,
) {
    let end = stream(proxy, channel, &shared, &mut expect).await;
    let _ = shared.events.send(Event::Failed { proxy, reason: end });
}

async fn stream(
    proxy: u32,
    channel: Channel,
    shared: &Shared,
    expect: &mut watch::Receiver<Option<Arc<Expect>>>,
) -> String {
    let node = NodeInfo {
        id: format!("sidecar-{proxy:05}.bench"),
        cluster: "jalin-bench".to_owned(),
        metadata: BTreeMap::from([
            ("namespace".to_owned(), "bench".to_owned()),
            ("service_account".to_owned(), format!("sa-{}", proxy % 50)),
        ]),
    }
    .to_node();
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    for type_url in shared.synced_versions.keys() {
        let req = DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: type_url.clone(),
            resource_names_subscribe: vec![WILDCARD.to_owned()],
            ..Default::default()
        };
        if tx.try_send(req).is_err() {
            return "request queue full while opening the stream".to_owned();
        }
    }
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    let mut inbound = match client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
    {
        Ok(resp) => resp.into_inner(),
        Err(e) => return format!("open the ADS stream: {e}"),
    };
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut synced = false;
    loop {
        let resp = match inbound.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return "the control plane closed the stream".to_owned(),
            Err(e) => return format!("stream error: {e}"),
        };
        let want = expect.borrow_and_update().clone();
        let (reply, hit) = match check(&resp, want.as_deref()) {
            Ok(hit) => (
                DeltaDiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    ..Default::default()
                },
                hit,
            ),
            Err(error) => {
                let _ = shared.events.send(Event::Nacked {
                    proxy,
                    error: error.clone(),
                });
                (
                    DeltaDiscoveryRequest {
                        type_url: resp.type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        error_detail: Some(Status {
                            code: INVALID_ARGUMENT,
                            message: error,
                            details: Vec::new(),
                        }),
                        ..Default::default()
                    },
                    None,
                )
            }
        };
        let is_ack = reply.error_detail.is_none();
        if tx.send(reply).await.is_err() {
            return "the request stream closed".to_owned();
        }
        if !is_ack {
            continue;
        }
        let at = Instant::now();
        if let Some(change) = hit {
            let _ = shared.events.send(Event::Acked { proxy, change, at });
        }
        acked.insert(resp.type_url, resp.system_version_info);
        if !synced && acked == shared.synced_versions {
            synced = true;
            let _ = shared.events.send(Event::Synced { proxy });
        }
    }
}

/// Checks every resource of a response as a proxy would before applying it; returns the change
/// number when the response carries the awaited change.
fn check(resp: &DeltaDiscoveryResponse, want: Option<&Expect>) -> Result<Option<u32>, String> {
    let mut hit = None;
    for res in &resp.resources {
        let Some(any) = &res.resource else {
            return Err(format!(
                "resource {:?} of {} has no body",
                res.name, resp.type_url
            ));
        };
        if any.type_url != resp.type_url {
            return Err(format!(
                "resource {:?} has type {} in a {} response",
                res.name, any.type_url, resp.type_url
            ));
        }
        let envelope = decode_envelope(&any.type_url, &any.value).map_err(|e| e.to_string())?;
        if envelope.name != res.name || envelope.version != res.version {
            return Err(format!(
                "resource {:?} version {:?}: the envelope says {:?} version {:?}",
                res.name, res.version, envelope.name, envelope.version
            ));
        }
        if let Some(w) = want
            && w.type_url == resp.type_url
            && w.name == res.name
            && w.version == res.version
        {
            hit = Some(w.change);
        }
    }
    Ok(hit)
}
