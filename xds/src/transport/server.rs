//! The ADS server: a snapshot store keyed per proxy node id, per-proxy scoping, and one task per
//! stream driving a [`SotwStream`] or [`DeltaStream`] state machine.
//!
//! Invariants:
//! - a push replaces a snapshot in a `watch` channel and never waits for streams: each stream
//!   task wakes, takes the newest view (intermediate ones coalesce) and sends only what changed;
//! - each stream's outgoing queue is bounded ([`STREAM_QUEUE`]); a slow proxy slows only itself;
//! - stopping the server ends every stream, so graceful shutdown cannot hang on open streams.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::{CertificateDer, ServerTlsConfig};

use super::server_delta::{DeltaPush, DeltaStream};
use super::server_sotw::{SotwPush, SotwStream};
use super::snapshot::Snapshot;
use super::wire::{AdsService, WireDeltaResponse, WireSotwResponse};
use super::{NodeInfo, ProtocolError, StreamEvent};

/// Responses queued per stream before the stream task waits for the proxy to read.
pub const STREAM_QUEUE: usize = 16;
/// Largest request accepted from a proxy (requests are small; this bounds a hostile one).
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// HTTP/2 keep-alive ping interval, to find proxies that vanished without closing.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time to wait for a keep-alive ping's answer.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a new stream may take to send its first request (and so its node) before it is closed,
/// so idle connections cannot hold stream tasks.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Server events buffered for slow observers; older ones are dropped for them.
const EVENT_BUFFER: usize = 4096;

/// What the transport established about the client of one stream: its address and the client
/// certificate chain the TLS handshake verified against the server's client CA roots.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The client's address, when the listener knows it.
    pub remote_addr: Option<SocketAddr>,
    /// The verified client certificate chain, leaf first (`None`: plaintext, or TLS without a
    /// client certificate).
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl Peer {
    /// Reads the peer from a request's extensions: a [`Peer`] a custom acceptor put there (it
    /// must have verified the chain), else what tonic's own TLS recorded, else the TCP address.
    pub fn from_extensions(ext: &http::Extensions) -> Peer {
        if let Some(peer) = ext.get::<Peer>() {
            return peer.clone();
        }
        if let Some(tls) = ext.get::<TlsConnectInfo<TcpConnectInfo>>() {
            return Peer {
                remote_addr: tls.get_ref().remote_addr(),
                certs: tls.peer_certs().filter(|c| !c.is_empty()),
            };
        }
        Peer {
            remote_addr: ext.get::<TcpConnectInfo>().and_then(|t| t.remote_addr()),
            certs: None,
        }
    }

    /// The verified leaf certificate, if the client presented one.
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.certs.as_deref().and_then(|c| c.first())
    }
}

/// Per-proxy scoping: given a proxy's node and the snapshot meant for it, the resources it may see.
pub trait Scope: Send + Sync + 'static {
    /// Decides, on a stream's first request, whether `node` (as the proxy describes itself) may
    /// be served over a connection from `peer`, and returns the node the stream's views are then
    /// computed for (e.g. with identity fields taken from the verified certificate). An `Err` is
    /// sent to the proxy as the stream's status and ends it. Default: every stream, node as sent.
    fn admit(&self, node: NodeInfo, peer: &Peer) -> Result<NodeInfo, tonic::Status> {
        let _ = peer;
        Ok(node)
    }

    /// The view of `snapshot` for `node`. Share entries (see [`Snapshot::filter`]), do not re-encode.
    fn view(&self, node: &NodeInfo, snapshot: &Arc<Snapshot>) -> Arc<Snapshot>;
}

/// Every proxy sees every resource.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllResources;

impl Scope for AllResources {
    fn view(&self, _node: &NodeInfo, snapshot: &Arc<Snapshot>) -> Arc<Snapshot> {
        snapshot.clone()
    }
}

impl<F> Scope for F
where
    F: Fn(&NodeInfo, &Arc<Snapshot>) -> Arc<Snapshot> + Send + Sync + 'static,
{
    fn view(&self, node: &NodeInfo, snapshot: &Arc<Snapshot>) -> Arc<Snapshot> {
        self(node, snapshot)
    }
}

/// What a proxy last said about one type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeStatus {
    /// The version the proxy runs (its last ACK).
    pub acked_version: Option<String>,
    /// The last NACK: the rejected version and the proxy's error message.
    pub last_nack: Option<(String, String)>,
}

/// What the server knows about one proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// Open streams from this node id.
    pub streams: usize,
    /// Per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// Something that happened on a stream, for observers (metrics, tests, the scale simulator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A proxy opened a stream.
    Connected {
        /// Its node id.
        node_id: String,
    },
    /// A proxy's stream ended.
    Disconnected {
        /// Its node id.
        node_id: String,
    },
    /// The server sent a response.
    Pushed {
        /// The proxy's node id.
        node_id: String,
        /// Type URL of the response.
        type_url: Arc<str>,
        /// Version of the type's set in the response.
        version: Arc<str>,
        /// Resources carried (SotW: the whole set; delta: the changed ones).
        resources: usize,
        /// Names removed (delta only).
        removed: usize,
    },
    /// A proxy ACKed or NACKed.
    Stream {
        /// Its node id.
        node_id: String,
        /// The ACK or NACK.
        event: StreamEvent,
    },
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The gRPC server failed (TLS configuration, accept loop).
    #[error("xDS server: {0}; check the TLS certificate and key and that the listener is usable")]
    Transport(#[from] tonic::transport::Error),
}

pub(crate) struct Inner {
    global: watch::Sender<Arc<Snapshot>>,
    per_node: Mutex<HashMap<String, watch::Sender<Option<Arc<Snapshot>>>>>,
    scope: Box<dyn Scope>,
    status: Mutex<HashMap<String, NodeStatus>>,
    events: broadcast::Sender<ServerEvent>,
    closing: watch::Sender<bool>,
    pub(crate) max_request_bytes: usize,
    /// A snapshot was pushed: before that, streams are answered nothing (not an empty set,
    /// which a proxy would apply as its first configuration: no policies, fail-open).
    pushed: std::sync::atomic::AtomicBool,
}

/// The xDS control-plane server. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct XdsServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer").finish_non_exhaustive()
    }
}

impl Default for XdsServer {
    fn default() -> Self {
        XdsServer::new(AllResources)
    }
}

impl XdsServer {
    /// A server with an empty snapshot that scopes resources per proxy with `scope`.
    pub fn new(scope: impl Scope) -> Self {
        XdsServer {
            inner: Arc::new(Inner {
                global: watch::Sender::new(Arc::new(Snapshot::default())),
                per_node: Mutex::new(HashMap::new()),
                scope: Box::new(scope),
                status: Mutex::new(HashMap::new()),
                events: broadcast::Sender::new(EVENT_BUFFER),
                closing: watch::Sender::new(false),
                max_request_bytes: MAX_REQUEST_BYTES,
                pushed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Replaces the snapshot every proxy without its own snapshot sees, and notifies their streams.
    pub fn push(&self, mut snapshot: Snapshot) {
        // Linked to the snapshot it replaces, the change is computed here once, and each
        // stream in sync sends it without walking the whole set.
        snapshot.link_from(&self.inner.global.borrow());
        self.inner
            .pushed
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.global.send_replace(Arc::new(snapshot));
    }

    /// Replaces the snapshot of one proxy (by node id), and notifies its streams.
    pub fn push_node(&self, node_id: &str, mut snapshot: Snapshot) {
        let tx = self.inner.node_channel(node_id);
        if let Some(prev) = &*tx.borrow() {
            snapshot.link_from(prev);
        }
        tx.send_replace(Some(Arc::new(snapshot)));
    }

    /// Makes a proxy see the shared snapshot again.
    pub fn clear_node(&self, node_id: &str) {
        let mut map = self
            .inner
            .per_node
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = map.remove(node_id) {
            tx.send_replace(None);
        }
    }

    /// The shared snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.global.borrow().clone()
    }

    /// What the server knows about a proxy: open streams, ACKed versions, last NACK.
    pub fn status(&self, node_id: &str) -> Option<NodeStatus> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node_id)
            .cloned()
    }

    /// Every proxy the server has heard from.
    pub fn statuses(&self) -> HashMap<String, NodeStatus> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A feed of stream events (connects, ACKs, NACKs). Slow receivers lose the oldest events.
    pub fn events(&self) -> broadcast::Receiver<ServerEvent> {
        self.inner.events.subscribe()
    }

    /// The tonic service, to mount next to other services on one gRPC server.
    pub fn service(&self) -> AdsService {
        AdsService::new(self.inner.clone())
    }

    /// Serves ADS on `listener` (with mTLS when `tls` is set) until `shutdown` completes; then
    /// ends every stream and returns.
    pub async fn serve(
        &self,
        listener: TcpListener,
        tls: Option<ServerTlsConfig>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServerError> {
        self.inner.closing.send_replace(false);
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .tcp_nodelay(true);
        if let Some(tls) = tls {
            builder = builder.tls_config(tls)?;
        }
        let inner = self.inner.clone();
        let shutdown = async move {
            shutdown.await;
            inner.closing.send_replace(true);
        };
        builder
            .add_service(self.service())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        Ok(())
    }
}

impl Inner {
    fn node_channel(&self, node_id: &str) -> watch::Sender<Option<Arc<Snapshot>>> {
        let mut map = self.per_node.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(node_id.to_owned())
            .or_insert_with(|| watch::Sender::new(None))
            .clone()
    }

    /// Records an ACK or NACK. Runs once per proxy per push, so it allocates only the first time
    /// a node reports a type, and builds an event only when someone is listening.
    fn record(&self, node_id: &str, event: StreamEvent) {
        {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let node = match status.get_mut(node_id) {
                Some(node) => node,
                None => status.entry(node_id.to_owned()).or_default(),
            };
            let type_url = match &event {
                StreamEvent::Ack { type_url, .. } | StreamEvent::Nack { type_url, .. } => type_url,
            };
            let t = match node.types.get_mut(&**type_url) {
                Some(t) => t,
                None => node.types.entry(type_url.to_string()).or_default(),
            };
            match &event {
                StreamEvent::Ack { version, .. } => match &mut t.acked_version {
                    Some(v) => {
                        v.clear();
                        v.push_str(version);
                    }
                    None => t.acked_version = Some(version.clone()),
                },
                StreamEvent::Nack {
                    rejected_version,
                    kept_version,
                    error,
                    ..
                } => {
                    tracing::warn!(node = node_id, type_url = %type_url, rejected_version, error, "proxy rejected an update");
                    t.last_nack = Some((rejected_version.clone(), error.clone()));
                    if !kept_version.is_empty() && t.acked_version.is_none() {
                        t.acked_version = Some(kept_version.clone());
                    }
                }
            }
        }
        if self.events.receiver_count() > 0 {
            let _ = self.events.send(ServerEvent::Stream {
                node_id: node_id.to_owned(),
                event,
            });
        }
    }

    /// Counts a node's streams; when its last stream ends, forgets its status and, unless it has
    /// its own snapshot, its channel, so proxy churn does not grow the server's maps.
    fn connected(&self, node_id: &str, delta: isize) {
        let gone = {
            let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
            let node = status.entry(node_id.to_owned()).or_default();
            node.streams = node.streams.saturating_add_signed(delta);
            let gone = node.streams == 0;
            if gone {
                status.remove(node_id);
            }
            gone
        };
        if gone {
            let mut map = self.per_node.lock().unwrap_or_else(PoisonError::into_inner);
            if map
                .get(node_id)
                .is_some_and(|tx| tx.borrow().is_none() && tx.receiver_count() == 0)
            {
                map.remove(node_id);
            }
        }
        let node_id = node_id.to_owned();
        let _ = self.events.send(if delta > 0 {
            ServerEvent::Connected { node_id }
        } else {
            ServerEvent::Disconnected { node_id }
        });
    }
}

/// One protocol variant's state machine, as the stream task drives it.
trait Machine: Default + Send + 'static {
    type Request: prost::Message + Default + Send + 'static;
    type Push: Send;
    type Wire: Send + 'static;
    fn node(&self) -> Option<&NodeInfo>;
    fn on_request(
        &mut self,
        req: &Self::Request,
    ) -> Result<(Option<StreamEvent>, Option<Self::Push>), ProtocolError>;
    fn on_snapshot(&mut self, view: &Arc<Snapshot>) -> Vec<Self::Push>;
    fn wire(push: Self::Push) -> Self::Wire;
    /// Type URL, version, resource count and removal count of a push.
    fn summary(push: &Self::Push) -> (Arc<str>, Arc<str>, usize, usize);
}

impl Machine for SotwStream {
    type Request = DiscoveryRequest;
    type Push = SotwPush;
    type Wire = WireSotwResponse;
    fn node(&self) -> Option<&NodeInfo> {
        SotwStream::node(self)
    }
    fn on_request(
        &mut self,
        req: &DiscoveryRequest,
    ) -> Result<(Option<StreamEvent>, Option<SotwPush>), ProtocolError> {
        SotwStream::on_request(self, req).map(|o| (o.event, o.push))
    }
    fn on_snapshot(&mut self, view: &Arc<Snapshot>) -> Vec<SotwPush> {
        SotwStream::on_snapshot(self, view)
    }
    fn wire(push: SotwPush) -> WireSotwResponse {
        WireSotwResponse(Some(push))
    }
    fn summary(p: &SotwPush) -> (Arc<str>, Arc<str>, usize, usize) {
        (p.type_url.clone(), p.version.clone(), p.resources.len(), 0)
    }
}

impl Machine for DeltaStream {
    type Request = DeltaDiscoveryRequest;
    type Push = DeltaPush;
    type Wire = WireDeltaResponse;
    fn node(&self) -> Option<&NodeInfo> {
        DeltaStream::node(self)
    }
    fn on_request(
        &mut self,
        req: &DeltaDiscoveryRequest,
    ) -> Result<(Option<StreamEvent>, Option<DeltaPush>), ProtocolError> {
        DeltaStream::on_request(self, req).map(|o| (o.event, o.push))
    }
    fn on_snapshot(&mut self, view: &Arc<Snapshot>) -> Vec<DeltaPush> {
        DeltaStream::on_snapshot(self, view)
    }
    fn wire(push: DeltaPush) -> WireDeltaResponse {
        WireDeltaResponse(Some(push))
    }
    fn summary(p: &DeltaPush) -> (Arc<str>, Arc<str>, usize, usize) {
        (
            p.type_url.clone(),
            p.system_version.clone(),
            p.resources.len(),
            p.removed.len(),
        )
    }
}

pub(crate) fn start_sotw(
    inner: Arc<Inner>,
    peer: Peer,
    requests: tonic::Streaming<DiscoveryRequest>,
) -> mpsc::Receiver<Result<WireSotwResponse, tonic::Status>> {
    start::<SotwStream>(inner, peer, requests)
}

pub(crate) fn start_delta(
    inner: Arc<Inner>,
    peer: Peer,
    requests: tonic::Streaming<DeltaDiscoveryRequest>,
) -> mpsc::Receiver<Result<WireDeltaResponse, tonic::Status>> {
    start::<DeltaStream>(inner, peer, requests)
}

fn start<M: Machine>(
    inner: Arc<Inner>,
    peer: Peer,
    requests: tonic::Streaming<M::Request>,
) -> mpsc::Receiver<Result<M::Wire, tonic::Status>> {
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    tokio::spawn(run::<M>(inner, peer, requests, tx));
    rx
}

async fn run<M: Machine>(
    inner: Arc<Inner>,
    peer: Peer,
    mut requests: tonic::Streaming<M::Request>,
    tx: mpsc::Sender<Result<M::Wire, tonic::Status>>,
) {
    let mut sm = M::default();
    let first = match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, requests.message()).await {
        Ok(Ok(Some(req))) => req,
        Ok(_) => return,
        Err(_) => {
            let _ = tx
                .send(Err(tonic::Status::deadline_exceeded(format!(
                    "no xDS request within {}s of opening the stream",
                    FIRST_REQUEST_TIMEOUT.as_secs()
                ))))
                .await;
            return;
        }
    };
    let (event, _) = match sm.on_request(&first) {
        Ok(out) => out,
        Err(e) => {
            let _ = tx
                .send(Err(tonic::Status::invalid_argument(e.to_string())))
                .await;
            return;
        }
    };
    let Some(node) = sm.node().cloned() else {
        return;
    };
    // The identity the views are computed for is settled once, before anything is sent.
    let node = match inner.scope.admit(node, &peer) {
        Ok(node) => node,
        Err(status) => {
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    inner.connected(&node.id, 1);
    if let Some(event) = event {
        inner.record(&node.id, event);
    }
    let mut global_rx = inner.global.subscribe();
    let mut node_rx = inner.node_channel(&node.id).subscribe();
    let mut closing = inner.closing.subscribe();
    let view = |g: &watch::Receiver<Arc<Snapshot>>, n: &watch::Receiver<Option<Arc<Snapshot>>>| {
        let base = n.borrow().clone().unwrap_or_else(|| g.borrow().clone());
        inner.scope.view(&node, &base)
    };
    global_rx.mark_unchanged();
    node_rx.mark_unchanged();
    // Nothing is served before the first push (the global one, or this node's own).
    let pushed =
        inner.pushed.load(std::sync::atomic::Ordering::Acquire) || node_rx.borrow().is_some();
    let mut pushes = if pushed {
        sm.on_snapshot(&view(&global_rx, &node_rx))
    } else {
        Vec::new()
    };
    'stream: loop {
        for push in pushes.drain(..) {
            let (type_url, version, resources, removed) = M::summary(&push);
            if tx.send(Ok(M::wire(push))).await.is_err() {
                break 'stream;
            }
            if inner.events.receiver_count() > 0 {
                let _ = inner.events.send(ServerEvent::Pushed {
                    node_id: node.id.clone(),
                    type_url,
                    version,
                    resources,
                    removed,
                });
            }
        }
        tokio::select! {
            msg = requests.message() => match msg {
                Ok(Some(req)) => match sm.on_request(&req) {
                    Ok((event, push)) => {
                        if let Some(event) = event {
                            inner.record(&node.id, event);
                        }
                        pushes.extend(push);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::invalid_argument(e.to_string()))).await;
                        break;
                    }
                },
                Ok(None) | Err(_) => break,
            },
            Ok(()) = global_rx.changed() => pushes = sm.on_snapshot(&view(&global_rx, &node_rx)),
            Ok(()) = node_rx.changed() => pushes = sm.on_snapshot(&view(&global_rx, &node_rx)),
            () = closed(&mut closing) => {
                let _ = tx.send(Err(tonic::Status::unavailable("xDS server shutting down"))).await;
                break;
            }
        }
    }
    drop(node_rx);
    inner.connected(&node.id, -1);
}

async fn closed(rx: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it before the caller awaits again.
    let _ = rx.wait_for(|c| *c).await;
}
