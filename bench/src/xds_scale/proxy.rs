//! A simulated proxy: one real delta ADS stream over tonic that subscribes to every kind with a
//! wildcard and answers every response with an ACK (or a NACK carrying the error) echoing its
//! nonce, as a sidecar does: either lean (envelope check, set versions only) or through the
//! proxy's own sans-I/O [`ClientState`] (see [`ClientKind`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status;
use jalin_xds::transport::client_state::DEFAULT_WARM_TIMEOUT;
use jalin_xds::transport::resource::decode_envelope;
use jalin_xds::transport::{AppliedConfig, Applier, ClientState, NodeInfo, WILDCARD};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// gRPC `INVALID_ARGUMENT`, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;
/// Requests queued toward the server per stream (one per type at start, then one per response).
const REQUEST_QUEUE: usize = 16;
/// Attempts to open a stream before the proxy gives up.
const OPEN_ATTEMPTS: u32 = 8;
/// First retry delay when opening a stream fails (doubles per attempt).
const OPEN_BACKOFF: Duration = Duration::from_millis(50);
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
    /// Stream openings retried after a failure (connection reset while connecting).
    pub reconnects: AtomicU64,
}

/// How a simulated proxy handles responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Checks each resource's envelope and ACKs; keeps only the ACKed set versions (a few hundred
    /// bytes per proxy), so 10,000 proxies fit in one process.
    #[default]
    Lean,
    /// Runs the proxy's own client state machine ([`ClientState`]: warm-up on references,
    /// atomic apply, ACK/NACK) and keeps the whole configuration, as a sidecar does (memory grows
    /// with proxies x snapshot size).
    Full,
}

/// Accepts every configuration (the simulated proxy has nothing to reconfigure).
struct AcceptAll;

impl Applier for AcceptAll {
    fn apply(&mut self, _config: &AppliedConfig) -> Result<(), String> {
        Ok(())
    }
}

enum Machine {
    Lean(BTreeMap<String, String>),
    Full(Box<ClientState>),
}

impl Machine {
    fn initial(&mut self, node: &NodeInfo, type_urls: &[String]) -> Vec<DeltaDiscoveryRequest> {
        match self {
            Machine::Lean(_) => type_urls
                .iter()
                .map(|type_url| DeltaDiscoveryRequest {
                    node: Some(node.to_node()),
                    type_url: type_url.clone(),
                    resource_names_subscribe: vec![WILDCARD.to_owned()],
                    ..Default::default()
                })
                .collect(),
            Machine::Full(state) => state.on_connect(),
        }
    }

    /// The requests answering `resp`, and the awaited change if this response put it in force.
    fn on_response(
        &mut self,
        resp: &DeltaDiscoveryResponse,
        want: Option<&Expect>,
    ) -> (Vec<DeltaDiscoveryRequest>, Option<u32>) {
        match self {
            Machine::Lean(acked) => match check(resp, want) {
                Ok(hit) => {
                    acked.insert(resp.type_url.clone(), resp.system_version_info.clone());
                    (vec![ack(resp)], hit)
                }
                Err(error) => (vec![nack(resp, error)], None),
            },
            Machine::Full(state) => {
                let out = state.on_response(resp, Instant::now(), &mut AcceptAll);
                (out, want.and_then(|w| applied(state, w)))
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self {
            Machine::Lean(_) => None,
            Machine::Full(state) => state.next_deadline(),
        }
    }

    fn poll(&mut self, want: Option<&Expect>) -> (Vec<DeltaDiscoveryRequest>, Option<u32>) {
        match self {
            Machine::Lean(_) => (Vec::new(), None),
            Machine::Full(state) => {
                let out = state.poll(Instant::now());
                (out, want.and_then(|w| applied(state, w)))
            }
        }
    }

    fn synced(&self, versions: &BTreeMap<String, String>) -> bool {
        match self {
            Machine::Lean(acked) => acked == versions,
            Machine::Full(state) => state.acked_versions() == versions,
        }
    }
}

fn applied(state: &ClientState, want: &Expect) -> Option<u32> {
    state
        .applied()
        .get(&want.type_url, &want.name)
        .is_some_and(|r| r.version == want.version)
        .then_some(want.change)
}

fn ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

fn nack(resp: &DeltaDiscoveryResponse, message: String) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        error_detail: Some(Status {
            code: INVALID_ARGUMENT,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

/// Runs simulated proxy `proxy` on `channel` until its stream ends.
pub async fn run(
    proxy: u32,
    kind: ClientKind,
    channel: Channel,
    shared: Arc<Shared>,
    mut expect: watch::Receiver<Option<Arc<Expect>>>,
) {
    let end = stream(proxy, kind, channel, &shared, &mut expect).await;
    let _ = shared.events.send(Event::Failed { proxy, reason: end });
}

async fn stream(
    proxy: u32,
    kind: ClientKind,
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
    };
    let type_urls: Vec<String> = shared.synced_versions.keys().cloned().collect();
    let mut machine = match kind {
        ClientKind::Lean => Machine::Lean(BTreeMap::new()),
        ClientKind::Full => Machine::Full(Box::new(ClientState::new(
            node.clone(),
            type_urls.iter().cloned(),
            DEFAULT_WARM_TIMEOUT,
        ))),
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES);
    // Opening the stream is retried with backoff, as a sidecar's reconnect loop does: ten
    // thousand proxies connecting at once on a loaded machine see some connections reset.
    let mut attempt = 0u32;
    let (tx, mut inbound) = loop {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        for req in machine.initial(&node, &type_urls) {
            if tx.try_send(req).is_err() {
                return "request queue full while opening the stream".to_owned();
            }
        }
        match client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
        {
            Ok(resp) => break (tx, resp.into_inner()),
            Err(e) if attempt < OPEN_ATTEMPTS => {
                attempt += 1;
                shared.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(proxy, attempt, error = %e, "opening the ADS stream failed; retrying");
                tokio::time::sleep(OPEN_BACKOFF * 2u32.pow(attempt.min(6))).await;
            }
            Err(e) => return format!("open the ADS stream ({attempt} retries): {e}"),
        }
    };
    let mut synced = false;
    let mut reported: Option<u32> = None;
    loop {
        let deadline = machine.deadline();
        let (out, hit) = tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(resp)) => {
                    let want = expect.borrow_and_update().clone();
                    machine.on_response(&resp, want.as_deref())
                }
                Ok(None) => return "the control plane closed the stream".to_owned(),
                Err(e) => return format!("stream error: {e}"),
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                let want = expect.borrow().clone();
                machine.poll(want.as_deref())
            }
        };
        for req in out {
            if let Some(status) = &req.error_detail {
                let _ = shared.events.send(Event::Nacked {
                    proxy,
                    error: status.message.clone(),
                });
            }
            if tx.send(req).await.is_err() {
                return "the request stream closed".to_owned();
            }
        }
        let at = Instant::now();
        if let Some(change) = hit
            && reported != Some(change)
        {
            reported = Some(change);
            let _ = shared.events.send(Event::Acked { proxy, change, at });
        }
        if !synced && machine.synced(&shared.synced_versions) {
            synced = true;
            let _ = shared.events.send(Event::Synced { proxy });
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
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
