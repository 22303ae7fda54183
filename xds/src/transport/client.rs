//! The xDS client: keeps one delta ADS stream to the control plane up (reconnecting with
//! exponential backoff and jitter), drives a [`ClientState`], and keeps the last good
//! configuration in force while the control plane is unreachable.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::backoff::{Backoff, DEFAULT_BASE, DEFAULT_MAX};
use super::client_state::{AppliedConfig, Applier, ClientState, DEFAULT_WARM_TIMEOUT};
use super::resource::Kind;
use super::{NodeInfo, Subscription};

/// Time allowed to open the TCP (and TLS) connection to the control plane.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response accepted (tonic's default is 4 MiB; a large mesh's first response is bigger).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// HTTP/2 keep-alive ping interval, so a vanished control plane is noticed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Time to wait for a keep-alive answer before the stream counts as broken.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests queued toward the server (ACKs are small and sent as responses arrive).
const REQUEST_QUEUE: usize = 64;
/// Requests waiting for the server to read them before the stream counts as stuck.
const MAX_OUTBOX: usize = 10_000;
/// Subscription commands queued from the application.
const COMMAND_QUEUE: usize = 64;

/// How the client identifies itself and what it asks for.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The proxy's node (id, cluster, metadata); the server scopes resources by it.
    pub node: NodeInfo,
    /// Types subscribed with a wildcard (default: every jalin kind).
    pub type_urls: Vec<String>,
    /// Types subscribed by name only, on demand: they start empty and gain the names that
    /// received resources reference (warm-up) or that [`XdsClient::subscribe`] adds. Overrides
    /// `type_urls` for these types.
    pub on_demand: Vec<String>,
    /// Reconnect backoff: first delay.
    pub backoff_base: Duration,
    /// Reconnect backoff: longest delay.
    pub backoff_max: Duration,
    /// How long a response may wait for the resources it references.
    pub warm_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Largest response accepted.
    pub max_response_bytes: usize,
}

impl ClientConfig {
    /// Defaults for `node`: every jalin kind, wildcard.
    pub fn new(node: NodeInfo) -> Self {
        ClientConfig {
            node,
            type_urls: Kind::ALL.iter().map(|k| k.type_url().to_owned()).collect(),
            on_demand: Vec::new(),
            backoff_base: DEFAULT_BASE,
            backoff_max: DEFAULT_MAX,
            warm_timeout: DEFAULT_WARM_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// What the client is doing, published on every change.
#[derive(Debug, Clone, Default)]
pub struct ClientStatus {
    /// A stream to the control plane is open.
    pub connected: bool,
    /// Streams opened so far (1 after the first connect; more after reconnects).
    pub streams: u64,
    /// The configuration in force.
    pub applied: Arc<AppliedConfig>,
    /// Configurations applied so far.
    pub applies: u64,
    /// System version last ACKed, per type URL.
    pub acked: BTreeMap<String, String>,
    /// NACKs sent so far.
    pub nacks: u64,
    /// Message of the last NACK.
    pub last_error: Option<String>,
    /// Why the last connection attempt or stream failed.
    pub last_disconnect: Option<String>,
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a valid URI.
    #[error(
        "xDS endpoint {endpoint:?} is not a valid URI ({reason}); expected e.g. https://jalin-control.jalin-system:15010"
    )]
    InvalidEndpoint {
        /// What was given.
        endpoint: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The TLS configuration was refused.
    #[error(
        "xDS client TLS configuration: {0}; check the CA bundle, client certificate and domain name"
    )]
    Tls(tonic::transport::Error),
}

/// Opens the channel of one session from the client's endpoint, for callers that make their own
/// connections (for example rustls with a SPIFFE-ID verifier through
/// `Endpoint::connect_with_connector`, with an `http://` endpoint so tonic adds no TLS of its own).
pub type ChannelFactory = Arc<
    dyn Fn(
            Endpoint,
        )
            -> Pin<Box<dyn Future<Output = Result<Channel, tonic::transport::Error>> + Send>>
        + Send
        + Sync,
>;

enum Command {
    Subscribe(String, Vec<String>),
    Unsubscribe(String, Vec<String>),
}

/// A running xDS client. Dropping it stops the stream; the last applied config stays with the
/// [`Applier`]'s owner.
#[derive(Debug)]
pub struct XdsClient {
    status: watch::Receiver<ClientStatus>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe(t, n) => write!(f, "Subscribe({t}, {n:?})"),
            Command::Unsubscribe(t, n) => write!(f, "Unsubscribe({t}, {n:?})"),
        }
    }
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl XdsClient {
    /// Starts a client toward `endpoint` (`http://` for plaintext, `https://` with `tls` for
    /// mTLS). It returns at once; the stream is opened, and re-opened, in the background, and each
    /// update is given to `applier`, whose error becomes the NACK. Call it inside a Tokio runtime.
    /// The applier runs on the client's task: compile and swap (e.g. into an `ArcSwap`) there, and
    /// do not block on I/O.
    pub fn connect(
        endpoint: &str,
        tls: Option<ClientTlsConfig>,
        config: ClientConfig,
        applier: impl Applier,
    ) -> Result<XdsClient, ClientError> {
        Self::start(endpoint, tls, None, config, applier)
    }

    /// As [`XdsClient::connect`], with every connection opened by `factory` (which receives the
    /// endpoint with its timeouts and keep-alive set).
    pub fn connect_with(
        endpoint: &str,
        factory: ChannelFactory,
        config: ClientConfig,
        applier: impl Applier,
    ) -> Result<XdsClient, ClientError> {
        Self::start(endpoint, None, Some(factory), config, applier)
    }

    fn start(
        endpoint: &str,
        tls: Option<ClientTlsConfig>,
        factory: Option<ChannelFactory>,
        config: ClientConfig,
        applier: impl Applier,
    ) -> Result<XdsClient, ClientError> {
        let mut ep = Endpoint::from_shared(endpoint.to_owned()).map_err(|e| {
            ClientError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            }
        })?;
        if let Some(tls) = tls {
            ep = ep.tls_config(tls).map_err(ClientError::Tls)?;
        }
        let ep = ep
            .connect_timeout(config.connect_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let (status_tx, status) = watch::channel(ClientStatus::default());
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let task = tokio::spawn(run(
            Dialer {
                endpoint: ep,
                factory,
            },
            config,
            Box::new(applier),
            status_tx,
            commands_rx,
        ));
        Ok(XdsClient {
            status,
            commands,
            task,
        })
    }

    /// A receiver of the client's status; wait on it with `wait_for`.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.clone()
    }

    /// The configuration in force.
    pub fn applied(&self) -> Arc<AppliedConfig> {
        self.status.borrow().applied.clone()
    }

    /// Subscribes to names of a type (in addition to any wildcard).
    pub async fn subscribe(&self, type_url: &str, names: Vec<String>) {
        let _ = self
            .commands
            .send(Command::Subscribe(type_url.to_owned(), names))
            .await;
    }

    /// Unsubscribes from names of a type.
    pub async fn unsubscribe(&self, type_url: &str, names: Vec<String>) {
        let _ = self
            .commands
            .send(Command::Unsubscribe(type_url.to_owned(), names))
            .await;
    }
}

enum SessionEnd {
    /// The owner dropped the client.
    Stopped,
    /// The connection or stream failed; reconnect.
    Failed(String),
}

/// How a session opens its channel.
struct Dialer {
    endpoint: Endpoint,
    factory: Option<ChannelFactory>,
}

impl Dialer {
    async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.factory {
            Some(f) => f(self.endpoint.clone()).await,
            None => self.endpoint.connect().await,
        }
    }
}

async fn run(
    dialer: Dialer,
    config: ClientConfig,
    mut applier: Box<dyn Applier>,
    status: watch::Sender<ClientStatus>,
    mut commands: mpsc::Receiver<Command>,
) {
    let mut state = ClientState::new(
        config.node.clone(),
        config.type_urls.iter().cloned(),
        config.warm_timeout,
    );
    for type_url in &config.on_demand {
        state.set_subscription(type_url.clone(), Subscription::default());
    }
    let mut backoff = Backoff::new(config.backoff_base, config.backoff_max);
    loop {
        let end = session(
            &dialer,
            &config,
            &mut state,
            &mut *applier,
            &status,
            &mut commands,
            &mut backoff,
        )
        .await;
        match end {
            SessionEnd::Stopped => return,
            SessionEnd::Failed(reason) => {
                tracing::warn!(node = %config.node.id, %reason, "xDS stream lost; serving the last good configuration");
                status.send_modify(|s| {
                    s.connected = false;
                    s.last_disconnect = Some(reason);
                });
            }
        }
        let delay = backoff.next_delay(rand::random::<f64>());
        tokio::time::sleep(delay).await;
    }
}

async fn session(
    dialer: &Dialer,
    config: &ClientConfig,
    state: &mut ClientState,
    applier: &mut dyn Applier,
    status: &watch::Sender<ClientStatus>,
    commands: &mut mpsc::Receiver<Command>,
    backoff: &mut Backoff,
) -> SessionEnd {
    let endpoint = &dialer.endpoint;
    let channel = match dialer.connect().await {
        Ok(c) => c,
        Err(e) => {
            return SessionEnd::Failed(format!(
                "connect to {}: {}",
                endpoint.uri(),
                error_chain(&e)
            ));
        }
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(config.max_response_bytes);
    let initial = state.on_connect();
    let (req_tx, req_rx) = mpsc::channel(REQUEST_QUEUE.max(initial.len() + 1));
    for req in initial {
        if req_tx.try_send(req).is_err() {
            return SessionEnd::Failed("request queue full while opening the stream".into());
        }
    }
    let mut inbound = match client
        .delta_aggregated_resources(ReceiverStream::new(req_rx))
        .await
    {
        Ok(resp) => resp.into_inner(),
        Err(e) => return SessionEnd::Failed(format!("open ADS stream at {}: {e}", endpoint.uri())),
    };
    status.send_modify(|s| {
        s.connected = true;
        s.streams += 1;
    });
    let mut outbox: VecDeque<DeltaDiscoveryRequest> = VecDeque::new();
    loop {
        let deadline = state.next_deadline().map(tokio::time::Instant::from_std);
        let out: Vec<DeltaDiscoveryRequest> = tokio::select! {
            // Requests leave through an outbox so reading responses never waits on the server
            // reading requests (two full queues waiting on each other would deadlock).
            permit = req_tx.reserve(), if !outbox.is_empty() => match (permit, outbox.pop_front()) {
                (Ok(permit), Some(req)) => {
                    permit.send(req);
                    continue;
                }
                (Ok(_), None) => continue,
                (Err(_), _) => return SessionEnd::Failed("the request stream closed".into()),
            },
            msg = inbound.message() => match msg {
                Ok(Some(resp)) => {
                    backoff.reset();
                    state.on_response(&resp, Instant::now(), applier)
                }
                Ok(None) => return SessionEnd::Failed("the control plane closed the stream".into()),
                Err(e) => return SessionEnd::Failed(format!("stream error: {e}")),
            },
            () = sleep_until(deadline), if deadline.is_some() => state.poll(Instant::now()),
            cmd = commands.recv() => match cmd {
                None => return SessionEnd::Stopped,
                Some(Command::Subscribe(t, names)) => state.subscribe(&t, &names).into_iter().collect(),
                Some(Command::Unsubscribe(t, names)) => state.unsubscribe(&t, &names, applier),
            },
        };
        publish(state, status, &out);
        outbox.extend(out);
        if outbox.len() > MAX_OUTBOX {
            return SessionEnd::Failed(format!(
                "more than {MAX_OUTBOX} requests wait to be sent; the control plane is not reading its stream"
            ));
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn publish(
    state: &ClientState,
    status: &watch::Sender<ClientStatus>,
    sent: &[DeltaDiscoveryRequest],
) {
    let nacks = sent.iter().filter(|r| r.error_detail.is_some()).count() as u64;
    status.send_if_modified(|s| {
        let mut changed = nacks > 0;
        if s.applies != state.applies() {
            s.applies = state.applies();
            s.applied = Arc::new(state.applied().clone());
            changed = true;
        }
        if &s.acked != state.acked_versions() {
            s.acked = state.acked_versions().clone();
            changed = true;
        }
        s.nacks += nacks;
        if s.last_error.as_deref() != state.last_error() {
            s.last_error = state.last_error().map(str::to_owned);
            changed = true;
        }
        changed
    });
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
